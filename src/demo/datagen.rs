//! A realistic Dify for tests, the demo and benchmarks: workspaces with chat, agent and
//! workflow apps, months of conversations and runs, knowledge bases and their files.
//!
//! Every row is derived from `DemoSpec::seed` and the row's index, so the same spec always
//! yields the same ids (only timestamps move with the clock), each table is produced on its
//! own, and tables are streamed with `COPY` several at a time with bounded memory.

mod copy;
mod dead;
mod files;
mod foundation;
mod ids;
mod knowledge;
mod messages;
mod text;
mod workflows;
mod world;

use std::collections::BTreeMap;
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

/// COPY streams running at once. Each holds one pooled connection; PostgreSQL does most of the
/// work, so a few streams keep two cores busy without starving the caller's pool.
const COPY_STREAMS: usize = 3;

/// Fills an empty Dify schema (the fixture or Dify's own) with the world `spec` describes.
pub async fn generate(pool: &PgPool, spec: &DemoSpec) -> Result<GenSummary, sqlx::Error> {
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp();
    let world = Arc::new(World::new(spec, now));

    let permits = Arc::new(Semaphore::new(COPY_STREAMS));
    let mut tasks = JoinSet::new();
    for table in Table::ALL {
        let (pool, world, permits) = (pool.clone(), world.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            table
                .copy(&pool, &world)
                .await
                .map(|rows| (table.name(), rows))
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
                failure.get_or_insert(sqlx::Error::Protocol(format!("generator task failed: {e}")));
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }

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

/// Every table the generator fills, biggest first so the long streams start early.
#[derive(Clone, Copy, Debug)]
enum Table {
    Messages,
    WorkflowNodeExecutions,
    WorkflowRuns,
    MessageAgentThoughts,
    DatasetRetrieverResources,
    Conversations,
    DocumentSegments,
    MessageChains,
    MessageFeedbacks,
    MessageFiles,
    UploadFiles,
    WorkflowAppLogs,
    WorkflowConversationVariables,
    SavedMessages,
    PinnedConversations,
    ToolFiles,
    MessageAnnotations,
    AppAnnotationHitHistories,
    WorkflowTriggerLogs,
    WorkflowNodeExecutionOffload,
    WorkflowPauses,
    WorkflowPauseReasons,
    Documents,
    EndUsers,
    Tenants,
    Accounts,
    TenantAccountJoins,
    Apps,
    AppModelConfigs,
    Sites,
    InstalledApps,
    Workflows,
    WorkflowDraftVariables,
    WorkflowDraftVariableFiles,
    DatasetCollectionBindings,
    Datasets,
    DatasetProcessRules,
    AppAnnotationSettings,
}

impl Table {
    const ALL: [Table; 38] = [
        Table::Messages,
        Table::WorkflowNodeExecutions,
        Table::WorkflowRuns,
        Table::MessageAgentThoughts,
        Table::DatasetRetrieverResources,
        Table::Conversations,
        Table::DocumentSegments,
        Table::MessageChains,
        Table::MessageFeedbacks,
        Table::MessageFiles,
        Table::UploadFiles,
        Table::WorkflowAppLogs,
        Table::WorkflowConversationVariables,
        Table::SavedMessages,
        Table::PinnedConversations,
        Table::ToolFiles,
        Table::MessageAnnotations,
        Table::AppAnnotationHitHistories,
        Table::WorkflowTriggerLogs,
        Table::WorkflowNodeExecutionOffload,
        Table::WorkflowPauses,
        Table::WorkflowPauseReasons,
        Table::Documents,
        Table::EndUsers,
        Table::Tenants,
        Table::Accounts,
        Table::TenantAccountJoins,
        Table::Apps,
        Table::AppModelConfigs,
        Table::Sites,
        Table::InstalledApps,
        Table::Workflows,
        Table::WorkflowDraftVariables,
        Table::WorkflowDraftVariableFiles,
        Table::DatasetCollectionBindings,
        Table::Datasets,
        Table::DatasetProcessRules,
        Table::AppAnnotationSettings,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Messages => "messages",
            Table::WorkflowNodeExecutions => "workflow_node_executions",
            Table::WorkflowRuns => "workflow_runs",
            Table::MessageAgentThoughts => "message_agent_thoughts",
            Table::DatasetRetrieverResources => "dataset_retriever_resources",
            Table::Conversations => "conversations",
            Table::DocumentSegments => "document_segments",
            Table::MessageChains => "message_chains",
            Table::MessageFeedbacks => "message_feedbacks",
            Table::MessageFiles => "message_files",
            Table::UploadFiles => "upload_files",
            Table::WorkflowAppLogs => "workflow_app_logs",
            Table::WorkflowConversationVariables => "workflow_conversation_variables",
            Table::SavedMessages => "saved_messages",
            Table::PinnedConversations => "pinned_conversations",
            Table::ToolFiles => "tool_files",
            Table::MessageAnnotations => "message_annotations",
            Table::AppAnnotationHitHistories => "app_annotation_hit_histories",
            Table::WorkflowTriggerLogs => "workflow_trigger_logs",
            Table::WorkflowNodeExecutionOffload => "workflow_node_execution_offload",
            Table::WorkflowPauses => "workflow_pauses",
            Table::WorkflowPauseReasons => "workflow_pause_reasons",
            Table::Documents => "documents",
            Table::EndUsers => "end_users",
            Table::Tenants => "tenants",
            Table::Accounts => "accounts",
            Table::TenantAccountJoins => "tenant_account_joins",
            Table::Apps => "apps",
            Table::AppModelConfigs => "app_model_configs",
            Table::Sites => "sites",
            Table::InstalledApps => "installed_apps",
            Table::Workflows => "workflows",
            Table::WorkflowDraftVariables => "workflow_draft_variables",
            Table::WorkflowDraftVariableFiles => "workflow_draft_variable_files",
            Table::DatasetCollectionBindings => "dataset_collection_bindings",
            Table::Datasets => "datasets",
            Table::DatasetProcessRules => "dataset_process_rules",
            Table::AppAnnotationSettings => "app_annotation_settings",
        }
    }

    async fn copy(self, pool: &PgPool, w: &World) -> Result<u64, sqlx::Error> {
        match self {
            Table::Messages => messages::messages(pool, w).await,
            Table::WorkflowNodeExecutions => workflows::workflow_node_executions(pool, w).await,
            Table::WorkflowRuns => workflows::workflow_runs(pool, w).await,
            Table::MessageAgentThoughts => messages::message_agent_thoughts(pool, w).await,
            Table::DatasetRetrieverResources => {
                messages::dataset_retriever_resources(pool, w).await
            }
            Table::Conversations => messages::conversations(pool, w).await,
            Table::DocumentSegments => knowledge::document_segments(pool, w).await,
            Table::MessageChains => messages::message_chains(pool, w).await,
            Table::MessageFeedbacks => messages::message_feedbacks(pool, w).await,
            Table::MessageFiles => messages::message_files(pool, w).await,
            Table::UploadFiles => files::upload_files(pool, w).await,
            Table::WorkflowAppLogs => workflows::workflow_app_logs(pool, w).await,
            Table::WorkflowConversationVariables => {
                messages::workflow_conversation_variables(pool, w).await
            }
            Table::SavedMessages => messages::saved_messages(pool, w).await,
            Table::PinnedConversations => messages::pinned_conversations(pool, w).await,
            Table::ToolFiles => files::tool_files(pool, w).await,
            Table::MessageAnnotations => messages::message_annotations(pool, w).await,
            Table::AppAnnotationHitHistories => {
                messages::app_annotation_hit_histories(pool, w).await
            }
            Table::WorkflowTriggerLogs => workflows::workflow_trigger_logs(pool, w).await,
            Table::WorkflowNodeExecutionOffload => {
                workflows::workflow_node_execution_offload(pool, w).await
            }
            Table::WorkflowPauses => workflows::workflow_pauses(pool, w).await,
            Table::WorkflowPauseReasons => workflows::workflow_pause_reasons(pool, w).await,
            Table::Documents => knowledge::documents(pool, w).await,
            Table::EndUsers => foundation::end_users(pool, w).await,
            Table::Tenants => foundation::tenants(pool, w).await,
            Table::Accounts => foundation::accounts(pool, w).await,
            Table::TenantAccountJoins => foundation::tenant_account_joins(pool, w).await,
            Table::Apps => foundation::apps(pool, w).await,
            Table::AppModelConfigs => foundation::app_model_configs(pool, w).await,
            Table::Sites => foundation::sites(pool, w).await,
            Table::InstalledApps => foundation::installed_apps(pool, w).await,
            Table::Workflows => foundation::workflows(pool, w).await,
            Table::WorkflowDraftVariables => workflows::workflow_draft_variables(pool, w).await,
            Table::WorkflowDraftVariableFiles => {
                workflows::workflow_draft_variable_files(pool, w).await
            }
            Table::DatasetCollectionBindings => {
                knowledge::dataset_collection_bindings(pool, w).await
            }
            Table::Datasets => knowledge::datasets(pool, w).await,
            Table::DatasetProcessRules => knowledge::dataset_process_rules(pool, w).await,
            Table::AppAnnotationSettings => knowledge::app_annotation_settings(pool, w).await,
        }
    }
}
