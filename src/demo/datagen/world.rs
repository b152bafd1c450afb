//! The shape of the generated Dify: the few small things kept in memory (tenants, apps,
//! datasets) and pure functions that rebuild any big-table row (conversation, message, run,
//! node, document, segment) from its index. Every table generator walks the same functions,
//! so parents and children agree without either being held in memory.

use fastrand::Rng;
use uuid::Uuid;

use super::DemoSpec;
use super::ids::{self, Kind, chance, id, uuid4};
use super::text;

pub(super) const DAY: i64 = 86_400;
/// Owner, admin and editor of every workspace.
pub(super) const ACCOUNTS_PER_TENANT: usize = 3;
pub(super) const END_USERS_PER_APP: usize = 12;
/// Every n-th conversation of an app with annotation reply gets its first answer annotated.
const ANNOTATED_EVERY: usize = 25;
pub(super) const EMBEDDING_MODEL: &str = "text-embedding-3-small";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Chat,
    AdvancedChat,
    Workflow,
    Completion,
    AgentChat,
}

/// App modes in the order apps of a workspace take them, so every mode appears once there
/// are five apps.
const MODES: [Mode; 5] = [
    Mode::Chat,
    Mode::AdvancedChat,
    Mode::Workflow,
    Mode::Completion,
    Mode::AgentChat,
];

impl Mode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Mode::Chat => "chat",
            Mode::AdvancedChat => "advanced-chat",
            Mode::Workflow => "workflow",
            Mode::Completion => "completion",
            Mode::AgentChat => "agent-chat",
        }
    }

    pub(super) fn has_messages(self) -> bool {
        self != Mode::Workflow
    }

    pub(super) fn has_workflow(self) -> bool {
        matches!(self, Mode::Workflow | Mode::AdvancedChat)
    }

    /// Apps built on a model config rather than a workflow graph.
    pub(super) fn has_model_config(self) -> bool {
        !self.has_workflow()
    }

    fn is_chat_like(self) -> bool {
        matches!(self, Mode::Chat | Mode::AdvancedChat | Mode::AgentChat)
    }
}

pub(super) struct Tenant {
    pub index: usize,
    pub id: Uuid,
    pub name: String,
    pub owner_name: String,
    pub domain: String,
    pub plan: &'static str,
    pub status: &'static str,
    pub created: i64,
    pub accounts: [Uuid; ACCOUNTS_PER_TENANT],
    /// Datasets of this tenant record the provider either in the short form written before
    /// Dify 1.0 or in the plugin form written since; both exist in the wild.
    pub embedding_provider: &'static str,
    pub datasets: Vec<usize>,
}

impl Tenant {
    pub(super) fn owner(&self) -> Uuid {
        self.accounts[0]
    }
}

pub(super) struct App {
    pub index: usize,
    pub tenant: usize,
    pub id: Uuid,
    pub mode: Mode,
    pub name: String,
    pub created: i64,
    pub model_config: Option<Uuid>,
    pub workflow: Option<Uuid>,
    pub draft_workflow: Option<Uuid>,
    pub workflow_created: i64,
    pub annotations: bool,
    pub uses_datasets: bool,
    /// One app per workspace shows an uploaded image as its icon (a file reference).
    pub image_icon: Option<Uuid>,
}

pub(super) struct Dataset {
    pub index: usize,
    pub tenant: usize,
    pub id: Uuid,
    pub name: String,
    pub high_quality: bool,
    pub binding: Option<Uuid>,
    pub created: i64,
    pub process_rule: Uuid,
}

pub(super) struct Binding {
    pub id: Uuid,
    pub provider: &'static str,
    pub kind: &'static str,
    pub collection: String,
}

pub(super) struct World {
    pub seed: u64,
    pub spec: DemoSpec,
    pub now: i64,
    /// Oldest moment a log row may have: `now - days_spread`.
    pub start: i64,
    pub tenants: Vec<Tenant>,
    pub apps: Vec<App>,
    pub datasets: Vec<Dataset>,
    pub bindings: Vec<Binding>,
}

/// `Vector_index_<uuid with _>_Node`, Dify's collection name for a dataset id.
pub(super) fn collection_name(id: Uuid) -> String {
    format!("Vector_index_{}_Node", id.to_string().replace('-', "_"))
}

fn between(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
    if hi <= lo { lo } else { rng.i64(lo..=hi) }
}

