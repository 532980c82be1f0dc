//! The strategy contract: a list of items in, a list out, declaring its stage and the pipelines
//! it supports; the per-invocation [`StageCtx`]; and [`Bound`], a strategy bound to one slot of
//! one function under one pipeline (created at build time, never by mutating the strategy).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use ponder_core::{BackendError, BoxFuture, Message};

use crate::error::StageError;
use crate::item::{Item, PipelineType, StageType};
use crate::llm::{Asked, Llm};
use crate::run::{Cost, Event, RunCtx, StageRecord};

/// Default bound on concurrent calls within one stage.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// Default number of re-asks after an unparsable reply.
pub const DEFAULT_MAX_REASK: u32 = 2;

/// Context values a strategy needs from the function that calls it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub original_prompt: bool,
    pub agent_context: bool,
}

/// Item fields a strategy reads or fills, for build-time chain checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields {
    pub plan: bool,
    pub output: bool,
    pub score: bool,
}

/// A built strategy: immutable and shareable.
pub trait Strategy: Send + Sync {
    /// The canonical `_type`.
    fn kind(&self) -> &str;
    /// The stage it belongs to.
    fn stage(&self) -> StageType;
    /// The pipelines it supports.
    fn pipelines(&self) -> &[PipelineType];
    /// Context it needs (checked when a function binds it).
    fn needs(&self) -> Needs {
        Needs::default()
    }
    /// Fields it reads from incoming items (checked against the earlier slots of the chain).
    fn reads(&self) -> Fields {
        Fields::default()
    }
    /// Fields it fills in `pipeline`.
    fn writes(&self, pipeline: PipelineType) -> Fields {
        let _ = pipeline;
        Fields::default()
    }
    /// Bound on concurrent calls within one invocation. Default: 8.
    fn max_concurrency(&self) -> usize {
        DEFAULT_MAX_CONCURRENCY
    }
    /// Runs the stage.
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>>;
}

/// What one stage invocation sees.
#[derive(Debug)]
pub struct StageCtx {
    /// The pipeline the strategy is bound under.
    pub pipeline: PipelineType,
    /// The user's task, when the function has one.
    pub original_prompt: Option<String>,
    /// A description of the agent system or tools, when the function has one.
    pub agent_context: Option<String>,
    /// The slot (`planner`, `scorer`, …).
    pub slot: String,
    /// The run.
    pub run: RunCtx,
    max_concurrency: usize,
    cost: Mutex<Cost>,
    fallbacks: AtomicU64,
}

