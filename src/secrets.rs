//! Secrets in job params, at rest: `upkeep.jobs.params` and `upkeep.schedules.params` live in
//! Dify's own database, so anyone with a replica or a dump of it would get the cloud keys a
//! job was given. Every value of a secret-bearing field (one rule, `is_secret`, for every
//! storage and vector store option) and every URL with a password is stored sealed with
//! AES-256-GCM under a key derived (HKDF-SHA256) from `UPKEEP_SECRET_KEY`, or else Dify's own
//! `SECRET_KEY`, which a sidecar on Dify's `.env` already has. Another daemon with the same
//! key opens them and resumes the job; one without it fails the job and says why.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

/// Sealed values are strings starting with this, then `<key id>:<base64 nonce+ciphertext>`.
const PREFIX: &str = "upkeep-sealed:v1:";
const SALT: &[u8] = b"upkeep job params v1";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SealError {
    #[error(
        "carries a secret, and this daemon has no key to encrypt it at rest with: set \
         UPKEEP_SECRET_KEY (or Dify's SECRET_KEY, which a sidecar on Dify's .env has)"
    )]
    NoKey { field: String },
    #[error(
        "the job's secrets were encrypted with key {sealed_with}, and this daemon has {}: \
         run it with the same UPKEEP_SECRET_KEY (or SECRET_KEY) as the daemon that took the job, \
         or re-encrypt with `upkeep rekey`",
        .have.as_deref().unwrap_or("no key")
    )]
    WrongKey {
        sealed_with: String,
        have: Option<String>,
    },
    #[error("a sealed value at {field} is damaged")]
    Damaged { field: String },
}

impl SealError {
    /// The params field it is about, where there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            SealError::NoKey { field } | SealError::Damaged { field } => Some(field),
            SealError::WrongKey { .. } => None,
        }
    }
}

/// Whether a field of that name carries a secret: the one rule for sealing at rest and for
/// redaction in views, over every OpenDAL and vector store option name.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "credential",
        "api_key",
        "access_key",
        "account_key",
        "service_account",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k == "key"
        || k == "key_id"
        || k.ends_with("_key") && !k.ends_with("idempotency_key")
}