impl World {
    pub(super) fn new(spec: &DemoSpec, now: i64) -> Self {
        let seed = spec.seed;
        let start = now - i64::from(spec.days_spread.max(1)) * DAY;
        let mut bindings = Vec::new();
        let providers = ["openai", "langgenius/openai/openai"];
        for (p, provider) in providers.iter().enumerate() {
            for (k, kind) in ["dataset", "annotation"].iter().enumerate() {
                let bid = id(seed, Kind::Binding, (p * 2 + k) as u64);
                // Dify names a binding's collection after a fresh uuid, not after a dataset.
                let name_id = id(seed, Kind::Binding, 1000 + (p * 2 + k) as u64);
                bindings.push(Binding {
                    id: bid,
                    provider,
                    kind,
                    collection: collection_name(name_id),
                });
            }
        }
        let mut world = World {
            seed,
            spec: spec.clone(),
            now,
            start,
            tenants: Vec::new(),
            apps: Vec::new(),
            datasets: Vec::new(),
            bindings,
        };
        for t in 0..spec.tenants {
            let tenant = world.make_tenant(t);
            world.tenants.push(tenant);
        }
        for t in 0..spec.tenants {
            for k in 0..spec.apps_per_tenant {
                let app = world.make_app(t, k);
                world.apps.push(app);
            }
            for d in 0..spec.datasets_per_tenant {
                let dataset = world.make_dataset(t, d);
                world.tenants[t].datasets.push(dataset.index);
                world.datasets.push(dataset);
            }
        }
        world
    }

    fn make_tenant(&self, t: usize) -> Tenant {
        let mut rng = ids::rng(self.seed, Kind::Tenant, t as u64);
        let id = uuid4(&mut rng);
        let company = text::COMPANIES[t % text::COMPANIES.len()];
        let round = t / text::COMPANIES.len();
        let owner_name = if round == 0 {
            company.to_owned()
        } else {
            format!("{company} {}", round + 1)
        };
        let domain = format!("{}.example", owner_name.to_lowercase().replace(' ', "-"));
        let plan = ["basic", "sandbox", "professional", "basic"][t % 4];
        // One workspace is archived so listings and purges see that state too.
        let status = if self.spec.tenants >= 3 && t == self.spec.tenants - 1 {
            "archive"
        } else {
            "normal"
        };
        let created = self.start - 30 * DAY - between(&mut rng, 0, 60 * DAY);
        let accounts = std::array::from_fn(|a| {
            id_of(
                self.seed,
                Kind::Account,
                (t * ACCOUNTS_PER_TENANT + a) as u64,
            )
        });
        Tenant {
            index: t,
            id,
            name: format!("{owner_name}'s Workspace"),
            owner_name,
            domain,
            plan,
            status,
            created,
            accounts,
            embedding_provider: if t % 2 == 0 {
                "langgenius/openai/openai"
            } else {
                "openai"
            },
            datasets: Vec::new(),
        }
    }

    fn make_app(&self, t: usize, k: usize) -> App {
        let index = t * self.spec.apps_per_tenant + k;
        let mut rng = ids::rng(self.seed, Kind::App, index as u64);
        let id = uuid4(&mut rng);
        let mode = MODES[k % MODES.len()];
        let tenant = &self.tenants[t];
        let created = tenant.created + between(&mut rng, 3600, 20 * DAY);
        let name = text::APP_NAMES[(t + k) % text::APP_NAMES.len()];
        let name = if k < text::APP_NAMES.len() {
            name.to_owned()
        } else {
            format!("{name} {}", k / text::APP_NAMES.len() + 1)
        };
        let image_icon =
            (k == 0 && self.spec.upload_files_per_tenant > 1).then(|| self.user_upload_id(t, 1));
        App {
            index,
            tenant: t,
            id,
            mode,
            name,
            created,
            model_config: mode
                .has_model_config()
                .then(|| id_of(self.seed, Kind::AppModelConfig, index as u64)),
            workflow: mode
                .has_workflow()
                .then(|| id_of(self.seed, Kind::Workflow, index as u64)),
            draft_workflow: mode
                .has_workflow()
                .then(|| id_of(self.seed, Kind::DraftWorkflow, index as u64)),
            workflow_created: created + between(&mut rng, 600, 2 * DAY),
            annotations: mode.is_chat_like() && index.is_multiple_of(3),
            uses_datasets: mode.is_chat_like() && k % 2 == 0,
            image_icon,
        }
    }

