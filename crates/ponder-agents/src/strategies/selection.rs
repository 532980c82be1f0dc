//! Selection strategies: down-select or merge. Error items never compete. LLM selectors that
//! cannot read a choice after every re-ask fall back to the best-scored (else first) item,
//! flagged `selection_fallback`; the merger falls back likewise, flagged `merge_fallback`.

use std::sync::Arc;

use ponder_core::{BoxFuture, Message};
use serde::Deserialize;
use serde_json::Value;

use super::{correction, default_max_reask, fallback_pick, templates};
use crate::error::StageError;
use crate::item::{flags, Item, PipelineType, StageType};
use crate::llm::Llm;
use crate::parse::{self, MERGED_OUTPUT, SELECTED_ITEM, SELECTED_PLAN};
use crate::registry::{Builder, Registry};
use crate::strategy::{Fields, StageCtx, Strategy};
use crate::template::{render_candidates, Template};

pub(crate) fn register(r: &mut Registry) {
    let results = [
        r.register_strategy(
            "best_of_n_selection",
            &["best_of_n_selector"],
            StageType::Selection,
            &BEST_OF_N_PIPELINES,
            |c: BestOfNConfig, b: &mut Builder<'_>| {
                b.check("k", c.k >= 1, "`k` must be at least 1")?;
                Ok(Arc::new(BestOfN { config: c }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "threshold_selection",
            &["threshold_selector"],
            StageType::Selection,
            &[PipelineType::ToolUse],
            |c: ThresholdConfig, b: &mut Builder<'_>| {
                b.check(
                    "threshold",
                    c.threshold.is_finite(),
                    "`threshold` must be finite",
                )?;
                Ok(Arc::new(Threshold { config: c }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "llm_based_plan_selection",
            &["llm_based_plan_selector"],
            StageType::Selection,
            &[PipelineType::Planning],
            |c: PlanSelectionConfig, b: &mut Builder<'_>| {
                Ok(Arc::new(PlanSelection {
                    llm: b.llm("selection_llm", &c.selection_llm)?,
                    template: b.template(
                        "selection_template",
                        c.selection_template.as_deref(),
                        templates::PLAN_SELECTION,
                        &["original_prompt", "context", "plans"],
                    )?,
                    include_feedback: c.include_feedback,
                    include_scores: c.include_scores,
                    max_reask: c.max_reask,
                }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "llm_based_agent_output_selection",
            &["llm_based_agent_output_selector"],
            StageType::Selection,
            &[PipelineType::AgentExecution],
            |c: AgentOutputSelectionConfig, b: &mut Builder<'_>| {
                Ok(Arc::new(AgentOutputSelection {
                    llm: b.llm("selection_llm", &c.selection_llm)?,
                    template: b.template(
                        "selection_template",
                        c.selection_template.as_deref(),
                        templates::AGENT_OUTPUT_SELECTION,
                        &["objective", "input", "results"],
                    )?,
                    vote_mode: c.vote_mode,
                    max_reask: c.max_reask,
                }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "llm_based_agent_output_merging",
            &["llm_based_output_merging_selector"],
            StageType::Selection,
            &MERGING_PIPELINES,
            |c: MergingConfig, b: &mut Builder<'_>| {
                Ok(Arc::new(Merging {
                    llm: b.llm("selection_llm", &c.selection_llm)?,
                    template: b.template(
                        "selection_template",
                        c.selection_template.as_deref(),
                        templates::MERGING,
                        &["pipeline_type", "objective", "input", "results"],
                    )?,
                    max_reask: c.max_reask,
                }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "llm_judge_selection",
            &[],
            StageType::Selection,
            &JUDGE_PIPELINES,
            |c: JudgeSelectionConfig, b: &mut Builder<'_>| {
                Ok(Arc::new(JudgeSelection {
                    llm: b.llm("judge_llm", &c.judge_llm)?,
                    template: b.template(
                        "selection_template",
                        c.selection_template.as_deref(),
                        templates::JUDGE_SELECTION,
                        &["original_prompt", "results"],
                    )?,
                    max_reask: c.max_reask,
                }) as Arc<dyn Strategy>)
            },
        ),
    ];
    for r in results {
        r.expect("built-in strategy names are unique");
    }
}

const BEST_OF_N_PIPELINES: [PipelineType; 3] = [
    PipelineType::Planning,
    PipelineType::AgentExecution,
    PipelineType::ToolUse,
];
const MERGING_PIPELINES: [PipelineType; 2] = [PipelineType::AgentExecution, PipelineType::Planning];
const JUDGE_PIPELINES: [PipelineType; 3] = [
    PipelineType::Custom,
    PipelineType::Planning,
    PipelineType::AgentExecution,
];

const SCORE_FIELDS: Fields = Fields {
    plan: false,
    output: false,
    score: true,
};

/// What `best_of_n_selection` does with unscored items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnscored {
    /// Ignore them.
    #[default]
    Skip,
    /// Fail the stage (upstream behaviour).
    Error,
    /// Rank them below every scored item.
    Lowest,
}

/// How `best_of_n_selection` breaks ties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    /// The earlier item.
    #[default]
    First,
    /// The shorter output (or plan).
    ShortestOutput,
}

fn d_k() -> usize {
    1
}
fn d_threshold() -> f64 {
    5.0
}
fn d_true() -> bool {
    true
}

/// `best_of_n_selection` (alias `best_of_n_selector`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestOfNConfig {
    /// `skip`, `error` or `lowest`. Default: `skip`.
    #[serde(default)]
    pub on_unscored: OnUnscored,
    /// Items kept (≥ 1). Default: 1.
    #[serde(default = "d_k")]
    pub k: usize,
    /// Select the best `k` per tool name (tool-use pipelines). Default: false.
    #[serde(default)]
    pub per_name: bool,
    /// `first` or `shortest_output`. Default: `first`.
    #[serde(default)]
    pub tie_break: TieBreak,
}

/// `threshold_selection` (alias `threshold_selector`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Keep items with `score ≥ threshold`. Default: 5.0.
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    /// If fewer survive, keep the best `min_keep` (flagged `below_threshold`). Default: 0.
    #[serde(default)]
    pub min_keep: usize,
}

/// `llm_based_plan_selection` (alias `llm_based_plan_selector`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSelectionConfig {
    /// The selecting LLM. Required.
    pub selection_llm: String,
    /// Variables `original_prompt`, `context`, `plans`. Default: built-in.
    #[serde(default)]
    pub selection_template: Option<String>,
    /// Show each plan's feedback. Default: true.
    #[serde(default = "d_true")]
    pub include_feedback: bool,
    /// Show each plan's score. Default: true.
    #[serde(default = "d_true")]
    pub include_scores: bool,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
}

/// How `llm_based_agent_output_selection` decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteMode {
    /// Ask the LLM to pick among all outputs.
    #[default]
    None,
    /// Group identical (normalised) outputs; a strict largest group wins without a call; the
    /// LLM only breaks ties between the largest groups.
    ExactAnswer,
}

/// `llm_based_agent_output_selection` (alias `llm_based_agent_output_selector`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOutputSelectionConfig {
    /// The selecting LLM. Required.
    pub selection_llm: String,
    /// Variables `objective`, `input`, `results`. Default: built-in.
    #[serde(default)]
    pub selection_template: Option<String>,
    /// `none` or `exact_answer`. Default: `none`.
    #[serde(default)]
    pub vote_mode: VoteMode,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
}

/// `llm_based_agent_output_merging` (alias `llm_based_output_merging_selector`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergingConfig {
    /// The merging LLM. Required.
    pub selection_llm: String,
    /// Variables `pipeline_type`, `objective`, `input`, `results`. Default: built-in.
    #[serde(default)]
    pub selection_template: Option<String>,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
}

/// `llm_judge_selection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSelectionConfig {
    /// The judge LLM. Required.
    pub judge_llm: String,
    /// Variables `original_prompt`, `results`. Default: built-in.
    #[serde(default)]
    pub selection_template: Option<String>,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
}

