//! Search strategies: produce alternative candidates (plans, queries, answers).

use std::sync::Arc;

use ponder_core::{BoxFuture, Message};
use serde::Deserialize;
use serde_json::Value;

use super::{default_max_concurrency, default_max_reask, fail, finish_search, stamp, templates};
use crate::error::{BuildError, StageError};
use crate::item::{flags, Item, PipelineType, StageType};
use crate::llm::Llm;
use crate::parse::{self, PLAN};
use crate::registry::{Builder, Registry};
use crate::strategy::{Fields, Needs, StageCtx, Strategy};
use crate::template::Template;

pub(crate) fn register(r: &mut Registry) {
    let results = [
        r.register_strategy(
            "single_shot_multi_plan",
            &[],
            StageType::Search,
            &[PipelineType::Planning],
            |c: SingleShotMultiPlanConfig, b: &mut Builder<'_>| {
                b.check(
                    "num_plans",
                    c.num_plans >= 1,
                    "`num_plans` must be at least 1",
                )?;
                check_temps(b, c.min_temperature, c.max_temperature)?;
                let llm = b.llm("planning_llm", &c.planning_llm)?;
                let template = b.template(
                    "planning_template",
                    c.planning_template.as_deref(),
                    templates::PLANNING,
                    &["context", "prompt"],
                )?;
                let temps =
                    super::temperature_ramp(c.num_plans, c.min_temperature, c.max_temperature);
                Ok(Arc::new(MultiPlan {
                    kind: "single_shot_multi_plan",
                    calls: temps.into_iter().map(|t| (llm.clone(), t)).collect(),
                    template,
                    max_reask: c.max_reask,
                    max_concurrency: c.max_concurrency,
                }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "multi_llm_plan",
            &[],
            StageType::Search,
            &[PipelineType::Planning],
            |c: MultiLlmPlanConfig, b: &mut Builder<'_>| {
                b.check(
                    "plans_per_llm",
                    c.plans_per_llm >= 1,
                    "`plans_per_llm` must be at least 1",
                )?;
                check_temps(b, c.min_temperature, c.max_temperature)?;
                let llms = b.llm_list("llms", &c.llms)?;
                let template = b.template(
                    "planning_template",
                    c.planning_template.as_deref(),
                    templates::PLANNING,
                    &["context", "prompt"],
                )?;
                let temps =
                    super::temperature_ramp(c.plans_per_llm, c.min_temperature, c.max_temperature);
                let calls = llms
                    .iter()
                    .flat_map(|l| temps.iter().map(move |t| (l.clone(), *t)))
                    .collect();
                Ok(Arc::new(MultiPlan {
                    kind: "multi_llm_plan",
                    calls,
                    template,
                    max_reask: c.max_reask,
                    max_concurrency: c.max_concurrency,
                }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "multi_query_retrieval_search",
            &[],
            StageType::Search,
            &[PipelineType::ToolUse],
            |c: MultiQueryConfig, b: &mut Builder<'_>| {
                let llms = b.llm_list("llms", &c.llms)?;
                let template = b.template(
                    "query_generation_template",
                    c.query_generation_template.as_deref(),
                    templates::QUERY_GENERATION,
                    &["task", "motivation"],
                )?;
                Ok(Arc::new(MultiQuery {
                    llms,
                    template,
                    max_reask: c.max_reask,
                    max_concurrency: c.max_concurrency,
                }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "multi_llm_generation",
            &[],
            StageType::Search,
            &[
                PipelineType::Custom,
                PipelineType::Planning,
                PipelineType::AgentExecution,
            ],
            |c: MultiLlmGenerationConfig, b: &mut Builder<'_>| {
                let llms = b.llm_list("llms", &c.llms)?;
                let template = b.template(
                    "generation_template",
                    c.generation_template.as_deref(),
                    templates::GENERATION,
                    &["prompt"],
                )?;
                Ok(Arc::new(MultiLlmGeneration {
                    llms,
                    template,
                    use_output_as_plan: c.use_output_as_plan,
                    max_reask: c.max_reask,
                    max_concurrency: c.max_concurrency,
                }) as Arc<dyn Strategy>)
            },
        ),
    ];
    for r in results {
        r.expect("built-in strategy names are unique");
    }
}

fn check_temps(b: &Builder<'_>, min: f64, max: f64) -> Result<(), BuildError> {
    b.check(
        "min_temperature",
        min.is_finite() && max.is_finite() && min >= 0.0,
        "temperatures must be finite and ≥ 0",
    )?;
    b.check(
        "min_temperature",
        min <= max,
        format!("`min_temperature` ({min}) must not exceed `max_temperature` ({max})"),
    )
}

fn d_num_plans() -> usize {
    4
}
fn d_plans_per_llm() -> usize {
    2
}
fn d_max_t() -> f64 {
    1.0
}
fn d_min_t() -> f64 {
    0.5
}

/// `single_shot_multi_plan`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingleShotMultiPlanConfig {
    /// Plans to generate (≥ 1). Default: 4.
    #[serde(default = "d_num_plans")]
    pub num_plans: usize,
    /// Upper end of the temperature ramp. Default: 1.0.
    #[serde(default = "d_max_t")]
    pub max_temperature: f64,
    /// Lower end of the ramp (the only temperature when `num_plans = 1`). Default: 0.5.
    #[serde(default = "d_min_t")]
    pub min_temperature: f64,
    /// The planning LLM. Required.
    pub planning_llm: String,
    /// Variables `context`, `prompt`. Default: built-in.
    #[serde(default)]
    pub planning_template: Option<String>,
    /// Re-asks after an empty plan. Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
    /// Concurrent calls. Default: 8.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

/// `multi_llm_plan`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiLlmPlanConfig {
    /// Planning LLMs (at least one). Required.
    #[serde(default)]
    pub llms: Vec<String>,
    /// Plans per LLM (≥ 1). Default: 2.
    #[serde(default = "d_plans_per_llm")]
    pub plans_per_llm: usize,
    /// Default: 1.0.
    #[serde(default = "d_max_t")]
    pub max_temperature: f64,
    /// Default: 0.5.
    #[serde(default = "d_min_t")]
    pub min_temperature: f64,
    /// Variables `context`, `prompt`. Default: built-in.
    #[serde(default)]
    pub planning_template: Option<String>,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
    /// Default: 8.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

/// `multi_query_retrieval_search`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiQueryConfig {
    /// Rewriting LLMs (at least one). Required.
    #[serde(default)]
    pub llms: Vec<String>,
    /// Variables `task`, `motivation`. Default: built-in.
    #[serde(default)]
    pub query_generation_template: Option<String>,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
    /// Default: 8.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

/// `multi_llm_generation`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiLlmGenerationConfig {
    /// Answering LLMs (at least one). Required.
    #[serde(default)]
    pub llms: Vec<String>,
    /// Variable `prompt`. Default: built-in.
    #[serde(default)]
    pub generation_template: Option<String>,
    /// Also copy each answer into `plan` (needed in planning chains). Default: false.
    #[serde(default)]
    pub use_output_as_plan: bool,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
    /// Default: 8.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

/// Both planners: one call per (LLM, temperature).
struct MultiPlan {
    kind: &'static str,
    calls: Vec<(Llm, f64)>,
    template: Template,
    max_reask: u32,
    max_concurrency: usize,
}

impl MultiPlan {
    async fn plan_one(
        &self,
        ctx: &StageCtx,
        i: usize,
        llm: Llm,
        t: f64,
        prompt: String,
    ) -> Option<Item> {
        let asked = ctx
            .ask(
                &llm,
                vec![Message::user(prompt)],
                Some(t),
                &format!("plan{i}"),
                self.max_reask,
                |r| parse::parse_content(r, PLAN, true),
                "Your reply had no plan. Start with the line `PLAN:` followed by the numbered \
                 steps.",
            )
            .await;
        let mut item = Item::new(ctx.new_id());
        item.metadata.insert("temperature".into(), t.into());
        match asked {
            Ok(a) => {
                stamp(
                    &mut item,
                    StageType::Search,
                    self.kind,
                    &llm,
                    Some(t),
                    a.attempts,
                );
                let content = a.value?;
                if !content.marker_found {
                    item.flag(flags::MARKER_MISSING);
                }
                item.plan = Some(content.text);
            }
            Err(e) => {
                stamp(&mut item, StageType::Search, self.kind, &llm, Some(t), 0);
                fail(&mut item, &llm, &e);
            }
        }
        Some(item)
    }
}

impl Strategy for MultiPlan {
    fn kind(&self) -> &str {
        self.kind
    }
    fn stage(&self) -> StageType {
        StageType::Search
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[PipelineType::Planning]
    }
    fn needs(&self) -> Needs {
        Needs {
            original_prompt: true,
            agent_context: true,
        }
    }
    fn writes(&self, _: PipelineType) -> Fields {
        Fields {
            plan: true,
            ..Fields::default()
        }
    }
    fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }
    fn invoke<'a>(
        &'a self,
        _items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            let prompt = self
                .template
                .render(&[("context", ctx.context()), ("prompt", ctx.prompt())]);
            let calls: Vec<(usize, Llm, f64)> = self
                .calls
                .iter()
                .enumerate()
                .map(|(i, (l, t))| (i, l.clone(), *t))
                .collect();
            let results = ctx
                .map_concurrent(calls, |(i, llm, t)| {
                    self.plan_one(ctx, i, llm, t, prompt.clone())
                })
                .await;
            let dropped = results.iter().filter(|r| r.is_none()).count();
            for _ in 0..dropped {
                ctx.fallback();
            }
            finish_search(self.kind, results.into_iter().flatten().collect())
        })
    }
}

struct MultiQuery {
    llms: Vec<Llm>,
    template: Template,
    max_reask: u32,
    max_concurrency: usize,
}

impl MultiQuery {
    async fn rewrite(
        &self,
        ctx: &StageCtx,
        i: usize,
        j: usize,
        llm: Llm,
        prompt: String,
    ) -> (
        usize,
        Llm,
        Result<crate::llm::Asked<String>, ponder_core::BackendError>,
    ) {
        let r = ctx
            .ask(
                &llm,
                vec![Message::user(prompt)],
                None,
                &format!("query{i}.{j}"),
                self.max_reask,
                |r| Some(parse::clean(r)).filter(|s| !s.is_empty()),
                "Your reply was empty. Reply with one short search query only.",
            )
            .await;
        (i, llm, r)
    }
}

impl Strategy for MultiQuery {
    fn kind(&self) -> &str {
        "multi_query_retrieval_search"
    }
    fn stage(&self) -> StageType {
        StageType::Search
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[PipelineType::ToolUse]
    }
    fn writes(&self, _: PipelineType) -> Fields {
        Fields {
            output: true,
            ..Fields::default()
        }
    }
    fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            if items.is_empty() {
                return Err(StageError::NoCandidates {
                    strategy: self.kind().into(),
                });
            }
            // One job per (item, LLM); originals are kept as they are.
            let mut jobs = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if !item.is_candidate() {
                    continue;
                }
                for (j, llm) in self.llms.iter().enumerate() {
                    jobs.push((i, j, llm.clone()));
                }
            }
            let rewrites = ctx
                .map_concurrent(jobs, |(i, j, llm)| {
                    let item = &items[i];
                    let task = item.input_text();
                    let motivation = item.motivation.clone().unwrap_or_default();
                    let prompt = self
                        .template
                        .render(&[("task", &task), ("motivation", &motivation)]);
                    self.rewrite(ctx, i, j, llm, prompt)
                })
                .await;
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let mut original = item.clone();
                if original.is_candidate() && original.output.is_none() {
                    original.output = original.input.clone();
                }
                let task = item.input_text();
                let mut seen: Vec<String> = vec![task.clone()];
                out.push(original);
                for (_, llm, r) in rewrites.iter().filter(|(k, _, _)| *k == i) {
                    let llm = llm.clone();
                    let mut q = Item {
                        id: ctx.new_id(),
                        input: item.input.clone(),
                        motivation: item.motivation.clone(),
                        name: item.name.clone(),
                        metadata: item.metadata.clone(),
                        ..Item::default()
                    };
                    q.provenance.parent = Some(item.id);
                    match r {
                        Ok(a) => {
                            stamp(
                                &mut q,
                                StageType::Search,
                                self.kind(),
                                &llm,
                                None,
                                a.attempts,
                            );
                            let Some(text) = &a.value else {
                                ctx.fallback();
                                continue;
                            };
                            if seen.iter().any(|s| parse::same_text(s, text)) {
                                continue;
                            }
                            seen.push(text.clone());
                            q.output = Some(Value::String(text.clone()));
                        }
                        Err(e) => {
                            stamp(&mut q, StageType::Search, self.kind(), &llm, None, 0);
                            fail(&mut q, &llm, e);
                        }
                    }
                    out.push(q);
                }
            }
            Ok(out)
        })
    }
}

