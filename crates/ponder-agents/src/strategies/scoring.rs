//! Scoring strategies: attach a score read from a `FINAL SCORE:` marker. An unparsable reply
//! after every re-ask leaves `score = None` with status `parse_failed` — never 0.0.

use std::sync::Arc;

use ponder_core::{BoxFuture, Message};
use serde::Deserialize;
use serde_json::Value;

use super::{correction, default_max_concurrency, default_max_reask, fail, templates};
use crate::error::{BuildError, StageError};
use crate::item::{Item, ItemStatus, PipelineType, StageType};
use crate::llm::Llm;
use crate::parse::{self, FINAL_SCORE};
use crate::registry::{Builder, Registry};
use crate::strategy::{Fields, StageCtx, Strategy};
use crate::template::Template;

/// Which item fields a scorer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Plan,
    Agent,
    Motivation,
}

/// Name, alias, pipeline, flavour, default template, template variables.
type ScorerSpec = (
    &'static str,
    &'static str,
    PipelineType,
    Flavour,
    &'static str,
    &'static [&'static str],
);

pub(crate) fn register(r: &mut Registry) {
    let specs: [ScorerSpec; 3] = [
        (
            "llm_based_plan_scoring",
            "llm_based_plan_scorer",
            PipelineType::Planning,
            Flavour::Plan,
            templates::PLAN_SCORING,
            &["original_prompt", "context", "plan"],
        ),
        (
            "llm_based_agent_scoring",
            "llm_based_agent_scorer",
            PipelineType::AgentExecution,
            Flavour::Agent,
            templates::AGENT_SCORING,
            &["objective", "input", "output"],
        ),
        (
            "motivation_aware_scoring",
            "motivation_aware_scorer",
            PipelineType::ToolUse,
            Flavour::Motivation,
            templates::MOTIVATION_SCORING,
            &["task", "motivation", "output"],
        ),
    ];
    for (name, alias, pipeline, flavour, default, vars) in specs {
        r.register_strategy(
            name,
            &[alias],
            StageType::Scoring,
            &[pipeline],
            move |c: ScorerConfig, b: &mut Builder<'_>| {
                build(name, pipeline, flavour, default, vars, c, b)
            },
        )
        .expect("built-in strategy names are unique");
    }
}

fn build(
    kind: &'static str,
    pipeline: PipelineType,
    flavour: Flavour,
    default: &str,
    vars: &[&str],
    c: ScorerConfig,
    b: &mut Builder<'_>,
) -> Result<Arc<dyn Strategy>, BuildError> {
    b.check(
        "score_min",
        c.score_min.is_finite() && c.score_max.is_finite() && c.score_min < c.score_max,
        format!(
            "`score_min` ({}) must be below `score_max` ({})",
            c.score_min, c.score_max
        ),
    )?;
    Ok(Arc::new(Scorer {
        kind,
        pipeline: [pipeline],
        flavour,
        llm: b.llm("scoring_llm", &c.scoring_llm)?,
        template: b.template(
            "scoring_template",
            c.scoring_template.as_deref(),
            default,
            vars,
        )?,
        min: c.score_min,
        max: c.score_max,
        max_reask: c.max_reask,
        max_concurrency: c.max_concurrency,
    }))
}

fn d_min() -> f64 {
    1.0
}
fn d_max() -> f64 {
    10.0
}

/// `llm_based_plan_scoring`, `llm_based_agent_scoring`, `motivation_aware_scoring`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorerConfig {
    /// The scoring LLM. Required.
    pub scoring_llm: String,
    /// The prompt; its variables depend on the scorer (see the docs). Default: built-in.
    #[serde(default)]
    pub scoring_template: Option<String>,
    /// Lowest valid score. Default: 1.
    #[serde(default = "d_min")]
    pub score_min: f64,
    /// Highest valid score. Default: 10.
    #[serde(default = "d_max")]
    pub score_max: f64,
    /// Re-asks after an unparsable reply. Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
    /// Default: 8.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

struct Scorer {
    kind: &'static str,
    pipeline: [PipelineType; 1],
    flavour: Flavour,
    llm: Llm,
    template: Template,
    min: f64,
    max: f64,
    max_reask: u32,
    max_concurrency: usize,
}

impl Scorer {
    fn prompt(&self, item: &Item, ctx: &StageCtx) -> String {
        match self.flavour {
            Flavour::Plan => {
                let plan = parse::clean(item.plan.as_deref().unwrap_or(""));
                self.template.render(&[
                    ("original_prompt", ctx.prompt()),
                    ("context", ctx.context()),
                    ("plan", &plan),
                ])
            }
            Flavour::Agent => {
                let input = ctx
                    .original_prompt
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| item.input_text());
                self.template.render(&[
                    ("objective", ctx.context()),
                    ("input", &input),
                    ("output", &item.output_text()),
                ])
            }
            Flavour::Motivation => self.template.render(&[
                ("task", &item.input_text()),
                ("motivation", item.motivation.as_deref().unwrap_or("")),
                ("output", &item.output_text()),
            ]),
        }
    }

    async fn score(&self, mut item: Item, idx: usize, ctx: &StageCtx) -> Item {
        if !item.is_candidate() {
            return item;
        }
        let prompt = self.prompt(&item, ctx);
        let (min, max) = (self.min, self.max);
        let correction = correction(FINAL_SCORE, &format!("<a number from {min} to {max}>"));
        let r = ctx
            .ask(
                &self.llm,
                vec![Message::user(prompt)],
                None,
                &format!("score{idx}"),
                self.max_reask,
                |r| parse::parse_score(r, FINAL_SCORE, min, max),
                &correction,
            )
            .await;
        match r {
            Ok(a) => {
                item.metadata
                    .insert("score_attempts".into(), Value::from(a.attempts));
                match a.value {
                    Some(s) => {
                        item.score = Some(s);
                        if matches!(item.status, ItemStatus::ParseFailed { .. }) {
                            item.status = ItemStatus::Ok;
                        }
                    }
                    None => {
                        ctx.fallback();
                        item.score = None;
                        item.status = ItemStatus::ParseFailed {
                            stage: StageType::Scoring,
                            raw_reply: a.raw,
                        };
                    }
                }
            }
            Err(e) => fail(&mut item, &self.llm, &e),
        }
        item
    }
}

impl Strategy for Scorer {
    fn kind(&self) -> &str {
        self.kind
    }
    fn stage(&self) -> StageType {
        StageType::Scoring
    }
    fn pipelines(&self) -> &[PipelineType] {
        &self.pipeline
    }
    fn reads(&self) -> Fields {
        match self.flavour {
            Flavour::Plan => Fields {
                plan: true,
                ..Fields::default()
            },
            _ => Fields {
                output: true,
                ..Fields::default()
            },
        }
    }
    fn writes(&self, _: PipelineType) -> Fields {
        Fields {
            score: true,
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
            let jobs: Vec<(usize, Item)> = items.into_iter().enumerate().collect();
            Ok(ctx
                .map_concurrent(jobs, |(i, item)| self.score(item, i, ctx))
                .await)
        })
    }
}
