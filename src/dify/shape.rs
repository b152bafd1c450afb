//! The shape of Dify's schema a job relies on, checked against the live catalog before the job
//! writes anything. Jobs declare their needs (tables, columns, the type class of each, and the
//! columns they set to NULL); [`require`] reads the catalog once and either says which needed
//! tables this release simply lacks (skipped and reported) or names everything missing or
//! different, so a job never deletes by a model of the schema the database does not have.
//!
//! The release knowledge (which tables and columns older releases lack) comes from
//! `dify/schemas/README.md`: every sampled release from 0.15.3 to 1.15.0, made by that
//! release's own migrations.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::PgPool;

/// A column's type as far as a job cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Uuid,
    /// `text`, `varchar` or `char`.
    Text,
    /// `timestamp without time zone`: Dify's naive UTC.
    Timestamp,
    /// `json` or `jsonb` (`documents.doc_metadata` is `json` up to 1.0.x).
    Json,
    Int,
    Bool,
}

impl Ty {
    fn accepts(self, udt: &str) -> bool {
        match self {
            Ty::Uuid => udt == "uuid",
            Ty::Text => matches!(udt, "text" | "varchar" | "bpchar"),
            Ty::Timestamp => udt == "timestamp",
            Ty::Json => matches!(udt, "json" | "jsonb"),
            Ty::Int => matches!(udt, "int2" | "int4" | "int8"),
            Ty::Bool => udt == "bool",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Uuid => "uuid",
            Ty::Text => "text",
            Ty::Timestamp => "timestamp without time zone",
            Ty::Json => "json or jsonb",
            Ty::Int => "an integer",
            Ty::Bool => "boolean",
        }
    }
}

/// A column a job reads or writes.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub name: &'static str,
    pub ty: Ty,
    /// The job sets it to NULL, so it must be nullable.
    pub set_null: bool,
}

pub const fn col(name: &'static str, ty: Ty) -> Col {
    Col {
        name,
        ty,
        set_null: false,
    }
}

/// A column the job sets to NULL (annotation replies detached from purged messages).
pub const fn nulled(name: &'static str, ty: Ty) -> Col {
    Col {
        name,
        ty,
        set_null: true,
    }
}

/// Whether a job can do without a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Needed, unless a supported release lacks it (then skipped and reported).
    Required,
    /// Read when there (e.g. a source of storage keys); its columns are checked only then.
    IfPresent,
}

#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub table: &'static str,
    pub columns: &'static [Col],
    pub presence: Presence,
}

pub const fn need(table: &'static str, columns: &'static [Col]) -> Need {
    Need {
        table,
        columns,
        presence: Presence::Required,
    }
}

pub const fn if_present(table: &'static str, columns: &'static [Col]) -> Need {
    Need {
        table,
        columns,
        presence: Presence::IfPresent,
    }
}

/// Tables of Dify 1.15 that older supported releases lack: the newest sampled release
/// without the table (schemas README, "Tables absent").
pub const TABLES_ABSENT_UP_TO: &[(&str, &str)] = &[
    ("workflow_draft_variables", "1.0.1"),
    ("workflow_node_execution_offload", "1.7.2"),
    ("workflow_draft_variable_files", "1.7.2"),
    ("workflow_pauses", "1.9.2"),
    ("workflow_pause_reasons", "1.9.2"),
    ("workflow_trigger_logs", "1.9.2"),
    ("workflow_archive_logs", "1.9.2"),
    ("execution_extra_contents", "1.9.2"),
    ("segment_attachment_bindings", "1.9.2"),
    ("document_segment_summaries", "1.9.2"),
    ("human_input_forms", "1.9.2"),
    ("human_input_form_upload_files", "1.13.3"),
    ("agent_drive_files", "1.13.3"),
];

/// Columns of Dify's main schema that older supported releases lack, with the newest sampled
/// release without the column (schemas README, "Columns and indexes", and the catalogs).
pub const COLUMNS_ABSENT_UP_TO: &[(&str, &str, &str)] = &[
    ("workflows", "marked_comment", "0.15.3"),
    ("workflows", "marked_name", "0.15.3"),
    ("datasets", "built_in_field_enabled", "1.0.1"),
    ("datasets", "chunk_structure", "1.7.2"),
    ("datasets", "enable_api", "1.7.2"),
    ("datasets", "icon_info", "1.7.2"),
    ("datasets", "keyword_number", "1.7.2"),
    ("datasets", "pipeline_id", "1.7.2"),
    ("datasets", "runtime_mode", "1.7.2"),
    ("messages", "app_mode", "1.7.2"),
    ("workflow_draft_variables", "file_id", "1.7.2"),
    ("workflow_draft_variables", "is_default_value", "1.7.2"),
    ("workflows", "rag_pipeline_variables", "1.7.2"),
    ("datasets", "is_multimodal", "1.9.2"),
    ("datasets", "summary_index_setting", "1.9.2"),
    ("documents", "need_summary", "1.9.2"),
    ("workflow_draft_variables", "user_id", "1.9.2"),
    ("apps", "maintainer", "1.13.3"),
    ("datasets", "maintainer", "1.13.3"),
    ("human_input_forms", "conversation_id", "1.13.3"),
    ("tenant_account_joins", "last_opened_at", "1.13.3"),
    ("workflows", "kind", "1.13.3"),
    ("sites", "input_placeholder", "1.15.0"),
];