fn candidates(items: Vec<Item>, kind: &str) -> Result<Vec<Item>, StageError> {
    let c: Vec<Item> = items.into_iter().filter(Item::is_candidate).collect();
    if c.is_empty() {
        Err(StageError::NoCandidates {
            strategy: kind.to_string(),
        })
    } else {
        Ok(c)
    }
}

/// The text of an item as selectors show it: the plan in planning pipelines, else the output.
fn shown(item: &Item, pipeline: PipelineType) -> String {
    match (pipeline, &item.plan) {
        (PipelineType::Planning, Some(p)) => p.clone(),
        _ => item.output_text(),
    }
}

struct BestOfN {
    config: BestOfNConfig,
}

impl BestOfN {
    fn select_group(&self, group: Vec<Item>) -> Result<Vec<Item>, StageError> {
        let c = &self.config;
        if c.on_unscored == OnUnscored::Error && group.iter().any(|i| i.score.is_none()) {
            return Err(StageError::Invalid {
                strategy: "best_of_n_selection".into(),
                reason: "an item has no score (is a scoring stage missing?)".into(),
            });
        }
        let mut ranked: Vec<(usize, &Item)> = group
            .iter()
            .enumerate()
            .filter(|(_, i)| i.score.is_some() || c.on_unscored == OnUnscored::Lowest)
            .collect();
        if ranked.is_empty() {
            let mut first = group[0].clone();
            first.flag(flags::SELECTION_FALLBACK);
            return Ok(vec![first]);
        }
        let len = |i: &Item| match &i.plan {
            Some(p) if i.output.is_none() => p.len(),
            _ => i.output_text().len(),
        };
        ranked.sort_by(|(ia, a), (ib, b)| {
            let sa = a.score.unwrap_or(f64::NEG_INFINITY);
            let sb = b.score.unwrap_or(f64::NEG_INFINITY);
            sb.total_cmp(&sa).then_with(|| match c.tie_break {
                TieBreak::First => ia.cmp(ib),
                TieBreak::ShortestOutput => len(a).cmp(&len(b)).then(ia.cmp(ib)),
            })
        });
        Ok(ranked
            .into_iter()
            .take(c.k)
            .map(|(_, i)| i.clone())
            .collect())
    }
}

