//! Workflow runs and every table the purge and retention commands delete along with them.

use sqlx::PgPool;
use uuid::Uuid;

use super::copy::CopyWriter;
use super::foundation::workflow_version;
use super::ids::{self, Kind, uuid4, uuid7};
use super::logs::{Node, Run, RunKind};
use super::text::{self, json_str};
use super::world::{App, World};

type Rows = Result<u64, sqlx::Error>;

fn run_inputs(run: &Run) -> String {
    let query = json_str(text::QUERIES[run.query]);
    match run.kind {
        RunKind::Workflow => format!(r#"{{"query": {query}, "sys.files": []}}"#),
        RunKind::Chat => {
            format!(r#"{{"sys.query": {query}, "sys.files": [], "sys.dialogue_count": 1}}"#)
        }
    }
}

fn run_outputs(run: &Run) -> Option<String> {
    run.finished()
        .map(|_| format!(r#"{{"answer": {}}}"#, json_str(text::ANSWERS[run.query])))
}

/// A graph as Dify's editor saves it (start, LLM nodes with their prompts, an answer, the
/// edges between them), grown to about `bytes`; one per app, copied into each of its runs.
fn run_graph(app: &App, bytes: usize) -> String {
    let empty = r#"{"nodes": [], "edges": [], "viewport": {"x": 0, "y": 0, "zoom": 1}}"#;
    if bytes == 0 {
        return empty.to_owned();
    }
    let id = |n: usize| 1_718_000_000_000u64 + app.index as u64 * 1000 + n as u64;
    let (mut nodes, mut edges) = (Vec::new(), Vec::new());
    let mut size = empty.len();
    let mut n = 0;
    while size < bytes {
        let prompt = json_str(text::PARAGRAPHS[(app.index + n) % text::PARAGRAPHS.len()]);
        let node = format!(
            r#"{{"id": "{}", "type": "custom", "data": {{"type": "llm", "title": "LLM {n}", "desc": "", "selected": false, "model": {{"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat", "completion_params": {{"temperature": 0.7}}}}, "prompt_template": [{{"id": "{}-system", "role": "system", "text": {prompt}}}, {{"role": "user", "text": "{{{{#sys.query#}}}}"}}], "context": {{"enabled": false, "variable_selector": []}}, "vision": {{"enabled": false}}, "variables": []}}, "position": {{"x": {}, "y": 282}}, "positionAbsolute": {{"x": {}, "y": 282}}, "width": 244, "height": 98, "sourcePosition": "right", "targetPosition": "left"}}"#,
            id(n),
            id(n),
            80 + n * 300,
            80 + n * 300,
        );
        size += node.len() + 2;
        nodes.push(node);
        if n > 0 {
            let edge = format!(
                r#"{{"id": "{a}-source-{b}-target", "type": "custom", "source": "{a}", "sourceHandle": "source", "target": "{b}", "targetHandle": "target", "data": {{"sourceType": "llm", "targetType": "llm", "isInIteration": false}}, "zIndex": 0}}"#,
                a = id(n - 1),
                b = id(n),
            );
            size += edge.len() + 2;
            edges.push(edge);
        }
        n += 1;
    }
    format!(
        r#"{{"nodes": [{}], "edges": [{}], "viewport": {{"x": 0, "y": 0, "zoom": 1}}}}"#,
        nodes.join(", "),
        edges.join(", ")
    )
}

fn run_error(status: &str) -> Option<&'static str> {
    match status {
        "failed" => Some("Node LLM run failed: [openai] Connection error."),
        "stopped" => Some("Workflow execution stopped by user."),
        _ => None,
    }
}

pub(super) async fn workflow_runs(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_runs",
        "id, tenant_id, app_id, workflow_id, type, triggered_from, version, graph, \
         inputs, status, outputs, error, elapsed_time, total_tokens, total_steps, \
         created_by_role, created_by, created_at, finished_at, exceptions_count, \
         sequence_number",
    )
    .await?;
    let versions: Vec<String> = w.apps.iter().map(workflow_version).collect();
    // Up to 1.4.x every run has `sequence_number integer NOT NULL`: 1, 2, ... per app.
    let mut sequence = vec![0i64; w.apps.len()];
    let graphs: Vec<String> = w
        .apps
        .iter()
        .map(|app| run_graph(app, w.spec.run_graph_bytes))
        .collect();
    for run in w.runs() {
        let app = &w.apps[run.app];
        out.uuid(run.id)
            .uuid(w.tenants[app.tenant].id)
            .uuid(app.id)
            .uuid(app.workflow.unwrap_or_default())
            .text(if run.kind == RunKind::Chat {
                "chat"
            } else {
                "workflow"
            })
            .text(run.triggered_from)
            .text(&versions[run.app])
            .text(&graphs[run.app])
            .text(&run_inputs(&run))
            .text(run.status)
            .opt_text(run_outputs(&run).as_deref())
            .opt_text(run_error(run.status))
            .float(run.elapsed)
            .int(run.tokens)
            .int(w.spec.nodes_per_run as i64)
            .text(run.actor.role())
            .uuid(run.actor.id())
            .ts(run.created, 0)
            .opt_ts(run.finished())
            .int(i64::from(run.status == "partial-succeeded"));
        sequence[run.app] += 1;
        out.int(sequence[run.app]);
        out.end_row().await?;
    }
    out.finish().await
}

/// Only the last node of an unfinished or failed run differs from `succeeded`.
fn node_status(run: &Run, last: bool) -> &'static str {
    match (last, run.status) {
        (true, "failed") => "failed",
        (true, "running") => "running",
        (true, "paused") => "paused",
        (true, "stopped") => "stopped",
        _ => "succeeded",
    }
}

pub(super) async fn workflow_node_executions(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_node_executions",
        "id, tenant_id, app_id, workflow_id, triggered_from, workflow_run_id, \
         index, predecessor_node_id, node_id, node_type, title, inputs, \
         process_data, outputs, status, error, elapsed_time, execution_metadata, \
         created_at, created_by_role, created_by, finished_at, node_execution_id",
    )
    .await?;
    let per_run = w.spec.nodes_per_run;
    for run in w.runs() {
        let app = &w.apps[run.app];
        let inputs = run_inputs(&run);
        for n in 0..per_run {
            let node = w.node(&run, n);
            let last = n + 1 == per_run;
            let status = node_status(&run, last);
            let done = !matches!(status, "running" | "paused");
            // An offloaded value keeps only a truncated preview in the row.
            let outputs = if !done {
                None
            } else if node.offloaded {
                Some(r#"{"answer": "Sales grew 12% quarter over quarter… (truncated)"}"#.to_owned())
            } else {
                Some(format!(
                    r#"{{"text": {}}}"#,
                    json_str(text::ANSWERS[run.query])
                ))
            };
            let process_data = (node.node_type == "llm").then(|| {
                format!(
                    r#"{{"model_mode": "chat", "prompts": [{{"role": "user", "text": {}}}], "usage": {{"total_tokens": {}}}}}"#,
                    json_str(text::QUERIES[run.query]),
                    run.tokens
                )
            });
            let finished = node.created + node.elapsed.ceil() as i64;
            out.uuid(node.id)
                .uuid(w.tenants[app.tenant].id)
                .uuid(app.id)
                .uuid(app.workflow.unwrap_or_default())
                .text("workflow-run")
                .uuid(run.id)
                .int(node.position as i64)
                .opt_text(node.predecessor.as_deref())
                .text(&node.node_id)
                .text(node.node_type)
                .text(node.title)
                .text(&inputs)
                .opt_text(process_data.as_deref())
                .opt_text(outputs.as_deref())
                .text(status)
                .opt_text((status == "failed").then_some("[openai] Connection error."))
                .float(node.elapsed)
                .text(r#"{"total_tokens": 0, "total_price": 0, "currency": "USD"}"#)
                .ts(node.created, 0)
                .text(run.actor.role())
                .uuid(run.actor.id())
                .opt_ts(done.then_some((finished, 0)))
                .text(&node.engine_id.to_string());
            out.end_row().await?;
        }
    }
    out.finish().await
}

/// The upload file holding an offloaded node output.
pub(super) fn offload_file(w: &World, node: &Node) -> Uuid {
    ids::id(w.seed, Kind::OffloadFile, node.key)
}

/// The offloaded last nodes of workflow runs, with their run.
pub(super) fn offloaded_nodes(w: &World) -> impl Iterator<Item = (Run, Node)> + '_ {
    let last = w.spec.nodes_per_run.saturating_sub(1);
    w.workflow_runs()
        .filter(move |_| w.spec.nodes_per_run > 0)
        .map(move |run| (run, w.node(&run, last)))
        .filter(|(run, node)| node.offloaded && run.finished().is_some())
}

pub(super) async fn workflow_node_execution_offload(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_node_execution_offload",
        "id, created_at, tenant_id, app_id, node_execution_id, type, file_id",
    )
    .await?;
    for (run, node) in offloaded_nodes(w) {
        let app = &w.apps[run.app];
        let mut rng = ids::rng(w.seed, Kind::NodeOffload, node.key);
        out.uuid(uuid7(&mut rng, node.created, 0))
            .ts(node.created, 0)
            .uuid(w.tenants[app.tenant].id)
            .uuid(app.id)
            .uuid(node.id)
            .text("outputs")
            .uuid(offload_file(w, &node));
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn workflow_app_logs(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_app_logs",
        "id, tenant_id, app_id, workflow_id, workflow_run_id, created_from, \
         created_by_role, created_by, created_at",
    )
    .await?;
    for run in w.workflow_runs().filter(Run::app_logged) {
        let app = &w.apps[run.app];
        let created_from = match (run.triggered_from, run.index % 3) {
            ("app-run", 0) => "web-app",
            ("app-run", 1) => "installed-app",
            _ => "service-api",
        };
        out.uuid(ids::id(w.seed, Kind::AppLog, run.index))
            .uuid(w.tenants[app.tenant].id)
            .uuid(app.id)
            .uuid(app.workflow.unwrap_or_default())
            .uuid(run.id)
            .text(created_from)
            .text(run.actor.role())
            .uuid(run.actor.id())
            .ts(run.created, 0);
        out.end_row().await?;
    }
    out.finish().await
}

fn pause_id(w: &World, run: &Run) -> Uuid {
    uuid7(
        &mut ids::rng(w.seed, Kind::Pause, run.index),
        run.created + 1,
        0,
    )
}

pub(super) async fn workflow_pauses(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_pauses",
        "workflow_id, workflow_run_id, state_object_key, id, created_at, \
         updated_at",
    )
    .await?;
    for run in w.workflow_runs().filter(Run::paused) {
        let app = &w.apps[run.app];
        let state = uuid4(&mut ids::rng(w.seed, Kind::Pause, run.index ^ (1 << 62)));
        out.uuid(app.workflow.unwrap_or_default())
            .uuid(run.id)
            .text(&format!("workflow-state-{state}.json"))
            .uuid(pause_id(w, &run))
            .ts(run.created + 1, 0)
            .ts(run.created + 1, 0);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn workflow_pause_reasons(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_pause_reasons",
        "id, created_at, updated_at, pause_id, type_, form_id, node_id, message",
    )
    .await?;
    for run in w.workflow_runs().filter(Run::paused) {
        let mut rng = ids::rng(w.seed, Kind::PauseReason, run.index);
        let last = w.node(&run, w.spec.nodes_per_run.saturating_sub(1));
        out.uuid(uuid7(&mut rng, run.created + 1, 1))
            .ts(run.created + 1, 0)
            .ts(run.created + 1, 0)
            .uuid(pause_id(w, &run))
            .text("human_input_required")
            .text(&uuid4(&mut rng).to_string())
            .text(&last.node_id)
            .text("");
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn workflow_trigger_logs(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_trigger_logs",
        "id, tenant_id, app_id, workflow_id, workflow_run_id, root_node_id, \
         trigger_metadata, trigger_type, trigger_data, inputs, outputs, status, \
         error, queue_name, celery_task_id, retry_count, elapsed_time, \
         total_tokens, created_at, created_by_role, created_by, triggered_at, \
         finished_at",
    )
    .await?;
    for run in w.workflow_runs().filter(Run::trigger_logged) {
        let app = &w.apps[run.app];
        let mut rng = ids::rng(w.seed, Kind::TriggerLog, run.index);
        let webhook = run.triggered_from == "webhook";
        let status = match run.status {
            "succeeded" | "partial-succeeded" => "succeeded",
            "failed" | "stopped" => "failed",
            "paused" => "paused",
            _ => "running",
        };
        let inputs = run_inputs(&run);
        let data = if webhook {
            format!(r#"{{"body": {inputs}, "headers": {{"content-type": "application/json"}}}}"#)
        } else {
            r#"{"cron": "0 9 * * *", "timezone": "UTC"}"#.to_owned()
        };
        out.uuid(uuid7(&mut rng, run.created, 0))
            .uuid(w.tenants[app.tenant].id)
            .uuid(app.id)
            .uuid(app.workflow.unwrap_or_default())
            .uuid(run.id)
            .text("start")
            .text("{}")
            .text(if webhook {
                "trigger-webhook"
            } else {
                "trigger-schedule"
            })
            .text(&data)
            .text(&inputs)
            .opt_text(run_outputs(&run).as_deref())
            .text(status)
            .opt_text(run_error(run.status))
            .text("workflow_sandbox")
            .text(&uuid4(&mut rng).to_string())
            .int(0)
            .float(run.elapsed)
            .int(run.tokens)
            .ts(run.created, 0)
            .text("account")
            .text(&w.tenants[app.tenant].owner().to_string())
            .ts(run.created, 0)
            .opt_ts(run.finished());
        out.end_row().await?;
    }
    out.finish().await
}

/// Draft variables of an app: (node id, name, offloaded to a file).
const DRAFT_VARIABLES: &[(&str, &str, bool)] = &[
    ("sys", "query", false),
    ("sys", "files", false),
    ("start", "topic", false),
    ("llm", "text", true),
];

/// The upload file holding an app's offloaded draft variable.
pub(super) fn draft_upload_file(w: &World, app_index: usize) -> Uuid {
    ids::id(w.seed, Kind::DraftFile, app_index as u64)
}

fn draft_variable_file(w: &World, app_index: usize) -> Uuid {
    let app = &w.apps[app_index];
    uuid7(
        &mut ids::rng(w.seed, Kind::DraftVariableFile, app_index as u64),
        app.workflow_created,
        0,
    )
}

pub(super) fn workflow_apps(w: &World) -> impl Iterator<Item = &App> {
    w.apps.iter().filter(|a| a.mode.has_workflow())
}

pub(super) async fn workflow_draft_variables(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_draft_variables",
        "id, created_at, updated_at, app_id, node_id, name, description, selector, \
         value_type, value, visible, editable, file_id, is_default_value, user_id",
    )
    .await?;
    for app in workflow_apps(w) {
        for (v, (node, name, offloaded)) in DRAFT_VARIABLES.iter().enumerate() {
            let key = (app.index * DRAFT_VARIABLES.len() + v) as u64;
            let (value_type, value) = match (*name, *offloaded) {
                ("files", _) => ("array[file]", "[]".to_owned()),
                (_, true) => ("string", json_str("Release notes for 2.4 … (truncated)")),
                _ => ("string", json_str(text::QUERIES[v % text::QUERIES.len()])),
            };
            out.uuid(ids::id(w.seed, Kind::DraftVariable, key))
                .ts(app.workflow_created, 0)
                .ts(app.workflow_created, 0)
                .uuid(app.id)
                .text(node)
                .text(name)
                .text("")
                .text(&format!(r#"["{node}", "{name}"]"#))
                .text(value_type)
                .text(&value)
                .boolean(true)
                .boolean(*node != "sys")
                .opt_uuid(offloaded.then(|| draft_variable_file(w, app.index)))
                .boolean(false)
                .uuid(w.tenants[app.tenant].owner());
            out.end_row().await?;
        }
    }
    out.finish().await
}

pub(super) async fn workflow_draft_variable_files(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_draft_variable_files",
        "id, created_at, tenant_id, app_id, user_id, upload_file_id, size, length, \
         value_type",
    )
    .await?;
    for app in workflow_apps(w) {
        out.uuid(draft_variable_file(w, app.index))
            .ts(app.workflow_created, 0)
            .uuid(w.tenants[app.tenant].id)
            .uuid(app.id)
            .uuid(w.tenants[app.tenant].owner())
            .uuid(draft_upload_file(w, app.index))
            .int(250_000)
            .null()
            .text("string");
        out.end_row().await?;
    }
    out.finish().await
}