/// Columns only older releases have, with the newest sampled release that has the column.
/// `workflow_runs.sequence_number` is `integer NOT NULL` without a default: inserts must fill it.
pub const COLUMNS_DROPPED_AFTER: &[(&str, &str, &str)] =
    &[("workflow_runs", "sequence_number", "1.4.3")];

/// Columns whose type or nullability older releases have otherwise, with the newest sampled
/// release that has it so and how. Jobs read them as either.
pub const COLUMNS_TYPED_OTHERWISE_UP_TO: &[(&str, &str, &str, &str)] = &[
    (
        "dataset_collection_bindings",
        "provider_name",
        "0.15.3",
        "varchar(40)",
    ),
    ("documents", "doc_metadata", "1.0.1", "json, not jsonb"),
    ("message_annotations", "question", "1.9.2", "nullable"),
];

/// The newest sampled release that lacks `table`, if a supported release does.
pub fn table_absent_up_to(table: &str) -> Option<&'static str> {
    TABLES_ABSENT_UP_TO
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, r)| *r)
}

/// Whether some supported release lacks `table.column` (so writers may leave it out).
pub fn column_varies(table: &str, column: &str) -> bool {
    COLUMNS_ABSENT_UP_TO
        .iter()
        .chain(COLUMNS_DROPPED_AFTER)
        .any(|(t, c, _)| *t == table && *c == column)
}

/// One column as the catalog has it.
#[derive(Debug, Clone)]
pub struct Column {
    /// `pg_type.typname`: `uuid`, `text`, `varchar`, `timestamp`, `jsonb`, ...
    pub udt: String,
    pub nullable: bool,
}

/// One index: its name and its key columns in order (expressions as NULL are left out).
#[derive(Debug, Clone)]
pub struct Index {
    pub name: String,
    pub columns: Vec<String>,
    /// A partial index: usable only when a query implies its predicate.
    pub partial: bool,
    pub valid: bool,
}

#[derive(sqlx::FromRow)]
struct ColumnRow {
    table: String,
    column: Option<String>,
    udt: Option<String>,
    nullable: Option<bool>,
}

#[derive(sqlx::FromRow)]
struct IndexRow {
    table: String,
    name: String,
    columns: Vec<Option<String>>,
    partial: bool,
    valid: bool,
}

/// The tables of schema `public`, their columns and indexes, read in two queries.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    tables: HashMap<String, HashMap<String, Column>>,
    indexes: HashMap<String, Vec<Index>>,
}

impl Shape {
    pub async fn read(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let rows: Vec<ColumnRow> = sqlx::query_as(
            "SELECT c.relname::text AS table, a.attname::text AS column, t.typname::text AS udt, \
                    NOT a.attnotnull AS nullable \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_type t ON t.oid = a.atttypid \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
        )
        .fetch_all(pool)
        .await?;
        let mut shape = Shape::default();
        for ColumnRow {
            table,
            column,
            udt,
            nullable,
        } in rows
        {
            let columns = shape.tables.entry(table).or_default();
            if let (Some(column), Some(udt), Some(nullable)) = (column, udt, nullable) {
                columns.insert(column, Column { udt, nullable });
            }
        }
        let rows: Vec<IndexRow> = sqlx::query_as(
            "SELECT t.relname::text AS table, i.relname::text AS name, \
                    ARRAY(SELECT a.attname::text FROM unnest(x.indkey) WITH ORDINALITY k(attnum, ord) \
                          LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
                          ORDER BY k.ord) AS columns, \
                    x.indpred IS NOT NULL AS partial, x.indisvalid AS valid \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = 'public'",
        )
        .fetch_all(pool)
        .await?;
        for IndexRow {
            table,
            name,
            columns,
            partial,
            valid,
        } in rows
        {
            shape.indexes.entry(table).or_default().push(Index {
                name,
                // An expression key ends the usable prefix.
                columns: columns.into_iter().map_while(|c| c).collect(),
                partial,
                valid,
            });
        }
        Ok(shape)
    }

    pub fn has_table(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    pub fn column(&self, table: &str, column: &str) -> Option<&Column> {
        self.tables.get(table).and_then(|c| c.get(column))
    }

    pub fn has_column(&self, table: &str, column: &str) -> bool {
        self.column(table, column).is_some()
    }

    pub fn indexes(&self, table: &str) -> &[Index] {
        self.indexes.get(table).map_or(&[], Vec::as_slice)
    }
}

/// A needed table this release lacks: the job goes on without it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    pub table: String,
    pub why: String,
}

/// How a job's needs fit this database.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Fit {
    /// Needed tables this Dify release does not have, skipped.
    pub skipped: Vec<Skipped>,
}

impl Fit {
    /// Whether the job may use `table` (it was not skipped).
    pub fn has(&self, table: &str) -> bool {
        !self.skipped.iter().any(|s| s.table == table)
    }
}

