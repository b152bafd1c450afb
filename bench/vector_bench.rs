//! Vector migration benchmark: Upkeep's `vector_migrate` from the Weaviate test server to the
//! target (`--target qdrant`: the Qdrant stand-in; `--target milvus`: the Milvus test server
//! on milvus-lite; both in `tests/servers/`), beside the ceiling, in one run: a tight loop that
//! only writes the same points (payloads, vectors, batch size) into the same server, with no
//! reading (Qdrant: upserts; Milvus: plain inserts, without the doc_id look-up Upkeep's
//! idempotent writes make), once sequentially, once with Upkeep's parallelism (a stream per
//! dataset) and once with two batches in flight per stream as well (Upkeep writes two pages
//! of a dataset at once). Every run's points are counted afterwards, so a broken run cannot
//! look fast.
//! The target server gets core 0 to itself and everything else (this program, pinned by
//! `bench/vectors.sh`, the Weaviate server and the daemon) shares core 1, as if the stores ran
//! on machines of their own: on two shared cores the single-threaded server would otherwise be
//! slowed by whoever else runs, which the ceiling loop, nearly idle itself, never does.
//! `--target pgvector` writes into the PostgreSQL 16 + pgvector server `bench/vectors.sh`
//! starts (not pinned: its backends are processes of their own); its ceiling is `COPY ...
//! FROM STDIN` into the same tables Dify's layout makes (with their HNSW index).
//! With the Qdrant stand-in, each run also shows the calls it received and its handlers'
//! timeline (`/__timeline`): how much of the writing window the target worked, had two
//! `Upsert`s at hand, or waited.
//! Run it with `bench/vectors.sh`; it prints Markdown.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use upkeep::config::Component;
use upkeep::dify::vector_records::Dataset;
use upkeep::vector::store::{Location, Point, VectorTarget};
use upkeep::vector::{AnyStore, StoreConfig};

#[allow(dead_code)]
#[path = "common.rs"]
mod common;
use common::{peak_rss, spawn_daemon_with, stop};

const MODEL: &str = "text-embedding-3-small";
const PROVIDER: &str = "langgenius/openai/openai";

struct Args {
    pg: String,
    upkeep: String,
    python: String,
    datasets: usize,
    points: usize,
    dim: usize,
    batch: usize,
    concurrency: usize,
    target: String,
    /// The pgvector server (`--target pgvector`).
    pgvector: String,
    /// `--floats f64`: the Weaviate server holds and prints each vector number widened to a
    /// double (up to 17 digits), as this bench loaded them before 2026-12-06; `f32` (default):
    /// as Weaviate prints its float32s (the shortest digits that read back, at most 9).
    wide_floats: bool,
}

fn args() -> Args {
    let mut a = Args {
        pg: String::new(),
        upkeep: String::new(),
        python: String::new(),
        datasets: 4,
        points: 100_000,
        dim: 1536,
        batch: 256,
        concurrency: 4,
        target: "qdrant".into(),
        pgvector: String::new(),
        wide_floats: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("{flag} {value}"))
        };
        match flag.as_str() {
            "--pg" => a.pg = value.clone(),
            "--upkeep" => a.upkeep = value.clone(),
            "--python" => a.python = value.clone(),
            "--datasets" => a.datasets = number(),
            "--points" => a.points = number(),
            "--dim" => a.dim = number(),
            "--batch" => a.batch = number(),
            "--concurrency" => a.concurrency = number(),
            "--target" => a.target = value.clone(),
            "--pgvector" => a.pgvector = value.clone(),
            "--floats" => {
                a.wide_floats = match value.as_str() {
                    "f32" => false,
                    "f64" => true,
                    _ => panic!("--floats takes f32 or f64, not {value}"),
                }
            }
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// One of `tests/servers/`, on a free port and `cpus`; the ports it prints after `READY`.
async fn server(python: &str, cpus: &str, script: &str, args: &[&str]) -> (Child, Vec<u16>) {
    let mut child = Command::new("taskset")
        .args(["-c", cpus, python])
        .arg(format!("tests/servers/{script}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start test server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(ports) = line.strip_prefix("READY ") {
            let ports = ports
                .split_whitespace()
                .map(|p| p.parse().expect("port"))
                .collect();
            return (child, ports);
        }
    }
    panic!("{script} did not start");
}

fn unit_vector(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.f32() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// The points of one dataset as Dify wrote them (metadata as Weaviate's flat properties).
fn dataset_points(ds: Uuid, doc: Uuid, n: usize, dim: usize, seed: u64) -> Vec<Point> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let doc_id = Uuid::new_v4().to_string();
            let metadata = json!({"doc_id": doc_id, "doc_hash": format!("h{i}"),
                                  "document_id": doc.to_string(), "dataset_id": ds.to_string(),
                                  "source": "handbook.pdf", "page": i % 300});
            Point {
                id: doc_id,
                vector: unit_vector(&mut rng, dim),
                text: format!("chunk {i} of the handbook, dataset {ds}"),
                metadata: metadata.as_object().cloned().unwrap_or_else(Map::new),
            }
        })
        .collect()
}

