//! Conversations, messages and every table Dify keys by message or conversation id.

use sqlx::PgPool;

use super::copy::CopyWriter;
use super::ids::{self, Kind, uuid4};
use super::logs::Msg;
use super::text::{self, json_str};
use super::world::{App, Mode, World};

type Rows = Result<u64, sqlx::Error>;

const MESSAGE_UNIT_PRICE: f64 = 0.0015;
const ANSWER_UNIT_PRICE: f64 = 0.006;
const PRICE_UNIT: f64 = 0.001;

fn total_price(m: &Msg) -> f64 {
    (m.message_tokens() as f64 * MESSAGE_UNIT_PRICE + m.answer_tokens() as f64 * ANSWER_UNIT_PRICE)
        * PRICE_UNIT
}

fn model(app: &App) -> (Option<&'static str>, Option<&'static str>) {
    // Workflow-backed apps pick models per node, so Dify leaves these empty.
    if app.mode == Mode::AdvancedChat {
        (None, None)
    } else {
        (Some("langgenius/openai/openai"), Some("gpt-4o-mini"))
    }
}

pub(super) async fn conversations(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "conversations",
        "id, app_id, app_model_config_id, model_provider, model_id, mode, name, \
         inputs, introduction, system_instruction_tokens, status, from_source, \
         from_end_user_id, from_account_id, created_at, updated_at, is_deleted, \
         invoke_from, dialogue_count",
    )
    .await?;
    let per_conv = w.spec.messages_per_conversation;
    for (app, c) in w.conversations() {
        let (provider, model_id) = model(app);
        out.uuid(c.id)
            .uuid(app.id)
            .opt_uuid(app.model_config)
            .opt_text(provider)
            .opt_text(model_id)
            .text(app.mode.as_str())
            .text(text::QUERIES[c.title])
            .text("{}")
            .text("Hello! How can I help you today?")
            .int(0)
            .text("normal")
            .text(c.from_source)
            .opt_uuid(c.actor.end_user)
            .opt_uuid(c.actor.account)
            .ts(c.created, 0)
            .ts(c.updated(per_conv), 0)
            .boolean(c.deleted)
            .text(c.invoke_from)
            .int(per_conv as i64);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn messages(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "messages",
        "id, app_id, model_provider, model_id, conversation_id, inputs, query, \
         message, message_tokens, message_unit_price, answer, answer_tokens, \
         answer_unit_price, provider_response_latency, total_price, currency, \
         from_source, from_end_user_id, from_account_id, created_at, updated_at, \
         agent_based, message_price_unit, answer_price_unit, workflow_run_id, \
         status, error, message_metadata, invoke_from, parent_message_id, \
         app_mode",
    )
    .await?;
    for (app, c, m) in w.messages() {
        let (provider, model_id) = model(app);
        let query = json_str(m.query);
        let inputs = if app.mode == Mode::Completion {
            format!(r#"{{"query": {query}}}"#)
        } else {
            "{}".to_owned()
        };
        let prompt = format!(
            r#"[{{"role": "system", "text": "You are a helpful assistant.", "files": []}}, {{"role": "user", "text": {query}, "files": []}}]"#
        );
        // A generated image is linked in the answer by its tool file id, as agents do.
        let answer = match (m.error, m.tool_file) {
            (true, _) => String::new(),
            (false, Some(file)) => format!("{}\n\n![image](/files/tools/{file}.png)", m.answer),
            (false, None) => m.answer.to_owned(),
        };
        let metadata = format!(
            r#"{{"usage": {{"prompt_tokens": {}, "completion_tokens": {}, "total_tokens": {}, "currency": "USD", "latency": {:.3}}}}}"#,
            m.message_tokens(),
            m.answer_tokens(),
            m.message_tokens() + m.answer_tokens(),
            m.latency
        );
        out.uuid(m.id)
            .uuid(app.id)
            .opt_text(provider)
            .opt_text(model_id)
            .uuid(c.id)
            .text(&inputs)
            .text(m.query)
            .text(&prompt)
            .int(m.message_tokens())
            .decimal(MESSAGE_UNIT_PRICE, 4)
            .text(&answer)
            .int(m.answer_tokens())
            .decimal(ANSWER_UNIT_PRICE, 4)
            .float(m.latency)
            .decimal(total_price(&m), 7)
            .text("USD")
            .text(c.from_source)
            .opt_uuid(c.actor.end_user)
            .opt_uuid(c.actor.account)
            .ts(m.created, 0)
            .ts(m.created, 0)
            .boolean(app.mode == Mode::AgentChat)
            .decimal(PRICE_UNIT, 7)
            .decimal(PRICE_UNIT, 7)
            .opt_uuid(m.run)
            .text(if m.error { "error" } else { "normal" })
            .opt_text(
                m.error
                    .then_some("[openai] Rate Limit Error, Error code: 429 - Rate limit reached"),
            )
            .text(&metadata)
            .text(c.invoke_from)
            .opt_uuid(m.parent)
            .text(app.mode.as_str());
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn message_feedbacks(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "message_feedbacks",
        "id, app_id, conversation_id, message_id, rating, content, from_source, \
         from_end_user_id, from_account_id, created_at, updated_at",
    )
    .await?;
    for (app, c, m) in w.messages() {
        let Some(rating) = m.feedback else { continue };
        let at = m.created + 30;
        out.uuid(ids::id(w.seed, Kind::Feedback, m.index))
            .uuid(app.id)
            .uuid(c.id)
            .uuid(m.id)
            .text(rating)
            .opt_text((rating == "dislike").then_some("The answer missed the point."))
            .text(if c.actor.end_user.is_some() {
                "user"
            } else {
                "admin"
            })
            .opt_uuid(c.actor.end_user)
            .opt_uuid(c.actor.account)
            .ts(at, 0)
            .ts(at, 0);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn message_files(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "message_files",
        "id, message_id, type, transfer_method, url, upload_file_id, \
         created_by_role, created_by, created_at, belongs_to",
    )
    .await?;
    for (app, c, m) in w.messages() {
        if m.user_file {
            let mut rng = ids::rng(w.seed, Kind::MessageFile, m.index * 2);
            let id = uuid4(&mut rng);
            let local = ids::chance(&mut rng, 0.8);
            let file = if local {
                w.any_user_upload(&mut rng, app.tenant)
            } else {
                None
            };
            let url = (!local)
                .then(|| format!("https://images.example.com/{}.png", ids::hex(&mut rng, 8)));
            out.uuid(id)
                .uuid(m.id)
                .text("image")
                .text(if local { "local_file" } else { "remote_url" })
                .opt_text(url.as_deref())
                .opt_uuid(file)
                .text(c.actor.role())
                .uuid(c.actor.id())
                .ts(m.created, 0)
                .text("user");
            out.end_row().await?;
        }
        if let Some(tool_file) = m.tool_file {
            // For tool files the same column holds a tool_files id, not an upload_files id.
            out.uuid(ids::id(w.seed, Kind::MessageFile, m.index * 2 + 1))
                .uuid(m.id)
                .text("image")
                .text("tool_file")
                .null()
                .uuid(tool_file)
                .text(c.actor.role())
                .uuid(c.actor.id())
                .ts(m.created, 0)
                .text("assistant");
            out.end_row().await?;
        }
    }
    out.finish().await
}

pub(super) async fn message_chains(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "message_chains",
        "id, message_id, type, input, output, created_at",
    )
    .await?;
    for (_, _, m) in w.messages() {
        if !m.chain {
            continue;
        }
        let input = format!(r#"{{"inputs": {{}}, "query": {}}}"#, json_str(m.query));
        let output = format!(r#"{{"output": {}}}"#, json_str(m.answer));
        out.uuid(ids::id(w.seed, Kind::Chain, m.index))
            .uuid(m.id)
            .text("system")
            .text(&input)
            .text(&output)
            .ts(m.created, m.micros);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn message_agent_thoughts(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "message_agent_thoughts",
        "id, message_id, position, thought, tool, tool_input, observation, \
         message, message_token, message_unit_price, answer, answer_token, \
         answer_unit_price, tokens, total_price, currency, latency, \
         created_by_role, created_by, created_at, message_price_unit, \
         answer_price_unit, message_files, tool_labels_str, tool_meta_str",
    )
    .await?;
    for (_, c, m) in w.messages() {
        for p in 0..m.thoughts {
            let last = p + 1 == m.thoughts;
            let (tool, input, observation, labels) = if last {
                ("", String::new(), String::new(), "{}")
            } else if m.tool_file.is_some() {
                (
                    "dalle3",
                    format!(r#"{{"dalle3": {{"prompt": {}}}}}"#, json_str(m.query)),
                    r#"{"dalle3": "image has been created and sent to user already"}"#.to_owned(),
                    r#"{"dalle3": {"en_US": "DALL-E 3", "zh_Hans": "DALL-E 3 绘画"}}"#,
                )
            } else {
                (
                    "google_search",
                    format!(r#"{{"google_search": {{"query": {}}}}}"#, json_str(m.query)),
                    format!(r#"{{"google_search": {}}}"#, json_str(m.answer)),
                    r#"{"google_search": {"en_US": "Google Search", "zh_Hans": "谷歌搜索"}}"#,
                )
            };
            let files = match (last, m.tool_file) {
                (true, Some(file)) => format!(r#"["{file}"]"#),
                _ => "[]".to_owned(),
            };
            let thought = if last {
                m.answer
            } else {
                "I should look this up first."
            };
            out.uuid(ids::id(w.seed, Kind::Thought, m.index * 3 + p as u64))
                .uuid(m.id)
                .int(p as i64 + 1)
                .text(thought)
                .text(tool)
                .text(&input)
                .text(&observation)
                .text(m.query)
                .int(m.message_tokens())
                .decimal(MESSAGE_UNIT_PRICE, 4)
                .text(thought)
                .int(text::tokens(thought))
                .decimal(ANSWER_UNIT_PRICE, 4)
                .int(m.message_tokens() + text::tokens(thought))
                .decimal(total_price(&m), 7)
                .text("USD")
                .float(m.latency / m.thoughts as f64)
                .text(c.actor.role())
                .uuid(c.actor.id())
                .ts(m.created + p as i64, m.micros)
                .decimal(PRICE_UNIT, 7)
                .decimal(PRICE_UNIT, 7)
                .text(&files)
                .text(labels)
                .text("{}");
            out.end_row().await?;
        }
    }
    out.finish().await
}
