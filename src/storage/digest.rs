//! Digests of the bytes a transfer moves: the SHA-256 a ledger records and the MD5 an S3 server
//! returns as its ETag, each computed once per byte and, for anything but small objects, on a
//! thread of the blocking pool. Hashing 50 MB takes about 100 ms of CPU: on a reactor thread
//! that would stall every request the thread serves, and beside the upload it overlaps the
//! time the bytes spend on the wire.

use bytes::Bytes;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub type Sha256Sum = [u8; 32];
pub type Md5Sum = [u8; 16];

/// Objects up to this size go up in one request, so their ETag is the MD5 of the whole object;
/// larger ones go up in parts of `PART` bytes.
pub const SINGLE_PUT_MAX: u64 = 64 << 20;
/// Bytes per multipart part (S3 needs at least 5 MiB, except for the last one).
pub const PART: usize = 8 << 20;
/// Up to this many bytes are hashed where they arrive: handing them to another thread would
/// cost more than hashing them.
const INLINE_MAX: u64 = 1 << 20;
/// Chunks queued for the hashing thread; the reader waits when it is this far ahead.
pub const QUEUED_CHUNKS: usize = 4;

/// Which digests a stream needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The SHA-256 of the whole stream.
    pub sha256: bool,
    /// What the ETag of an upload of `size` bytes is computed from.
    pub etag_of_size: Option<u64>,
}

/// MD5s the way S3 computes an ETag: of the whole object for a single PUT, or of each part for a
/// multipart upload (`md5(md5(part1) || md5(part2) ...)-N`), parts being exactly `PART` bytes.
/// Only the form the upload will have is computed: each byte goes through MD5 once.
pub enum EtagDigest {
    Whole(Md5),
    Parts {
        part: Md5,
        in_part: usize,
        parts: Vec<Md5Sum>,
    },
}