async fn load_postgres(pool: &sqlx::PgPool, ds: Uuid, doc: Uuid, binding: Uuid, points: &[Point]) {
    let tenant = Uuid::nil();
    let struct_ = format!(
        "{{\"type\": \"weaviate\", \"vector_store\": {{\"class_prefix\": \"{}\"}}}}",
        class_name(ds)
    );
    sqlx::query(
        "INSERT INTO public.datasets (id, tenant_id, name, indexing_technique, index_struct, created_by, \
            embedding_model, embedding_model_provider, collection_binding_id) \
         VALUES ($1, $2, 'bench', 'high_quality', $3, $2, $4, $5, $6)",
    )
    .bind(ds)
    .bind(tenant)
    .bind(struct_)
    .bind(MODEL)
    .bind(PROVIDER)
    .bind(binding)
    .execute(pool)
    .await
    .expect("dataset");
    sqlx::query(
        "INSERT INTO public.documents (id, tenant_id, dataset_id, position, data_source_type, batch, name, \
            created_from, created_by, indexing_status) \
         VALUES ($1, $2, $3, 1, 'upload_file', 'b', 'handbook.pdf', 'web', $2, 'completed')",
    )
    .bind(doc)
    .bind(tenant)
    .bind(ds)
    .execute(pool)
    .await
    .expect("document");
    for chunk in points.chunks(5000) {
        let ids: Vec<String> = chunk.iter().map(|p| p.id.clone()).collect();
        let texts: Vec<String> = chunk.iter().map(|p| p.text.clone()).collect();
        sqlx::query(
            "INSERT INTO public.document_segments (tenant_id, dataset_id, document_id, position, content, \
                word_count, tokens, hit_count, created_by, index_node_id, index_node_hash, status) \
             SELECT $1, $2, $3, 0, t, 8, 8, 0, $1, i, 'h', 'completed' FROM unnest($4::text[], $5::text[]) AS u(i, t)",
        )
        .bind(tenant)
        .bind(ds)
        .bind(doc)
        .bind(&ids)
        .bind(&texts)
        .execute(pool)
        .await
        .expect("segments");
    }
}

fn class_name(id: Uuid) -> String {
    format!("Vector_index_{}_Node", id.to_string().replace('-', "_"))
}

