//! One OpenDAL operator per storage config, with the same layers on every backend: retries with
//! backoff for transient errors, timeouts, and a cap on requests in flight.

use std::time::Duration;

use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::{Operator, services};

use super::config::{AddressStyle, ConfigError, StorageConfig, absolute};

/// Requests in flight per operator, whatever a job asks for.
const MAX_IN_FLIGHT: usize = 64;

/// How persistent a backend failure must be before a job gives up on it.
#[derive(Debug, Clone, Copy)]
pub struct Resilience {
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A whole call (stat, delete, a write's completion).
    pub timeout: Duration,
    /// One read or write of a chunk.
    pub io_timeout: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            retries: 4,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            timeout: Duration::from_secs(120),
            io_timeout: Duration::from_secs(60),
        }
    }
}

/// Builds the operator; no request is made yet. Errors name the config field.
pub fn operator(config: &StorageConfig, resilience: Resilience) -> Result<Operator, ConfigError> {
    opendal::install_default();
    let built = match config {
        StorageConfig::Local(c) => Operator::new(services::Fs::default().root(&absolute(&c.root))),
        StorageConfig::Opendal(c) if c.scheme == "fs" => {
            let mut options = c.options.clone();
            // Dify's default root, resolved as its working directory would.
            let root = options.remove("root").unwrap_or_else(|| "storage".into());
            options.insert("root".into(), absolute(&root));
            Operator::via_iter("fs", options)
        }
        StorageConfig::Opendal(c) => Operator::via_iter(&c.scheme, c.options.clone()),
        StorageConfig::S3(c) => {
            let mut b = services::S3::default()
                .bucket(&c.bucket_name)
                .region(&c.region);
            if !c.use_aws_managed_iam {
                if let Some(endpoint) = &c.endpoint {
                    b = b.endpoint(endpoint);
                }
                let virtual_host = match c.address_style {
                    AddressStyle::Virtual => true,
                    AddressStyle::Path => false,
                    AddressStyle::Auto => c.endpoint.is_none(),
                };
                if virtual_host {
                    b = b.enable_virtual_host_style();
                }
                if let (Some(key), Some(secret)) = (&c.access_key, &c.secret_key) {
                    b = b
                        .access_key_id(key)
                        .secret_access_key(secret)
                        .disable_config_load()
                        .disable_ec2_metadata();
                }
            }
            Operator::new(b)
        }
        StorageConfig::OciStorage(c) => Operator::new(
            services::S3::default()
                .bucket(&c.bucket_name)
                .region(&c.region)
                .endpoint(&c.endpoint)
                .access_key_id(&c.access_key)
                .secret_access_key(&c.secret_key)
                .disable_config_load()
                .disable_ec2_metadata(),
        ),
        StorageConfig::AliyunOss(c) => {
            let mut b = services::Oss::default()
                .bucket(&c.bucket_name)
                .endpoint(&c.endpoint)
                .access_key_id(&c.access_key)
                .access_key_secret(&c.secret_key);
            // A bucket cannot be a subdomain of an IP address or localhost: path style there.
            if host_is_ip_or_local(&c.endpoint) {
                b = b.addressing_style("path");
            }
            // Dify joins ALIYUN_OSS_PATH in front of every key; OpenDAL's root does the same.
            if let Some(path) = c.path.as_deref().filter(|p| !p.is_empty()) {
                b = b.root(&format!("/{}/", path.trim_end_matches('/')));
            }
            Operator::new(b)
        }
        StorageConfig::AzureBlob(c) => {
            let endpoint = c
                .account_url
                .clone()
                .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", c.account_name));
            Operator::new(
                services::Azblob::default()
                    .endpoint(&endpoint)
                    .account_name(&c.account_name)
                    .account_key(&c.account_key)
                    .container(&c.container_name),
            )
        }
        StorageConfig::GoogleStorage(c) => {
            let mut b = services::Gcs::default().bucket(&c.bucket_name);
            match &c.service_account_json_base64 {
                Some(credential) => b = b.credential(credential),
                // An emulator takes no credentials; Google itself falls back to ADC.
                None if c.endpoint.is_some() => {
                    b = b
                        .skip_signature()
                        .disable_vm_metadata()
                        .disable_config_load()
                }
                None => {}
            }
            if let Some(endpoint) = &c.endpoint {
                let endpoint = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("http://{endpoint}")
                };
                b = b.endpoint(&endpoint);
            }
            Operator::new(b)
        }
        StorageConfig::TencentCos(c) => {
            let endpoint = match &c.custom_domain {
                Some(domain) => format!("{}://{domain}", c.scheme),
                None => format!("{}://cos.{}.myqcloud.com", c.scheme, c.region),
            };
            Operator::new(
                services::Cos::default()
                    .bucket(&c.bucket_name)
                    .endpoint(&endpoint)
                    .secret_id(&c.secret_id)
                    .secret_key(&c.secret_key)
                    .disable_config_load(),
            )
        }
        StorageConfig::HuaweiObs(c) => Operator::new(
            services::Obs::default()
                .bucket(&c.bucket_name)
                .endpoint(&c.server)
                .access_key_id(&c.access_key)
                .secret_access_key(&c.secret_key),
        ),
    };
    let op = built.map_err(|e| ConfigError::new("type", format!("cannot configure: {e}")))?;
    Ok(op
        .layer(
            TimeoutLayer::new()
                .with_timeout(resilience.timeout)
                .with_io_timeout(resilience.io_timeout),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(resilience.retries)
                .with_factor(2.0)
                .with_jitter()
                .with_min_delay(resilience.min_delay)
                .with_max_delay(resilience.max_delay)
                // OpenDAL's errors name the operation, path and service, never credentials.
                .with_notify(|e: opendal::layers::RetryEvent<'_>| {
                    tracing::warn!(
                        op = ?e.op,
                        attempt = e.attempt,
                        retry_in_s = e.retry_after.as_secs_f64(),
                        "storage request failed, retrying: {}",
                        e.err
                    );
                }),
        )
        .layer(ConcurrentLimitLayer::new(MAX_IN_FLIGHT)))
}

