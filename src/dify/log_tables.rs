//! Dify's log tables as a purge must walk them: each parent table with its selection, and the
//! rows that depend on it, children first (dify-reference: purge-orphans-schema §1, §2).
//! There are almost no foreign keys, so this map is the only thing keeping dependents from
//! outliving their parents.
//!
//! SQL fragments use `p` for the parent row and `t` for a dependent row. Every statement built
//! from them binds the same parameters: `$1` tenant ids (`NULL` = every tenant), `$2` the
//! cutoff (naive UTC), `$3`/`$4` the keyset cursor, `$5` the batch size and `$6` the workflow
//! runs that must stay because a message younger than the cutoff points at them.

use crate::db::quote_ident;
use crate::dify::access_paths::Leading;
use crate::dify::shape::{Col, Fit, Need, Ty, col, need, nulled};

/// How a parent table is walked: an index that serves the order, so no batch rescans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyset {
    /// `(created_at, id)`: messages and workflow runs have an index on exactly that.
    CreatedAtId,
    /// The primary key, for tables without a usable time index (one pass over the table).
    Id,
}

/// What happens to a dependent row when its parent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Delete,
    /// Annotation replies are curated content: by default they stay, with these columns (the
    /// links to the purged rows) set to NULL, as if created by hand.
    Detach(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct Dependent {
    pub table: &'static str,
    /// The column of `t` holding the parent's id, or (through `via`) the intermediate's.
    pub column: &'static str,
    /// An intermediate table and its column holding the parent's id: offloads hang off node
    /// executions, pause reasons off pauses.
    pub via: Option<(&'static str, &'static str)>,
    /// A further condition on `t`.
    pub only: Option<&'static str>,
    pub fate: Fate,
    /// Set per job when this release has no index on `column` (see `access_paths`): the
    /// rows are found through another index's leading columns.
    pub path: Option<&'static Leading>,
    /// The same for the intermediate's column.
    pub via_path: Option<&'static Leading>,
}

#[derive(Debug)]
pub struct Unit {
    pub table: &'static str,
    pub keyset: Keyset,
    /// The parent's tenant (messages and conversations reach it through their app).
    pub tenant: &'static str,
    /// Which parent rows go.
    pub filter: &'static str,
    /// Re-checked with the rows locked, just before deleting: `$1` the batch's ids.
    pub recheck: &'static str,
    /// In delete order; the parent itself goes last.
    pub dependents: &'static [Dependent],
}

const APP_TENANT: &str = "(SELECT a.tenant_id FROM public.apps a WHERE a.id = p.app_id)";

const fn child(table: &'static str, column: &'static str) -> Dependent {
    Dependent {
        table,
        column,
        via: None,
        only: None,
        fate: Fate::Delete,
        path: None,
        via_path: None,
    }
}

const fn by_message(table: &'static str) -> Dependent {
    child(table, "message_id")
}

/// Every unit, in the order a purge runs them: messages first (so conversations and runs lose
/// their last references), then conversations, runs, and the rows older runs left behind.
pub const UNITS: &[Unit] = &[
    Unit {
        table: "messages",
        keyset: Keyset::CreatedAtId,
        tenant: APP_TENANT,
        filter: "p.created_at < $2 AND p.app_id IN \
                 (SELECT a.id FROM public.apps a WHERE $1::uuid[] IS NULL OR a.tenant_id = ANY($1))",
        recheck: "p.created_at < $2",
        dependents: &[
            by_message("dataset_retriever_resources"),
            by_message("message_feedbacks"),
            by_message("message_files"),
            // Thoughts point at chains: thoughts first.
            by_message("message_agent_thoughts"),
            by_message("message_chains"),
            by_message("app_annotation_hit_histories"),
            by_message("saved_messages"),
            Dependent {
                fate: Fate::Detach(&["message_id", "conversation_id"]),
                ..by_message("message_annotations")
            },
        ],
    },
    Unit {
        table: "conversations",
        keyset: Keyset::Id,
        tenant: APP_TENANT,
        // Dify selects by `updated_at`; a conversation goes only with its last message.
        filter: "p.updated_at < $2 AND p.app_id IN \
                 (SELECT a.id FROM public.apps a WHERE $1::uuid[] IS NULL OR a.tenant_id = ANY($1)) \
                 AND NOT EXISTS (SELECT 1 FROM public.messages m \
                                 WHERE m.conversation_id = p.id AND m.created_at >= $2)",
        recheck: "p.updated_at < $2 AND NOT EXISTS \
                  (SELECT 1 FROM public.messages m WHERE m.conversation_id = p.id)",
        dependents: &[
            child("pinned_conversations", "conversation_id"),
            child("workflow_conversation_variables", "conversation_id"),
            // Feedback whose message is already gone (the message purge takes the rest).
            Dependent {
                only: Some(
                    "NOT EXISTS (SELECT 1 FROM public.messages m WHERE m.id = t.message_id)",
                ),
                ..child("message_feedbacks", "conversation_id")
            },
        ],
    },
    Unit {
        table: "workflow_runs",
        keyset: Keyset::CreatedAtId,
        tenant: "p.tenant_id",
        // Running and paused runs are live work (a paused run waits for a human): never purged.
        filter: "p.created_at < $2 AND ($1::uuid[] IS NULL OR p.tenant_id = ANY($1)) \
                 AND p.status IN ('succeeded', 'failed', 'partial-succeeded', 'stopped') \
                 AND NOT (p.id = ANY($6))",
        recheck: "p.status IN ('succeeded', 'failed', 'partial-succeeded', 'stopped')",
        dependents: &[
            Dependent {
                via: Some(("workflow_node_executions", "workflow_run_id")),
                ..child("workflow_node_execution_offload", "node_execution_id")
            },
            child("workflow_node_executions", "workflow_run_id"),
            child("workflow_app_logs", "workflow_run_id"),
            Dependent {
                via: Some(("workflow_pauses", "workflow_run_id")),
                ..child("workflow_pause_reasons", "pause_id")
            },
            child("workflow_pauses", "workflow_run_id"),
            child("workflow_trigger_logs", "workflow_run_id"),
        ],
    },
    // Node executions without a run (single-step debug runs) or whose run is gone.
    Unit {
        table: "workflow_node_executions",
        keyset: Keyset::Id,
        tenant: "p.tenant_id",
        filter: "p.created_at < $2 AND ($1::uuid[] IS NULL OR p.tenant_id = ANY($1)) \
                 AND (p.workflow_run_id IS NULL OR NOT EXISTS \
                      (SELECT 1 FROM public.workflow_runs r WHERE r.id = p.workflow_run_id))",
        recheck: "p.workflow_run_id IS NULL OR NOT EXISTS \
                  (SELECT 1 FROM public.workflow_runs r WHERE r.id = p.workflow_run_id)",
        dependents: &[child(
            "workflow_node_execution_offload",
            "node_execution_id",
        )],
    },
    // App logs whose run is gone (e.g. left by an interrupted `flask` purge).
    Unit {
        table: "workflow_app_logs",
        keyset: Keyset::Id,
        tenant: "p.tenant_id",
        filter: "p.created_at < $2 AND ($1::uuid[] IS NULL OR p.tenant_id = ANY($1)) \
                 AND NOT EXISTS (SELECT 1 FROM public.workflow_runs r WHERE r.id = p.workflow_run_id)",
        recheck: "NOT EXISTS (SELECT 1 FROM public.workflow_runs r WHERE r.id = p.workflow_run_id)",
        dependents: &[],
    },
];

/// Runs older than the cutoff that a younger message still points at (advanced-chat messages
/// carry their run's id): purging them would leave a live message pointing at nothing.
/// `$1` is the cutoff. Reads only the messages younger than the cutoff, by their time index.
pub const PROTECTED_RUNS: &str = "SELECT DISTINCT m.workflow_run_id FROM public.messages m \
     WHERE m.created_at >= $1 AND m.workflow_run_id IS NOT NULL \
     AND EXISTS (SELECT 1 FROM public.workflow_runs r \
                 WHERE r.id = m.workflow_run_id AND r.created_at < $1)";

const ID: Col = col("id", Ty::Uuid);
const CREATED_AT: Col = col("created_at", Ty::Timestamp);
const TENANT: Col = col("tenant_id", Ty::Uuid);
const BY_MESSAGE: &[Col] = &[ID, col("message_id", Ty::Uuid)];
const BY_CONVERSATION: &[Col] = &[ID, col("conversation_id", Ty::Uuid)];
const BY_RUN: &[Col] = &[ID, col("workflow_run_id", Ty::Uuid)];

/// Every table and column the statements above read or change, as the shape check wants
/// them. Tables a release lacks (offloads before 1.9, pauses and trigger logs before 1.13)
/// are skipped: their rows cannot exist there.
pub const NEEDS: &[Need] = &[
    need("apps", &[ID, TENANT]),
    need(
        "messages",
        &[
            ID,
            CREATED_AT,
            col("app_id", Ty::Uuid),
            col("conversation_id", Ty::Uuid),
            col("workflow_run_id", Ty::Uuid),
        ],
    ),
    need("dataset_retriever_resources", BY_MESSAGE),
    need(
        "message_feedbacks",
        &[
            ID,
            col("message_id", Ty::Uuid),
            col("conversation_id", Ty::Uuid),
        ],
    ),
    need("message_files", BY_MESSAGE),
    need("message_agent_thoughts", BY_MESSAGE),
    need("message_chains", BY_MESSAGE),
    need("app_annotation_hit_histories", BY_MESSAGE),
    need("saved_messages", BY_MESSAGE),
    need(
        "message_annotations",
        &[
            ID,
            nulled("message_id", Ty::Uuid),
            nulled("conversation_id", Ty::Uuid),
        ],
    ),
    need(
        "conversations",
        &[
            ID,
            col("app_id", Ty::Uuid),
            col("updated_at", Ty::Timestamp),
        ],
    ),
    need("pinned_conversations", BY_CONVERSATION),
    need("workflow_conversation_variables", BY_CONVERSATION),
    need(
        "workflow_runs",
        &[ID, TENANT, CREATED_AT, col("status", Ty::Text)],
    ),
    need(
        "workflow_node_executions",
        &[ID, TENANT, CREATED_AT, col("workflow_run_id", Ty::Uuid)],
    ),
    need(
        "workflow_node_execution_offload",
        &[ID, col("node_execution_id", Ty::Uuid)],
    ),
    need(
        "workflow_app_logs",
        &[ID, TENANT, CREATED_AT, col("workflow_run_id", Ty::Uuid)],
    ),
    need("workflow_pauses", BY_RUN),
    need("workflow_pause_reasons", &[ID, col("pause_id", Ty::Uuid)]),
    need("workflow_trigger_logs", BY_RUN),
];

/// Every table a purge reads or changes.
pub fn tables() -> Vec<&'static str> {
    NEEDS.iter().map(|n| n.table).collect()
}

