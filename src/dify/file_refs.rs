//! Where Dify's tables reference `upload_files` / `tool_files` rows by id: the 14 columns
//! Dify's `clear-orphaned-file-records` scans, and the ones it misses (and so deletes live rows
//! for): node-execution offloads, offloaded draft variables, segment attachments, human-input
//! uploads, agent drive files, and ids inside workflow runs, draft and conversation variables,
//! app configs, dataset icons and tenant settings.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use uuid::Uuid;

use crate::dify::shape::{Need, Ty, col, need};

/// Dify's pattern for an id in text, matched case-insensitively (Dify's own compare is not).
pub const UUID_RE: &str =
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";

pub enum Holds {
    /// A uuid column holding the id itself; the query selects it.
    Id(&'static str),
    /// Text or JSON holding ids anywhere; `*` means the whole row as text.
    Text(&'static str),
}

pub struct IdSource {
    pub table: &'static str,
    pub holds: Holds,
}

const fn id(table: &'static str, select: &'static str) -> IdSource {
    IdSource {
        table,
        holds: Holds::Id(select),
    }
}

const fn text(table: &'static str, column: &'static str) -> IdSource {
    IdSource {
        table,
        holds: Holds::Text(column),
    }
}

pub const ID_SOURCES: &[IdSource] = &[
    // A message_files row keeps its file only while its message exists: rows a log purge left
    // behind must not keep files alive forever.
    id(
        "message_files",
        "SELECT mf.upload_file_id FROM public.message_files mf \
         JOIN public.messages m ON m.id = mf.message_id WHERE mf.upload_file_id IS NOT NULL",
    ),
    id(
        "workflow_node_execution_offload",
        "SELECT file_id FROM public.workflow_node_execution_offload",
    ),
    id(
        "workflow_draft_variable_files",
        "SELECT upload_file_id FROM public.workflow_draft_variable_files",
    ),
    id(
        "segment_attachment_bindings",
        "SELECT attachment_id FROM public.segment_attachment_bindings",
    ),
    id(
        "human_input_form_upload_files",
        "SELECT upload_file_id FROM public.human_input_form_upload_files",
    ),
    id(
        "agent_drive_files",
        "SELECT file_id FROM public.agent_drive_files",
    ),
    text("documents", "data_source_info"),
    text("document_segments", "content"),
    text("messages", "answer"),
    text("messages", "inputs"),
    text("messages", "message"),
    text("messages", "message_metadata"),
    text("workflow_node_executions", "inputs"),
    text("workflow_node_executions", "process_data"),
    text("workflow_node_executions", "outputs"),
    text("conversations", "introduction"),
    text("conversations", "system_instruction"),
    text("conversations", "inputs"),
    text("workflow_runs", "inputs"),
    text("workflow_runs", "outputs"),
    text("accounts", "avatar"),
    // Small tables: the whole row, so no column that may hold a file id is missed.
    text("apps", "*"),
    text("sites", "*"),
    text("app_model_configs", "*"),
    text("workflow_draft_variables", "*"),
    text("workflow_conversation_variables", "*"),
    text("datasets", "*"),
    text("tenants", "*"),
];

/// What `orphan_records` reads and deletes by, for the shape check: the tables it deletes
/// from (without which "unreferenced" cannot be decided) and the id columns that keep their
/// rows. The id sources newer releases added are
/// skipped on older ones (their rows cannot exist there); text sources are read as text
/// whatever their type, and skipped where absent.
pub const NEEDS: &[Need] = &[
    need(
        "upload_files",
        &[col("id", Ty::Uuid), col("created_at", Ty::Timestamp)],
    ),
    need(
        "tool_files",
        &[col("id", Ty::Uuid), col("file_key", Ty::Text)],
    ),
    need(
        "message_files",
        &[
            col("id", Ty::Uuid),
            col("message_id", Ty::Uuid),
            col("upload_file_id", Ty::Uuid),
            col("created_at", Ty::Timestamp),
        ],
    ),
    need("messages", &[col("id", Ty::Uuid)]),
    need(
        "workflow_node_execution_offload",
        &[col("file_id", Ty::Uuid)],
    ),
    need(
        "workflow_draft_variable_files",
        &[col("upload_file_id", Ty::Uuid)],
    ),
    need(
        "segment_attachment_bindings",
        &[col("attachment_id", Ty::Uuid)],
    ),
    need(
        "human_input_form_upload_files",
        &[col("upload_file_id", Ty::Uuid)],
    ),
    need("agent_drive_files", &[col("file_id", Ty::Uuid)]),
];

/// The columns of the `public` tables the sources name, per table: one catalogue read
/// per run rather than one per source (28 of them, each a few milliseconds).
struct Present(HashMap<String, HashSet<String>>);

impl Present {
    async fn read(pool: &PgPool) -> Result<Present, sqlx::Error> {
        let tables: Vec<&str> = ID_SOURCES.iter().map(|s| s.table).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = ANY($1)",
        )
        .bind(&tables)
        .fetch_all(pool)
        .await?;
        let mut present: HashMap<String, HashSet<String>> = HashMap::new();
        for (table, column) in rows {
            present.entry(table).or_default().insert(column);
        }
        Ok(Present(present))
    }

    /// The `SELECT` of one source, if its table (and column) exist here; `None` otherwise (an
    /// older Dify).
    fn select_of(&self, s: &IdSource) -> Option<String> {
        let column = match s.holds {
            Holds::Id(_) | Holds::Text("*") => None,
            Holds::Text(c) => Some(c),
        };
        let columns = self.0.get(s.table)?;
        if column.is_some_and(|c| !columns.contains(c)) {
            return None;
        }
        Some(match s.holds {
            Holds::Id(select) => select.to_string(),
            Holds::Text(c) => {
                let expr = if c == "*" {
                    "t::text".to_string()
                } else {
                    format!("t.{}::text", crate::db::quote_ident(c))
                };
                format!(
                    "SELECT lower((regexp_matches({expr}, '{UUID_RE}', 'g'))[1])::uuid FROM public.{} t",
                    crate::db::quote_ident(s.table)
                )
            }
        })
    }
}

/// The reference sources this Dify has, read in one statement.
pub struct Gather {
    /// `SELECT id FROM (...) UNION ALL ...`: every id every present source holds (nulls and
    /// duplicates included; whoever uses it anti-joins, so neither matters).
    pub select: String,
    /// The sources read, as `table (id)` or `table.column`.
    pub read: Vec<String>,
    /// The sources this Dify lacks (an older release), in the same form.
    pub skipped: Vec<String>,
}

/// The one statement that reads every reference source present here. `orphan_records` and the
/// benchmark's hand-written ceiling (`bench/orphans_sql.rs`) both gather with it, so the two
/// always read the same sources.
pub async fn gather(pool: &PgPool) -> Result<Gather, sqlx::Error> {
    let present = Present::read(pool).await?;
    let (mut selects, mut read, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for s in ID_SOURCES {
        let label = match s.holds {
            Holds::Id(_) => format!("{} (id)", s.table),
            Holds::Text(c) => format!("{}.{c}", s.table),
        };
        match present.select_of(s) {
            Some(select) => {
                selects.push(format!("SELECT x FROM ({select}) AS q(x)"));
                read.push(label);
            }
            None => skipped.push(label),
        }
    }
    if selects.is_empty() {
        selects.push("SELECT NULL::uuid".into());
    }
    let select = format!(
        "SELECT x AS id FROM ({}) AS g(x) WHERE x IS NOT NULL",
        selects.join(" UNION ALL ")
    );
    Ok(Gather {
        select,
        read,
        skipped,
    })
}

/// The `SELECT`s of the id-column sources this Dify has, found once per run.
pub async fn id_column_selects(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let present = Present::read(pool).await?;
    let mut selects = Vec::new();
    for s in ID_SOURCES {
        if let Holds::Id(_) = s.holds
            && let Some(select) = present.select_of(s)
        {
            selects.push(select);
        }
    }
    Ok(selects)
}

/// Which of `ids` the id columns (`id_column_selects`) reference right now.
pub async fn live_id_refs(
    pool: &PgPool,
    selects: &[String],
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut found = HashSet::new();
    for select in selects {
        let sql = format!("SELECT DISTINCT x FROM ({select}) AS q(x) WHERE x = ANY($1)");
        let rows: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .fetch_all(pool)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}
