//! A storage backend as Dify configures it: from Dify's own variables (`STORAGE_TYPE`, `S3_*`,
//! `OPENDAL_<SCHEME>_*` ...) or from a job's params, which use the same keys lowercased without
//! the prefix (`{"type": "s3", "bucket_name": ..}`). Both parse through the same types, so
//! the same value is accepted or refused, and the message names the variable or the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::config::Component;

mod env;

use env::REFUSED;

/// Where Dify's files are: one of the `STORAGE_TYPE`s Upkeep can reach through OpenDAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum StorageConfig {
    /// A directory (Dify's `STORAGE_TYPE=local` with `STORAGE_LOCAL_PATH`, or `opendal` with
    /// `OPENDAL_SCHEME=fs` and `OPENDAL_FS_ROOT`).
    Local(LocalConfig),
    /// Any OpenDAL scheme with its options (Dify's `OPENDAL_SCHEME` and `OPENDAL_<SCHEME>_*`).
    Opendal(OpendalConfig),
    S3(S3Config),
    AliyunOss(AliyunOssConfig),
    AzureBlob(AzureBlobConfig),
    GoogleStorage(GoogleStorageConfig),
    TencentCos(TencentCosConfig),
    HuaweiObs(HuaweiObsConfig),
    /// OCI Object Storage through its S3-compatible endpoint (what Dify's boto3 client uses).
    OciStorage(OciStorageConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Relative paths resolve against the daemon's working directory, as in Dify
    /// (`/app/api` in the images).
    pub root: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpendalConfig {
    /// An OpenDAL scheme built into Upkeep: fs, s3, azblob, gcs, oss, cos, obs.
    pub scheme: String,
    /// The scheme's options, as Dify passes `OPENDAL_<SCHEME>_<OPTION>` (lowercased).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressStyle {
    /// boto3's rule: virtual-hosted on AWS, path-style on a custom endpoint.
    #[default]
    Auto,
    Virtual,
    Path,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket_name: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_s3_region")]
    pub region: String,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub address_style: AddressStyle,
    /// As in Dify: credentials from the instance role; `endpoint` and `address_style` are
    /// then ignored.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub use_aws_managed_iam: bool,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliyunOssConfig {
    pub bucket_name: String,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub auth_version: Option<String>,
    /// Dify puts every key under this prefix (`ALIYUN_OSS_PATH`).
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobConfig {
    pub account_name: String,
    pub account_key: String,
    pub container_name: String,
    /// Default `https://<account_name>.blob.core.windows.net`.
    #[serde(default)]
    pub account_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoogleStorageConfig {
    pub bucket_name: String,
    /// Base64 of the service account JSON; absent means Application Default Credentials.
    #[serde(default)]
    pub service_account_json_base64: Option<String>,
    /// An emulator or private endpoint (Google's SDKs read `STORAGE_EMULATOR_HOST`).
    #[serde(default)]
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TencentCosConfig {
    pub bucket_name: String,
    pub region: String,
    pub secret_id: String,
    pub secret_key: String,
    #[serde(default = "default_https")]
    pub scheme: String,
    /// Used instead of the region's domain when set, as Dify's SDK does.
    #[serde(default)]
    pub custom_domain: Option<String>,
}

fn default_https() -> String {
    "https".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HuaweiObsConfig {
    pub bucket_name: String,
    pub access_key: String,
    pub secret_key: String,
    pub server: String,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub path_style: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OciStorageConfig {
    pub endpoint: String,
    pub region: String,
    pub bucket_name: String,
    pub access_key: String,
    pub secret_key: String,
}

/// A storage setting that is missing, malformed or not supported. `field` is relative to the
/// config object (`bucket_name`, `options.root`); `variable` is its env name when it came from
/// the environment.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", self.variable.as_deref().unwrap_or(&self.field))]
pub struct ConfigError {
    pub field: String,
    pub variable: Option<String>,
    pub message: String,
    /// The field is one this storage type does not have.
    pub unknown: bool,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            variable: None,
            message: message.into(),
            unknown: false,
        }
    }
}

/// The schemes `opendal` configs may name: the services compiled in.
pub const SCHEMES: &[&str] = &["fs", "s3", "azblob", "gcs", "oss", "cos", "obs"];

impl StorageConfig {
    /// Parses and checks a config object (a job's `source` or `target`). The tag is read first
    /// and the rest parsed as that type's plain struct, so errors keep their field path.
    pub fn from_value(value: Value) -> Result<StorageConfig, ConfigError> {
        let Value::Object(mut fields) = value else {
            return Err(ConfigError::new(
                "type",
                "expected an object with a \"type\"",
            ));
        };
        let kind = match fields.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(ConfigError::new("type", "must be a string")),
            None => return Err(ConfigError::new("type", "is required")),
        };
        if let Some((_, why)) = REFUSED.iter().find(|(t, _)| *t == kind) {
            return Err(ConfigError::new(
                "type",
                format!("{kind:?} is not supported: {why}"),
            ));
        }
        let rest = Value::Object(fields);
        let config = match kind.as_str() {
            "local" => StorageConfig::Local(parse(rest)?),
            "opendal" => StorageConfig::Opendal(parse(rest)?),
            "s3" => StorageConfig::S3(parse(rest)?),
            "aliyun-oss" => StorageConfig::AliyunOss(parse(rest)?),
            "azure-blob" => StorageConfig::AzureBlob(parse(rest)?),
            "google-storage" => StorageConfig::GoogleStorage(parse(rest)?),
            "tencent-cos" => StorageConfig::TencentCos(parse(rest)?),
            "huawei-obs" => StorageConfig::HuaweiObs(parse(rest)?),
            "oci-storage" => StorageConfig::OciStorage(parse(rest)?),
            other => {
                return Err(ConfigError::new(
                    "type",
                    format!(
                        "unknown storage type {other:?}; Upkeep supports: {}",
                        SUPPORTED.join(", ")
                    ),
                ));
            }
        };
        config.check()?;
        Ok(config)
    }

    /// Rules serde cannot say: non-empty names, known schemes, settings OpenDAL cannot honour.
    pub fn check(&self) -> Result<(), ConfigError> {
        let required = |field: &str, value: &str| {
            if value.trim().is_empty() {
                Err(ConfigError::new(field, "must not be empty"))
            } else {
                Ok(())
            }
        };
        match self {
            StorageConfig::Local(c) => required("root", &c.root)?,
            StorageConfig::Opendal(c) => {
                if !SCHEMES.contains(&c.scheme.as_str()) {
                    return Err(ConfigError::new(
                        "scheme",
                        format!(
                            "unsupported OpenDAL scheme {:?}; Upkeep is built with: {}",
                            c.scheme,
                            SCHEMES.join(", ")
                        ),
                    ));
                }
            }
            StorageConfig::S3(c) => required("bucket_name", &c.bucket_name)?,
            StorageConfig::AliyunOss(c) => {
                required("bucket_name", &c.bucket_name)?;
                required("endpoint", &c.endpoint)?;
                if c.path.as_deref().is_some_and(|p| p.starts_with('/')) {
                    return Err(ConfigError::new(
                        "path",
                        "must not start with '/' (Dify would keep it in every key)",
                    ));
                }
            }
            StorageConfig::AzureBlob(c) => {
                required("account_name", &c.account_name)?;
                required("container_name", &c.container_name)?;
                if c.account_key == "managedidentity" {
                    return Err(ConfigError::new(
                        "account_key",
                        "managed identity is not supported; give the account key",
                    ));
                }
            }
            StorageConfig::GoogleStorage(c) => required("bucket_name", &c.bucket_name)?,
            StorageConfig::TencentCos(c) => {
                required("bucket_name", &c.bucket_name)?;
                required("region", &c.region)?;
                if !matches!(c.scheme.as_str(), "http" | "https") {
                    return Err(ConfigError::new("scheme", "must be http or https"));
                }
            }
            StorageConfig::HuaweiObs(c) => {
                required("bucket_name", &c.bucket_name)?;
                required("server", &c.server)?;
                if c.path_style {
                    return Err(ConfigError::new(
                        "path_style",
                        "path-style OBS addressing is not supported by OpenDAL's OBS service",
                    ));
                }
            }
            StorageConfig::OciStorage(c) => {
                required("bucket_name", &c.bucket_name)?;
                required("endpoint", &c.endpoint)?;
            }
        }
        Ok(())
    }

    /// The `STORAGE_TYPE` value Dify writes into `upload_files.storage_type` for this backend.
    pub fn dify_type(&self) -> &'static str {
        match self {
            StorageConfig::Local(_) => "local",
            StorageConfig::Opendal(_) => "opendal",
            StorageConfig::S3(_) => "s3",
            StorageConfig::AliyunOss(_) => "aliyun-oss",
            StorageConfig::AzureBlob(_) => "azure-blob",
            StorageConfig::GoogleStorage(_) => "google-storage",
            StorageConfig::TencentCos(_) => "tencent-cos",
            StorageConfig::HuaweiObs(_) => "huawei-obs",
            StorageConfig::OciStorage(_) => "oci-storage",
        }
    }

    /// Where the objects are, for messages and logs: never a secret.
    pub fn describe(&self) -> String {
        match self {
            StorageConfig::Local(c) => format!("local {}", absolute(&c.root)),
            StorageConfig::Opendal(c) if c.scheme == "fs" => format!(
                "opendal fs {}",
                absolute(c.options.get("root").map_or("storage", String::as_str))
            ),
            StorageConfig::Opendal(c) => {
                let place = ["bucket", "container", "root", "endpoint"]
                    .iter()
                    .filter_map(|k| c.options.get(*k).map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(" ");
                format!("opendal {} {place}", c.scheme)
            }
            StorageConfig::S3(c) => format!(
                "s3://{}{}",
                c.bucket_name,
                c.endpoint
                    .as_deref()
                    .filter(|_| !c.use_aws_managed_iam)
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
            StorageConfig::AliyunOss(c) => format!(
                "oss://{}/{} at {}",
                c.bucket_name,
                c.path.as_deref().unwrap_or(""),
                c.endpoint
            ),
            StorageConfig::AzureBlob(c) => {
                format!("azblob://{}/{}", c.account_name, c.container_name)
            }
            StorageConfig::GoogleStorage(c) => format!("gs://{}", c.bucket_name),
            StorageConfig::TencentCos(c) => format!("cos://{} ({})", c.bucket_name, c.region),
            StorageConfig::HuaweiObs(c) => format!("obs://{} at {}", c.bucket_name, c.server),
            StorageConfig::OciStorage(c) => format!("oci://{} at {}", c.bucket_name, c.endpoint),
        }
    }

    /// The local directory, for fs-backed configs.
    pub fn local_root(&self) -> Option<&str> {
        match self {
            StorageConfig::Local(c) => Some(&c.root),
            StorageConfig::Opendal(c) if c.scheme == "fs" => {
                Some(c.options.get("root").map_or("storage", String::as_str))
            }
            _ => None,
        }
    }
}

/// A root as the daemon resolves it (relative to its working directory, as Dify does).
pub fn absolute(root: &str) -> String {
    std::path::absolute(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| root.to_string())
}

/// The `type`s `from_value` accepts (the variants of `StorageConfig`).
pub const SUPPORTED: &[&str] = &[
    "local",
    "opendal",
    "s3",
    "aliyun-oss",
    "azure-blob",
    "google-storage",
    "tencent-cos",
    "huawei-obs",
    "oci-storage",
];

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let located = crate::fieldpath::locate(None, &path, &e.into_inner().to_string());
        ConfigError {
            unknown: located.unknown,
            ..ConfigError::new(located.field, located.message)
        }
    })
}

/// Booleans as pydantic reads them from the env (`true/false/1/0/yes/no/on/off`), or JSON ones.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    match B::deserialize(d)? {
        B::Bool(b) => Ok(b),
        B::Text(s) => crate::config::parse_bool(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a boolean, got {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(kind: &str, vars: &[(&str, &str)]) -> Component {
        Component {
            kind: kind.into(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn dify_defaults_give_the_local_storage_directory() {
        let c = StorageConfig::from_env(&env("opendal", &[])).unwrap();
        assert_eq!(c.local_root(), Some("storage"));
        let c = StorageConfig::from_env(&env("opendal", &[("OPENDAL_FS_ROOT", "/data")])).unwrap();
        assert_eq!(c.local_root(), Some("/data"));
        let c = StorageConfig::from_env(&env("local", &[("STORAGE_LOCAL_PATH", "/x")])).unwrap();
        assert_eq!(c, StorageConfig::Local(LocalConfig { root: "/x".into() }));
    }

    #[test]
    fn opendal_options_are_the_lowercased_suffixes() {
        let c = StorageConfig::from_env(&env(
            "opendal",
            &[
                ("OPENDAL_SCHEME", "s3"),
                ("OPENDAL_S3_BUCKET", "b"),
                ("OPENDAL_S3_ACCESS_KEY_ID", "k"),
                ("OPENDAL_FS_ROOT", "ignored"),
            ],
        ))
        .unwrap();
        let StorageConfig::Opendal(c) = c else {
            panic!("{c:?}")
        };
        assert_eq!(c.scheme, "s3");
        assert_eq!(c.options.get("bucket").map(String::as_str), Some("b"));
        assert_eq!(
            c.options.get("access_key_id").map(String::as_str),
            Some("k")
        );
        assert!(!c.options.contains_key("root"));
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = StorageConfig::from_env(&env("s3", &[("S3_REGION", "eu-west-1")])).unwrap_err();
        assert_eq!(e.variable.as_deref(), Some("S3_BUCKET_NAME"), "{e}");
        let e = StorageConfig::from_env(&env(
            "s3",
            &[("S3_BUCKET_NAME", "b"), ("S3_ADDRESS_STYLE", "sideways")],
        ))
        .unwrap_err();
        assert_eq!(e.variable.as_deref(), Some("S3_ADDRESS_STYLE"), "{e}");
        let e = StorageConfig::from_env(&env(
            "s3",
            &[("S3_BUCKET_NAME", "b"), ("S3_USE_AWS_MANAGED_IAM", "maybe")],
        ))
        .unwrap_err();
        assert_eq!(e.variable.as_deref(), Some("S3_USE_AWS_MANAGED_IAM"), "{e}");
        let e = StorageConfig::from_env(&env("baidu-obs", &[])).unwrap_err();
        assert_eq!(e.variable.as_deref(), Some("STORAGE_TYPE"));
        assert!(e.message.contains("not supported"), "{e}");
        let e =
            StorageConfig::from_env(&env("opendal", &[("OPENDAL_SCHEME", "hdfs")])).unwrap_err();
        assert_eq!(e.variable.as_deref(), Some("OPENDAL_SCHEME"), "{e}");
    }

    #[test]
    fn env_values_parse_like_pydantic() {
        let c = StorageConfig::from_env(&env(
            "s3",
            &[
                ("S3_BUCKET_NAME", "difyai"),
                ("S3_USE_AWS_MANAGED_IAM", "True"),
                ("S3_ADDRESS_STYLE", "path"),
                ("S3_UNRELATED", "ignored"),
            ],
        ))
        .unwrap();
        let StorageConfig::S3(s3) = c else {
            panic!("{c:?}")
        };
        assert!(s3.use_aws_managed_iam);
        assert_eq!(s3.address_style, AddressStyle::Path);
        assert_eq!(s3.region, "us-east-1");
    }

    #[test]
    fn params_errors_name_the_field() {
        let e = StorageConfig::from_value(json!({"type": "s3"})).unwrap_err();
        assert_eq!(e.field, "bucket_name", "{e}");
        let e = StorageConfig::from_value(json!({"type": "s3", "bucket_name": "b", "bukket": 1}))
            .unwrap_err();
        assert_eq!(e.field, "bukket", "{e}");
        let e = StorageConfig::from_value(json!({"type": "ftp"})).unwrap_err();
        assert_eq!(e.field, "type", "{e}");
        let e = StorageConfig::from_value(json!({"type": "volcengine-tos"})).unwrap_err();
        assert_eq!(e.field, "type", "{e}");
        let e = StorageConfig::from_value(json!({"type": "aliyun-oss", "bucket_name": "b",
            "endpoint": "e", "access_key": "a", "secret_key": "s", "path": "/p"}))
        .unwrap_err();
        assert_eq!(e.field, "path", "{e}");
        let e = StorageConfig::from_value(json!({"type": "local", "root": " "})).unwrap_err();
        assert_eq!(e.field, "root", "{e}");
    }
}