impl Strategy for BestOfN {
    fn kind(&self) -> &str {
        "best_of_n_selection"
    }
    fn stage(&self) -> StageType {
        StageType::Selection
    }
    fn pipelines(&self) -> &[PipelineType] {
        &BEST_OF_N_PIPELINES
    }
    fn reads(&self) -> Fields {
        SCORE_FIELDS
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            let items = candidates(items, self.kind())?;
            let mut groups: Vec<(Option<String>, Vec<Item>)> = Vec::new();
            for item in items {
                let key = self.config.per_name.then(|| item.name.clone()).flatten();
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, g)) => g.push(item),
                    None => groups.push((key, vec![item])),
                }
            }
            let mut out = Vec::new();
            for (_, g) in groups {
                let picked = self.select_group(g)?;
                if picked.iter().any(|i| i.has_flag(flags::SELECTION_FALLBACK)) {
                    ctx.fallback();
                }
                out.extend(picked);
            }
            Ok(out)
        })
    }
}

struct Threshold {
    config: ThresholdConfig,
}

impl Strategy for Threshold {
    fn kind(&self) -> &str {
        "threshold_selection"
    }
    fn stage(&self) -> StageType {
        StageType::Selection
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[PipelineType::ToolUse]
    }
    fn reads(&self) -> Fields {
        SCORE_FIELDS
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        _ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            let t = self.config.threshold;
            let items: Vec<Item> = items.into_iter().filter(Item::is_candidate).collect();
            let (mut keep, rest): (Vec<Item>, Vec<Item>) = items
                .into_iter()
                .partition(|i| i.score.is_some_and(|s| s >= t));
            if keep.len() < self.config.min_keep {
                let mut rest: Vec<Item> = rest.into_iter().filter(|i| i.score.is_some()).collect();
                rest.sort_by(|a, b| {
                    b.score
                        .unwrap_or(f64::NEG_INFINITY)
                        .total_cmp(&a.score.unwrap_or(f64::NEG_INFINITY))
                });
                for mut i in rest.into_iter().take(self.config.min_keep - keep.len()) {
                    i.flag(flags::BELOW_THRESHOLD);
                    keep.push(i);
                }
            }
            Ok(keep)
        })
    }
}

