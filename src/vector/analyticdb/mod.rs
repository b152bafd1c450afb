//! AnalyticDB for PostgreSQL in SQL mode (`ANALYTICDB_HOST` set), over sqlx, writing what
//! Dify's `AnalyticdbVectorBySql` writes: database `knowledgebase` (created when missing, with
//! Dify's `zh_cn` text search configuration and `to_tsquery_from_text`), schema = namespace,
//! table `<namespace>.<class_prefix lower-cased>` with `id text` primary key, `vector real[]`
//! (storage plain), `ref_doc_id`, `page_content`, `metadata_ jsonb`, `to_tsvector` filled
//! with `zh_cn`, the `ann` cosine index and the GIN index on `to_tsvector`. Row ids are
//! random (`<uuid4>_<i>`, as Dify makes them); records are addressed by `ref_doc_id` (Dify's
//! `doc_id`): a write replaces what a `ref_doc_id` had. Where the server lacks `ann` or a
//! `zh_cn` configuration (any plain Postgres), that part is left out and said in `notes`.
//!
//! OpenAPI mode (no `ANALYTICDB_HOST`) is refused: that API cannot read vectors back.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool, Row};
use uuid::Uuid;

use super::sql::{self, failed, missing_table, not_allowed, unquoted, vector_literal};
use super::store::{
    Adapter, CollectionInfo, Health, Hit, Location, Page, Point, VectorError, VectorSource,
    VectorStore, VectorTarget, last_per_doc_id,
};
use crate::config::Component;
use crate::db::sqlstate;
use crate::dify::index_struct;
use crate::dify::vector_records::Dataset;

mod target;

const NAME: &str = "analyticdb";
/// The database Dify's SQL mode keeps every namespace in.
const DATABASE: &str = "knowledgebase";

pub const OPENAPI_REFUSED: &str = "AnalyticDB's OpenAPI mode is not supported: that API has no \
     way to read vectors back (only top-k queries), so Upkeep reads and writes AnalyticDB over \
     SQL. Set ANALYTICDB_HOST, ANALYTICDB_PORT, ANALYTICDB_ACCOUNT and ANALYTICDB_PASSWORD to \
     the instance's SQL endpoint and an account that may use database knowledgebase";

/// `{"type": "analyticdb", ...}`: Dify's `ANALYTICDB_*` variables, SQL mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticdbConfig {
    /// `ANALYTICDB_HOST`: required (SQL mode; without it Dify uses the OpenAPI mode, which
    /// Upkeep does not support).
    #[serde(default)]
    pub host: Option<String>,
    /// `ANALYTICDB_PORT` (5432).
    #[serde(default = "default_port")]
    pub port: u16,
    /// `ANALYTICDB_ACCOUNT`.
    #[serde(default)]
    pub account: Option<String>,
    /// `ANALYTICDB_PASSWORD`.
    #[serde(default)]
    pub password: Option<String>,
    /// `ANALYTICDB_NAMESPACE` (`dify`): the schema.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// OpenAPI mode only (`ANALYTICDB_KEY_ID`, ...): not supported; give `host` and `account`.
    #[serde(default, skip_serializing)]
    pub key_id: Option<String>,
    /// OpenAPI mode only: not supported.
    #[serde(default, skip_serializing)]
    pub key_secret: Option<String>,
    /// OpenAPI mode only: not supported.
    #[serde(default, skip_serializing)]
    pub region_id: Option<String>,
    /// OpenAPI mode only: not supported.
    #[serde(default, skip_serializing)]
    pub instance_id: Option<String>,
    /// OpenAPI mode only: not supported.
    #[serde(default, skip_serializing)]
    pub namespace_password: Option<String>,
}

fn default_port() -> u16 {
    5432
}
fn default_namespace() -> String {
    "dify".into()
}

