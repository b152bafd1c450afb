//! Prometheus text for `/metrics`: job counts by state and kind come from the database (every
//! daemon sees the same numbers); durations and work counters are this daemon's own.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS_S: [f64; 10] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS_S.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    processed: Mutex<BTreeMap<(String, String), u64>>,
    durations: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl Metrics {
    pub fn add_processed(&self, kind: &str, unit: &str, n: u64) {
        if let Ok(mut m) = self.processed.lock() {
            *m.entry((kind.to_string(), unit.to_string())).or_default() += n;
        }
    }

    pub fn observe_duration(&self, kind: &str, state: &str, d: Duration) {
        let Ok(mut m) = self.durations.lock() else {
            return;
        };
        let h = m.entry((kind.to_string(), state.to_string())).or_default();
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS_S.iter().enumerate() {
            if secs <= *le {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Renders everything; `jobs` holds `(state, kind, count)` read from the queue.
    pub fn render(&self, jobs: &[(String, String, i64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP upkeep_jobs Jobs in the queue by state and kind.\n");
        out.push_str("# TYPE upkeep_jobs gauge\n");
        for (state, kind, n) in jobs {
            let _ = writeln!(out, "upkeep_jobs{{state=\"{state}\",kind=\"{kind}\"}} {n}");
        }
        out.push_str(
            "# HELP upkeep_job_duration_seconds Wall time of job attempts run by this daemon.\n",
        );
        out.push_str("# TYPE upkeep_job_duration_seconds histogram\n");
        if let Ok(m) = self.durations.lock() {
            for ((kind, state), h) in m.iter() {
                let labels = format!("kind=\"{kind}\",state=\"{state}\"");
                for (i, le) in BUCKETS_S.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "upkeep_job_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "upkeep_job_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "upkeep_job_duration_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(
                    out,
                    "upkeep_job_duration_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP upkeep_processed_total Work done by this daemon's jobs, in each job's unit (rows, bytes, points, tables).\n");
        out.push_str("# TYPE upkeep_processed_total counter\n");
        if let Ok(m) = self.processed.lock() {
            for ((kind, unit), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "upkeep_processed_total{{kind=\"{kind}\",unit=\"{unit}\"}} {n}"
                );
            }
        }
        out
    }
}
