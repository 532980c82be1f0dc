//! The state of one workflow run: the seed, item identifiers, cost per stage and in total, the
//! trace of every stage's items in and out, and progress events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ponder_core::{RunCost, SeededRng};
use serde::Serialize;

use crate::item::{Item, PipelineType, StageType};

/// LLM cost, as counted by `ponder_core::Metered` around every call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// LLM calls (re-asks included).
    pub llm_calls: u64,
    /// Upstream requests (retries excluded).
    pub requests: u64,
    /// Upstream attempts that were retried.
    pub retries: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Cost {
    /// Adds one call's metered cost.
    pub fn add_call(&mut self, c: &RunCost) {
        self.llm_calls += 1;
        self.requests += c.requests;
        self.retries += c.retries;
        self.prompt_tokens += c.prompt_tokens;
        self.completion_tokens += c.completion_tokens;
    }

    /// Adds another total.
    pub fn add(&mut self, c: &Cost) {
        self.llm_calls += c.llm_calls;
        self.requests += c.requests;
        self.retries += c.retries;
        self.prompt_tokens += c.prompt_tokens;
        self.completion_tokens += c.completion_tokens;
    }
}

/// One stage invocation: what went in, what came out, what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct StageRecord {
    /// The function (its key in `functions`, or `workflow`) that ran the stage.
    pub function: String,
    /// The slot in that function (`planner`, `scorer`, `selector`, …).
    pub slot: String,
    /// The strategy's key in the `strategies` section.
    pub strategy: String,
    /// The strategy's canonical `_type`.
    pub strategy_type: String,
    pub stage: StageType,
    pub pipeline: PipelineType,
    pub items_in: Vec<Item>,
    pub items_out: Vec<Item>,
    pub cost: Cost,
    pub wall_ms: u64,
    /// Fallbacks taken (unparsable replies after every re-ask, dropped empty candidates).
    pub fallbacks: u64,
    /// The stage error, when the stage failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A progress event, sent while a run goes on (for streaming clients and logs).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    StageStart {
        function: String,
        slot: String,
        strategy: String,
        pipeline: PipelineType,
        n_in: usize,
    },
    StageEnd {
        function: String,
        slot: String,
        strategy: String,
        n_out: usize,
        llm_calls: u64,
        tokens: u64,
        wall_ms: u64,
        fallbacks: u64,
    },
}

type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

struct Shared {
    next_id: AtomicU64,
    trace: Mutex<Vec<StageRecord>>,
    total: Mutex<Cost>,
    events: Option<EventSink>,
    verbose: bool,
}

/// The context of a (part of a) run. Cheap to clone; children share the trace and the totals
/// but may have their own seed label and temperature.
#[derive(Clone)]
pub struct RunCtx {
    shared: Arc<Shared>,
    seed: u64,
    label: String,
    function: String,
    temperature: Option<f64>,
}

impl std::fmt::Debug for RunCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCtx")
            .field("seed", &self.seed)
            .field("label", &self.label)
            .field("function", &self.function)
            .finish()
    }
}

impl RunCtx {
    /// A fresh run with `seed`.
    pub fn new(seed: u64) -> Self {
        RunCtx {
            shared: Arc::new(Shared {
                next_id: AtomicU64::new(1),
                trace: Mutex::new(Vec::new()),
                total: Mutex::new(Cost::default()),
                events: None,
                verbose: false,
            }),
            seed,
            label: String::new(),
            function: "workflow".into(),
            temperature: None,
        }
    }

    /// A fresh run that sends progress events to `sink`; `verbose` keeps prompts in logs.
    pub fn with_events(
        seed: u64,
        sink: impl Fn(&Event) + Send + Sync + 'static,
        verbose: bool,
    ) -> Self {
        let mut ctx = RunCtx::new(seed);
        ctx.shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            trace: Mutex::new(Vec::new()),
            total: Mutex::new(Cost::default()),
            events: Some(Arc::new(sink)),
            verbose,
        });
        ctx
    }

    /// The run's base seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A child context for a sub-call: seeds derive from `label` below this context's label.
    pub fn child(&self, label: &str) -> RunCtx {
        let mut c = self.clone();
        c.label = format!("{}/{label}", self.label);
        c
    }

    /// A child context for calls made by function `name`.
    pub fn in_function(&self, name: &str) -> RunCtx {
        let mut c = self.child(name);
        c.function = name.to_string();
        c
    }

    /// A child context whose LLM-chat calls use `temperature` (diversity ramps).
    pub fn with_temperature(&self, temperature: Option<f64>) -> RunCtx {
        let mut c = self.clone();
        c.temperature = temperature;
        c
    }

    /// The temperature override for LLM-chat functions, if any.
    pub fn temperature(&self) -> Option<f64> {
        self.temperature
    }

    /// The function this context runs in (for traces).
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Whether prompts should be logged.
    pub fn verbose(&self) -> bool {
        self.shared.verbose
    }

    /// A new item identifier, unique in the run.
    pub fn new_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A seed for the call named `label` in this context: reproducible for a given run seed.
    pub fn seed_for(&self, label: &str) -> u64 {
        SeededRng::derive(self.seed, &format!("{}/{label}", self.label)).next_u64()
    }

    /// Books one call into the run total.
    pub fn record_call(&self, cost: &RunCost) {
        if let Ok(mut t) = self.shared.total.lock() {
            t.add_call(cost);
        }
    }

    /// The run's total cost so far.
    pub fn total_cost(&self) -> Cost {
        self.shared.total.lock().map(|t| *t).unwrap_or_default()
    }

    /// Appends a stage record to the trace.
    pub fn push_record(&self, record: StageRecord) {
        if let Ok(mut t) = self.shared.trace.lock() {
            t.push(record);
        }
    }

    /// The trace so far.
    pub fn trace(&self) -> Vec<StageRecord> {
        self.shared
            .trace
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Sends a progress event, if anyone listens.
    pub fn emit(&self, event: &Event) {
        if let Some(sink) = &self.shared.events {
            sink(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_reproducible_and_depend_on_labels() {
        let a = RunCtx::new(7);
        let b = RunCtx::new(7);
        assert_eq!(a.seed_for("x"), b.seed_for("x"));
        assert_ne!(a.seed_for("x"), a.seed_for("y"));
        assert_ne!(a.child("e1").seed_for("x"), a.child("e2").seed_for("x"));
        assert_ne!(RunCtx::new(8).seed_for("x"), a.seed_for("x"));
    }

    #[test]
    fn ids_are_unique_across_children() {
        let a = RunCtx::new(0);
        let c = a.child("c");
        let ids = [a.new_id(), c.new_id(), a.new_id()];
        assert_eq!(ids, [1, 2, 3]);
    }
}
