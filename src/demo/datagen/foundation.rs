//! Workspaces, their members, apps and what every app owns (config, site, end users, workflow).

use sqlx::PgPool;

use super::copy::CopyWriter;
use super::ids::{self, Kind, uuid4};
use super::text;
use super::world::{ACCOUNTS_PER_TENANT, App, DAY, END_USERS_PER_APP, Mode, World};

type Rows = Result<u64, sqlx::Error>;

pub(super) async fn tenants(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "tenants",
        "id, name, encrypt_public_key, plan, status, created_at, updated_at, \
         custom_config",
    )
    .await?;
    for t in &w.tenants {
        let mut rng = ids::rng(w.seed, Kind::Tenant, t.index as u64 + 1_000_000);
        // The public half of the workspace key pair, PEM with its line breaks.
        let key = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----",
            ids::hex(&mut rng, 32),
            ids::hex(&mut rng, 16)
        );
        out.uuid(t.id)
            .text(&t.name)
            .text(&key)
            .text(t.plan)
            .text(t.status)
            .ts(t.created, 0)
            .ts(t.created + DAY, 0)
            .opt_text(
                (!t.index.is_multiple_of(2))
                    .then_some(r#"{"remove_webapp_brand": false, "replace_webapp_logo": null}"#),
            );
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn accounts(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "accounts",
        "id, name, email, password, password_salt, avatar, interface_language, \
         interface_theme, timezone, last_login_at, last_login_ip, status, \
         initialized_at, created_at, updated_at, last_active_at",
    )
    .await?;
    for t in &w.tenants {
        for (a, &account) in t.accounts.iter().enumerate() {
            let mut rng = ids::rng(
                w.seed,
                Kind::Account,
                (t.index * ACCOUNTS_PER_TENANT + a) as u64,
            );
            let _ = uuid4(&mut rng);
            let name = if a == 0 {
                t.owner_name.clone()
            } else {
                text::MEMBERS[(t.index * 2 + a) % text::MEMBERS.len()].to_owned()
            };
            let email = format!(
                "{}@{}",
                name.to_lowercase()
                    .replace(' ', ".")
                    .replace(['é', 'É'], "e"),
                t.domain
            );
            // The owner's avatar is an uploaded image, referenced by upload file id.
            let avatar = (a == 0 && w.spec.upload_files_per_tenant > 0)
                .then(|| w.user_upload_id(t.index, 0).to_string());
            let created = t.created + a as i64 * DAY;
            let last_login = w.now - rng.i64(0..7 * DAY);
            out.uuid(account)
                .text(&name)
                .text(&email)
                .text(&ids::hex(&mut rng, 32))
                .text(&ids::hex(&mut rng, 16))
                .opt_text(avatar.as_deref())
                .text(if a == 2 { "zh-Hans" } else { "en-US" })
                .text("light")
                .text(if a == 2 { "Asia/Shanghai" } else { "UTC" })
                .ts(last_login, 0)
                .text("172.18.0.1")
                .text("active")
                .ts(created, 0)
                .ts(created, 0)
                .ts(created, 0)
                .ts(last_login, 0);
            out.end_row().await?;
        }
    }
    out.finish().await
}

pub(super) async fn tenant_account_joins(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "tenant_account_joins",
        "id, tenant_id, account_id, role, invited_by, created_at, updated_at, \
         current",
    )
    .await?;
    for t in &w.tenants {
        for (a, &account) in t.accounts.iter().enumerate() {
            let join = ids::id(
                w.seed,
                Kind::Join,
                (t.index * ACCOUNTS_PER_TENANT + a) as u64,
            );
            let created = t.created + a as i64 * DAY;
            out.uuid(join)
                .uuid(t.id)
                .uuid(account)
                .text(["owner", "admin", "editor"][a % 3])
                .opt_uuid((a > 0).then(|| t.owner()))
                .ts(created, 0)
                .ts(created, 0)
                .boolean(true);
            out.end_row().await?;
        }
    }
    out.finish().await
}