/// Dify's legacy Weaviate class (id = doc_id, unnamed vector), filled in batches of 500.
/// The server keeps each vector's text as sent: `wide` sends doubles (up to 17 digits), else
/// f32s as Weaviate prints them.
async fn load_weaviate(http: &reqwest::Client, url: &str, ds: Uuid, points: &[Point], wide: bool) {
    // Serialized straight, not through a `Value`, which would hold each f32 as a double.
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Floats<'a> {
        Single(&'a [f32]),
        Double(Vec<f64>),
    }
    #[derive(serde::Serialize)]
    struct Object<'a> {
        class: &'a str,
        id: &'a str,
        properties: Map<String, Value>,
        vector: Floats<'a>,
    }
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        objects: Vec<Object<'a>>,
    }
    let class = class_name(ds);
    let schema = json!({"class": class, "properties": [{"name": "text", "dataType": ["text"]}]});
    let r = http
        .post(format!("{url}/v1/schema"))
        .json(&schema)
        .send()
        .await
        .expect("schema");
    assert!(r.status().is_success(), "schema: {}", r.status());
    for chunk in points.chunks(500) {
        let objects: Vec<Object> = chunk
            .iter()
            .map(|p| {
                let mut properties = p.metadata.clone();
                properties.insert("text".into(), json!(p.text));
                let vector = if wide {
                    Floats::Double(p.vector.iter().map(|&x| f64::from(x)).collect())
                } else {
                    Floats::Single(&p.vector)
                };
                Object {
                    class: &class,
                    id: &p.id,
                    properties,
                    vector,
                }
            })
            .collect();
        let r = http
            .post(format!("{url}/v1/batch/objects"))
            .json(&Batch { objects })
            .send()
            .await
            .expect("batch");
        assert!(r.status().is_success(), "batch: {}", r.status());
    }
}

/// Where `ds` goes: the job's place for it, or (`ceiling`) one of the loop's own.
fn place(target: &StoreConfig, ds: Uuid, binding: &str, ceiling: Option<usize>) -> Location {
    let dataset = Dataset {
        id: ds,
        tenant_id: Uuid::nil(),
        index_struct: None,
        embedding_model: None,
        embedding_model_provider: None,
        binding_collection: Some(binding.to_string()),
        annotations: false,
        parts: Default::default(),
    };
    let mut at = target.locate(&dataset, None);
    // Milvus and pgvector keep a collection per dataset: the loop writes to collections of
    // its own (Qdrant shares the binding collection and is reset between runs).
    if let (Some(run), StoreConfig::Milvus(_) | StoreConfig::Pgvector(_)) = (ceiling, target) {
        at.collection = format!("Ceiling_{run}_{}", ds.simple());
    }
    at
}

/// One row of `COPY ... FROM STDIN` text format.
fn copy_row(out: &mut String, p: &Point) {
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    let vector: Vec<String> = p.vector.iter().map(|x| x.to_string()).collect();
    out.push_str(&format!(
        "{}\t{}\t{}\t[{}]\n",
        p.id,
        escape(&p.text),
        escape(&Value::Object(p.metadata.clone()).to_string()),
        vector.join(",")
    ));
}

/// pgvector's ceiling: `COPY` of one batch per statement, as a tight loader would.
async fn copy_batch(pool: &sqlx::PgPool, at: &Location, points: &[Point]) {
    let mut conn = pool.acquire().await.expect("connection");
    let mut data = String::new();
    for p in points {
        copy_row(&mut data, p);
    }
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY embedding_{} (id, text, meta, embedding) FROM STDIN",
            at.collection
        ))
        .await
        .expect("copy");
    copy.send(data.into_bytes()).await.expect("copy data");
    copy.finish().await.expect("copy end");
}

/// The ceiling: only writes, `streams` at once (one per dataset), batches of `batch`, each
/// stream with `depth` batches in flight (Upkeep writes two pages of a dataset at once).
async fn ceiling(
    copy_into: Option<&sqlx::PgPool>,
    store: &AnyStore,
    places: &[Location],
    data: &[(Uuid, Vec<Point>)],
    batch: usize,
    (streams, depth): (usize, usize),
) -> Duration {
    for at in places {
        store
            .ensure(at, data[0].1[0].vector.len())
            .await
            .expect("collection");
    }
    let started = Instant::now();
    let per_stream = data.len().div_ceil(streams);
    let work =
        data.chunks(per_stream)
            .zip(places.chunks(per_stream))
            .map(|(part, places)| async move {
                for ((_, points), at) in part.iter().zip(places) {
                    let writes = points.chunks(batch).map(|chunk| async move {
                        if let Some(pool) = copy_into {
                            copy_batch(pool, at, chunk).await;
                            return;
                        }
                        match store {
                            AnyStore::Milvus(m) => m.insert_only(at, chunk).await,
                            other => other.write(at, chunk).await,
                        }
                        .expect("write");
                    });
                    futures_util::stream::iter(writes)
                        .buffered(depth)
                        .collect::<Vec<()>>()
                        .await;
                }
            });
    futures_util::future::join_all(work).await;
    started.elapsed()
}

