//! A storage config from Dify's own environment (`STORAGE_TYPE` and that backend's
//! variables), with the types Dify accepts that Upkeep cannot speak refused by name.

use super::*;

/// `STORAGE_TYPE`s Dify accepts that no OpenDAL service in Upkeep speaks.
pub(super) const REFUSED: &[(&str, &str)] = &[
    (
        "baidu-obs",
        "Baidu BOS has no OpenDAL service in Upkeep; use {\"type\": \"opendal\", \"scheme\": \"s3\"} with BOS's S3-compatible endpoint",
    ),
    (
        "volcengine-tos",
        "Volcengine TOS has no OpenDAL service in Upkeep; use {\"type\": \"opendal\", \"scheme\": \"s3\"} with TOS's S3-compatible endpoint",
    ),
    (
        "supabase",
        "Supabase storage has no OpenDAL service in Upkeep",
    ),
    (
        "clickzetta-volume",
        "ClickZetta volumes are SQL volumes, not an object store",
    ),
];

/// How each type's variables are named in Dify's env: `(type, prefix, fields)`.
const ENV_FIELDS: &[(&str, &str, &[&str])] = &[
    (
        "s3",
        "S3_",
        &[
            "bucket_name",
            "endpoint",
            "region",
            "access_key",
            "secret_key",
            "address_style",
            "use_aws_managed_iam",
        ],
    ),
    (
        "aliyun-oss",
        "ALIYUN_OSS_",
        &[
            "bucket_name",
            "endpoint",
            "access_key",
            "secret_key",
            "region",
            "auth_version",
            "path",
        ],
    ),
    (
        "azure-blob",
        "AZURE_BLOB_",
        &[
            "account_name",
            "account_key",
            "container_name",
            "account_url",
        ],
    ),
    (
        "google-storage",
        "GOOGLE_STORAGE_",
        &["bucket_name", "service_account_json_base64"],
    ),
    (
        "tencent-cos",
        "TENCENT_COS_",
        &[
            "bucket_name",
            "region",
            "secret_id",
            "secret_key",
            "scheme",
            "custom_domain",
        ],
    ),
    (
        "huawei-obs",
        "HUAWEI_OBS_",
        &[
            "bucket_name",
            "access_key",
            "secret_key",
            "server",
            "path_style",
        ],
    ),
    (
        "oci-storage",
        "OCI_",
        &[
            "endpoint",
            "region",
            "bucket_name",
            "access_key",
            "secret_key",
        ],
    ),
];

impl StorageConfig {
    /// The storage Dify's api container uses, from the variables it reads.
    pub fn from_env(storage: &Component) -> Result<StorageConfig, ConfigError> {
        let kind = storage.kind.as_str();
        let env_error = |field: &str, variable: String, message: String| ConfigError {
            field: field.to_string(),
            variable: Some(variable),
            message,
            unknown: false,
        };
        match kind {
            "local" => {
                return Ok(StorageConfig::Local(LocalConfig {
                    root: storage
                        .get("STORAGE_LOCAL_PATH")
                        .unwrap_or("storage")
                        .into(),
                }));
            }
            "opendal" => {
                let scheme = storage.get("OPENDAL_SCHEME").unwrap_or("fs").to_string();
                let prefix = format!("OPENDAL_{}_", scheme.to_ascii_uppercase());
                let options: BTreeMap<String, String> = storage
                    .vars
                    .iter()
                    .filter_map(|(k, v)| {
                        let option = k.strip_prefix(&prefix)?;
                        Some((option.to_ascii_lowercase(), v.clone()))
                    })
                    .collect();
                let config = StorageConfig::Opendal(OpendalConfig { scheme, options });
                return config.check().map(|()| config).map_err(|e| {
                    let variable = match e.field.strip_prefix("options.") {
                        Some(option) => format!("{prefix}{}", option.to_ascii_uppercase()),
                        None => "OPENDAL_SCHEME".into(),
                    };
                    env_error(&e.field, variable, e.message)
                });
            }
            _ => {}
        }
        if let Some((_, why)) = REFUSED.iter().find(|(t, _)| *t == kind) {
            return Err(env_error(
                "type",
                "STORAGE_TYPE".into(),
                format!("{kind:?} is not supported: {why}"),
            ));
        }
        let Some((_, prefix, fields)) = ENV_FIELDS.iter().find(|(t, _, _)| *t == kind) else {
            return Err(env_error(
                "type",
                "STORAGE_TYPE".into(),
                format!("unknown storage type {kind:?}"),
            ));
        };
        let mut object = Map::new();
        object.insert("type".into(), Value::String(kind.into()));
        for field in *fields {
            let var = format!("{prefix}{}", field.to_ascii_uppercase());
            if let Some(v) = storage.get(&var) {
                object.insert((*field).into(), Value::String(v.into()));
            }
        }
        // Google's SDKs (Dify's included) honour this variable for emulators.
        if kind == "google-storage"
            && let Some(host) = storage.get("STORAGE_EMULATOR_HOST")
        {
            object.insert("endpoint".into(), Value::String(host.into()));
        }
        let variable_of = |field: &str| match field {
            "endpoint" if kind == "google-storage" => "STORAGE_EMULATOR_HOST".to_string(),
            "type" => "STORAGE_TYPE".to_string(),
            f => format!("{prefix}{}", f.to_ascii_uppercase()),
        };
        Self::from_value(Value::Object(object)).map_err(|e| {
            let variable = variable_of(&e.field);
            env_error(&e.field, variable, e.message)
        })
    }
}
