//! Named failure points for tests: `UPKEEP_FAILPOINTS=vacuum.after_table=pause,other=panic@2`
//! (`@N`: only the Nth time the point is reached). Production never sets the variable, and
//! then every point is a no-op.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAction {
    /// Panic inside the job (the worker must survive it).
    Panic,
    /// Abort the whole process, as `kill -9` would.
    Abort,
    /// Fail the job with code `failpoint`.
    Error,
    /// Announce the point in the job's events, then wait until the job is told to stop.
    Pause,
}

#[derive(Debug)]
struct Point {
    action: FailAction,
    nth: Option<u32>,
    hits: AtomicU32,
}

#[derive(Debug, Default)]
pub struct FailPoints(HashMap<String, Point>);

impl FailPoints {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut map = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, action) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected name=action"))?;
            let (action, nth) = match action.split_once('@') {
                Some((a, n)) => {
                    let n: u32 = n.parse().map_err(|_| format!("{name}: bad count {n:?}"))?;
                    (a, Some(n))
                }
                None => (action, None),
            };
            let action = match action {
                "panic" => FailAction::Panic,
                "abort" => FailAction::Abort,
                "error" => FailAction::Error,
                "pause" => FailAction::Pause,
                other => return Err(format!("{name}: unknown action {other:?}")),
            };
            map.insert(
                name.to_string(),
                Point {
                    action,
                    nth,
                    hits: AtomicU32::new(0),
                },
            );
        }
        Ok(FailPoints(map))
    }

    /// Counts a hit of `name` and says what to do this time, if anything.
    pub fn hit(&self, name: &str) -> Option<FailAction> {
        let point = self.0.get(name)?;
        let n = point.hits.fetch_add(1, Ordering::SeqCst) + 1;
        match point.nth {
            Some(nth) if nth != n => None,
            _ => Some(point.action),
        }
    }
}
