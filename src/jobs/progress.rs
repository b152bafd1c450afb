//! Typed progress in the job's own unit, with a rate over a sliding window and an ETA.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a job reports while it runs (`progress` in the job view).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// What the job is doing now, e.g. `vacuum public.messages`.
    pub phase: String,
    pub done: u64,
    pub total: Option<u64>,
    /// The unit of `done`/`total`: `tables`, `rows`, `objects`, `bytes`, `points`.
    pub unit: String,
    pub rate_per_s: Option<f64>,
    pub eta_s: Option<f64>,
    /// Kind-specific detail, e.g. the blocks Postgres reports for the table being vacuumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

const WINDOW: Duration = Duration::from_secs(30);

/// Keeps recent `(time, done)` samples to turn counts into a rate and an ETA.
#[derive(Debug, Default)]
pub struct RateMeter {
    unit: String,
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub fn observe(&mut self, progress: &mut Progress, now: Instant) {
        if progress.unit != self.unit {
            self.unit = progress.unit.clone();
            self.samples.clear();
        }
        if self.samples.back().is_some_and(|(_, d)| *d > progress.done) {
            self.samples.clear();
        }
        self.samples.push_back((now, progress.done));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > WINDOW {
            self.samples.pop_front();
        }
        let (t0, d0) = self.samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        progress.rate_per_s = None;
        progress.eta_s = None;
        if secs >= 0.5 && progress.done > d0 {
            let rate = (progress.done - d0) as f64 / secs;
            progress.rate_per_s = Some((rate * 100.0).round() / 100.0);
            if let Some(total) = progress.total {
                let left = total.saturating_sub(progress.done) as f64;
                progress.eta_s = Some((left / rate).round());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta_from_samples() {
        let mut meter = RateMeter::default();
        let t0 = Instant::now();
        let mut p = Progress {
            unit: "rows".into(),
            total: Some(1000),
            ..Default::default()
        };
        meter.observe(&mut p, t0);
        assert_eq!(p.rate_per_s, None);
        p.done = 200;
        meter.observe(&mut p, t0 + Duration::from_secs(2));
        assert_eq!(p.rate_per_s, Some(100.0));
        assert_eq!(p.eta_s, Some(8.0));
    }
}