    fn make_dataset(&self, t: usize, d: usize) -> Dataset {
        let index = t * self.spec.datasets_per_tenant + d;
        let mut rng = ids::rng(self.seed, Kind::Dataset, index as u64);
        let id = uuid4(&mut rng);
        // The last dataset of a workspace with several is an economy (keyword-only) one.
        let high_quality =
            !(self.spec.datasets_per_tenant > 1 && d == self.spec.datasets_per_tenant - 1);
        let provider = self.tenants[t].embedding_provider;
        let binding = high_quality.then(|| self.binding(provider, "dataset"));
        let name = text::DATASET_NAMES[d % text::DATASET_NAMES.len()];
        Dataset {
            index,
            tenant: t,
            id,
            name: name.to_owned(),
            high_quality,
            binding,
            created: self.tenants[t].created + between(&mut rng, DAY, 25 * DAY),
            process_rule: id_of(self.seed, Kind::ProcessRule, index as u64),
        }
    }

    pub(super) fn binding(&self, provider: &str, kind: &str) -> Uuid {
        self.bindings
            .iter()
            .find(|b| b.provider == provider && b.kind == kind)
            .map_or(Uuid::nil(), |b| b.id)
    }

    pub(super) fn message_apps(&self) -> impl Iterator<Item = &App> {
        self.apps.iter().filter(|a| a.mode.has_messages())
    }

    pub(super) fn end_user(&self, app: &App, r: usize) -> Uuid {
        id(
            self.seed,
            Kind::EndUser,
            (app.index * END_USERS_PER_APP + r) as u64,
        )
    }

    pub(super) fn user_upload_id(&self, tenant: usize, r: usize) -> Uuid {
        id(
            self.seed,
            Kind::UploadFile,
            (tenant * self.spec.upload_files_per_tenant + r) as u64,
        )
    }

    /// A random upload of the workspace, or none when it has no uploads.
    pub(super) fn any_user_upload(&self, rng: &mut Rng, tenant: usize) -> Option<Uuid> {
        let n = self.spec.upload_files_per_tenant;
        (n > 0).then(|| self.user_upload_id(tenant, rng.usize(..n)))
    }
}

fn id_of(seed: u64, kind: Kind, index: u64) -> Uuid {
    id(seed, kind, index)
}

/// Who started a conversation or a run.
#[derive(Clone, Copy)]
pub(super) struct Actor {
    pub end_user: Option<Uuid>,
    pub account: Option<Uuid>,
}

impl Actor {
    pub(super) fn id(self) -> Uuid {
        self.end_user.or(self.account).unwrap_or_default()
    }