struct MultiLlmGeneration {
    llms: Vec<Llm>,
    template: Template,
    use_output_as_plan: bool,
    max_reask: u32,
    max_concurrency: usize,
}

impl MultiLlmGeneration {
    async fn generate(
        &self,
        ctx: &StageCtx,
        j: usize,
        llm: Llm,
        rendered: String,
        prompt: String,
    ) -> Option<Item> {
        let r = ctx
            .ask(
                &llm,
                vec![Message::user(rendered)],
                None,
                &format!("gen{j}"),
                self.max_reask,
                |r| Some(parse::clean(r)).filter(|s| !s.is_empty()),
                "Your reply was empty. Answer the query.",
            )
            .await;
        let mut item = Item::new(ctx.new_id());
        item.input = Some(Value::String(prompt));
        item.metadata
            .insert("model".into(), Value::String(llm.name().to_string()));
        match r {
            Ok(a) => {
                stamp(
                    &mut item,
                    StageType::Search,
                    self.kind(),
                    &llm,
                    None,
                    a.attempts,
                );
                let text = a.value?;
                if self.use_output_as_plan {
                    item.plan = Some(text.clone());
                }
                item.output = Some(Value::String(text));
            }
            Err(e) => {
                stamp(&mut item, StageType::Search, self.kind(), &llm, None, 0);
                item.metadata
                    .insert("error".into(), Value::String(e.to_string()));
                fail(&mut item, &llm, &e);
            }
        }
        Some(item)
    }
}