impl Dependent {
    /// Whether this release has the dependent's table (and the one it hangs off).
    pub fn present(&self, fit: &Fit) -> bool {
        fit.has(self.table) && self.via.is_none_or(|(via, _)| fit.has(via))
    }
}

impl Unit {
    /// The next batch of parent rows: id, tenant, the cursor's time, and the row as JSON.
    pub fn select_batch(&self, row_json: &str) -> String {
        self.select_batch_by(self.keyset, row_json)
    }

    /// The same, walking by `keyset` (a release without the time index walks by id).
    pub fn select_batch_by(&self, keyset: Keyset, row_json: &str) -> String {
        let (time, after, order) = match keyset {
            Keyset::CreatedAtId => (
                "p.created_at",
                "(p.created_at, p.id) > ($3, $4)",
                "p.created_at, p.id",
            ),
            Keyset::Id => ("NULL::timestamp", "p.id > $4", "p.id"),
        };
        format!(
            "SELECT p.id, {tenant}, {time}, {row_json} FROM public.{table} p \
             WHERE {filter} AND ({after}) ORDER BY {order} LIMIT $5",
            tenant = self.tenant,
            table = self.table,
            filter = self.filter,
        )
    }

    /// Locks the batch's parents that still qualify: `$1` ids, `$2` cutoff.
    pub fn lock_eligible(&self) -> String {
        format!(
            "SELECT p.id FROM public.{} p WHERE p.id = ANY($1) AND ({}) FOR UPDATE OF p",
            self.table, self.recheck
        )
    }