    pub(super) fn role(self) -> &'static str {
        if self.end_user.is_some() {
            "end_user"
        } else {
            "account"
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Conv {
    pub index: u64,
    pub id: Uuid,
    pub created: i64,
    /// Seconds between two messages of the conversation.
    pub gap: i64,
    pub actor: Actor,
    pub from_source: &'static str,
    pub invoke_from: &'static str,
    pub deleted: bool,
    pub pinned: bool,
    pub variable: bool,
    pub title: usize,
    pub j: usize,
}

impl Conv {
    /// Time of the last message: what Dify leaves in `conversations.updated_at`.
    pub(super) fn updated(&self, messages: usize) -> i64 {
        self.created + self.gap * messages.saturating_sub(1) as i64
    }
}

pub(super) struct Msg {
    pub index: u64,
    pub id: Uuid,
    pub parent: Option<Uuid>,
    pub created: i64,
    pub micros: u32,
    pub query: &'static str,
    pub answer: &'static str,
    pub error: bool,
    pub latency: f64,
    pub feedback: Option<&'static str>,
    pub user_file: bool,
    pub tool_file: Option<Uuid>,
    pub chain: bool,
    pub thoughts: usize,
    pub retrievals: usize,
    pub saved: bool,
    pub annotated: bool,
    pub hit: Option<usize>,
    pub run: Option<Uuid>,
}

impl Msg {
    pub(super) fn message_tokens(&self) -> i64 {
        text::tokens(self.query) + 40
    }

    pub(super) fn answer_tokens(&self) -> i64 {
        if self.error {
            0
        } else {
            text::tokens(self.answer)
        }
    }
}

impl World {
    pub(super) fn conv(&self, app: &App, j: usize) -> Conv {
        let index = (app.index * self.spec.conversations_per_app + j) as u64;
        let mut rng = ids::rng(self.seed, Kind::Conversation, index);
        let id = uuid4(&mut rng);
        let gap = rng.i64(15..=300);
        let span = gap * self.spec.messages_per_conversation as i64;
        let created = between(&mut rng, self.start.max(app.created), self.now - span - 60);
        let from_console = chance(&mut rng, 0.15);
        let actor = if from_console {
            Actor {
                end_user: None,
                account: Some(self.tenants[app.tenant].accounts[rng.usize(..ACCOUNTS_PER_TENANT)]),
            }
        } else {
            Actor {
                end_user: Some(self.end_user(app, rng.usize(..END_USERS_PER_APP))),
                account: None,
            }
        };
        let (from_source, invoke_from) = if from_console {
            ("console", *text::pick(&mut rng, &["debugger", "explore"]))
        } else {
            ("api", *text::pick(&mut rng, &["service-api", "web-app"]))
        };
        Conv {
            index,
            id,
            created,
            gap,
            actor,
            from_source,
            invoke_from,
            deleted: chance(&mut rng, 0.02),
            pinned: chance(&mut rng, 0.03),
            variable: app.mode == Mode::AdvancedChat,
            title: rng.usize(..text::QUERIES.len()),
            j,
        }
    }

    pub(super) fn msg(&self, app: &App, conv: &Conv, position: usize) -> Msg {
        let index = conv.index * self.spec.messages_per_conversation as u64 + position as u64;
        let mut rng = ids::rng(self.seed, Kind::Message, index);
        let id = uuid4(&mut rng);
        let parent = (position > 0).then(|| ids::id(self.seed, Kind::Message, index - 1));
        let q = if position == 0 {
            conv.title
        } else {
            rng.usize(..text::QUERIES.len())
        };
        let error = chance(&mut rng, 0.02);
        let agent = app.mode == Mode::AgentChat;
        let has_datasets = app.uses_datasets
            && self.spec.documents_per_dataset > 0
            && self.spec.segments_per_document > 0
            && self.tenants[app.tenant]
                .datasets
                .iter()
                .any(|&d| self.datasets[d].high_quality);
        let feedback = if chance(&mut rng, 0.08) {
            Some(if chance(&mut rng, 0.7) {
                "like"
            } else {
                "dislike"
            })
        } else {
            None
        };
        let annotated = app.annotations && position == 0 && conv.j.is_multiple_of(ANNOTATED_EVERY);
        let hit = (app.annotations && chance(&mut rng, 0.01)).then(|| {
            let annotated_convs = self.spec.conversations_per_app.div_ceil(ANNOTATED_EVERY);
            rng.usize(..annotated_convs.max(1)) * ANNOTATED_EVERY
        });
        let tool_file = (agent && !error && chance(&mut rng, 0.1))
            .then(|| ids::id(self.seed, Kind::ToolFile, index));
        Msg {
            index,
            id,
            parent,
            created: conv.created + conv.gap * position as i64,
            micros: rng.u32(..1_000_000),
            query: text::QUERIES[q],
            answer: text::ANSWERS[q],
            error,
            latency: rng.f64() * 8.0 + 0.4,
            feedback,
            user_file: self.spec.upload_files_per_tenant > 0 && chance(&mut rng, 0.06),
            tool_file,
            chain: chance(&mut rng, 0.1),
            thoughts: if agent { rng.usize(1..=3) } else { 0 },
            retrievals: if has_datasets && chance(&mut rng, 0.4) {
                rng.usize(1..=3)
            } else {
                0
            },
            saved: chance(&mut rng, 0.02),
            annotated,
            hit,
            run: (app.mode == Mode::AdvancedChat).then(|| ids::id(self.seed, Kind::ChatRun, index)),
        }
    }

    /// Every message with its app and conversation, in generation order.
    pub(super) fn messages(&self) -> impl Iterator<Item = (&App, Conv, Msg)> + '_ {
        self.messages_of(|_| true)
    }

    /// The messages of the apps of one mode only.
    pub(super) fn messages_in(&self, mode: Mode) -> impl Iterator<Item = (&App, Conv, Msg)> + '_ {
        self.messages_of(move |app| app.mode == mode)
    }