impl StageCtx {
    /// A context for one invocation.
    pub fn new(
        run: RunCtx,
        pipeline: PipelineType,
        slot: impl Into<String>,
        original_prompt: Option<String>,
        agent_context: Option<String>,
        max_concurrency: usize,
    ) -> Self {
        StageCtx {
            pipeline,
            original_prompt,
            agent_context,
            slot: slot.into(),
            run,
            max_concurrency: max_concurrency.max(1),
            cost: Mutex::new(Cost::default()),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// `original_prompt` or an empty string.
    pub fn prompt(&self) -> &str {
        self.original_prompt.as_deref().unwrap_or("")
    }

    /// `agent_context` or an empty string.
    pub fn context(&self) -> &str {
        self.agent_context.as_deref().unwrap_or("")
    }

    /// A new item id.
    pub fn new_id(&self) -> u64 {
        self.run.new_id()
    }

    /// A reproducible seed for the call named `label` of this stage.
    pub fn seed(&self, label: &str) -> u64 {
        self.run.seed_for(&format!("{}/{label}", self.slot))
    }

    /// Counts a fallback (an unparsable reply after every re-ask, a dropped empty candidate).
    pub fn fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Fallbacks counted so far.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// This stage's cost so far.
    pub fn cost(&self) -> Cost {
        self.cost.lock().map(|c| *c).unwrap_or_default()
    }

    /// One metered call booked to this stage.
    pub async fn chat(
        &self,
        llm: &Llm,
        messages: Vec<Message>,
        temperature: Option<f64>,
        label: &str,
    ) -> Result<String, BackendError> {
        llm.chat(
            &self.run,
            Some(&self.cost),
            messages,
            temperature,
            self.seed(label),
        )
        .await
    }

    /// A call with bounded re-asks, booked to this stage.
    #[allow(clippy::too_many_arguments)]
    pub async fn ask<T>(
        &self,
        llm: &Llm,
        messages: Vec<Message>,
        temperature: Option<f64>,
        label: &str,
        max_reask: u32,
        parse: impl Fn(&str) -> Option<T>,
        correction: &str,
    ) -> Result<Asked<T>, BackendError> {
        llm.ask(
            &self.run,
            Some(&self.cost),
            messages,
            temperature,
            self.seed(label),
            max_reask,
            parse,
            correction,
        )
        .await
    }

    /// Runs `f` over `inputs` with at most `max_concurrency` in flight; results in input order.
    pub async fn map_concurrent<T, R, F, Fut>(&self, inputs: Vec<T>, f: F) -> Vec<R>
    where
        F: Fn(T) -> Fut,
        Fut: std::future::Future<Output = R>,
    {
        futures_util::stream::iter(inputs.into_iter().map(f))
            .buffered(self.max_concurrency)
            .collect()
            .await
    }
}

/// A strategy bound to one slot under one pipeline, after validation.
#[derive(Clone)]
pub struct Bound {
    /// The shared, immutable strategy.
    pub strategy: Arc<dyn Strategy>,
    /// Its key in the `strategies` section.
    pub name: String,
    pub pipeline: PipelineType,
    pub stage: StageType,
    /// The slot it fills (`planner`, `scorer`, …).
    pub slot: String,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("name", &self.name)
            .field("kind", &self.strategy.kind())
            .field("pipeline", &self.pipeline)
            .field("stage", &self.stage)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Bound {
    /// Runs the stage and records it in the run's trace and events.
    pub async fn invoke(
        &self,
        items: Vec<Item>,
        run: &RunCtx,
        original_prompt: Option<&str>,
        agent_context: Option<&str>,
    ) -> Result<Vec<Item>, StageError> {
        let ctx = StageCtx::new(
            run.clone(),
            self.pipeline,
            self.slot.clone(),
            original_prompt.map(str::to_string),
            agent_context.map(str::to_string),
            self.strategy.max_concurrency(),
        );
        run.emit(&Event::StageStart {
            function: run.function().to_string(),
            slot: self.slot.clone(),
            strategy: self.name.clone(),
            pipeline: self.pipeline,
            n_in: items.len(),
        });
        let started = Instant::now();
        let items_in = items.clone();
        let result = self.strategy.invoke(items, &ctx).await;
        let wall_ms = started.elapsed().as_millis() as u64;
        let cost = ctx.cost();
        let (items_out, error) = match &result {
            Ok(out) => (out.clone(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        run.emit(&Event::StageEnd {
            function: run.function().to_string(),
            slot: self.slot.clone(),
            strategy: self.name.clone(),
            n_out: items_out.len(),
            llm_calls: cost.llm_calls,
            tokens: cost.prompt_tokens + cost.completion_tokens,
            wall_ms,
            fallbacks: ctx.fallbacks(),
        });
        run.push_record(StageRecord {
            function: run.function().to_string(),
            slot: self.slot.clone(),
            strategy: self.name.clone(),
            strategy_type: self.strategy.kind().to_string(),
            stage: self.stage,
            pipeline: self.pipeline,
            items_in,
            items_out,
            cost,
            wall_ms,
            fallbacks: ctx.fallbacks(),
            error,
        });
        result
    }
}

/// Pipelines as a readable list.
pub fn pipeline_list(p: &[PipelineType]) -> String {
    p.iter()
        .map(|p| p.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ")
}