    pub fn delete_parents(&self) -> String {
        format!(
            "DELETE FROM public.{} WHERE id = ANY($1) RETURNING id",
            self.table
        )
    }

    /// Rows per tenant that a purge with these parameters would remove now.
    pub fn count_per_tenant(&self) -> String {
        format!(
            "SELECT {tenant}, count(*) FROM public.{table} p WHERE {filter} GROUP BY 1",
            tenant = self.tenant,
            table = self.table,
            filter = self.filter,
        )
    }
}

impl Dependent {
    /// `t`'s rows under the parents `$1`, by an index on the linking column: the parent ids
    /// (or the intermediate's ids, gathered once) as an array, never a join the planner could
    /// turn into a scan of the whole table.
    fn under_parents(&self) -> String {
        let column = quote_ident(self.column);
        let mut cond = match (self.via, self.path) {
            (None, None) => format!("t.{column} = ANY($1)"),
            (None, Some(leading)) => leading.cond_for("t"),
            (Some((via, fk)), _) => {
                let inner = match self.via_path {
                    Some(leading) => leading.cond_for("v"),
                    None => format!("v.{} = ANY($1)", quote_ident(fk)),
                };
                format!("t.{column} = ANY(ARRAY(SELECT v.id FROM public.{via} v WHERE {inner}))")
            }
        };
        if let Some(only) = self.only {
            cond = format!("{cond} AND {only}");
        }
        cond
    }

    /// The parent id of `t`.
    fn parent_of(&self) -> String {
        let column = quote_ident(self.column);
        match self.via {
            None => format!("t.{column}"),
            Some((via, fk)) => format!(
                "(SELECT v.{} FROM public.{via} v WHERE v.id = t.{column})",
                quote_ident(fk)
            ),
        }
    }

