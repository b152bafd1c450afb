//! Conversations, messages, workflow runs and node executions: the big tables, rebuilt row by
//! row from their index, so every table that refers to them derives the same ids and times.

use uuid::Uuid;

use super::ids::{self, Kind, chance, uuid4};
use super::text;
use super::world::{ACCOUNTS_PER_TENANT, App, END_USERS_PER_APP, Mode, World, between};

/// Every n-th conversation of an app with annotation reply gets its first answer annotated.
const ANNOTATED_EVERY: usize = 25;
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

#[cfg(test)]
mod tests {
    use super::super::DemoSpec;
    use super::*;

    fn message_ids(w: &World) -> Vec<(Uuid, Uuid)> {
        w.messages().map(|(_, c, m)| (c.id, m.id)).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_ids_at_any_time() {
        let spec = DemoSpec::demo();
        let today = World::new(&spec, 1_800_000_000);
        let tomorrow = World::new(&spec, 1_800_086_400);
        assert_eq!(message_ids(&today), message_ids(&tomorrow));
        let message_apps = spec.tenants * (spec.apps_per_tenant - 1);
        assert_eq!(
            message_ids(&today).len(),
            message_apps * spec.conversations_per_app * spec.messages_per_conversation
        );
        let other = World::new(&DemoSpec { seed: 1, ..spec }, 1_800_000_000);
        assert_ne!(message_ids(&today)[0], message_ids(&other)[0]);
    }

    #[test]
    fn logs_fall_inside_the_spread_and_runs_inside_their_apps() {
        let spec = DemoSpec::demo();
        let now = 1_800_000_000;
        let w = World::new(&spec, now);
        for (_, c, m) in w.messages() {
            assert!(c.created >= w.start && m.created >= c.created);
            assert!(c.updated(spec.messages_per_conversation) <= now);
        }
        for run in w.runs() {
            assert!(run.created >= w.start && run.created <= now);
            assert!(w.apps[run.app].mode.has_workflow());
        }
    }
}
