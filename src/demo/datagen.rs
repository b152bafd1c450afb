//! A realistic Dify for tests, the demo and benchmarks: workspaces with chat, agent and
//! workflow apps, months of conversations and runs, knowledge bases and their files.
//!
//! Every row is derived from `DemoSpec::seed` and the row's index, so the same spec always
//! yields the same ids (only timestamps move with the clock), each table is produced on its
//! own, and tables are streamed with `COPY` several at a time with bounded memory, their
//! indexes built once the rows are in.

mod copy;
mod dead;
mod files;
mod foundation;
mod ids;
mod indexes;
mod knowledge;
mod logs;
mod message_extras;
mod messages;
mod text;
mod workflows;
mod world;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

use world::World;

/// How much of a Dify to generate.
#[derive(Clone, Debug, Serialize)]
pub struct DemoSpec {
    pub seed: u64,
    pub tenants: usize,
    /// Apps take the modes chat, advanced-chat, workflow, completion, agent-chat in turn.
    pub apps_per_tenant: usize,
    /// For every app but workflow apps.
    pub conversations_per_app: usize,
    pub messages_per_conversation: usize,
    /// For workflow apps; advanced-chat apps get one run per message besides.
    pub workflow_runs_per_app: usize,
    pub nodes_per_run: usize,
    /// Size of the graph each workflow run carries (Dify copies the workflow's graph into
    /// every run); 0 keeps an empty graph.
    pub run_graph_bytes: usize,
    pub datasets_per_tenant: usize,
    pub documents_per_dataset: usize,
    pub segments_per_document: usize,
    /// User uploads; documents, offloaded outputs and draft variables add their own files.
    pub upload_files_per_tenant: usize,
    /// Log rows are spread over this many days back from now.
    pub days_spread: u32,
    /// Share of rows of a few message-side tables updated or deleted after loading, so the
    /// database has dead tuples for `vacuum` to reclaim.
    pub dead_row_fraction: f64,
}

impl DemoSpec {
    /// Small enough to generate in a couple of seconds: three workspaces, about 3,000 messages.
    pub fn demo() -> Self {
        Self {
            seed: 20_260_701,
            tenants: 3,
            apps_per_tenant: 5,
            conversations_per_app: 40,
            messages_per_conversation: 6,
            workflow_runs_per_app: 80,
            nodes_per_run: 4,
            run_graph_bytes: 0,
            datasets_per_tenant: 2,
            documents_per_dataset: 5,
            segments_per_document: 20,
            upload_files_per_tenant: 30,
            days_spread: 90,
            dead_row_fraction: 0.1,
        }
    }

    /// About `messages` messages (with their dependents) for benchmarks: four workspaces of
    /// ten apps, eight messages per conversation.
    pub fn scaled(messages: usize) -> Self {
        let tenants = 4;
        let apps_per_tenant = 10;
        let messages_per_conversation = 8;
        // Four of every five apps hold conversations.
        let message_apps = tenants * apps_per_tenant * 4 / 5;
        let conversations_per_app = messages.div_ceil(message_apps * messages_per_conversation);
        Self {
            seed: 20_260_701,
            tenants,
            apps_per_tenant,
            conversations_per_app: conversations_per_app.max(1),
            messages_per_conversation,
            workflow_runs_per_app: (messages / 100).max(10),
            nodes_per_run: 4,
            run_graph_bytes: 0,
            datasets_per_tenant: 3,
            documents_per_dataset: 20,
            segments_per_document: (messages / 2_000).clamp(10, 200),
            upload_files_per_tenant: (messages / 500).max(30),
            days_spread: 180,
            dead_row_fraction: 0.1,
        }
    }
}

