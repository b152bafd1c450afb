//! Worker slots: a daemon runs at most `UPKEEP_WORKERS` jobs at once, and at most its
//! `UPKEEP_KIND_LIMITS` of one kind. A parent job waiting for its child jobs gives its slot
//! back, so the children can run here too (one worker would otherwise wait on itself).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub struct Slots {
    sem: Arc<Semaphore>,
    limits: BTreeMap<String, usize>,
    /// Jobs holding a slot, by kind.
    held: Mutex<HashMap<String, usize>>,
    /// Slot numbers not in use, for worker names (`daemon/2`).
    free: Mutex<Vec<usize>>,
    /// Fired when a job gives its slot back: a kind at its limit may be claimable again.
    pub released: Notify,
}

/// A free slot; its number goes back when it is dropped.
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
    pub index: usize,
}

impl Slots {
    pub fn new(workers: usize, limits: BTreeMap<String, usize>) -> Arc<Slots> {
        Arc::new(Slots {
            sem: Arc::new(Semaphore::new(workers)),
            limits,
            held: Mutex::new(HashMap::new()),
            free: Mutex::new((0..workers).rev().collect()),
            released: Notify::new(),
        })
    }

    /// Waits for a free slot.
    pub async fn free_slot(self: &Arc<Self>) -> Option<Permit> {
        let permit = self.sem.clone().acquire_owned().await.ok()?;
        let index = self.take_index();
        Some(Permit {
            _permit: permit,
            slots: self.clone(),
            index,
        })
    }

    /// Kinds this daemon runs its limit of: claims pass over them.
    pub fn full_kinds(&self) -> Vec<String> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        self.limits
            .iter()
            .filter(|(kind, limit)| held.get(*kind).copied().unwrap_or(0) >= **limit)
            .map(|(kind, _)| kind.clone())
            .collect()
    }

    /// Gives `permit` to a job of `kind`.
    pub fn hold(self: &Arc<Self>, permit: Permit, kind: &str) -> Slot {
        self.count(kind, true);
        Slot {
            slots: self.clone(),
            kind: kind.to_string(),
            held: Some(permit),
        }
    }

    fn count(&self, kind: &str, up: bool) {
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let n = held.entry(kind.to_string()).or_default();
            *n = if up { *n + 1 } else { n.saturating_sub(1) };
        }
        if !up {
            self.released.notify_waiters();
        }
    }

    fn take_index(&self) -> usize {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.pop().unwrap_or(0)
    }

    fn give_index(&self, index: usize) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.push(index);
        free.sort_unstable_by(|a, b| b.cmp(a));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slots.give_index(self.index);
    }
}

/// A job's hold on a slot.
pub struct Slot {
    slots: Arc<Slots>,
    kind: String,
    held: Option<Permit>,
}

impl Slot {
    /// Gives the slot back while the job waits on others.
    pub fn release(&mut self) {
        if self.held.take().is_some() {
            self.slots.count(&self.kind, false);
        }
    }

    /// Takes a slot again once the wait is over (the kind's limit does not apply: the job
    /// was already running).
    pub async fn reacquire(&mut self) {
        if self.held.is_none()
            && let Some(permit) = self.slots.free_slot().await
        {
            self.slots.count(&self.kind, true);
            self.held = Some(permit);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_released_slot_serves_another_job_and_limits_count_holders() {
        let slots = Slots::new(1, BTreeMap::from([("storage_migrate".to_string(), 1)]));
        let permit = slots.free_slot().await.expect("a slot");
        assert_eq!(permit.index, 0);
        let mut parent = slots.hold(permit, "storage_migrate");
        assert_eq!(slots.full_kinds(), vec!["storage_migrate".to_string()]);
        assert!(slots.sem.available_permits() == 0);
        parent.release();
        assert!(slots.full_kinds().is_empty());
        let child = slots.hold(slots.free_slot().await.expect("freed"), "storage_migrate");
        assert_eq!(slots.full_kinds(), vec!["storage_migrate".to_string()]);
        drop(child);
        parent.reacquire().await;
        assert_eq!(slots.sem.available_permits(), 0);
        drop(parent);
        assert_eq!(slots.sem.available_permits(), 1);
        assert!(slots.full_kinds().is_empty());
    }
}