impl Strategy for MultiLlmGeneration {
    fn kind(&self) -> &str {
        "multi_llm_generation"
    }
    fn stage(&self) -> StageType {
        StageType::Search
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[
            PipelineType::Custom,
            PipelineType::Planning,
            PipelineType::AgentExecution,
        ]
    }
    fn writes(&self, _: PipelineType) -> Fields {
        Fields {
            output: true,
            plan: self.use_output_as_plan,
            ..Fields::default()
        }
    }
    fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            let prompt = ctx
                .original_prompt
                .clone()
                .filter(|p| !p.is_empty())
                .or_else(|| {
                    items
                        .first()
                        .map(Item::input_text)
                        .filter(|p| !p.is_empty())
                })
                .ok_or_else(|| StageError::Invalid {
                    strategy: self.kind().into(),
                    reason: "no prompt: neither `original_prompt` nor an item input".into(),
                })?;
            let rendered = self.template.render(&[("prompt", &prompt)]);
            let jobs: Vec<(usize, Llm)> = self.llms.iter().cloned().enumerate().collect();
            let results = ctx
                .map_concurrent(jobs, |(j, llm)| {
                    self.generate(ctx, j, llm, rendered.clone(), prompt.clone())
                })
                .await;
            let dropped = results.iter().filter(|r| r.is_none()).count();
            for _ in 0..dropped {
                ctx.fallback();
            }
            finish_search(self.kind(), results.into_iter().flatten().collect())
        })
    }
}
