//! pgvector over sqlx, writing what Dify's pgvector code writes: one table per dataset,
//! `embedding_<class_prefix>` written unquoted (so Postgres folds it to lower case and cuts it
//! to 63 bytes), `id uuid` = `doc_id`, `text`, `meta jsonb`, `embedding vector(dim)`, Dify's
//! HNSW cosine index (none above 2000 dimensions, as pgvector allows) and, with
//! `PGVECTOR_PG_BIGM`, its bigm index. Dify's plain INSERT raises on a rerun; Upkeep's writes
//! are keyed by `id`. A source pages by `id`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool, Row};
use uuid::Uuid;

use super::sql::{self, failed, missing_table, not_allowed, unquoted, vector_literal};
use super::store::{
    Adapter, CollectionInfo, Health, Hit, Location, Page, Point, VectorError, VectorSource,
    VectorStore, VectorTarget, last_per_doc_id,
};
use crate::config::{Component, parse_bool};

mod target;

const NAME: &str = "pgvector";
/// pgvector's HNSW index takes at most this many dimensions; Dify creates none above.
const HNSW_MAX_DIMENSION: usize = 2000;

/// `{"type": "pgvector", ...}`: Dify's `PGVECTOR_*` variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PgvectorConfig {
    /// `PGVECTOR_HOST` (Dify's fallback: `localhost`).
    pub host: String,
    /// `PGVECTOR_PORT` (Dify's default 5433; its docker `.env` says 5432).
    #[serde(default = "default_port")]
    pub port: u16,
    /// `PGVECTOR_USER` (`postgres`).
    #[serde(default = "postgres")]
    pub user: String,
    /// `PGVECTOR_PASSWORD`.
    #[serde(default)]
    pub password: Option<String>,
    /// `PGVECTOR_DATABASE` (`postgres`).
    #[serde(default = "postgres")]
    pub database: String,
    /// `PGVECTOR_PG_BIGM`: tables Upkeep creates get Dify's `pg_bigm` index on `text`.
    #[serde(default)]
    pub pg_bigm: bool,
}

fn default_port() -> u16 {
    5433
}
fn postgres() -> String {
    "postgres".into()
}

pub struct PgvectorStore {
    pool: PgPool,
    database: String,
    user: String,
    bigm: bool,
    version: String,
    /// pgvector's version when the extension is created in the database.
    extension: Option<String>,
    /// The version the server could create, when it has pgvector at all.
    available: Option<String>,
}

/// The table Dify keeps `collection` in, as Postgres names it.
fn table(collection: &str) -> Result<String, VectorError> {
    unquoted(&format!("embedding_{collection}"))
}

/// The suffix of Dify's index names: md5 of the table name as Dify spells it (case kept,
/// uncut), first 8 hex digits.
fn index_hash(collection: &str) -> String {
    use md5::Digest;
    let digest = md5::Md5::digest(format!("embedding_{collection}").as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid_of(doc_id: &str) -> Result<Uuid, VectorError> {
    Uuid::parse_str(doc_id).map_err(|_| {
        VectorError::Layout(format!(
            "doc_id {doc_id:?} is not a UUID: pgvector's id column is a uuid, and Dify would \
             store such a record under a new random id no delete could find"
        ))
    })
}

/// The doc_ids that are UUIDs, by the UUID Postgres will answer with (others cannot be there).
fn by_uuid(doc_ids: &[String]) -> HashMap<Uuid, &String> {
    doc_ids
        .iter()
        .filter_map(|d| Uuid::parse_str(d).ok().map(|u| (u, d)))
        .collect()
}

fn metadata_of(
    meta: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, VectorError> {
    match meta {
        serde_json::Value::Object(m) => Ok(m),
        other => Err(VectorError::Layout(format!(
            "a row's meta is not a JSON object: {other}"
        ))),
    }
}

impl PgvectorStore {
    async fn rows_by_id(
        &self,
        at: &Location,
        ids: &[String],
        call: &'static str,
    ) -> Result<Vec<Point>, VectorError> {
        let wanted = by_uuid(ids);
        let keys: Vec<Uuid> = wanted.keys().copied().collect();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, text, meta, embedding::real[] AS embedding FROM {} WHERE id = ANY($1)",
            table(&at.collection)?
        )))
        .bind(&keys)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Err(e) if missing_table(&e) => return Ok(Vec::new()),
            r => r.map_err(failed(NAME, call))?,
        };
        rows.into_iter()
            .map(|r| {
                let id: Uuid = r.try_get("id").map_err(failed(NAME, call))?;
                Ok(Point {
                    id: wanted
                        .get(&id)
                        .map_or_else(|| id.to_string(), |d| (*d).clone()),
                    text: r.try_get("text").map_err(failed(NAME, call))?,
                    metadata: metadata_of(r.try_get("meta").map_err(failed(NAME, call))?)?,
                    vector: r.try_get("embedding").map_err(failed(NAME, call))?,
                })
            })
            .collect()
    }

    /// Creates the extension when the database lacks it, as Dify does.
    async fn ensure_extension(&self, conn: &mut sqlx::PgConnection) -> Result<(), VectorError> {
        let there: Option<String> =
            sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                .fetch_optional(&mut *conn)
                .await
                .map_err(failed(NAME, "ensure"))?;
        if there.is_some() {
            return Ok(());
        }
        if self.available.is_none() {
            return Err(VectorError::Config(format!(
                "this server has no pgvector: install the extension on it (Dify's compose runs \
                 the image pgvector/pgvector:pg16), then CREATE EXTENSION vector in database {}",
                self.database
            )));
        }
        sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                if not_allowed(&e) {
                    VectorError::Config(format!(
                        "the role {} may not create the vector extension in database {}: have \
                         a superuser run CREATE EXTENSION vector there, or grant the role CREATE",
                        self.user, self.database
                    ))
                } else {
                    VectorError::store(NAME, "create extension", e)
                }
            })?;
        Ok(())
    }
}