    fn messages_of(
        &self,
        keep: impl Fn(&App) -> bool + 'static,
    ) -> impl Iterator<Item = (&App, Conv, Msg)> + '_ {
        let per_conv = self.spec.messages_per_conversation;
        self.message_apps()
            .filter(move |app| keep(app))
            .flat_map(move |app| {
                (0..self.spec.conversations_per_app).map(move |j| (app, self.conv(app, j)))
            })
            .flat_map(move |(app, conv)| {
                (0..per_conv).map(move |l| (app, conv, self.msg(app, &conv, l)))
            })
    }

    pub(super) fn conversations(&self) -> impl Iterator<Item = (&App, Conv)> + '_ {
        self.message_apps().flat_map(move |app| {
            (0..self.spec.conversations_per_app).map(move |j| (app, self.conv(app, j)))
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RunKind {
    /// A run of a workflow app.
    Workflow,
    /// The run behind one advanced-chat message.
    Chat,
}

#[derive(Clone, Copy)]
pub(super) struct Run {
    pub kind: RunKind,
    pub index: u64,
    pub id: Uuid,
    pub app: usize,
    pub created: i64,
    pub elapsed: f64,
    pub status: &'static str,
    pub triggered_from: &'static str,
    pub actor: Actor,
    pub tokens: i64,
    pub query: usize,
}

impl Run {
    pub(super) fn finished(&self) -> Option<(i64, u32)> {
        if matches!(self.status, "running" | "paused") {
            None
        } else {
            Some((self.created + self.elapsed.ceil() as i64, 0))
        }
    }

    pub(super) fn paused(&self) -> bool {
        self.status == "paused"
    }

    pub(super) fn trigger_logged(&self) -> bool {
        matches!(self.triggered_from, "webhook" | "schedule")
    }

    /// Dify writes an app log for every run of a published workflow app, not for debug runs.
    pub(super) fn app_logged(&self) -> bool {
        self.kind == RunKind::Workflow && self.triggered_from != "debugging"
    }
}

pub(super) struct Node {
    pub key: u64,
    pub id: Uuid,
    /// The engine's own id of the execution (`node_execution_id`, a string column).
    pub engine_id: Uuid,
    pub position: usize,
    pub node_id: String,
    pub predecessor: Option<String>,
    pub node_type: &'static str,
    pub title: &'static str,
    pub created: i64,
    pub elapsed: f64,
    /// Large outputs Dify 1.9+ moves to an upload file (workflow_node_execution_offload).
    pub offloaded: bool,
}

impl World {
    fn workflow_run(&self, app: &App, r: usize) -> Run {
        let index = (app.index * self.spec.workflow_runs_per_app + r) as u64;
        let mut rng = ids::rng(self.seed, Kind::WorkflowRun, index);
        let id = uuid4(&mut rng);
        let created = between(
            &mut rng,
            self.start.max(app.workflow_created),
            self.now - 120,
        );
        let status = match rng.u32(..100) {
            0..=87 => "succeeded",
            88..=93 => "failed",
            94..=95 => "stopped",
            96..=97 => "partial-succeeded",
            98 => "paused",
            _ => "running",
        };
        let triggered_from = match rng.u32(..100) {
            0..=69 => "app-run",
            70..=84 => "debugging",
            85..=94 => "webhook",
            _ => "schedule",
        };
        let actor = if triggered_from == "app-run" {
            Actor {
                end_user: Some(self.end_user(app, rng.usize(..END_USERS_PER_APP))),
                account: None,
            }
        } else {
            Actor {
                end_user: None,
                account: Some(self.tenants[app.tenant].owner()),
            }
        };
        Run {
            kind: RunKind::Workflow,
            index,
            id,
            app: app.index,
            created,
            elapsed: rng.f64() * 30.0 + 0.5,
            status,
            triggered_from,
            actor,
            tokens: rng.i64(0..4000),
            query: rng.usize(..text::QUERIES.len()),
        }
    }

    fn chat_run(&self, app: &App, conv: &Conv, msg: &Msg) -> Run {
        Run {
            kind: RunKind::Chat,
            index: msg.index,
            id: msg.run.unwrap_or_default(),
            app: app.index,
            created: msg.created,
            elapsed: msg.latency,
            status: if msg.error { "failed" } else { "succeeded" },
            triggered_from: if conv.from_source == "console" {
                "debugging"
            } else {
                "app-run"
            },
            actor: conv.actor,
            tokens: msg.message_tokens() + msg.answer_tokens(),
            query: 0,
        }
    }

    /// Runs of workflow apps.
    pub(super) fn workflow_runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.apps
            .iter()
            .filter(|a| a.mode == Mode::Workflow)
            .flat_map(move |app| {
                (0..self.spec.workflow_runs_per_app).map(move |r| self.workflow_run(app, r))
            })
    }

    /// Runs of workflow apps, then the runs behind advanced-chat messages.
    pub(super) fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        let chat = self
            .messages_in(Mode::AdvancedChat)
            .map(move |(app, conv, msg)| self.chat_run(app, &conv, &msg));
        self.workflow_runs().chain(chat)
    }

    pub(super) fn node(&self, run: &Run, n: usize) -> Node {
        let per_run = self.spec.nodes_per_run;
        let key = run.index * per_run as u64 + n as u64;
        let kind = match run.kind {
            RunKind::Workflow => Kind::WorkflowNode,
            RunKind::Chat => Kind::ChatNode,
        };
        let mut rng = ids::rng(self.seed, kind, key);
        let id = uuid4(&mut rng);
        let engine_id = uuid4(&mut rng);
        let last = n + 1 == per_run;
        let (node_type, title) = if n == 0 {
            ("start", "Start")
        } else if last && run.kind == RunKind::Chat {
            ("answer", "Answer")
        } else if last {
            ("end", "End")
        } else {
            text::NODE_TYPES[(n - 1 + run.index as usize) % text::NODE_TYPES.len()]
        };
        let step = run.elapsed / per_run.max(1) as f64;
        // Node ids are the millisecond timestamps the editor gave the nodes, except `start`.
        let node_name = |i: usize| {
            if i == 0 {
                "start".to_owned()
            } else {
                (1_718_000_000_000u64 + run.app as u64 * 1000 + i as u64).to_string()
            }
        };
        Node {
            key,
            id,
            engine_id,
            position: n + 1,
            node_id: node_name(n),
            predecessor: (n > 0).then(|| node_name(n - 1)),
            node_type,
            title,
            created: run.created + (step * n as f64) as i64,
            elapsed: step,
            offloaded: last && run.kind == RunKind::Workflow && chance(&mut rng, 0.03),
        }
    }
}