/// Asks `llm` for an index among `n` candidates; falls back to [`fallback_pick`].
#[allow(clippy::too_many_arguments)]
async fn pick(
    ctx: &StageCtx,
    llm: &Llm,
    prompt: String,
    marker: &str,
    n: usize,
    max_reask: u32,
    candidates: &[Item],
) -> Result<(usize, bool, String), StageError> {
    let a = ctx
        .ask(
            llm,
            vec![Message::user(prompt)],
            None,
            "select",
            max_reask,
            |r| parse::parse_index(r, marker, n),
            &correction(marker, &format!("<a number from 1 to {n}>")),
        )
        .await?;
    match a.value {
        Some(k) => Ok((k - 1, false, a.raw)),
        None => {
            ctx.fallback();
            Ok((fallback_pick(candidates), true, a.raw))
        }
    }
}

fn chosen(mut item: Item, fallback: bool, reasoning: String, key: &str) -> Vec<Item> {
    if fallback {
        item.flag(flags::SELECTION_FALLBACK);
    }
    item.metadata.insert(key.into(), Value::String(reasoning));
    vec![item]
}

struct PlanSelection {
    llm: Llm,
    template: Template,
    include_feedback: bool,
    include_scores: bool,
    max_reask: u32,
}

impl Strategy for PlanSelection {
    fn kind(&self) -> &str {
        "llm_based_plan_selection"
    }
    fn stage(&self) -> StageType {
        StageType::Selection
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[PipelineType::Planning]
    }
    fn reads(&self) -> Fields {
        Fields {
            plan: true,
            ..Fields::default()
        }
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            let items = candidates(items, self.kind())?;
            let blocks: Vec<String> = items
                .iter()
                .map(|i| {
                    let mut b = i.plan.clone().unwrap_or_default();
                    if self.include_feedback {
                        if let Some(f) = &i.feedback {
                            b.push_str(&format!("\n\nFeedback on this plan:\n{f}"));
                        }
                    }
                    if self.include_scores {
                        if let Some(s) = i.score {
                            b.push_str(&format!("\n\nScore of this plan: {s}"));
                        }
                    }
                    b
                })
                .collect();
            let plans = render_candidates(blocks.iter().map(String::as_str));
            let prompt = self.template.render(&[
                ("original_prompt", ctx.prompt()),
                ("context", ctx.context()),
                ("plans", &plans),
            ]);
            let (k, fb, raw) = pick(
                ctx,
                &self.llm,
                prompt,
                SELECTED_PLAN,
                items.len(),
                self.max_reask,
                &items,
            )
            .await?;
            Ok(chosen(items[k].clone(), fb, raw, "selection_reasoning"))
        })
    }
}

struct AgentOutputSelection {
    llm: Llm,
    template: Template,
    vote_mode: VoteMode,
    max_reask: u32,
}

impl Strategy for AgentOutputSelection {
    fn kind(&self) -> &str {
        "llm_based_agent_output_selection"
    }
    fn stage(&self) -> StageType {
        StageType::Selection
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[PipelineType::AgentExecution]
    }
    fn reads(&self) -> Fields {
        Fields {
            output: true,
            ..Fields::default()
        }
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            let mut items = candidates(items, self.kind())?;
            if self.vote_mode == VoteMode::ExactAnswer {
                // Groups of identical normalised outputs, in first-appearance order.
                let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key = item
                        .output_text()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase();
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, g)) => g.push(i),
                        None => groups.push((key, vec![i])),
                    }
                }
                let top = groups.iter().map(|(_, g)| g.len()).max().unwrap_or(0);
                let leaders: Vec<usize> = groups
                    .iter()
                    .filter(|(_, g)| g.len() == top)
                    .map(|(_, g)| g[0])
                    .collect();
                if leaders.len() == 1 {
                    let mut item = items[leaders[0]].clone();
                    item.metadata.insert("vote_count".into(), Value::from(top));
                    return Ok(vec![item]);
                }
                items = leaders.into_iter().map(|i| items[i].clone()).collect();
            }
            let results = render_candidates(
                items
                    .iter()
                    .map(|i| i.output_text())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            );
            let prompt = self.template.render(&[
                ("objective", ctx.context()),
                ("input", ctx.prompt()),
                ("results", &results),
            ]);
            let (k, fb, raw) = pick(
                ctx,
                &self.llm,
                prompt,
                SELECTED_ITEM,
                items.len(),
                self.max_reask,
                &items,
            )
            .await?;
            Ok(chosen(items[k].clone(), fb, raw, "selection_reasoning"))
        })
    }
}