impl Adapter for PgvectorStore {
    const KIND: &'static str = NAME;
    type Config = PgvectorConfig;

    fn from_env(env: &Component) -> Result<PgvectorConfig, String> {
        let text = |name: &str, default: &str| env.get(name).unwrap_or(default).to_string();
        let port = match env.get("PGVECTOR_PORT") {
            None => default_port(),
            Some(v) => v
                .parse()
                .map_err(|_| format!("PGVECTOR_PORT={v:?} is not a port number"))?,
        };
        let pg_bigm = match env.get("PGVECTOR_PG_BIGM") {
            None => false,
            Some(v) => {
                parse_bool(v).ok_or_else(|| format!("PGVECTOR_PG_BIGM={v:?} is not a boolean"))?
            }
        };
        Ok(PgvectorConfig {
            host: text("PGVECTOR_HOST", "localhost"),
            port,
            user: text("PGVECTOR_USER", "postgres"),
            password: env.get("PGVECTOR_PASSWORD").map(str::to_string),
            database: text("PGVECTOR_DATABASE", "postgres"),
            pg_bigm,
        })
    }

    fn location(config: &PgvectorConfig) -> String {
        format!(
            "pgvector at {}:{} (database {})",
            config.host, config.port, config.database
        )
    }

    async fn open(config: &PgvectorConfig) -> Result<Self, VectorError> {
        let options = sql::options(
            &config.host,
            config.port,
            &config.user,
            config.password.as_deref(),
            &config.database,
        );
        let pool = sql::connect(NAME, options).await?;
        let row = sqlx::query(
            "SELECT current_setting('server_version') AS version, \
             (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS extension, \
             (SELECT default_version FROM pg_available_extensions WHERE name = 'vector') AS available",
        )
        .fetch_one(&pool)
        .await
        .map_err(failed(NAME, "connect"))?;
        let get = |c: &str| {
            row.try_get::<Option<String>, _>(c)
                .map_err(failed(NAME, "connect"))
        };
        Ok(PgvectorStore {
            version: get("version")?.unwrap_or_default(),
            extension: get("extension")?,
            available: get("available")?,
            pool,
            database: config.database.clone(),
            user: config.user.clone(),
            bigm: config.pg_bigm,
        })
    }
}

