//! How a purge reaches the rows it walks, on the indexes this Dify release has. 1.15 indexes
//! every link column a purge deletes by; older releases do not (1.9.2 and older: nothing on
//! `workflow_node_executions (workflow_run_id)` alone nor `saved_messages (message_id)`;
//! 1.7.2 and older: nothing on `workflow_app_logs (workflow_run_id)`; nothing on
//! `workflow_runs (created_at, id)`). Deleting by such a column scans the whole table per
//! batch. For each (table, column) this picks, in order: an index led by the column; another
//! index whose leading columns the batch can bind (the run's tenant, app and workflow); a
//! temporary index built `CONCURRENTLY` when the operator allows it; the same kind of index
//! bound per app only; else a scan, said so in the dry run.

use serde::Serialize;

use crate::dify::shape::Shape;

/// Another index's leading columns, bound from the parents of the batch (`$1` their ids).
#[derive(Debug)]
pub struct Leading {
    pub table: &'static str,
    pub column: &'static str,
    /// The index's key columns this condition binds, in order.
    pub index_prefix: &'static [&'static str],
    /// A condition on the alias `{a}`, equivalent to `{a}.<column> = ANY($1)` for the rows
    /// Dify writes (a node execution of a run carries the run's tenant, app and workflow,
    /// `triggered_from = 'workflow-run'`). Rows that break the rule are not lost: the units
    /// after the runs' purge the node executions and app logs whose run is gone.
    pub cond: &'static str,
    /// Whether the rows one batch reads stay proportional to the batch (false: per app).
    pub per_batch: bool,
    pub how: &'static str,
}

impl Leading {
    pub fn cond_for(&self, alias: &str) -> String {
        self.cond.replace("{a}", alias)
    }
}

pub const LEADING: &[Leading] = &[
    Leading {
        table: "workflow_node_executions",
        column: "workflow_run_id",
        index_prefix: &[
            "tenant_id",
            "app_id",
            "workflow_id",
            "triggered_from",
            "workflow_run_id",
        ],
        cond: "{a}.workflow_run_id = ANY($1) AND ({a}.tenant_id, {a}.app_id, {a}.workflow_id, {a}.triggered_from) IN \
               (SELECT r.tenant_id, r.app_id, r.workflow_id, 'workflow-run' FROM public.workflow_runs r WHERE r.id = ANY($1))",
        per_batch: true,
        how: "tenant, app, workflow and triggered_from bound from each run",
    },
    Leading {
        table: "saved_messages",
        column: "message_id",
        index_prefix: &["app_id", "message_id"],
        cond: "{a}.message_id = ANY($1) AND {a}.app_id IN \
               (SELECT m.app_id FROM public.messages m WHERE m.id = ANY($1))",
        per_batch: true,
        how: "app bound from each message",
    },
    Leading {
        table: "workflow_app_logs",
        column: "workflow_run_id",
        index_prefix: &["tenant_id", "app_id"],
        cond: "{a}.workflow_run_id = ANY($1) AND ({a}.tenant_id, {a}.app_id) IN \
               (SELECT r.tenant_id, r.app_id FROM public.workflow_runs r WHERE r.id = ANY($1))",
        per_batch: false,
        how: "tenant and app bound from each run: each batch reads its apps' logs",
    },
];

/// The way chosen for one (table, columns).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "path", rename_all = "snake_case")]
pub enum Path {
    /// An index led by the column(s).
    Index { index: String },
    /// Another index, its leading columns bound from the batch.
    LeadingColumns { index: String, how: String },
    /// Built `CONCURRENTLY` before the purge, dropped after it.
    TemporaryIndex { index: String },
    /// No usable index: every batch scans the table.
    Scan,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Choice {
    pub table: String,
    /// The column(s) the purge looks rows up by.
    pub by: String,
    #[serde(flatten)]
    pub path: Path,
    pub why: String,
    /// Leading-columns paths: the condition used instead of `column = ANY($1)`.
    #[serde(skip)]
    pub leading: Option<&'static Leading>,
}

/// The name of the temporary index on `table (columns)`.
pub fn temporary_name(table: &str, columns: &[&str]) -> String {
    format!("upkeep_tmp_{table}_{}", columns.join("_"))
}

/// The statement building that temporary index (names come from the purge's static map).
pub fn temporary_create(table: &str, columns: &[&str]) -> String {
    format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON public.{table} ({})",
        temporary_name(table, columns),
        columns.join(", ")
    )
}

pub fn temporary_drop(table: &str, columns: &[&str]) -> String {
    format!(
        "DROP INDEX CONCURRENTLY IF EXISTS public.{}",
        temporary_name(table, columns)
    )
}

/// A valid, non-partial index of `table` whose keys start with `columns`.
fn led_by<'a>(shape: &'a Shape, table: &str, columns: &[&str]) -> Option<&'a str> {
    shape
        .indexes(table)
        .iter()
        .filter(|i| i.valid && !i.partial && i.columns.len() >= columns.len())
        .filter(|i| i.columns.iter().zip(columns).all(|(a, b)| a == b))
        // The shortest such index is the cheapest to read.
        .min_by_key(|i| (i.columns.len(), i.name.clone()))
        .map(|i| i.name.as_str())
}

/// How to look up `table`'s rows by `columns` (a link column, or the parents' keyset).
pub fn choose(shape: &Shape, table: &str, columns: &[&str], temporary: bool) -> Choice {
    let by = columns.join(", ");
    let choice = |path, why: String, leading| Choice {
        table: table.to_string(),
        by: by.clone(),
        path,
        why,
        leading,
    };
    if let Some(index) = led_by(shape, table, columns) {
        let why = if index.starts_with("upkeep_tmp_") {
            "Upkeep's temporary index, dropped when the purge ends".to_string()
        } else {
            format!("{index} is led by {by}")
        };
        return choice(
            Path::Index {
                index: index.into(),
            },
            why,
            None,
        );
    }
    let missing = format!("this Dify has no index on {table} ({by})");
    let leading = LEADING
        .iter()
        .find(|l| l.table == table && columns == [l.column])
        .and_then(|l| led_by(shape, table, l.index_prefix).map(|index| (l, index)));
    if let Some((l, index)) = leading
        && l.per_batch
    {
        return choice(
            Path::LeadingColumns {
                index: index.into(),
                how: l.how.into(),
            },
            format!("{missing}; {index} serves each batch with {}", l.how),
            Some(l),
        );
    }
    if temporary {
        return choice(
            Path::TemporaryIndex {
                index: temporary_name(table, columns),
            },
            format!(
                "{missing}; temporary_indexes allows building one (CONCURRENTLY, dropped after)"
            ),
            None,
        );
    }
    if let Some((l, index)) = leading {
        return choice(
            Path::LeadingColumns {
                index: index.into(),
                how: l.how.into(),
            },
            format!(
                "{missing}; {index} with {}. temporary_indexes: true builds one instead",
                l.how
            ),
            Some(l),
        );
    }
    choice(
        Path::Scan,
        format!("{missing}: each batch scans the table. temporary_indexes: true builds one"),
        None,
    )
}