async fn count_all(store: &AnyStore, places: &[Location]) -> u64 {
    let mut n = 0;
    for at in places {
        n += store.count(at).await.expect("count");
    }
    n
}

async fn reset(http: &reqwest::Client, control: u16) {
    let r = http
        .post(format!("http://127.0.0.1:{control}/__reset"))
        .send()
        .await
        .expect("reset");
    assert!(r.status().is_success());
}

/// The Qdrant stand-in's calls per method since its last reset.
async fn target_calls(http: &reqwest::Client, control: u16) -> Value {
    http.get(format!("http://127.0.0.1:{control}/__calls"))
        .send()
        .await
        .expect("calls")
        .json()
        .await
        .expect("calls as JSON")
}

/// How busy the Qdrant stand-in's handlers were while the points were written: from the first
/// `Upsert` to the end of the last, the share of that time some handler ran, the share two
/// `Upsert`s were being handled at once, and the idle gaps over 2 ms (their count and sum).
/// `job`: when the job was submitted and when its copy was seen done, on `monotonic`'s clock,
/// to split the copy phase into its start, the window and its tail.
async fn target_timeline(http: &reqwest::Client, control: u16, job: Option<(f64, f64)>) -> String {
    let calls: Vec<(String, f64, f64)> = http
        .get(format!("http://127.0.0.1:{control}/__timeline"))
        .send()
        .await
        .expect("timeline")
        .json()
        .await
        .expect("timeline as JSON");
    let upserts: Vec<(f64, f64)> = calls
        .iter()
        .filter(|c| c.0 == "Points/Upsert")
        .map(|c| (c.1, c.2))
        .collect();
    let (Some(from), Some(to)) = (
        upserts.iter().map(|u| u.0).reduce(f64::min),
        upserts.iter().map(|u| u.1).reduce(f64::max),
    ) else {
        return "no Upsert".into();
    };
    // Every handler's start (+1) and end (-1) inside the window, in time order.
    let edges = |of: &mut dyn Iterator<Item = (f64, f64)>| {
        let mut e: Vec<(f64, i32)> = of
            .filter(|(s, e)| *e > from && *s < to)
            .flat_map(|(s, e)| [(s.max(from), 1), (e.min(to), -1)])
            .collect();
        e.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        e
    };
    let (mut busy, mut gaps, mut gap_sum) = (0.0, 0, 0.0);
    let (mut depth, mut since) = (0, from);
    for (t, d) in edges(&mut calls.iter().map(|c| (c.1, c.2))) {
        if depth == 0 && d > 0 && t - since > 0.002 {
            gaps += 1;
            gap_sum += t - since;
        }
        if depth > 0 {
            busy += t - since;
        }
        depth += d;
        since = t;
    }
    let (mut two, mut depth, mut since) = (0.0, 0, from);
    for (t, d) in edges(&mut upserts.iter().copied()) {
        if depth >= 2 {
            two += t - since;
        }
        depth += d;
        since = t;
    }
    // What the other calls (a finished dataset's verification) took inside the window.
    let others = calls
        .iter()
        .filter(|c| c.0 != "Points/Upsert")
        .map(|c| c.2.min(to) - c.1.max(from))
        .filter(|d| *d > 0.0)
        .fold(0.0, |sum, d| sum + d);
    let window = to - from;
    let split = match (job, calls.iter().map(|c| c.1).reduce(f64::min)) {
        (Some((submitted, copied)), Some(first)) => format!(
            "; the job's first call reached it {:.2} s after submission, its first Upsert {:.2} s after that; the copy was seen done {:.2} s after the last Upsert ended",
            first - submitted,
            from - first,
            copied - to
        ),
        _ => String::new(),
    };
    format!(
        "{window:.1} s from the first Upsert to the end of the last; a handler running {:.0} % of it, two Upserts at once {:.0} %; {gaps} idle gaps over 2 ms, {gap_sum:.2} s in all; calls other than Upsert handled for {others:.2} s inside it{split}",
        100.0 * busy / window,
        100.0 * two / window
    )
}