fn icon(app: &App) -> (String, &'static str, Option<&'static str>) {
    match app.image_icon {
        Some(file) => (file.to_string(), "image", None),
        None => ("🤖".to_owned(), "emoji", Some("#FFEAD5")),
    }
}

pub(super) async fn apps(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "apps",
        "id, tenant_id, name, mode, icon, icon_background, app_model_config_id, \
         status, enable_site, enable_api, created_at, updated_at, workflow_id, \
         description, icon_type, created_by, updated_by, maintainer",
    )
    .await?;
    for app in &w.apps {
        let owner = w.tenants[app.tenant].owner();
        let (icon, icon_type, background) = icon(app);
        out.uuid(app.id)
            .uuid(w.tenants[app.tenant].id)
            .text(&app.name)
            .text(app.mode.as_str())
            .text(&icon)
            .opt_text(background)
            .opt_uuid(app.model_config)
            .text("normal")
            .boolean(true)
            .boolean(true)
            .ts(app.created, 0)
            .ts(app.workflow_created, 0)
            .opt_uuid(app.workflow)
            .text("")
            .text(icon_type)
            .uuid(owner)
            .uuid(owner)
            .uuid(owner);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn app_model_configs(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "app_model_configs",
        "id, app_id, provider, model_id, created_at, updated_at, \
         opening_statement, suggested_questions, suggested_questions_after_answer, \
         more_like_this, model, user_input_form, pre_prompt, agent_mode, \
         speech_to_text, sensitive_word_avoidance, retriever_resource, \
         dataset_query_variable, prompt_type, dataset_configs, file_upload, \
         text_to_speech, created_by, updated_by",
    )
    .await?;
    for app in &w.apps {
        let Some(config) = app.model_config else {
            continue;
        };
        let owner = w.tenants[app.tenant].owner();
        let agent_mode = if app.mode == Mode::AgentChat {
            r#"{"enabled": true, "strategy": "function_call", "tools": [{"provider_type": "builtin", "provider_id": "google", "tool_name": "google_search", "tool_parameters": {}}]}"#
        } else {
            r#"{"enabled": false, "tools": []}"#
        };
        out.uuid(config)
            .uuid(app.id)
            .text("langgenius/openai/openai")
            .text("gpt-4o-mini")
            .ts(app.created, 0)
            .ts(app.created, 0)
            .text("Hello! How can I help you today?")
            .text("[]")
            .text(r#"{"enabled": true}"#)
            .text(r#"{"enabled": false}"#)
            .text(r#"{"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat", "completion_params": {"temperature": 0.7}}"#)
            .text("[]")
            .text("You are a helpful assistant for {{company}}.\nAnswer briefly.")
            .text(agent_mode)
            .text(r#"{"enabled": false}"#)
            .text(r#"{"enabled": false}"#)
            .text(r#"{"enabled": true}"#)
            .text("")
            .text("simple")
            .text(r#"{"retrieval_model": "multiple"}"#)
            .text(r#"{"image": {"enabled": true, "number_limits": 3, "transfer_methods": ["local_file", "remote_url"]}}"#)
            .text(r#"{"enabled": false}"#)
            .uuid(owner)
            .uuid(owner);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn sites(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "sites",
        "id, app_id, title, icon, icon_background, default_language, \
         customize_token_strategy, status, created_at, updated_at, code, \
         custom_disclaimer, icon_type, created_by, updated_by",
    )
    .await?;
    for app in &w.apps {
        let mut rng = ids::rng(w.seed, Kind::Site, app.index as u64);
        let id = uuid4(&mut rng);
        let code: String = (0..16).map(|_| rng.alphanumeric()).collect();
        let owner = w.tenants[app.tenant].owner();
        let (icon, icon_type, background) = icon(app);
        out.uuid(id)
            .uuid(app.id)
            .text(&app.name)
            .text(&icon)
            .opt_text(background)
            .text("en-US")
            .text("not_allow")
            .text("normal")
            .ts(app.created, 0)
            .ts(app.created, 0)
            .text(&code)
            .text("")
            .text(icon_type)
            .uuid(owner)
            .uuid(owner);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn end_users(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "end_users",
        "id, tenant_id, app_id, type, external_user_id, is_anonymous, session_id, \
         created_at, updated_at",
    )
    .await?;
    for app in &w.apps {
        for r in 0..END_USERS_PER_APP {
            let mut rng = ids::rng(
                w.seed,
                Kind::EndUser,
                (app.index * END_USERS_PER_APP + r) as u64,
            );
            let id = uuid4(&mut rng);
            // API callers name their users; web-app visitors get an anonymous session.
            let api = r.is_multiple_of(2);
            let session = if api {
                format!("user-{}", 1000 + r)
            } else {
                ids::hex(&mut rng, 16)
            };
            out.uuid(id)
                .uuid(w.tenants[app.tenant].id)
                .uuid(app.id)
                .text(if api { "service_api" } else { "browser" })
                .opt_text(api.then_some(session.as_str()))
                .boolean(!api)
                .text(&session)
                .ts(app.created, 0)
                .ts(app.created, 0);
            out.end_row().await?;
        }
    }
    out.finish().await
}

pub(super) async fn installed_apps(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "installed_apps",
        "id, tenant_id, app_id, app_owner_tenant_id, position, is_pinned, \
         last_used_at, created_at",
    )
    .await?;
    for app in &w.apps {
        let tenant = w.tenants[app.tenant].id;
        out.uuid(ids::id(w.seed, Kind::InstalledApp, app.index as u64))
            .uuid(tenant)
            .uuid(app.id)
            .uuid(tenant)
            .int((app.index % w.spec.apps_per_tenant.max(1)) as i64)
            .boolean(app.index.is_multiple_of(4))
            .opt_ts(None)
            .ts(app.created, 0);
        out.end_row().await?;
    }
    out.finish().await
}

/// The version string of an app's published workflow: Dify writes `str(datetime)` of publishing.
pub(super) fn workflow_version(app: &App) -> String {
    chrono::DateTime::from_timestamp(app.workflow_created, 0)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn graph(w: &World, app: &App) -> String {
    let mut nodes = Vec::new();
    for n in 0..w.spec.nodes_per_run {
        let id = if n == 0 {
            "start".to_owned()
        } else {
            (1_718_000_000_000u64 + app.index as u64 * 1000 + n as u64).to_string()
        };
        nodes.push(format!(
            r#"{{"id": "{id}", "data": {{"title": "Node {n}"}}, "position": {{"x": {}, "y": 80}}}}"#,
            n * 300
        ));
    }
    format!(r#"{{"nodes": [{}], "edges": []}}"#, nodes.join(", "))
}

pub(super) async fn workflows(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflows",
        "id, tenant_id, app_id, type, version, graph, features, created_by, \
         created_at, updated_by, updated_at",
    )
    .await?;
    for app in &w.apps {
        let (Some(published), Some(draft)) = (app.workflow, app.draft_workflow) else {
            continue;
        };
        let kind = if app.mode == Mode::Workflow {
            "workflow"
        } else {
            "chat"
        };
        let owner = w.tenants[app.tenant].owner();
        let graph = graph(w, app);
        for (id, version) in [
            (draft, "draft".to_owned()),
            (published, workflow_version(app)),
        ] {
            out.uuid(id)
                .uuid(w.tenants[app.tenant].id)
                .uuid(app.id)
                .text(kind)
                .text(&version)
                .text(&graph)
                .text(r#"{"file_upload": {"enabled": false}}"#)
                .uuid(owner)
                .ts(app.workflow_created, 0)
                .uuid(owner)
                .ts(app.workflow_created, 0);
            out.end_row().await?;
        }
    }
    out.finish().await
}