/// `scheme://user:password@host...`: a URL that carries a password.
pub fn has_credentials(s: &str) -> bool {
    let Some((_, rest)) = s.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

pub fn is_sealed(s: &str) -> bool {
    s.starts_with(PREFIX)
}

#[derive(Clone)]
struct Key {
    aead: Arc<LessSafeKey>,
    /// Names the key (not secret): which key a value was sealed with.
    id: String,
}

/// Seals and opens secrets with the daemon's key (or knows it has none).
#[derive(Clone, Default)]
pub struct Sealer {
    key: Option<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key", &self.key.as_ref().map(|k| k.id.as_str()))
            .finish()
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Sealer {
    /// From a key string (any length; its strength is the operator's).
    pub fn new(secret: Option<&str>) -> Sealer {
        let key = secret.filter(|s| !s.is_empty()).map(|s| {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(s.as_bytes());
            let mut bytes = [0u8; 32];
            let mut id = [0u8; 4];
            // The lengths are HKDF-SHA256's to give (at most 255 × 32 bytes).
            let filled = prk
                .expand(&[b"aes-256-gcm"], Len(32))
                .and_then(|okm| okm.fill(&mut bytes))
                .and_then(|_| prk.expand(&[b"key id"], Len(4)))
                .and_then(|okm| okm.fill(&mut id));
            debug_assert!(filled.is_ok());
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .unwrap_or_else(|_| unreachable!("32 bytes is AES-256's key length"));
            Key {
                aead: Arc::new(LessSafeKey::new(unbound)),
                id: id.iter().map(|b| format!("{b:02x}")).collect(),
            }
        });
        Sealer { key }
    }

    /// `UPKEEP_SECRET_KEY` wins (Upkeep's own); else Dify's `SECRET_KEY`.
    pub fn from_vars(upkeep: Option<&str>, dify: Option<&str>) -> Sealer {
        Sealer::new(upkeep.filter(|s| !s.is_empty()).or(dify))
    }

    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.id.as_str())
    }

    /// `params` with every secret sealed (values sealed already are kept).
    pub fn seal(&self, params: Value) -> Result<Value, SealError> {
        self.walk(params, "params", false, &|s, field| self.seal_one(s, field))
    }

    /// `params` with every sealed value opened.
    pub fn open(&self, params: Value) -> Result<Value, SealError> {
        self.walk(params, "params", false, &|s, field| {
            if is_sealed(&s) {
                self.open_one(&s, field)
            } else {
                Ok(s)
            }
        })
    }

    fn walk(
        &self,
        value: Value,
        path: &str,
        secret: bool,
        f: &dyn Fn(String, &str) -> Result<String, SealError>,
    ) -> Result<Value, SealError> {
        Ok(match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let at = format!("{path}.{k}");
                        let v = self.walk(v, &at, is_secret(&k), f)?;
                        Ok((k, v))
                    })
                    .collect::<Result<_, SealError>>()?,
            ),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| self.walk(v, &format!("{path}[{i}]"), secret, f))
                    .collect::<Result<_, SealError>>()?,
            ),
            Value::String(s) if secret || has_credentials(&s) || is_sealed(&s) => {
                Value::String(f(s, path)?)
            }
            other => other,
        })
    }

    fn seal_one(&self, s: String, field: &str) -> Result<String, SealError> {
        if is_sealed(&s) {
            return Ok(s);
        }
        let key = self.key.as_ref().ok_or_else(|| SealError::NoKey {
            field: field.to_string(),
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Damaged {
                field: field.to_string(),
            })?;
        let mut data = s.into_bytes();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.id.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Damaged {
                field: field.to_string(),
            })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!(
            "{PREFIX}{}:{}",
            key.id,
            STANDARD_NO_PAD.encode(out)
        ))
    }

    fn open_one(&self, s: &str, field: &str) -> Result<String, SealError> {
        let damaged = || SealError::Damaged {
            field: field.to_string(),
        };
        let (id, body) = s[PREFIX.len()..].split_once(':').ok_or_else(damaged)?;
        let key = match &self.key {
            Some(k) if k.id == id => k,
            other => {
                return Err(SealError::WrongKey {
                    sealed_with: id.to_string(),
                    have: other.as_ref().map(|k| k.id.clone()),
                });
            }
        };
        let raw = STANDARD_NO_PAD.decode(body).map_err(|_| damaged())?;
        if raw.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut data = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(key.id.as_bytes()), &mut data)
            .map_err(|_| damaged())?;
        String::from_utf8(plain.to_vec()).map_err(|_| damaged())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> Value {
        json!({"target": {"type": "s3", "bucket_name": "b", "access_key": "AKIA-MARKER",
                          "secret_key": "MARKER-SECRET", "endpoint": "http://127.0.0.1:9000"},
               "source": {"type": "milvus", "uri": "http://root:MARKER-PW@milvus:19530",
                          "token": null},
               "tables": ["messages"], "batch_size": 10})
    }

    #[test]
    fn seals_every_secret_and_opens_them_again() {
        let sealer = Sealer::new(Some("sk-one"));
        let sealed = sealer.seal(params()).expect("sealed");
        let text = sealed.to_string();
        assert!(!text.contains("MARKER"), "{text}");
        assert_eq!(sealed["target"]["bucket_name"], "b");
        assert_eq!(sealed["target"]["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(sealed["source"]["token"], Value::Null);
        // Sealing twice changes nothing; another daemon with the same key opens them.
        assert_eq!(sealer.seal(sealed.clone()).expect("again"), sealed);
        let other = Sealer::from_vars(None, Some("sk-one"));
        assert_eq!(other.open(sealed.clone()).expect("opened"), params());
    }

    #[test]
    fn without_the_key_it_says_so() {
        let sealed = Sealer::new(Some("sk-one")).seal(params()).expect("sealed");
        let err = Sealer::new(Some("sk-two"))
            .open(sealed.clone())
            .unwrap_err();
        assert!(matches!(err, SealError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("UPKEEP_SECRET_KEY"), "{err}");
        let err = Sealer::default().open(sealed).unwrap_err();
        assert!(err.to_string().contains("this daemon has no key"), "{err}");
        let err = Sealer::default().seal(params()).unwrap_err();
        // Fields in name order: `source.uri` (a URL with a password) comes first.
        assert_eq!(err.field(), Some("params.source.uri"));
        // No secret, no key needed.
        let plain = json!({"tables": ["messages"]});
        assert_eq!(
            Sealer::default().seal(plain.clone()).expect("nothing"),
            plain
        );
    }

    #[test]
    fn a_damaged_value_is_refused() {
        let sealer = Sealer::new(Some("sk-one"));
        let sealed = sealer.seal(params()).expect("sealed");
        let mut s = sealed["target"]["secret_key"]
            .as_str()
            .expect("sealed string")
            .to_string();
        s.push('A');
        let mut broken = sealed;
        broken["target"]["secret_key"] = json!(s);
        let err = sealer.open(broken).unwrap_err();
        assert_eq!(err.field(), Some("params.target.secret_key"));
    }

    #[test]
    fn the_rule_knows_every_option_name() {
        for k in [
            "secret_key",
            "access_key",
            "access_key_id",
            "secret_access_key",
            "account_key",
            "api_key",
            "token",
            "password",
            "service_account_json_base64",
            "key",
            "key_id",
            "key_secret",
            "namespace_password",
        ] {
            assert!(is_secret(k), "{k}");
        }
        for k in [
            "bucket_name",
            "endpoint",
            "idempotency_key",
            "region",
            "user",
            "uri",
        ] {
            assert!(!is_secret(k), "{k}");
        }
        assert!(has_credentials("postgres://u:p@h/db"));
        assert!(!has_credentials("postgres://u@h/db"));
        assert!(!has_credentials("http://h/a:b@c"));
    }
}

/// Re-seals every sealed value in jobs and schedules that `old` sealed, with `new` (after
/// `UPKEEP_SECRET_KEY` changed). Values `new` already opens are left; one neither key opens
/// stops the run before anything is written. Returns the rows changed: (jobs, schedules).
pub async fn rekey(
    pool: &sqlx::PgPool,
    old: &Sealer,
    new: &Sealer,
) -> Result<(u64, u64), RekeyError> {
    let mut tx = pool.begin().await?;
    let mut changed = [0u64; 2];
    for (i, table) in ["jobs", "schedules"].iter().enumerate() {
        let rows: Vec<(uuid::Uuid, Value)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, params FROM upkeep.{table} WHERE strpos(params::text, $1) > 0 FOR UPDATE"
        )))
        .bind(PREFIX)
        .fetch_all(&mut *tx)
        .await?;
        for (id, params) in rows {
            let plain = match new.open(params.clone()) {
                Ok(_) => continue,
                Err(_) => old.open(params).map_err(|e| RekeyError::Unreadable {
                    table,
                    id,
                    error: e,
                })?,
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE upkeep.{table} SET params = $2 WHERE id = $1"
            )))
            .bind(id)
            .bind(new.seal(plain).map_err(|e| RekeyError::Unreadable {
                table,
                id,
                error: e,
            })?)
            .execute(&mut *tx)
            .await?;
            changed[i] += 1;
        }
    }
    tx.commit().await?;
    Ok((changed[0], changed[1]))
}

#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error("{table} {id}: {error}")]
    Unreadable {
        table: &'static str,
        id: uuid::Uuid,
        error: SealError,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// `text` with the password of every `scheme://user:password@host` in it replaced by `***`:
/// for descriptions and error messages that quote a URL they were given.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | ')'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                out.push_str(&format!("{user}:***@{host}"));
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod scrub_tests {
    #[test]
    fn hides_passwords_in_urls_within_text() {
        assert_eq!(
            super::scrub("milvus at http://root:pw@h:19530 (database x); see https://a.b/c"),
            "milvus at http://root:***@h:19530 (database x); see https://a.b/c"
        );
        assert_eq!(super::scrub("no urls"), "no urls");
    }
}