/// Seconds on CLOCK_MONOTONIC, the clock of Python's `time.perf_counter` on Linux, which the
/// Qdrant stand-in's timeline is in.
fn monotonic() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// CPU seconds (user + system) a process has used so far.
fn cpu(c: &Child) -> f64 {
    cpu_of(&c.id().unwrap_or(0).to_string())
}

fn own_cpu() -> f64 {
    cpu_of("self")
}

fn cpu_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is 3rd, utime 14th, stime 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// When a job's progress moved, in seconds after submission, and the CPU seconds at the moment
/// its copy was done.
struct Watched {
    /// The first point written, as the progress (written at most once a second) showed it.
    first: f64,
    /// Every point written (the copy done, verification under way).
    copied: f64,
    copied_cpu: [f64; 3],
    /// Submission and `copied` on `monotonic`'s clock.
    submitted_at: f64,
    copied_at: f64,
}

/// Runs a job to its end, sampling `cpu` when its progress first shows every point written.
async fn watch(url: &str, body: &Value, n: u64, cpu: impl Fn() -> [f64; 3]) -> (Value, Watched) {
    let (submitted, submitted_at) = (Instant::now(), monotonic());
    let (mut first, mut copied) = (None, None);
    let job = common::run_job_watching(url, body, |view| {
        let done = view["progress"]["done"].as_u64().unwrap_or(0);
        if first.is_none() && done > 0 {
            first = Some(submitted.elapsed().as_secs_f64());
        }
        if copied.is_none() && done >= n {
            copied = Some((submitted.elapsed().as_secs_f64(), cpu(), monotonic()));
        }
    })
    .await;
    let end = submitted.elapsed().as_secs_f64();
    let (copied, copied_cpu, copied_at) = copied.unwrap_or_else(|| (end, cpu(), monotonic()));
    (
        job,
        Watched {
            first: first.unwrap_or(end),
            copied,
            copied_cpu,
            submitted_at,
            copied_at,
        },
    )
}