struct Merging {
    llm: Llm,
    template: Template,
    max_reask: u32,
}

impl Strategy for Merging {
    fn kind(&self) -> &str {
        "llm_based_agent_output_merging"
    }
    fn stage(&self) -> StageType {
        StageType::Selection
    }
    fn pipelines(&self) -> &[PipelineType] {
        &MERGING_PIPELINES
    }
    fn writes(&self, pipeline: PipelineType) -> Fields {
        Fields {
            output: true,
            plan: pipeline == PipelineType::Planning,
            score: false,
        }
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            let items = candidates(items, self.kind())?;
            let planning = ctx.pipeline == PipelineType::Planning;
            let what = if planning {
                "execution plans for the objective and input below"
            } else {
                "agent outputs for the objective and input below"
            };
            let texts: Vec<String> = items.iter().map(|i| shown(i, ctx.pipeline)).collect();
            let results = render_candidates(texts.iter().map(String::as_str));
            let input = ctx
                .original_prompt
                .clone()
                .unwrap_or_else(|| items[0].input_text());
            let prompt = self.template.render(&[
                ("pipeline_type", what),
                ("objective", ctx.context()),
                ("input", &input),
                ("results", &results),
            ]);
            let a = ctx
                .ask(
                    &self.llm,
                    vec![Message::user(prompt)],
                    None,
                    "merge",
                    self.max_reask,
                    |r| parse::parse_content(r, MERGED_OUTPUT, false),
                    "Your reply could not be read. Start the merged result with the line \
                     `MERGED OUTPUT:`.",
                )
                .await?;
            let Some(content) = a.value else {
                ctx.fallback();
                let mut item = items[fallback_pick(&items)].clone();
                item.flag(flags::MERGE_FALLBACK);
                return Ok(vec![item]);
            };
            let mut merged = Item::new(ctx.new_id());
            merged.input = items[0].input.clone();
            merged.output = Some(Value::String(content.text.clone()));
            if planning {
                merged.plan = Some(content.text);
            }
            merged.metadata.insert(
                "merged_from".into(),
                Value::from(items.iter().map(|i| i.id).collect::<Vec<_>>()),
            );
            super::stamp(
                &mut merged,
                StageType::Selection,
                self.kind(),
                &self.llm,
                None,
                a.attempts,
            );
            Ok(vec![merged])
        })
    }
}

struct JudgeSelection {
    llm: Llm,
    template: Template,
    max_reask: u32,
}

impl Strategy for JudgeSelection {
    fn kind(&self) -> &str {
        "llm_judge_selection"
    }
    fn stage(&self) -> StageType {
        StageType::Selection
    }
    fn pipelines(&self) -> &[PipelineType] {
        &JUDGE_PIPELINES
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move {
            let items = candidates(items, self.kind())?;
            let query = ctx
                .original_prompt
                .clone()
                .filter(|p| !p.is_empty())
                .or_else(|| Some(items[0].input_text()).filter(|p| !p.is_empty()))
                .unwrap_or_else(|| "(the query is unknown)".into());
            let texts: Vec<String> = items.iter().map(|i| shown(i, ctx.pipeline)).collect();
            let results = render_candidates(texts.iter().map(String::as_str));
            let prompt = self
                .template
                .render(&[("original_prompt", &query), ("results", &results)]);
            let (k, fb, raw) = pick(
                ctx,
                &self.llm,
                prompt,
                SELECTED_ITEM,
                items.len(),
                self.max_reask,
                &items,
            )
            .await?;
            Ok(chosen(items[k].clone(), fb, raw, "judge_reasoning"))
        })
    }
}
