//! The shape of the generated Dify: the few small things kept in memory (tenants, apps,
//! datasets), and documents and segments rebuilt from their index on demand (see `logs` for
//! conversations, messages and runs). Every table generator walks the same functions, so
//! parents and children agree without either being held in memory.

use fastrand::Rng;
use uuid::Uuid;

use super::DemoSpec;
use super::ids::{self, Kind, chance, id, uuid4};
use super::text;

pub(super) const DAY: i64 = 86_400;
/// Owner, admin and editor of every workspace.
pub(super) const ACCOUNTS_PER_TENANT: usize = 3;
pub(super) const END_USERS_PER_APP: usize = 12;
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

pub(super) fn between(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
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
            ids::id(
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
            embedding_provider: if t.is_multiple_of(2) {
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
                .then(|| ids::id(self.seed, Kind::AppModelConfig, index as u64)),
            workflow: mode
                .has_workflow()
                .then(|| ids::id(self.seed, Kind::Workflow, index as u64)),
            draft_workflow: mode
                .has_workflow()
                .then(|| ids::id(self.seed, Kind::DraftWorkflow, index as u64)),
            workflow_created: created + between(&mut rng, 600, 2 * DAY),
            annotations: mode.is_chat_like() && index.is_multiple_of(3),
            uses_datasets: mode.is_chat_like() && k.is_multiple_of(2),
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
            process_rule: ids::id(self.seed, Kind::ProcessRule, index as u64),
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