    /// The dependents of the parents `$1`: id, parent id, and the row as JSON.
    pub fn select_for(&self, row_json: &str) -> String {
        format!(
            "SELECT t.id, {parent}, {row_json} FROM public.{table} t WHERE {cond}",
            parent = self.parent_of(),
            table = self.table,
            cond = self.under_parents(),
        )
    }

    /// Deletes (or detaches) the dependents of the parents `$1`, returning their ids.
    pub fn apply_for(&self) -> String {
        let (table, cond) = (self.table, self.under_parents());
        match self.fate {
            Fate::Delete => format!("DELETE FROM public.{table} t WHERE {cond} RETURNING t.id"),
            Fate::Detach(columns) => {
                let set: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{} = NULL", quote_ident(c)))
                    .collect();
                format!(
                    "UPDATE public.{table} t SET {} WHERE {cond} RETURNING t.id",
                    set.join(", ")
                )
            }
        }
    }

    /// Dependents per tenant of the parents `unit` would remove now (one join over both).
    pub fn count_per_tenant(&self, unit: &Unit) -> String {
        let column = quote_ident(self.column);
        let link = match self.via {
            None => format!("JOIN public.{} t ON t.{column} = p.id", self.table),
            Some((via, fk)) => format!(
                "JOIN public.{via} v ON v.{} = p.id JOIN public.{} t ON t.{column} = v.id",
                quote_ident(fk),
                self.table
            ),
        };
        let only = self.only.map(|o| format!(" AND {o}")).unwrap_or_default();
        format!(
            "SELECT {tenant}, count(*) FROM public.{parent} p {link} WHERE {filter}{only} GROUP BY 1",
            tenant = unit.tenant,
            parent = unit.table,
            filter = unit.filter,
        )
    }
}

/// An expression turning the row `p` of `columns` (name, Postgres type) into Dify's export
/// JSON: uuids as strings, naive timestamps in Python's `isoformat()` (microseconds only when
/// not zero), numerics as strings in fixed notation, json columns nested, text as stored.
pub fn row_json(alias: &str, columns: &[(String, String)]) -> String {
    let fields: Vec<String> = columns
        .iter()
        .map(|(name, ty)| {
            let col = format!("{alias}.{}", quote_ident(name));
            let value = match ty.as_str() {
                "timestamp without time zone" => format!(
                    "to_char({col}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN \
                     extract(microseconds FROM {col})::bigint % 1000000 = 0 THEN '' \
                     ELSE to_char({col}, '.US') END"
                ),
                "numeric" => format!("{col}::text"),
                _ => col,
            };
            format!("{value} AS {}", quote_ident(name))
        })
        .collect();
    format!(
        "(SELECT row_to_json(r) FROM (SELECT {}) r)::text",
        fields.join(", ")
    )
}

/// Python's `json.dumps(..., ensure_ascii=True)` escaping: every non-ASCII character as
/// lower-case `\uXXXX` UTF-16 units. Only strings can hold such characters, so the escape is
/// safe to apply to a whole JSON text. Appends to a byte buffer (an export file being built);
/// runs of ASCII, nearly all of a row, are copied whole.
pub fn ensure_ascii(json: &str, out: &mut Vec<u8>) {
    use std::io::Write;
    let mut rest = json;
    while let Some(at) = rest.bytes().position(|b| !b.is_ascii()) {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let mut chars = rest[at..].chars();
        let Some(c) = chars.next() else { break };
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            let _ = write!(out, "\\u{u:04x}");
        }
        rest = chars.as_str();
    }
    out.extend_from_slice(rest.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_python() {
        let mut out = Vec::new();
        ensure_ascii(r#"{"a":"café 😀", "b":"ü"}"#, &mut out);
        assert_eq!(out, br#"{"a":"caf\u00e9 \ud83d\ude00", "b":"\u00fc"}"#);
    }

    #[test]
    fn the_needs_cover_every_table_the_units_touch() {
        for unit in UNITS {
            assert!(tables().contains(&unit.table), "{}", unit.table);
            for d in unit.dependents {
                assert!(tables().contains(&d.table), "{}", d.table);
                if let Some((via, _)) = d.via {
                    assert!(tables().contains(&via), "{via}");
                }
            }
        }
    }

    #[test]
    fn dependents_come_before_what_they_point_at() {
        let messages = &UNITS[0];
        let pos = |t: &str| messages.dependents.iter().position(|d| d.table == t);
        assert!(pos("message_agent_thoughts") < pos("message_chains"));
        let runs = UNITS
            .iter()
            .find(|u| u.table == "workflow_runs")
            .expect("runs");
        let pos = |t: &str| runs.dependents.iter().position(|d| d.table == t);
        assert!(pos("workflow_node_execution_offload") < pos("workflow_node_executions"));
        assert!(pos("workflow_pause_reasons") < pos("workflow_pauses"));
    }
}