fn seconds(job: &Value) -> f64 {
    let at = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(job[k].as_str().expect("timestamp")).expect("rfc3339")
    };
    (at("finished_at") - at("started_at")).num_milliseconds() as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let total = a.points;
    let per = total / a.datasets;
    let http = reqwest::Client::new();
    let (mut weaviate, wport) = server(
        &a.python,
        "1",
        "weaviate_server.py",
        &["--host", "127.0.0.1", "--port", "0"],
    )
    .await;
    let (mut target_server, tports) = match a.target.as_str() {
        "qdrant" => {
            let args = ["--version", "1.8.3", "--exit-on-stdin-eof"];
            let mut all = vec!["--host", "127.0.0.1", "--port", "0"];
            all.extend(args);
            let (c, p) = server(&a.python, "0", "qdrant_standin.py", &all).await;
            (Some(c), p)
        }
        "milvus" => {
            let all = ["--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof"];
            let (c, p) = server(&a.python, "0", "milvus_server.py", &all).await;
            (Some(c), p)
        }
        "pgvector" => (None, Vec::new()),
        other => panic!("--target {other}: qdrant, milvus or pgvector"),
    };
    // pgvector: a fresh database on the server, reached as Dify's env says.
    let pgvector_db = if a.target == "pgvector" {
        Some(common::recreate(&a.pgvector, "upkeep_bench_pgvector", None).await)
    } else {
        None
    };
    let weaviate_url = format!("http://127.0.0.1:{}", wport[0]);
    let target_env: Vec<(&str, String)> = match a.target.as_str() {
        "qdrant" => vec![
            ("QDRANT_URL", "http://127.0.0.1:6333".to_string()),
            ("QDRANT_GRPC_PORT", tports[0].to_string()),
            ("QDRANT_CLIENT_TIMEOUT", "60".to_string()),
        ],
        "milvus" => vec![
            ("MILVUS_URI", format!("http://127.0.0.1:{}", tports[0])),
            ("MILVUS_ENABLE_HYBRID_SEARCH", "false".to_string()),
        ],
        _ => {
            let url = url::Url::parse(pgvector_db.as_deref().unwrap_or_default()).expect("URL");
            vec![
                (
                    "PGVECTOR_HOST",
                    url.host_str().unwrap_or("127.0.0.1").to_string(),
                ),
                ("PGVECTOR_PORT", url.port().unwrap_or(5432).to_string()),
                ("PGVECTOR_USER", url.username().to_string()),
                (
                    "PGVECTOR_DATABASE",
                    url.path().trim_start_matches('/').to_string(),
                ),
            ]
        }
    };
    let target = StoreConfig::from_env(
        &a.target,
        &Component {
            kind: a.target.clone(),
            vars: target_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        },
    )
    .expect("target config");

    let db_url = common::recreate(&a.pg, "upkeep_bench_vectors", None).await;
    let pool = sqlx::PgPool::connect(&db_url).await.expect("connect");
    upkeep::demo::fixture::load_dify_fixture(&pool)
        .await
        .expect("fixture");
    upkeep::db::migrate(&pool).await.expect("migrate");
    let binding = Uuid::new_v4();
    let collection = class_name(Uuid::new_v4());
    sqlx::query(
        "INSERT INTO public.dataset_collection_bindings (id, provider_name, model_name, collection_name, type) \
         VALUES ($1, $2, $3, $4, 'dataset')",
    )
    .bind(binding)
    .bind(PROVIDER)
    .bind(MODEL)
    .bind(&collection)
    .execute(&pool)
    .await
    .expect("binding");

    let loading = Instant::now();
    let mut data = Vec::new();
    for d in 0..a.datasets {
        let (ds, doc) = (Uuid::new_v4(), Uuid::new_v4());
        let points = dataset_points(ds, doc, per, a.dim, d as u64 + 1);
        load_postgres(&pool, ds, doc, binding, &points).await;
        load_weaviate(&http, &weaviate_url, ds, &points, a.wide_floats).await;
        data.push((ds, points));
    }
    let loaded = loading.elapsed();
    let n = (per * a.datasets) as u64;

    let store = target.open().await.expect("the target answers");
    let copy_pool = match &pgvector_db {
        Some(url) => Some(sqlx::PgPool::connect(url).await.expect("pgvector")),
        None => None,
    };
    let mut rows = Vec::new();
    let target_cpu = |s: &Option<Child>| s.as_ref().map_or(f64::NAN, cpu);
    let cpus = |client: f64| [target_cpu(&target_server), cpu(&weaviate), client];
    let shapes = [(1, 1), (a.concurrency, 1), (a.concurrency, 2)];
    // The stand-in's calls per method, per run (the last one Upkeep's whole job).
    let mut calls: Vec<(usize, Value, String)> = Vec::new();
    for (run, (streams, depth)) in shapes.into_iter().enumerate() {
        let places: Vec<Location> = data
            .iter()
            .map(|(ds, _)| place(&target, *ds, &collection, Some(run)))
            .collect();
        let before = cpus(own_cpu());
        let shape = (streams, depth);
        let took = ceiling(copy_pool.as_ref(), &store, &places, &data, a.batch, shape).await;
        let after = cpus(own_cpu());
        assert_eq!(
            count_all(&store, &places).await,
            n,
            "ceiling wrote every point"
        );
        let name = if copy_pool.is_some() {
            "COPY loop"
        } else {
            "upsert loop"
        };
        let in_flight = if depth > 1 {
            format!(", {depth} batches in flight each")
        } else {
            String::new()
        };
        rows.push((
            format!("{name}, {streams} stream(s){in_flight} (ceiling)"),
            took.as_secs_f64(),
            [0, 1, 2].map(|i| after[i] - before[i]),
            "—".to_string(),
        ));
        if a.target == "qdrant" {
            let timeline = target_timeline(&http, tports[1], None).await;
            calls.push((run, target_calls(&http, tports[1]).await, timeline));
            reset(&http, tports[1]).await;
        }
    }
    let job_places: Vec<Location> = data
        .iter()
        .map(|(ds, _)| place(&target, *ds, &collection, None))
        .collect();
    drop(data);

    let mut env = target_env.clone();
    env.extend([
        ("VECTOR_STORE", a.target.clone()),
        ("WEAVIATE_ENDPOINT", weaviate_url.clone()),
        ("REDIS_HOST", "127.0.0.1".to_string()),
        ("REDIS_DB", "12".to_string()),
    ]);
    let (mut daemon, url) = spawn_daemon_with(&a.upkeep, &db_url, "bench-vectors", &env).await;
    let before = cpus(cpu(&daemon));
    let body = json!({"kind": "vector_migrate", "params": {"batch_size": a.batch, "concurrency": a.concurrency}});
    let (job, watched) = watch(&url, &body, n, || cpus(cpu(&daemon))).await;
    let first_written = watched.first;
    let after = cpus(cpu(&daemon));
    let rss = peak_rss(&daemon);
    stop(&mut daemon).await;
    if a.target == "qdrant" {
        let clock = (watched.submitted_at, watched.copied_at);
        let timeline = target_timeline(&http, tports[1], Some(clock)).await;
        calls.push((shapes.len(), target_calls(&http, tports[1]).await, timeline));
    }
    assert_eq!(job["result"]["switched"], a.datasets, "{job}");
    assert_eq!(
        count_all(&store, &job_places).await,
        n,
        "Upkeep wrote every point"
    );
    rows.push((
        format!(
            "Upkeep `vector_migrate` (batch {}, concurrency {}), copy phase",
            a.batch, a.concurrency
        ),
        watched.copied,
        [0, 1, 2].map(|i| watched.copied_cpu[i] - before[i]),
        rss.clone(),
    ));
    rows.push((
        format!(
            "Upkeep `vector_migrate` (batch {}, concurrency {}), whole job with verification",
            a.batch, a.concurrency
        ),
        seconds(&job),
        [0, 1, 2].map(|i| after[i] - before[i]),
        rss,
    ));

    let best = rows[..shapes.len()]
        .iter()
        .map(|r| n as f64 / r.1)
        .fold(0.0, f64::max);
    let into = match a.target.as_str() {
        "qdrant" => "the Qdrant stand-in answering as 1.8.3 (datasets sharing one collection)",
        "milvus" => "the Milvus test server on milvus-lite (a collection per dataset)",
        _ => "PostgreSQL 16 + pgvector 0.8.5 (a table per dataset, with Dify's HNSW index)",
    };
    println!(
        "{n} points × {} dims in {} datasets; Weaviate legacy layout, vectors printed as {} → {into}; loaded in {:.0} s.",
        a.dim,
        a.datasets,
        if a.wide_floats {
            "doubles (up to 17 digits)"
        } else {
            "Weaviate prints float32s (up to 9 digits)"
        },
        loaded.as_secs_f64()
    );
    println!();
    println!(
        "| run | seconds | points/s | of the best ceiling | CPU s: target server / Weaviate server / client | client peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, secs, [q, w, c], rss) in &rows {
        let rate = n as f64 / secs;
        let cpu = if c.is_nan() {
            "—".to_string()
        } else if q.is_nan() {
            format!("— / {w:.1} / {c:.1}")
        } else {
            format!("{q:.1} / {w:.1} / {c:.1}")
        };
        println!(
            "| {name} | {secs:.1} | {rate:.0} | {:.2} | {cpu} | {rss} |",
            rate / best
        );
    }
    println!();
    println!(
        "Upkeep's progress first showed a point written {:.1} s after the job was submitted (progress is written at most once a second, so this bounds the start from above; the copy-phase row counts from the submission, the ceilings' clocks start once their collections exist).",
        first_written
    );
    for (run, seen, timeline) in &calls {
        println!();
        println!("Calls the target received in row {}: {seen}", run + 1);
        println!();
        println!("The target's handlers in row {}: {timeline}.", run + 1);
    }
    stop(&mut weaviate).await;
    if let Some(target_server) = &mut target_server {
        drop(target_server.stdin.take());
        stop(target_server).await;
    }
}
