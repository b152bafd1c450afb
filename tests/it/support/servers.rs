//! Real storage servers for storage tests, installed by `scripts/lib/servers.sh` (run by
//! `scripts/test`), which exports their paths: moto (S3, `UPKEEP_TEST_MOTO`), Azurite (Azure
//! Blob, `UPKEEP_TEST_AZURITE`) and gcp-storage-emulator (GCS, `UPKEEP_TEST_GCS`).
//!
//! Each server runs on a free port of 127.0.0.1, in memory, is ready once it answers HTTP
//! (polled, 30 s deadline), and is killed when its handle drops. `kill` (SIGKILL, then reap)
//! is for "the server dies mid-job" tests; `restart` brings it back on the same port, empty.
//! Its output goes to a log file whose tail is shown when it fails to start.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use sha2::Sha256;
use tokio::process::{Child, Command};

const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Starts that fail because another process took the port between our probe and the bind.
const START_ATTEMPTS: usize = 3;

/// A server process: its binary, how to build its arguments for a port, and the running child.
struct ServerProc {
    name: &'static str,
    bin: String,
    args: Box<dyn Fn(u16) -> Vec<String> + Send + Sync>,
    /// Path (under the endpoint) that answers once the server is ready, and what counts as ready.
    probe: String,
    ready: fn(StatusCode) -> bool,
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl ServerProc {
    async fn start(
        name: &'static str,
        env_var: &str,
        args: impl Fn(u16) -> Vec<String> + Send + Sync + 'static,
        probe: &str,
        ready: fn(StatusCode) -> bool,
    ) -> ServerProc {
        let bin = std::env::var(env_var).unwrap_or_else(|_| {
            panic!(
                "{env_var} is not set: run the tests through scripts/test, which installs the \
                 {name} test server into .tools/ and exports its path \
                 (or `. scripts/lib/servers.sh && ensure_test_servers` in this shell)"
            )
        });
        let dir = std::env::temp_dir().join(format!(
            "upkeep-{}-{}",
            name.to_lowercase(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("server temp dir");
        let mut server = ServerProc {
            name,
            bin,
            args: Box::new(args),
            probe: probe.to_string(),
            ready,
            port: 0,
            child: None,
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            if server.spawn_and_wait().await {
                return server;
            }
            eprintln!(
                "{name} exited before answering on port {} (attempt {attempt}); retrying on another port",
                server.port
            );
        }
        panic!(
            "{name} did not start after {START_ATTEMPTS} attempts; its log:\n{}",
            server.log_tail()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Spawns on `self.port` and waits until it answers. False if the port turned out to be
    /// someone else's (the process exited, or another process holds the listening socket);
    /// panics if it is still silent at the deadline.
    async fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log file");
        let mut cmd = Command::new(&self.bin);
        cmd.args((self.args)(self.port))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls between fork and exec. If the test process dies
        // without unwinding (a nextest timeout kills it), the kernel kills the server too rather
        // than leaving it behind. (The signal follows the spawning thread: call `start` and
        // `restart` from the test's async code, not from `spawn_blocking`.)
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::getppid() as u32 != parent
                {
                    return Err(std::io::Error::other("parent gone"));
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} ({}): {e}", self.name, self.bin));
        let pid = child.id().expect("spawned child has a pid");
        self.child = Some(child);

        let client = http_client();
        let url = format!("http://127.0.0.1:{}{}", self.port, self.probe);
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.as_mut().expect("child").try_wait() {
                self.child = None;
                eprintln!("{} exited with {status}", self.name);
                return false;
            }
            if let Ok(resp) = client.get(&url).send().await
                && (self.ready)(resp.status())
            {
                if listens_on(pid, self.port) {
                    return true;
                }
                eprintln!(
                    "{}: another process answers on port {}",
                    self.name, self.port
                );
                self.kill().await;
                return false;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer on {url} within {READY_DEADLINE:?}; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .unwrap_or_else(|_| panic!("{} did not die within 30 s of SIGKILL", self.name))
                .expect("wait for the killed server");
        }
    }

    async fn restart(&mut self) {
        self.kill().await;
        if !self.spawn_and_wait().await {
            panic!(
                "{} did not restart on port {}; its log:\n{}",
                self.name,
                self.port,
                self.log_tail()
            );
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether process `pid` holds the socket listening on `port` (from /proc): the port is picked
/// free and then released, so another test's server may have taken it in between.
fn listens_on(pid: u32, port: u16) -> bool {
    let mut inodes = vec![];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st ... inode (10th field); st 0A is LISTEN.
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && f.get(3) == Some(&"0A")
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|link| inodes.iter().any(|i| link.as_os_str() == i.as_str()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port on 127.0.0.1")
        .port()
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("http client")
}

/// moto's S3 (no signature checks, everything in memory). Also stands in for OSS-style
/// services in path style.
pub struct Moto {
    server: ServerProc,
}

impl Moto {
    pub async fn start() -> Moto {
        let server = ServerProc::start(
            "moto",
            "UPKEEP_TEST_MOTO",
            |port| {
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ]
            },
            "/moto-api/",
            |s| s.is_success(),
        )
        .await;
        Moto { server }
    }

    /// `http://127.0.0.1:PORT`, for `services::S3::endpoint` (path style).
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Creates a bucket with an unsigned `PUT /<bucket>` (moto does not check signatures).
    pub async fn create_bucket(&self, name: &str) {
        let resp = http_client()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .await
            .expect("create bucket on moto");
        let status = resp.status();
        assert!(
            status.is_success(),
            "create bucket {name} on moto: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// Forgets every bucket and object (`POST /moto-api/reset`).
    pub async fn reset(&self) {
        let resp = http_client()
            .post(format!("{}/moto-api/reset", self.endpoint()))
            .send()
            .await
            .expect("reset moto");
        assert!(resp.status().is_success(), "reset moto: {}", resp.status());
    }

    /// SIGKILL, and waits until the process is gone: requests then fail to connect.
    pub async fn kill(&mut self) {
        self.server.kill().await;
    }

    /// Kills (if running) and starts again on the same port, with no buckets.
    pub async fn restart(&mut self) {
        self.server.restart().await;
    }
}

/// Azurite's Blob service (in memory). It checks Shared Key signatures.
pub struct Azurite {
    server: ServerProc,
}

impl Azurite {
    pub const ACCOUNT: &'static str = "devstoreaccount1";
    /// Azurite's well-known development key for `devstoreaccount1`.
    pub const KEY: &'static str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    /// The REST API version our own requests send (OpenDAL sends 2022-11-02 too).
    pub const API_VERSION: &'static str = "2022-11-02";

    pub async fn start() -> Azurite {
        let server = ServerProc::start(
            "Azurite",
            "UPKEEP_TEST_AZURITE",
            |port| {
                [
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &port.to_string(),
                    "--inMemoryPersistence",
                    "--disableTelemetry",
                    "--silent",
                ]
                .map(String::from)
                .to_vec()
            },
            // Unsigned: any answer (403) means the service is up.
            "/devstoreaccount1?comp=list",
            |_| true,
        )
        .await;
        Azurite { server }
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`, for `services::Azblob::endpoint`.
    pub fn endpoint(&self) -> String {
        format!("{}/{}", self.server.endpoint(), Self::ACCOUNT)
    }

    /// Creates a container (`PUT ?restype=container`, Shared Key signed); panics unless 201.
    pub async fn create_container(&self, name: &str) {
        let status = self.create_container_with_key(name, Self::KEY).await;
        assert_eq!(status, StatusCode::CREATED, "create container {name}");
    }

    /// Like `create_container`, signed with `key`, returning the status (403 for a wrong key).
    pub async fn create_container_with_key(&self, name: &str, key: &str) -> StatusCode {
        self.signed_request(Method::PUT, &format!("/{name}?restype=container"), key)
            .await
            .status()
    }

    /// Sends a body-less request to `endpoint() + path_and_query` (path starting with `/`,
    /// query already percent-encoded), signed with Shared Key for `ACCOUNT` and `key`.
    pub async fn signed_request(
        &self,
        method: Method,
        path_and_query: &str,
        key: &str,
    ) -> reqwest::Response {
        let url = format!("{}{path_and_query}", self.endpoint());
        let parsed = reqwest::Url::parse(&url).expect("request URL");
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let ms_headers = [
            ("x-ms-date", date.as_str()),
            ("x-ms-version", Self::API_VERSION),
        ];
        let authorization =
            shared_key_authorization(Self::ACCOUNT, key, method.as_str(), &parsed, &ms_headers);
        let mut req = http_client()
            .request(method, parsed)
            .header("authorization", authorization)
            .header("content-length", "0");
        for (name, value) in ms_headers {
            req = req.header(name, value);
        }
        req.send().await.expect("request to Azurite")
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) {
        self.server.kill().await;
    }

    /// Kills (if running) and starts again on the same port, with no containers.
    pub async fn restart(&mut self) {
        self.server.restart().await;
    }
}

/// The `Authorization: SharedKey ACCOUNT:SIG` value of a request without a body or standard
/// headers other than the `x-ms-*` ones given (see "Authorize with Shared Key" in Azure's
/// Storage REST docs). The canonicalized resource is `/ACCOUNT` + the URL's path (which on a
/// path-style endpoint starts with the account again) + each query parameter, lowercased and
/// sorted, as `\nname:value`.
fn shared_key_authorization(
    account: &str,
    key: &str,
    method: &str,
    url: &reqwest::Url,
    ms_headers: &[(&str, &str)],
) -> String {
    let mut headers: Vec<(String, &str)> = ms_headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim()))
        .collect();
    headers.sort();
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.into_owned()))
        .collect();
    params.sort();

    // The VERB line, then 11 lines, all empty here: Content-Encoding, Content-Language,
    // Content-Length (empty for 0), Content-MD5, Content-Type, Date, If-Modified-Since,
    // If-Match, If-None-Match, If-Unmodified-Since, Range.
    let mut to_sign = format!("{method}\n{}", "\n".repeat(11));
    for (name, value) in &headers {
        to_sign.push_str(&format!("{name}:{value}\n"));
    }
    to_sign.push_str(&format!("/{account}{}", url.path()));
    for (name, value) in &params {
        to_sign.push_str(&format!("\n{name}:{value}"));
    }

    let key = BASE64.decode(key).expect("account key is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    format!("SharedKey {account}:{signature}")
}

/// gcp-storage-emulator (in memory, JSON API). Always set a content type on writes; OpenDAL's
/// multipart (XML API) writer is not supported by the emulator.
pub struct GcsEmulator {
    server: ServerProc,
    bucket: String,
}

impl GcsEmulator {
    /// Starts the emulator with `bucket` created (again after each `restart`).
    pub async fn start(bucket: &str) -> GcsEmulator {
        let b = bucket.to_string();
        let server = ServerProc::start(
            "gcp-storage-emulator",
            "UPKEEP_TEST_GCS",
            move |port| {
                [
                    "start",
                    "-H",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--in-memory",
                    "--default-bucket",
                    &b,
                ]
                .map(String::from)
                .to_vec()
            },
            &format!("/storage/v1/b/{bucket}"),
            |s| s.is_success(),
        )
        .await;
        GcsEmulator {
            server,
            bucket: bucket.to_string(),
        }
    }

    /// `http://127.0.0.1:PORT`, for `services::Gcs::endpoint`.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates another bucket (JSON API `POST /storage/v1/b`).
    pub async fn create_bucket(&self, name: &str) {
        let resp = http_client()
            .post(format!("{}/storage/v1/b?project=test", self.endpoint()))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("create bucket on the GCS emulator");
        let status = resp.status();
        assert!(
            status.is_success(),
            "create bucket {name} on the GCS emulator: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) {
        self.server.kill().await;
    }

    /// Kills (if running) and starts again on the same port, with only the start bucket.
    pub async fn restart(&mut self) {
        self.server.restart().await;
    }
}