/// The schema is not the shape a job relies on.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{job} refuses to run: Dify's schema is not the shape it relies on: {}. Is this Dify's database, at a release Upkeep supports (0.15.3 to 1.15)?",
    problems.join("; ")
)]
pub struct Mismatch {
    pub job: &'static str,
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    #[error("reading Dify's catalog: {0}")]
    Db(#[from] sqlx::Error),
}

/// Checks `needs` against `shape`: the tables it may skip, or every problem found.
pub fn check(shape: &Shape, job: &'static str, needs: &[Need]) -> Result<Fit, Mismatch> {
    let mut fit = Fit::default();
    let mut problems = Vec::new();
    for need in needs {
        if !shape.has_table(need.table) {
            match (need.presence, table_absent_up_to(need.table)) {
                (Presence::IfPresent, _) => fit.skipped.push(Skipped {
                    table: need.table.into(),
                    why: "not in this database".into(),
                }),
                (Presence::Required, Some(release)) => fit.skipped.push(Skipped {
                    table: need.table.into(),
                    why: format!("Dify {release} and older have no such table"),
                }),
                (Presence::Required, None) => {
                    problems.push(format!("table public.{} is missing", need.table))
                }
            }
            continue;
        }
        for c in need.columns {
            match shape.column(need.table, c.name) {
                None => problems.push(format!(
                    "column {}.{} ({}) is missing",
                    need.table,
                    c.name,
                    c.ty.name()
                )),
                Some(found) if !c.ty.accepts(&found.udt) => problems.push(format!(
                    "column {}.{} is {}, expected {}",
                    need.table,
                    c.name,
                    found.udt,
                    c.ty.name()
                )),
                Some(found) if c.set_null && !found.nullable => problems.push(format!(
                    "column {}.{} is NOT NULL, but the job sets it to NULL",
                    need.table, c.name
                )),
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        Ok(fit)
    } else {
        Err(Mismatch { job, problems })
    }
}

/// Reads the catalog and checks `needs` (see [`check`]).
pub async fn require(pool: &PgPool, job: &'static str, needs: &[Need]) -> Result<Fit, ShapeError> {
    let shape = Shape::read(pool).await?;
    Ok(check(&shape, job, needs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Table<'a> = (&'a str, &'a [(&'a str, &'a str, bool)]);

    fn shape(tables: &[Table]) -> Shape {
        let mut s = Shape::default();
        for (t, cols) in tables {
            let c = s.tables.entry((*t).into()).or_default();
            for (name, udt, nullable) in *cols {
                c.insert(
                    (*name).into(),
                    Column {
                        udt: (*udt).into(),
                        nullable: *nullable,
                    },
                );
            }
        }
        s
    }

    const NEEDS: &[Need] = &[
        need(
            "messages",
            &[col("id", Ty::Uuid), col("created_at", Ty::Timestamp)],
        ),
        need(
            "message_annotations",
            &[col("id", Ty::Uuid), nulled("message_id", Ty::Uuid)],
        ),
        need("workflow_pauses", &[col("id", Ty::Uuid)]),
        if_present("dataset_keyword_tables", &[col("dataset_id", Ty::Uuid)]),
    ];

    #[test]
    fn tables_a_release_lacks_are_skipped_others_refused() {
        let s = shape(&[
            (
                "messages",
                &[("id", "uuid", false), ("created_at", "timestamp", false)],
            ),
            (
                "message_annotations",
                &[("id", "uuid", false), ("message_id", "uuid", true)],
            ),
        ]);
        let fit = check(&s, "purge_logs", NEEDS).expect("fits");
        let skipped: Vec<&str> = fit.skipped.iter().map(|s| s.table.as_str()).collect();
        assert_eq!(skipped, ["workflow_pauses", "dataset_keyword_tables"]);
        assert!(fit.skipped[0].why.contains("1.9.2"));
        assert!(!fit.has("workflow_pauses") && fit.has("messages"));

        let s = shape(&[
            (
                "messages",
                &[("id", "uuid", false), ("created_at", "timestamptz", false)],
            ),
            (
                "dataset_keyword_tables",
                &[("dataset_id", "varchar", false)],
            ),
        ]);
        let err = check(&s, "purge_logs", NEEDS).expect_err("refused");
        assert_eq!(
            err.problems,
            [
                "column messages.created_at is timestamptz, expected timestamp without time zone",
                "table public.message_annotations is missing",
                "column dataset_keyword_tables.dataset_id is varchar, expected uuid",
            ]
        );
    }

    #[test]
    fn a_column_set_to_null_must_be_nullable() {
        let s = shape(&[
            (
                "messages",
                &[("id", "uuid", false), ("created_at", "timestamp", false)],
            ),
            (
                "message_annotations",
                &[("id", "uuid", false), ("message_id", "uuid", false)],
            ),
        ]);
        let err = check(&s, "purge_logs", NEEDS).expect_err("refused");
        assert!(err.problems[0].contains("NOT NULL"), "{err}");
    }
}