fn host_is_ip_or_local(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every wired type builds an operator from params alone (no request is made).
    #[test]
    fn every_wired_type_builds() {
        let configs = [
            json!({"type": "local", "root": std::env::temp_dir()}),
            json!({"type": "opendal", "scheme": "fs", "options": {"root": std::env::temp_dir()}}),
            json!({"type": "opendal", "scheme": "s3", "options": {"bucket": "b", "region": "us-east-1"}}),
            json!({"type": "s3", "bucket_name": "b", "use_aws_managed_iam": true}),
            json!({"type": "s3", "bucket_name": "b", "endpoint": "http://minio:9000",
                   "access_key": "a", "secret_key": "s", "address_style": "virtual"}),
            json!({"type": "aliyun-oss", "bucket_name": "b", "endpoint": "https://oss-ap-southeast-1.aliyuncs.com",
                   "access_key": "a", "secret_key": "s", "path": "dify/"}),
            json!({"type": "azure-blob", "account_name": "acct", "account_key": "a2V5",
                   "container_name": "c"}),
            json!({"type": "google-storage", "bucket_name": "b", "endpoint": "127.0.0.1:9023"}),
            json!({"type": "tencent-cos", "bucket_name": "b-1250000000", "region": "ap-singapore",
                   "secret_id": "i", "secret_key": "s"}),
            json!({"type": "huawei-obs", "bucket_name": "b", "access_key": "a", "secret_key": "s",
                   "server": "https://obs.cn-north-4.myhuaweicloud.com"}),
            json!({"type": "oci-storage", "bucket_name": "b", "region": "us-ashburn-1",
                   "endpoint": "https://ns.compat.objectstorage.us-ashburn-1.oraclecloud.com",
                   "access_key": "a", "secret_key": "s"}),
        ];
        for c in configs {
            let config =
                StorageConfig::from_value(c.clone()).unwrap_or_else(|e| panic!("{c}: {e}"));
            if let Err(e) = operator(&config, Resilience::default()) {
                panic!("{c}: {e}");
            }
        }
    }

    #[test]
    fn ip_and_localhost_endpoints_are_recognised() {
        assert!(host_is_ip_or_local("http://127.0.0.1:9000"));
        assert!(host_is_ip_or_local("http://[::1]:9000/x"));
        assert!(host_is_ip_or_local("localhost:9000"));
        assert!(!host_is_ip_or_local(
            "https://oss-ap-southeast-1.aliyuncs.com"
        ));
    }
}
