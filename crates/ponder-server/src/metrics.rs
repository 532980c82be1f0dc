//! Server counters, and their Prometheus text exposition at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Every counter the server keeps. Cheap to update from many tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (endpoint, status) → requests answered.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// (strategy, outcome) → runs.
    runs: Mutex<BTreeMap<(String, &'static str), u64>>,
    in_flight: AtomicI64,
    rejected: AtomicU64,
    pub(crate) upstream_requests: AtomicU64,
    pub(crate) upstream_prompt_tokens: AtomicU64,
    pub(crate) upstream_completion_tokens: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts a request as in flight while it lives (a streamed response moves it into its body).
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Records a strategy run's outcome; a run dropped before it finished (the client went away)
/// counts as `cancelled`.
#[derive(Debug)]
pub struct RunRecord {
    metrics: Arc<Metrics>,
    strategy: String,
    outcome: Option<&'static str>,
}

impl RunRecord {
    pub fn finish(mut self, outcome: &'static str) {
        self.outcome = Some(outcome);
    }
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("cancelled");
        *lock(&self.metrics.runs)
            .entry((std::mem::take(&mut self.strategy), outcome))
            .or_default() += 1;
    }
}

impl Metrics {
    pub fn record_request(&self, endpoint: &'static str, status: u16) {
        *lock(&self.requests).entry((endpoint, status)).or_default() += 1;
    }

    pub fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn start_run(self: &Arc<Self>, strategy: &str) -> RunRecord {
        RunRecord {
            metrics: self.clone(),
            strategy: strategy.to_string(),
            outcome: None,
        }
    }

    /// The Prometheus text exposition (format 0.0.4). `running`/`queued` are the admission
    /// gauges of strategy and pass-through requests.
    pub fn render(
        &self,
        strategy_gate: (usize, usize),
        passthrough_gate: (usize, usize),
    ) -> String {
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP ponder_requests_total Requests answered, by endpoint and HTTP status.\n# TYPE ponder_requests_total counter"
        );
        for ((endpoint, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "ponder_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ponder_strategy_runs_total Strategy runs, by strategy and outcome (ok, error, cancelled).\n# TYPE ponder_strategy_runs_total counter"
        );
        for ((strategy, outcome), n) in lock(&self.runs).iter() {
            let _ = writeln!(
                out,
                "ponder_strategy_runs_total{{strategy=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(strategy)
            );
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP ponder_upstream_requests_total Generation and reward calls made upstream.\n# TYPE ponder_upstream_requests_total counter\nponder_upstream_requests_total {}",
            get(&self.upstream_requests)
        );
        let _ = writeln!(
            out,
            "# HELP ponder_upstream_tokens_total Tokens spent upstream, by kind.\n# TYPE ponder_upstream_tokens_total counter\nponder_upstream_tokens_total{{kind=\"prompt\"}} {}\nponder_upstream_tokens_total{{kind=\"completion\"}} {}",
            get(&self.upstream_prompt_tokens),
            get(&self.upstream_completion_tokens)
        );
        let _ = writeln!(
            out,
            "# HELP ponder_in_flight_requests Requests being answered now (streams included).\n# TYPE ponder_in_flight_requests gauge\nponder_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ponder_admitted_requests Requests holding an admission slot now, by kind.\n# TYPE ponder_admitted_requests gauge\nponder_admitted_requests{{kind=\"strategy\"}} {}\nponder_admitted_requests{{kind=\"passthrough\"}} {}",
            strategy_gate.0, passthrough_gate.0
        );
        let _ = writeln!(
            out,
            "# HELP ponder_queued_requests Requests waiting for an admission slot now, by kind.\n# TYPE ponder_queued_requests gauge\nponder_queued_requests{{kind=\"strategy\"}} {}\nponder_queued_requests{{kind=\"passthrough\"}} {}",
            strategy_gate.1, passthrough_gate.1
        );
        let _ = writeln!(
            out,
            "# HELP ponder_rejected_total Requests answered 429 because the server was at capacity.\n# TYPE ponder_rejected_total counter\nponder_rejected_total {}",
            get(&self.rejected)
        );
        out
    }
}

/// Escapes a label value (`\`, `"` and newlines).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lists_every_family() {
        let m = Arc::new(Metrics::default());
        m.record_request("chat", 200);
        m.record_request("chat", 429);
        m.record_rejected();
        m.start_run("self-consistency").finish("ok");
        drop(m.start_run("self-consistency"));
        let text = m.render((1, 0), (0, 0));
        for line in [
            "ponder_requests_total{endpoint=\"chat\",status=\"200\"} 1",
            "ponder_requests_total{endpoint=\"chat\",status=\"429\"} 1",
            "ponder_strategy_runs_total{strategy=\"self-consistency\",outcome=\"ok\"} 1",
            "ponder_strategy_runs_total{strategy=\"self-consistency\",outcome=\"cancelled\"} 1",
            "ponder_rejected_total 1",
            "ponder_admitted_requests{kind=\"strategy\"} 1",
            "ponder_in_flight_requests 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