/// What the server has of what Dify's layout needs.
#[derive(Debug, Default)]
struct Capabilities {
    version: String,
    /// Greenplum-based (AnalyticDB proper): tables are `DISTRIBUTED BY (id)`.
    greenplum: bool,
    /// The `ann` index access method.
    ann: bool,
    /// A `real[] <=> real[]` operator, which Dify's search uses.
    distance: bool,
    /// The zhparser extension can be created.
    zhparser: bool,
    /// Database `knowledgebase` exists.
    database: bool,
}

pub struct AnalyticdbStore {
    /// Database `knowledgebase`, connected lazily: it may not exist until the first write.
    pool: PgPool,
    /// Database `postgres`, to create `knowledgebase` from.
    admin: PgPool,
    namespace: String,
    account: String,
    caps: Capabilities,
    /// `zh_cn` exists in `knowledgebase`: `to_tsvector` is filled with it.
    zh_cn: AtomicBool,
}

const CAPABILITIES: &str = "SELECT current_setting('server_version') AS version, \
     version() ILIKE '%greenplum%' AS greenplum, \
     EXISTS (SELECT 1 FROM pg_am WHERE amname = 'ann') AS ann, \
     EXISTS (SELECT 1 FROM pg_operator WHERE oprname = '<=>' \
             AND oprleft = 'real[]'::regtype AND oprright = 'real[]'::regtype) AS distance, \
     EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'zhparser') AS zhparser, \
     EXISTS (SELECT 1 FROM pg_database WHERE datname = 'knowledgebase') AS database, \
     EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = 'zh_cn') AS zh_cn";

impl AnalyticdbStore {
    fn table(&self, collection: &str) -> Result<String, VectorError> {
        Ok(format!(
            "{}.{}",
            unquoted(&self.namespace)?,
            unquoted(&collection.to_lowercase())?
        ))
    }

    /// `<namespace>.<table>` as `to_regclass` reads it.
    async fn exists(&self, collection: &str) -> Result<bool, VectorError> {
        let found = sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(self.table(collection)?)
            .fetch_one(&self.pool)
            .await;
        match found {
            Err(e) if missing_table(&e) => Ok(false),
            r => r.map_err(failed(NAME, "describe")),
        }
    }

    /// Dify's initialisation of `knowledgebase`, done by whoever creates it.
    async fn create_database(&self) -> Result<(), VectorError> {
        let created = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {DATABASE}")))
            .execute(&self.admin)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if sqlstate(&e).as_deref() == Some("42P04") => return Ok(()),
            Err(e) if not_allowed(&e) => {
                return Err(VectorError::Config(format!(
                    "database {DATABASE} does not exist and the account {} may not create it: \
                     create it (as Dify would on its first write), or grant CREATEDB",
                    self.account
                )));
            }
            Err(e) => return Err(VectorError::store(NAME, "create database", e)),
        }
        if self.caps.zhparser {
            for statement in [
                "CREATE EXTENSION IF NOT EXISTS zhparser",
                "CREATE TEXT SEARCH CONFIGURATION zh_cn (PARSER = zhparser)",
                "ALTER TEXT SEARCH CONFIGURATION zh_cn ADD MAPPING FOR n,v,a,i,e,l,x WITH simple",
            ] {
                sqlx::query(statement)
                    .execute(&self.pool)
                    .await
                    .map_err(failed(NAME, "create zh_cn"))?;
            }
        }
        Ok(())
    }

    /// Dify's search helper for full-text queries, where the database lacks it.
    async fn ensure_function(&self) -> Result<(), VectorError> {
        let there: bool = sqlx::query_scalar(
            "SELECT to_regprocedure('public.to_tsquery_from_text(text, regconfig)') IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(failed(NAME, "ensure"))?;
        if !there {
            sqlx::query(
                "CREATE OR REPLACE FUNCTION \
                 public.to_tsquery_from_text(txt text, lang regconfig DEFAULT 'english'::regconfig) \
                 RETURNS tsquery LANGUAGE sql IMMUTABLE STRICT AS $function$ \
                 SELECT to_tsquery(lang, COALESCE(string_agg(split_part(word, ':', 1), ' | '), '')) \
                 FROM (SELECT unnest(string_to_array(to_tsvector(lang, txt)::text, ' ')) AS word) \
                 AS words_only;$function$",
            )
            .execute(&self.pool)
            .await
            .map_err(failed(NAME, "create function"))?;
        }
        Ok(())
    }

    /// Rows as points: by `id` (a source's own id) or by `ref_doc_id` (a target's).
    async fn rows(
        &self,
        at: &Location,
        column: &str,
        keys: &[String],
        call: &'static str,
    ) -> Result<Vec<Point>, VectorError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, ref_doc_id, page_content, metadata_, vector FROM {} WHERE {column} = ANY($1)",
            self.table(&at.collection)?
        )))
        .bind(keys)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Err(e) if missing_table(&e) => return Ok(Vec::new()),
            r => r.map_err(failed(NAME, call))?,
        };
        rows.iter().map(|r| point(r, column, true, call)).collect()
    }
}