impl VectorStore for PgvectorStore {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn health(&self) -> Result<Health, VectorError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(failed(NAME, "health"))?;
        let extension = match (&self.extension, &self.available) {
            (Some(v), _) => format!("pgvector {v} in database {}", self.database),
            (None, Some(v)) => format!(
                "pgvector {v} available, not yet created in database {} (created on the first write, as Dify does)",
                self.database
            ),
            (None, None) => "no pgvector on this server".into(),
        };
        Ok(Health {
            detail: Some(format!("postgres {} answered; {extension}", self.version)),
            version: self.version.clone(),
        })
    }

    async fn describe(&self, collection: &str) -> Result<Option<CollectionInfo>, VectorError> {
        let name = table(collection)?;
        let row = sqlx::query(
            "SELECT format_type(a.atttypid, a.atttypmod) AS column_type, \
             EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                     JOIN pg_am m ON m.oid = c.relam \
                     WHERE i.indrelid = a.attrelid AND m.amname = 'hnsw') AS hnsw \
             FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attname = 'embedding' AND NOT a.attisdropped",
        )
        .bind(&name)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed(NAME, "describe"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let column: String = row
            .try_get("column_type")
            .map_err(failed(NAME, "describe"))?;
        let hnsw: bool = row.try_get("hnsw").map_err(failed(NAME, "describe"))?;
        let dimension = column
            .strip_prefix("vector(")
            .and_then(|d| d.strip_suffix(')'))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                VectorError::Layout(format!(
                    "table {name}: embedding is {column}, not Dify's vector(dimension)"
                ))
            })?;
        Ok(Some(CollectionInfo {
            dimension: Some(dimension),
            distance: "cosine".into(),
            layout: if hnsw { "hnsw" } else { "no-index" }.into(),
        }))
    }
}

impl VectorSource for PgvectorStore {
    async fn read_page(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
        vectors: bool,
    ) -> Result<Page, VectorError> {
        let after = cursor.map(uuid_of).transpose()?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, text, meta{} FROM {} WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
            if vectors {
                ", embedding::real[] AS embedding"
            } else {
                ""
            },
            table(&at.collection)?
        )))
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Err(e) if missing_table(&e) => return Ok(Page::default()),
            r => r.map_err(failed(NAME, "read"))?,
        };
        let mut points = Vec::with_capacity(rows.len());
        for r in rows {
            let id: Uuid = r.try_get("id").map_err(failed(NAME, "read"))?;
            points.push(Point {
                id: id.to_string(),
                text: r.try_get("text").map_err(failed(NAME, "read"))?,
                metadata: metadata_of(r.try_get("meta").map_err(failed(NAME, "read"))?)?,
                vector: if vectors {
                    r.try_get("embedding").map_err(failed(NAME, "read"))?
                } else {
                    Vec::new()
                },
            });
        }
        let next = (points.len() == limit)
            .then(|| points.last().map(|p| p.id.clone()))
            .flatten();
        Ok(Page { points, next })
    }

    async fn fetch(&self, at: &Location, ids: &[String]) -> Result<Vec<Point>, VectorError> {
        self.rows_by_id(at, ids, "fetch").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_dify_and_postgres_make_them() {
        let collection = "Vector_index_3f1c2a4b_0000_4000_8000_0123456789ab_Node";
        assert_eq!(
            table(collection).expect("plain"),
            "\"embedding_vector_index_3f1c2a4b_0000_4000_8000_0123456789ab_nod\""
        );
        // md5("embedding_Vector_index_3f1c2a4b_0000_4000_8000_0123456789ab_Node")
        let hash = index_hash(collection);
        assert_eq!(hash.len(), 8);
        assert_ne!(hash, index_hash(&collection.to_lowercase()), "case counts");
    }

    #[test]
    fn env_as_dify_reads_it() {
        let env = Component {
            kind: NAME.into(),
            vars: vec![
                ("PGVECTOR_HOST".into(), "pgvector".into()),
                ("PGVECTOR_PORT".into(), "5432".into()),
                ("PGVECTOR_PASSWORD".into(), "difyai123456".into()),
                ("PGVECTOR_DATABASE".into(), "dify".into()),
            ],
        };
        let c = PgvectorStore::from_env(&env).expect("config");
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.user.as_str(),
                c.database.as_str(),
                c.pg_bigm
            ),
            ("pgvector", 5432, "postgres", "dify", false)
        );
        let defaults = PgvectorStore::from_env(&Component {
            kind: NAME.into(),
            vars: vec![],
        })
        .expect("Dify's fallbacks");
        assert_eq!((defaults.host.as_str(), defaults.port), ("localhost", 5433));
        let bad = Component {
            kind: NAME.into(),
            vars: vec![("PGVECTOR_PORT".into(), "x".into())],
        };
        assert!(
            PgvectorStore::from_env(&bad)
                .unwrap_err()
                .contains("PGVECTOR_PORT")
        );
    }
}