/// A workspace the generator created.
#[derive(Clone, Debug, Serialize)]
pub struct GeneratedTenant {
    pub id: Uuid,
    pub name: String,
    pub status: String,
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct GenSummary {
    pub seed: u64,
    /// Rows per table after the dead-row pass, for every table the generator fills.
    pub rows: BTreeMap<String, u64>,
    /// Rows updated or deleted per table to leave dead tuples behind.
    pub dead_rows: BTreeMap<String, u64>,
    pub tenants: Vec<GeneratedTenant>,
    pub elapsed_ms: u64,
}

impl GenSummary {
    pub fn total_rows(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// COPY streams (and index builds) running at once. Each holds one pooled connection;
/// PostgreSQL does most of the work, so a few keep two cores busy without starving the
/// caller's pool.
const STREAMS: usize = 3;

/// Fills an empty Dify schema (the fixture or Dify's own) with the world `spec` describes.
///
/// The loaded tables' indexes and unique constraints are dropped during the load and rebuilt
/// after it with their exact names and definitions, also when the load fails (see
/// `indexes`). A generation killed half-way leaves them missing: this is for test, demo and
/// bench databases only.
pub async fn generate(pool: &PgPool, spec: &DemoSpec) -> Result<GenSummary, sqlx::Error> {
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp();
    let world = Arc::new(World::new(spec, now));

    let tables: Vec<&str> = TABLES.iter().map(|&(table, _)| table).collect();
    let deferred = indexes::defer(pool, &tables).await?;
    let loaded = copy_all(pool, &world).await;
    let rebuilt = indexes::rebuild(pool, deferred, STREAMS).await;
    let mut rows = loaded?;
    rebuilt?;

    let dead_rows = dead::make_dead_rows(pool, spec.dead_row_fraction, &mut rows).await?;
    Ok(GenSummary {
        seed: spec.seed,
        rows,
        dead_rows,
        tenants: world
            .tenants
            .iter()
            .map(|t| GeneratedTenant {
                id: t.id,
                name: t.name.clone(),
                status: t.status.to_owned(),
            })
            .collect(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Streams every table, `STREAMS` at a time, and returns the rows each received.
async fn copy_all(pool: &PgPool, world: &Arc<World>) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let permits = Arc::new(Semaphore::new(STREAMS));
    let mut tasks = JoinSet::new();
    for &(table, copy) in TABLES {
        let (pool, world, permits) = (pool.clone(), world.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            copy(&pool, &world).await.map(|rows| (table, rows))
        });
    }
    let mut rows = BTreeMap::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((table, n))) => {
                rows.insert(table.to_owned(), n);
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                let e = sqlx::Error::Protocol(format!("generator task failed: {e}"));
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(rows), Err)
}

type CopyFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, sqlx::Error>> + Send + 'a>>;
type CopyTable = for<'a> fn(&'a PgPool, &'a World) -> CopyFuture<'a>;

macro_rules! table {
    ($name:literal, $copy:path) => {
        ($name, |pool, world| Box::pin($copy(pool, world)))
    };
}

/// Every table the generator fills, biggest first so the long streams start early.
const TABLES: &[(&str, CopyTable)] = &[
    table!("messages", messages::messages),
    table!(
        "workflow_node_executions",
        workflows::workflow_node_executions
    ),
    table!("workflow_runs", workflows::workflow_runs),
    table!("message_agent_thoughts", messages::message_agent_thoughts),
    table!(
        "dataset_retriever_resources",
        message_extras::dataset_retriever_resources
    ),
    table!("conversations", messages::conversations),
    table!("document_segments", knowledge::document_segments),
    table!("message_chains", messages::message_chains),
    table!("message_feedbacks", messages::message_feedbacks),
    table!("message_files", messages::message_files),
    table!("upload_files", files::upload_files),
    table!("workflow_app_logs", workflows::workflow_app_logs),
    table!(
        "workflow_conversation_variables",
        message_extras::workflow_conversation_variables
    ),
    table!("saved_messages", message_extras::saved_messages),
    table!("pinned_conversations", message_extras::pinned_conversations),
    table!("tool_files", files::tool_files),
    table!("message_annotations", message_extras::message_annotations),
    table!(
        "app_annotation_hit_histories",
        message_extras::app_annotation_hit_histories
    ),
    table!("workflow_trigger_logs", workflows::workflow_trigger_logs),
    table!(
        "workflow_node_execution_offload",
        workflows::workflow_node_execution_offload
    ),
    table!("workflow_pauses", workflows::workflow_pauses),
    table!("workflow_pause_reasons", workflows::workflow_pause_reasons),
    table!("documents", knowledge::documents),
    table!("end_users", foundation::end_users),
    table!("tenants", foundation::tenants),
    table!("accounts", foundation::accounts),
    table!("tenant_account_joins", foundation::tenant_account_joins),
    table!("apps", foundation::apps),
    table!("app_model_configs", foundation::app_model_configs),
    table!("sites", foundation::sites),
    table!("installed_apps", foundation::installed_apps),
    table!("workflows", foundation::workflows),
    table!(
        "workflow_draft_variables",
        workflows::workflow_draft_variables
    ),
    table!(
        "workflow_draft_variable_files",
        workflows::workflow_draft_variable_files
    ),
    table!(
        "dataset_collection_bindings",
        knowledge::dataset_collection_bindings
    ),
    table!("datasets", knowledge::datasets),
    table!("dataset_process_rules", knowledge::dataset_process_rules),
    table!(
        "app_annotation_settings",
        knowledge::app_annotation_settings
    ),
];