/// A row as a point whose id is `id_column`'s value.
fn point(
    r: &sqlx::postgres::PgRow,
    id_column: &str,
    vectors: bool,
    call: &'static str,
) -> Result<Point, VectorError> {
    let get = failed(NAME, call);
    let id: Option<String> = r.try_get(id_column).map_err(&get)?;
    let metadata = match r
        .try_get::<Option<serde_json::Value>, _>("metadata_")
        .map_err(&get)?
    {
        Some(serde_json::Value::Object(m)) => m,
        None => serde_json::Map::new(),
        Some(other) => {
            return Err(VectorError::Layout(format!(
                "row {id:?}: metadata_ is not a JSON object: {other}"
            )));
        }
    };
    Ok(Point {
        id: id.unwrap_or_default(),
        text: r
            .try_get::<Option<String>, _>("page_content")
            .map_err(&get)?
            .unwrap_or_default(),
        metadata,
        vector: if vectors {
            r.try_get::<Option<Vec<f32>>, _>("vector")
                .map_err(&get)?
                .unwrap_or_default()
        } else {
            Vec::new()
        },
    })
}

impl Adapter for AnalyticdbStore {
    const KIND: &'static str = NAME;
    type Config = AnalyticdbConfig;

    fn from_env(env: &Component) -> Result<AnalyticdbConfig, String> {
        if env.get("ANALYTICDB_HOST").is_none() {
            return Err(format!(
                "ANALYTICDB_HOST is not set, which makes Dify use the OpenAPI mode. {OPENAPI_REFUSED}"
            ));
        }
        let port = match env.get("ANALYTICDB_PORT") {
            None => default_port(),
            Some(v) => v
                .parse()
                .map_err(|_| format!("ANALYTICDB_PORT={v:?} is not a port number"))?,
        };
        let config = AnalyticdbConfig {
            host: env.get("ANALYTICDB_HOST").map(str::to_string),
            port,
            account: env.get("ANALYTICDB_ACCOUNT").map(str::to_string),
            password: env.get("ANALYTICDB_PASSWORD").map(str::to_string),
            namespace: env
                .get("ANALYTICDB_NAMESPACE")
                .map_or_else(default_namespace, str::to_string),
            key_id: None,
            key_secret: None,
            region_id: None,
            instance_id: None,
            namespace_password: None,
        };
        Self::check(&config)
            .map_err(|(field, message)| format!("ANALYTICDB_{} {message}", field.to_uppercase()))?;
        Ok(config)
    }

    fn check(config: &AnalyticdbConfig) -> Result<(), (String, String)> {
        if config.host.is_none() {
            return Err(("host".into(), format!("is required. {OPENAPI_REFUSED}")));
        }
        if config.account.is_none() {
            return Err((
                "account".into(),
                "is required (SQL mode logs in with it)".into(),
            ));
        }
        if let Err(e) = unquoted(&config.namespace) {
            return Err(("namespace".into(), e.to_string()));
        }
        Ok(())
    }

