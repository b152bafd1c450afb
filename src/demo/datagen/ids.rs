//! Deterministic randomness: every row's id and attributes come from an RNG seeded by
//! (seed, kind of row, index of the row), so any table can be generated on its own, in any
//! order or in parallel, and a child can name its parent without the parent being in memory.

use fastrand::Rng;
use uuid::{Builder, Uuid};

/// The kinds of rows that own an RNG stream. Values are part of the seed, so keep them stable:
/// changing one changes every id a seed produces.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub(super) enum Kind {
    Tenant = 1,
    Account,
    App,
    AppModelConfig,
    Site,
    EndUser,
    Workflow,
    DraftWorkflow,
    Conversation,
    Message,
    Feedback,
    MessageFile,
    Chain,
    Thought,
    Saved,
    Pinned,
    Annotation,
    HitHistory,
    Retrieval,
    ToolFile,
    UploadFile,
    DocumentFile,
    WorkflowRun,
    ChatRun,
    WorkflowNode,
    ChatNode,
    NodeOffload,
    OffloadFile,
    AppLog,
    Pause,
    PauseReason,
    TriggerLog,
    ConversationVariable,
    DraftVariable,
    DraftVariableFile,
    DraftFile,
    Binding,
    Dataset,
    ProcessRule,
    Document,
    Segment,
    AnnotationSetting,
    InstalledApp,
    Join,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The RNG of one row; its first draw is the row's id (see [`id`]).
pub(super) fn rng(seed: u64, kind: Kind, index: u64) -> Rng {
    Rng::with_seed(splitmix(splitmix(seed ^ splitmix(kind as u64)) ^ index))
}

/// A random (version 4) uuid, as Dify's `uuid.uuid4()` writes them.
pub(super) fn uuid4(rng: &mut Rng) -> Uuid {
    Builder::from_random_bytes(rng.u128(..).to_le_bytes()).into_uuid()
}

/// A version 7 uuid for the tables whose server default is Dify's `uuidv7()`.
pub(super) fn uuid7(rng: &mut Rng, unix_secs: i64, millis: u16) -> Uuid {
    let ms = u64::try_from(unix_secs).unwrap_or(0) * 1000 + u64::from(millis % 1000);
    let random: [u8; 10] = rng.u128(..).to_le_bytes()[..10]
        .try_into()
        .unwrap_or([0; 10]);
    Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

/// The id of row `index` of `kind`: the same value its own generator draws first.
pub(super) fn id(seed: u64, kind: Kind, index: u64) -> Uuid {
    uuid4(&mut rng(seed, kind, index))
}

/// Lowercase hex of `n` random bytes (hashes, hex file names).
pub(super) fn hex(rng: &mut Rng, bytes: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let b = rng.u8(..);
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// True with probability `p`.
pub(super) fn chance(rng: &mut Rng, p: f64) -> bool {
    rng.f64() < p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_seed_kind_and_index() {
        assert_eq!(id(7, Kind::Message, 3), id(7, Kind::Message, 3));
        assert_ne!(id(7, Kind::Message, 3), id(7, Kind::Message, 4));
        assert_ne!(id(7, Kind::Message, 3), id(7, Kind::Conversation, 3));
        assert_ne!(id(7, Kind::Message, 3), id(8, Kind::Message, 3));
        assert_eq!(id(7, Kind::Message, 3).get_version_num(), 4);
    }

    #[test]
    fn uuid7_carries_the_row_time() {
        let u = uuid7(&mut Rng::with_seed(1), 1_719_830_400, 5);
        assert_eq!(u.get_version_num(), 7);
        let (secs, _) = u.get_timestamp().expect("v7 has a timestamp").to_unix();
        assert_eq!(secs, 1_719_830_400);
    }
}
