//! The demo's vector store: the Weaviate stand-in of `tests/servers` (Python 3's standard
//! library only), holding every record the demo's datasets and annotation replies name, as
//! Dify would have written them, so `vector_migrate` has a source to read.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::Settings;
use crate::dify::vector_records::{self, Dataset};
use crate::jobs::vector_migrate::units::locate_source;
use crate::vector::StoreConfig;
use crate::vector::store::{Point, VectorTarget};

/// `text-embedding-3-small`, the model the demo's datasets name.
const DIMENSION: usize = 1536;
const WRITE_BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum DemoVectorError {
    #[error("{0}")]
    Unavailable(String),
    #[error("loading the demo's vectors: {0}")]
    Load(String),
    #[error("reading the demo's datasets: {0}")]
    Db(#[from] sqlx::Error),
}

/// The stand-in server, stopped when this is dropped.
pub struct DemoWeaviate {
    _child: Child,
    pub endpoint: String,
}

/// Where the stand-in's script is: in the checkout this binary was built from.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/servers/weaviate_server.py")
}

/// Starts the stand-in on a free loopback port; it prints `READY <port>` once it serves.
pub async fn start() -> Result<DemoWeaviate, DemoVectorError> {
    let script = script();
    if !script.is_file() {
        return Err(DemoVectorError::Unavailable(format!(
            "{} is not there (the checkout this binary was built from)",
            script.display()
        )));
    }
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DemoVectorError::Unavailable(format!("python3: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| DemoVectorError::Unavailable("python3: no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(port) = line.strip_prefix("READY ") {
                return Some(port.trim().to_string());
            }
        }
        None
    };
    let port = tokio::time::timeout(Duration::from_secs(20), ready)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            DemoVectorError::Unavailable(format!("{} did not start", script.display()))
        })?;
    Ok(DemoWeaviate {
        _child: child,
        endpoint: format!("http://127.0.0.1:{port}"),
    })
}

/// Writes every record of every high-quality dataset and of every app's annotation replies
/// to `endpoint`, where its `index_struct` (or Dify's naming) puts it, with a generated unit
/// vector. Returns how many records.
pub async fn load(
    pool: &PgPool,
    endpoint: &str,
    settings: &Settings,
) -> Result<u64, DemoVectorError> {
    let config = StoreConfig::from_value(&json!({"type": "weaviate", "endpoint": endpoint}))
        .map_err(|(field, message)| DemoVectorError::Load(format!("{field}: {message}")))?;
    let store = config
        .open()
        .await
        .map_err(|e| DemoVectorError::Load(e.to_string()))?;
    let mut owners: Vec<Dataset> = vector_records::datasets(pool, "", None, None).await?;
    owners.extend(vector_records::annotation_apps(pool, None, None).await?);
    let mut written = 0u64;
    for ds in &owners {
        let (_, at) = locate_source(ds, Some(&config), settings, Ok("weaviate".into()))
            .map_err(DemoVectorError::Load)?;
        let doc_ids: Vec<String> = vector_records::expected(pool, ds)
            .await?
            .into_iter()
            .map(|r| r.doc_id)
            .collect();
        if doc_ids.is_empty() {
            continue;
        }
        store
            .ensure(&at, DIMENSION)
            .await
            .map_err(|e| DemoVectorError::Load(e.to_string()))?;
        for ids in doc_ids.chunks(WRITE_BATCH) {
            let points: Vec<Point> = vector_records::rebuilt(pool, ds, ids)
                .await?
                .into_iter()
                .map(|r| Point {
                    vector: unit_vector(&r.doc_id),
                    id: r.doc_id,
                    text: r.text,
                    metadata: r.metadata,
                })
                .collect();
            store
                .write(&at, &points)
                .await
                .map_err(|e| DemoVectorError::Load(e.to_string()))?;
            written += points.len() as u64;
        }
    }
    Ok(written)
}

/// A unit vector, the same for the same `doc_id`.
fn unit_vector(doc_id: &str) -> Vec<f32> {
    let seed = doc_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = fastrand::Rng::with_seed(seed);
    let v: Vec<f32> = (0..DIMENSION).map(|_| rng.f32() - 0.5).collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.into_iter().map(|x| x / norm).collect()
}