    fn location(config: &AnalyticdbConfig) -> String {
        format!(
            "analyticdb at {}:{} (database {DATABASE}, namespace {})",
            config.host.as_deref().unwrap_or("?"),
            config.port,
            config.namespace
        )
    }

    async fn open(config: &AnalyticdbConfig) -> Result<Self, VectorError> {
        Self::check(config).map_err(|(field, m)| VectorError::Config(format!("{field} {m}")))?;
        let (Some(host), Some(account)) = (&config.host, &config.account) else {
            return Err(VectorError::Config(OPENAPI_REFUSED.into()));
        };
        let options = |database| {
            sql::options(
                host,
                config.port,
                account,
                config.password.as_deref(),
                database,
            )
        };
        let admin = sql::connect(NAME, options("postgres")).await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(20))
            .connect_lazy_with(options(DATABASE));
        let probe = |row: &sqlx::postgres::PgRow| -> Result<(Capabilities, bool), sqlx::Error> {
            Ok((
                Capabilities {
                    version: row.try_get("version")?,
                    greenplum: row.try_get("greenplum")?,
                    ann: row.try_get("ann")?,
                    distance: row.try_get("distance")?,
                    zhparser: row.try_get("zhparser")?,
                    database: row.try_get("database")?,
                },
                row.try_get("zh_cn")?,
            ))
        };
        // What `knowledgebase` has, or (before it exists) what a new database would get.
        let row = match sqlx::query(CAPABILITIES).fetch_one(&pool).await {
            Err(e) if missing_table(&e) => sqlx::query(CAPABILITIES).fetch_one(&admin).await,
            r => r,
        }
        .map_err(failed(NAME, "connect"))?;
        let (caps, zh_cn) = probe(&row).map_err(failed(NAME, "connect"))?;
        Ok(AnalyticdbStore {
            zh_cn: AtomicBool::new(zh_cn && caps.database),
            pool,
            admin,
            namespace: config.namespace.clone(),
            account: account.clone(),
            caps,
        })
    }

    /// Dify lower-cases the collection name, in the table and in `index_struct`.
    fn locate(ds: &Dataset, class_prefix: Option<&str>) -> Location {
        Location {
            collection: class_prefix
                .map(str::to_string)
                .unwrap_or_else(|| index_struct::generated_name(ds.id))
                .to_lowercase(),
            group: ds.id.to_string(),
        }
    }
}

impl VectorStore for AnalyticdbStore {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn health(&self) -> Result<Health, VectorError> {
        sqlx::query("SELECT 1")
            .execute(&self.admin)
            .await
            .map_err(failed(NAME, "health"))?;
        let mut detail = format!(
            "{} {} answered",
            if self.caps.greenplum {
                "AnalyticDB (Greenplum)"
            } else {
                "PostgreSQL"
            },
            self.caps.version
        );
        for note in self.notes() {
            detail.push_str("; ");
            detail.push_str(&note);
        }
        Ok(Health {
            version: self.caps.version.clone(),
            detail: Some(detail),
        })
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.caps.greenplum {
            notes.push(
                "the server is plain PostgreSQL, not AnalyticDB: tables are made without \
                 DISTRIBUTED BY (id)"
                    .to_string(),
            );
        }
        if !self.caps.ann {
            notes.push(
                "no ann access method: Dify's vector index (<collection>_embedding_idx USING \
                 ann) is not created, searches scan the table"
                    .to_string(),
            );
        }
        if !self.caps.distance {
            notes.push(
                "no <=> operator for real[]: Dify's vector search cannot run on this server"
                    .to_string(),
            );
        }
        if !self.zh_cn.load(Ordering::Relaxed) && !self.caps.zhparser {
            notes.push(
                "no zh_cn text search configuration and no zhparser to make one: to_tsvector is \
                 left empty, so Dify's full-text and hybrid search find nothing in what Upkeep \
                 writes"
                    .to_string(),
            );
        }
        if !self.caps.database {
            notes.push(format!(
                "database {DATABASE} does not exist yet: the first write creates it, as Dify does"
            ));
        }
        notes
    }