impl EtagDigest {
    /// The digest an upload of `size` bytes will be proven by.
    pub fn for_size(size: u64) -> Self {
        if size <= SINGLE_PUT_MAX {
            EtagDigest::Whole(Md5::new())
        } else {
            EtagDigest::Parts {
                part: Md5::new(),
                in_part: 0,
                parts: Vec::new(),
            }
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        match self {
            EtagDigest::Whole(md5) => md5.update(bytes),
            EtagDigest::Parts {
                part,
                in_part,
                parts,
            } => {
                while !bytes.is_empty() {
                    let take = bytes.len().min(PART - *in_part);
                    part.update(&bytes[..take]);
                    *in_part += take;
                    bytes = &bytes[take..];
                    if *in_part == PART {
                        let done = std::mem::replace(part, Md5::new());
                        parts.push(done.finalize().into());
                        *in_part = 0;
                    }
                }
            }
        }
    }

    /// Whether `etag` (as a server returned it) is this content's.
    pub fn matches(self, etag: &str) -> bool {
        let etag = etag.trim_matches('"').to_ascii_lowercase();
        match self {
            EtagDigest::Whole(md5) => etag == hex(&md5.finalize()),
            EtagDigest::Parts {
                part,
                in_part,
                mut parts,
            } => {
                if in_part > 0 || parts.is_empty() {
                    parts.push(part.finalize().into());
                }
                // A stream that shrank to one part went up in one PUT.
                if let [only] = parts.as_slice()
                    && etag == hex(only)
                {
                    return true;
                }
                let mut of_parts = Md5::new();
                for p in &parts {
                    of_parts.update(p);
                }
                etag == format!("{}-{}", hex(&of_parts.finalize()), parts.len())
            }
        }
    }
}

/// The digests of one stream.
pub struct Digests {
    pub len: u64,
    pub sha256: Option<Sha256Sum>,
    pub etag: Option<EtagDigest>,
}

struct State {
    len: u64,
    sha256: Option<Sha256>,
    etag: Option<EtagDigest>,
}

impl State {
    fn new(wanted: Wanted) -> Self {
        State {
            len: 0,
            sha256: wanted.sha256.then(Sha256::new),
            etag: wanted.etag_of_size.map(EtagDigest::for_size),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if let Some(sha) = &mut self.sha256 {
            sha.update(bytes);
        }
        if let Some(etag) = &mut self.etag {
            etag.update(bytes);
        }
    }

    fn finish(self) -> Digests {
        Digests {
            len: self.len,
            sha256: self.sha256.map(|s| s.finalize().into()),
            etag: self.etag,
        }
    }
}

/// The hashing thread stopped before the stream ended (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("hashing stopped: {0}")]
pub struct HashingFailed(String);

impl HashingFailed {
    pub fn new(why: impl std::fmt::Display) -> Self {
        HashingFailed(why.to_string())
    }
}

/// Hashes a stream of chunks in order: where they arrive when the stream is small, on a thread
/// of the blocking pool otherwise.
pub struct Hasher(Inner);

enum Inner {
    Inline(Box<State>),
    Offloaded {
        chunks: Queue,
        task: JoinHandle<State>,
    },
}

/// Chunks on their way to the hashing thread.
enum Queue {
    /// The caller holds every chunk until the end anyway: the queue need not bound memory, and
    /// the reader never waits for the hasher.
    Unbounded(mpsc::UnboundedSender<Bytes>),
    /// The caller lets chunks go as they are written: the reader waits when the hasher is
    /// `QUEUED_CHUNKS` behind, so memory stays bounded.
    Bounded(mpsc::Sender<Bytes>),
}

impl Hasher {
    /// For about `size` bytes that the caller keeps in memory until it calls `finish`.
    pub fn holding(wanted: Wanted, size: u64) -> Self {
        let state = State::new(wanted);
        if size <= INLINE_MAX {
            return Hasher(Inner::Inline(Box::new(state)));
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let task = offload(state, move || rx.blocking_recv());
        Hasher(Inner::Offloaded {
            chunks: Queue::Unbounded(tx),
            task,
        })
    }

    /// For a stream of about `size` bytes whose chunks the caller lets go as it goes.
    pub fn streaming(wanted: Wanted, size: u64) -> Self {
        let state = State::new(wanted);
        if size <= INLINE_MAX {
            return Hasher(Inner::Inline(Box::new(state)));
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUED_CHUNKS);
        let task = offload(state, move || rx.blocking_recv());
        Hasher(Inner::Offloaded {
            chunks: Queue::Bounded(tx),
            task,
        })
    }

    /// Adds the next chunk (sharing it costs a reference count, not a copy).
    pub async fn update(&mut self, chunk: &Bytes) -> Result<(), HashingFailed> {
        let gone = |_| HashingFailed::new("the hashing thread is gone");
        match &mut self.0 {
            Inner::Inline(state) => {
                state.update(chunk);
                Ok(())
            }
            Inner::Offloaded { chunks, .. } => match chunks {
                Queue::Unbounded(tx) => tx.send(chunk.clone()).map_err(gone),
                Queue::Bounded(tx) => tx.send(chunk.clone()).await.map_err(gone),
            },
        }
    }

    /// The digests of everything added.
    pub async fn finish(self) -> Result<Digests, HashingFailed> {
        match self.0 {
            Inner::Inline(state) => Ok(state.finish()),
            Inner::Offloaded { chunks, task } => {
                drop(chunks);
                task.await.map(State::finish).map_err(HashingFailed::new)
            }
        }
    }
}

/// Hashes what `next` yields on a thread of the blocking pool, until the sender hangs up.
fn offload(
    mut state: State,
    mut next: impl FnMut() -> Option<Bytes> + Send + 'static,
) -> JoinHandle<State> {
    tokio::task::spawn_blocking(move || {
        while let Some(chunk) = next() {
            state.update(&chunk);
        }
        state
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    fn etag_of(data: &[u8], splits: &[usize]) -> EtagDigest {
        let mut d = EtagDigest::for_size(data.len() as u64);
        let mut at = 0;
        for &s in splits.iter().chain([&data.len()]) {
            d.update(&data[at..s]);
            at = s;
        }
        d
    }

    /// S3's ETags for these contents, as moto and AWS compute them.
    #[test]
    fn etags_of_single_and_multipart_uploads() {
        assert!(etag_of(b"hello", &[2]).matches("\"5d41402abc4b2a76b9719d911017c592\""));
        assert!(!etag_of(b"hello", &[]).matches("\"opaque-azure-etag\""));
        let data = vec![7u8; SINGLE_PUT_MAX as usize + 10];
        let mut digests = Vec::new();
        for part in data.chunks(PART) {
            digests.extend_from_slice(&<[u8; 16]>::from(Md5::digest(part)));
        }
        let parts = data.len().div_ceil(PART);
        let expected = format!("{}-{parts}", hex(&<[u8; 16]>::from(Md5::digest(&digests))));
        assert!(etag_of(&data, &[100, PART + 1]).matches(&expected));
        // The multipart form is not mistaken for the whole object's MD5.
        let whole = hex(&<[u8; 16]>::from(Md5::digest(&data)));
        assert!(!etag_of(&data, &[]).matches(&whole));
    }

    #[tokio::test]
    async fn offloaded_and_inline_hashing_agree() {
        let data = Bytes::from(vec![3u8; 3 << 20]);
        let wanted = Wanted {
            sha256: true,
            etag_of_size: Some(data.len() as u64),
        };
        let mut results = Vec::new();
        for streaming in [false, true] {
            for size_hint in [0, data.len() as u64] {
                let mut h = if streaming {
                    Hasher::streaming(wanted, size_hint)
                } else {
                    Hasher::holding(wanted, size_hint)
                };
                for chunk in data.chunks(1 << 19) {
                    h.update(&data.slice_ref(chunk)).await.unwrap();
                }
                let d = h.finish().await.unwrap();
                assert_eq!(d.len, data.len() as u64);
                results.push(d.sha256);
            }
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(results[0], Some(<[u8; 32]>::from(Sha256::digest(&data))));
    }
}