pub(super) struct Doc {
    pub index: u64,
    pub id: Uuid,
    pub position: usize,
    pub file: Uuid,
    pub name: String,
    pub ext: &'static str,
    pub mime: &'static str,
    pub created: i64,
    pub file_size: i64,
}

pub(super) struct Segment {
    pub id: Uuid,
    pub position: usize,
    pub content: String,
    pub node_id: Uuid,
    pub hash: String,
    pub hit_count: i64,
    pub keywords: [&'static str; 2],
}

impl World {
    pub(super) fn doc(&self, dataset: &Dataset, i: usize) -> Doc {
        let index = (dataset.index * self.spec.documents_per_dataset + i) as u64;
        let mut rng = ids::rng(self.seed, Kind::Document, index);
        let id = uuid4(&mut rng);
        let (ext, mime) = *text::pick(&mut rng, text::DOCUMENT_FILES);
        Doc {
            index,
            id,
            position: i + 1,
            file: ids::id(self.seed, Kind::DocumentFile, index),
            name: format!("{} part {}.{ext}", dataset.name, i + 1),
            ext,
            mime,
            created: dataset.created + between(&mut rng, 60, 3 * DAY),
            file_size: rng.i64(2_000..5_000_000),
        }
    }

    pub(super) fn segment(&self, dataset: &Dataset, doc: &Doc, s: usize) -> Segment {
        let index = doc.index * self.spec.segments_per_document as u64 + s as u64;
        let mut rng = ids::rng(self.seed, Kind::Segment, index);
        let id = uuid4(&mut rng);
        let paragraph = *text::pick(&mut rng, text::PARAGRAPHS);
        // A few chunks show an image extracted from the source, by upload file id, the way
        // Dify's extractors link them.
        let content = match self.any_user_upload(&mut rng, dataset.tenant) {
            Some(file) if chance(&mut rng, 0.02) => {
                format!("{paragraph}\n![image](/files/{file}/file-preview)")
            }
            _ => paragraph.to_owned(),
        };
        let words: Vec<&'static str> = paragraph.split_whitespace().take(2).collect();
        Segment {
            id,
            position: s + 1,
            content,
            node_id: uuid4(&mut rng),
            hash: ids::hex(&mut rng, 32),
            hit_count: rng.i64(0..20),
            keywords: [
                words.first().copied().unwrap_or("doc"),
                words.get(1).copied().unwrap_or("text"),
            ],
        }
    }
}