    async fn describe(&self, collection: &str) -> Result<Option<CollectionInfo>, VectorError> {
        if !self.exists(collection).await? {
            return Ok(None);
        }
        let name = self.table(collection)?;
        // The ann index says the dimension; without one, the first row does.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT (SELECT substring(array_to_string(c.reloptions, ',') FROM 'dim=([0-9]+)')::int \
                     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                     JOIN pg_am m ON m.oid = c.relam \
                     WHERE i.indrelid = to_regclass($1) AND m.amname = 'ann' LIMIT 1) AS ann_dim, \
                    (SELECT array_length(vector, 1) FROM {name} LIMIT 1) AS row_dim"
        )))
        .bind(&name)
        .fetch_one(&self.pool)
        .await
        .map_err(failed(NAME, "describe"))?;
        let ann: Option<i32> = row.try_get("ann_dim").map_err(failed(NAME, "describe"))?;
        let first: Option<i32> = row.try_get("row_dim").map_err(failed(NAME, "describe"))?;
        Ok(Some(CollectionInfo {
            dimension: ann.or(first).map(|d| d.max(0) as usize),
            distance: "cosine".into(),
            layout: if ann.is_some() { "ann" } else { "no-index" }.into(),
        }))
    }
}

impl VectorSource for AnalyticdbStore {
    async fn read_page(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
        vectors: bool,
    ) -> Result<Page, VectorError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, ref_doc_id, page_content, metadata_{} FROM {} \
             WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
            if vectors { ", vector" } else { "" },
            self.table(&at.collection)?
        )))
        .bind(cursor)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Err(e) if missing_table(&e) => return Ok(Page::default()),
            r => r.map_err(failed(NAME, "read"))?,
        };
        let points = rows
            .iter()
            .map(|r| point(r, "id", vectors, "read"))
            .collect::<Result<Vec<Point>, VectorError>>()?;
        let next = (points.len() == limit)
            .then(|| points.last().map(|p| p.id.clone()))
            .flatten();
        Ok(Page { points, next })
    }

    async fn fetch(&self, at: &Location, ids: &[String]) -> Result<Vec<Point>, VectorError> {
        self.rows(at, "id", ids, "fetch").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_mode_is_refused_saying_what_to_set() {
        let env = Component {
            kind: NAME.into(),
            vars: vec![
                ("ANALYTICDB_KEY_ID".into(), "your-ak".into()),
                ("ANALYTICDB_INSTANCE_ID".into(), "gp-ab123456".into()),
                ("ANALYTICDB_HOST".into(), String::new()),
            ],
        };
        let e = AnalyticdbStore::from_env(&env).unwrap_err();
        assert!(
            e.contains("OpenAPI mode") && e.contains("ANALYTICDB_HOST"),
            "{e}"
        );
        let ok = Component {
            kind: NAME.into(),
            vars: vec![
                ("ANALYTICDB_HOST".into(), "gp-test.aliyuncs.com".into()),
                ("ANALYTICDB_ACCOUNT".into(), "testaccount".into()),
                ("ANALYTICDB_PASSWORD".into(), "testpassword".into()),
            ],
        };
        let c = AnalyticdbStore::from_env(&ok).expect("SQL mode");
        assert_eq!((c.port, c.namespace.as_str()), (5432, "dify"));
    }

    #[test]
    fn collections_are_lower_cased_as_dify_does() {
        let id = Uuid::new_v4();
        let ds = Dataset {
            id,
            tenant_id: Uuid::nil(),
            index_struct: None,
            embedding_model: None,
            embedding_model_provider: None,
            binding_collection: None,
            annotations: false,
            parts: Default::default(),
        };
        let at = AnalyticdbStore::locate(&ds, None);
        assert_eq!(
            at.collection,
            index_struct::generated_name(id).to_lowercase()
        );
        assert!(AnalyticdbStore::index_struct(&at).contains("\"vector_index_"));
    }
}
