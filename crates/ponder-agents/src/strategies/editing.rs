//! Editing strategies: refine or transform candidates. A failed edit keeps the item unchanged,
//! flagged `edit_failed`; items keep their `id`.

use std::sync::Arc;

use ponder_core::{BoxFuture, Message};
use serde::Deserialize;
use serde_json::Value;

use super::{default_max_concurrency, default_max_reask, fail, stamp, templates};
use crate::error::StageError;
use crate::item::{flags, Item, PipelineType, StageType};
use crate::llm::Llm;
use crate::parse::{self, EDITED_PLAN, FEEDBACK};
use crate::registry::{Builder, Registry};
use crate::strategy::{Fields, Needs, StageCtx, Strategy};
use crate::template::Template;

pub(crate) fn register(r: &mut Registry) {
    let results = [
        r.register_strategy(
            "llm_as_a_judge_editor",
            &[],
            StageType::Editing,
            &[PipelineType::Planning],
            |c: JudgeEditorConfig, b: &mut Builder<'_>| {
                b.check(
                    "num_feedback",
                    c.num_feedback >= 1,
                    "`num_feedback` must be at least 1",
                )?;
                Ok(Arc::new(JudgeEditor {
                    num_feedback: c.num_feedback,
                    editing_llm: b.llm("editing_llm", &c.editing_llm)?,
                    feedback_llm: b.llm("feedback_llm", &c.feedback_llm)?,
                    feedback_template: b.template(
                        "feedback_template",
                        c.feedback_template.as_deref(),
                        templates::FEEDBACK,
                        &["context", "original_prompt", "plan", "num_feedback"],
                    )?,
                    editor_template: b.template(
                        "editor_template",
                        c.editor_template.as_deref(),
                        templates::EDITOR,
                        &["context", "original_prompt", "plan", "feedback"],
                    )?,
                    max_reask: c.max_reask,
                    max_concurrency: c.max_concurrency,
                }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "iterative_plan_refinement",
            &[],
            StageType::Editing,
            &[PipelineType::Planning],
            |c: IterativeRefinementConfig, b: &mut Builder<'_>| {
                b.check(
                    "num_iterations",
                    c.num_iterations >= 1,
                    "`num_iterations` must be at least 1",
                )?;
                Ok(Arc::new(IterativeRefinement {
                    editor_llm: b.llm("editor_llm", &c.editor_llm)?,
                    num_iterations: c.num_iterations,
                    template: b.template(
                        "refinement_template",
                        c.refinement_template.as_deref(),
                        templates::REFINEMENT,
                        &["current_plan", "context", "original_prompt"],
                    )?,
                    stop_when_unchanged: c.stop_when_unchanged,
                    max_reask: c.max_reask,
                    max_concurrency: c.max_concurrency,
                }) as Arc<dyn Strategy>)
            },
        ),
        r.register_strategy(
            "motivation_aware_editing",
            &["motivation_aware_summarization"],
            StageType::Editing,
            &[PipelineType::ToolUse],
            |c: MotivationEditingConfig, b: &mut Builder<'_>| {
                Ok(Arc::new(MotivationEditing {
                    editor_llm: b.llm("editor_llm", &c.editor_llm)?,
                    template: b.template(
                        "editor_template",
                        c.editor_template.as_deref(),
                        templates::SUMMARY,
                        &["task", "motivation", "output"],
                    )?,
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

fn d_num_feedback() -> usize {
    10
}
fn d_num_iterations() -> usize {
    3
}
fn d_true() -> bool {
    true
}

/// `llm_as_a_judge_editor`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeEditorConfig {
    /// Feedback points requested (≥ 1). Default: 10.
    #[serde(default = "d_num_feedback")]
    pub num_feedback: usize,
    /// LLM that rewrites the plan. Required.
    pub editing_llm: String,
    /// LLM that critiques the plan. Required.
    pub feedback_llm: String,
    /// Variables `context`, `original_prompt`, `plan`, `num_feedback`. Default: built-in.
    #[serde(default)]
    pub feedback_template: Option<String>,
    /// Variables `context`, `original_prompt`, `plan`, `feedback`. Default: built-in.
    #[serde(default)]
    pub editor_template: Option<String>,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
    /// Default: 8.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

/// `iterative_plan_refinement`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterativeRefinementConfig {
    /// The refining LLM. Required.
    pub editor_llm: String,
    /// Sequential refinement rounds per plan (≥ 1). Default: 3.
    #[serde(default = "d_num_iterations")]
    pub num_iterations: usize,
    /// Variables `current_plan`, `context`, `original_prompt`. Default: built-in.
    #[serde(default)]
    pub refinement_template: Option<String>,
    /// Stop early when a round returns the same plan (whitespace-normalised). Default: true.
    #[serde(default = "d_true")]
    pub stop_when_unchanged: bool,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
    /// Default: 8.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

/// `motivation_aware_editing` (alias `motivation_aware_summarization`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotivationEditingConfig {
    /// The summarising LLM. Required.
    pub editor_llm: String,
    /// Variables `task`, `motivation`, `output`. Default: built-in.
    #[serde(default)]
    pub editor_template: Option<String>,
    /// Default: 2.
    #[serde(default = "default_max_reask")]
    pub max_reask: u32,
    /// Default: 8.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

const PLAN_FIELDS: Fields = Fields {
    plan: true,
    output: false,
    score: false,
};

struct JudgeEditor {
    num_feedback: usize,
    editing_llm: Llm,
    feedback_llm: Llm,
    feedback_template: Template,
    editor_template: Template,
    max_reask: u32,
    max_concurrency: usize,
}

impl JudgeEditor {
    async fn edit(&self, mut item: Item, idx: usize, ctx: &StageCtx) -> Item {
        let Some(plan) = item.plan.clone().filter(|_| item.is_candidate()) else {
            return item;
        };
        let n = self.num_feedback.to_string();
        let prompt = self.feedback_template.render(&[
            ("context", ctx.context()),
            ("original_prompt", ctx.prompt()),
            ("plan", &plan),
            ("num_feedback", &n),
        ]);
        let feedback = ctx
            .ask(
                &self.feedback_llm,
                vec![Message::user(prompt)],
                None,
                &format!("feedback{idx}"),
                self.max_reask,
                |r| {
                    parse::parse_content(r, FEEDBACK, true)
                        .filter(|c| parse::has_numbered_point(&c.text))
                },
                "Your feedback could not be read. Start with the line `FEEDBACK:` followed by \
                 numbered points (1., 2., …).",
            )
            .await;
        let feedback = match feedback {
            Ok(a) => match a.value {
                Some(c) => c.text,
                None => {
                    ctx.fallback();
                    item.flag(flags::EDIT_FAILED);
                    return item;
                }
            },
            Err(e) => {
                fail(&mut item, &self.feedback_llm, &e);
                return item;
            }
        };
        item.feedback = Some(feedback.clone());
        let prompt = self.editor_template.render(&[
            ("context", ctx.context()),
            ("original_prompt", ctx.prompt()),
            ("plan", &plan),
            ("feedback", &feedback),
        ]);
        let edited = ctx
            .ask(
                &self.editing_llm,
                vec![Message::user(prompt)],
                None,
                &format!("edit{idx}"),
                self.max_reask,
                |r| parse::parse_content(r, EDITED_PLAN, true),
                "Your reply had no plan. Start with the line `EDITED PLAN:` followed by the plan.",
            )
            .await;
        match edited {
            Ok(a) => match a.value {
                Some(c) => {
                    stamp(
                        &mut item,
                        StageType::Editing,
                        "llm_as_a_judge_editor",
                        &self.editing_llm,
                        None,
                        a.attempts,
                    );
                    if !c.marker_found {
                        item.flag(flags::MARKER_MISSING);
                    }
                    item.plan = Some(c.text);
                }
                None => {
                    ctx.fallback();
                    item.flag(flags::EDIT_FAILED);
                }
            },
            Err(e) => fail(&mut item, &self.editing_llm, &e),
        }
        item
    }
}

impl Strategy for JudgeEditor {
    fn kind(&self) -> &str {
        "llm_as_a_judge_editor"
    }
    fn stage(&self) -> StageType {
        StageType::Editing
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[PipelineType::Planning]
    }
    fn reads(&self) -> Fields {
        PLAN_FIELDS
    }
    fn writes(&self, _: PipelineType) -> Fields {
        PLAN_FIELDS
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
                .map_concurrent(jobs, |(i, item)| self.edit(item, i, ctx))
                .await)
        })
    }
}

struct IterativeRefinement {
    editor_llm: Llm,
    num_iterations: usize,
    template: Template,
    stop_when_unchanged: bool,
    max_reask: u32,
    max_concurrency: usize,
}

impl IterativeRefinement {
    async fn refine(&self, mut item: Item, idx: usize, ctx: &StageCtx) -> Item {
        let Some(mut plan) = item.plan.clone().filter(|_| item.is_candidate()) else {
            return item;
        };
        let mut rounds = 0;
        let mut attempts = 0;
        for round in 0..self.num_iterations {
            let prompt = self.template.render(&[
                ("current_plan", &plan),
                ("context", ctx.context()),
                ("original_prompt", ctx.prompt()),
            ]);
            let r = ctx
                .ask(
                    &self.editor_llm,
                    vec![Message::user(prompt)],
                    None,
                    &format!("refine{idx}.{round}"),
                    self.max_reask,
                    |r| parse::parse_content(r, EDITED_PLAN, true),
                    "Your reply had no plan. Start with the line `EDITED PLAN:` followed by the \
                     plan.",
                )
                .await;
            match r {
                Ok(a) => {
                    attempts += a.attempts;
                    let Some(c) = a.value else {
                        ctx.fallback();
                        item.flag(flags::EDIT_FAILED);
                        break;
                    };
                    rounds += 1;
                    let unchanged = parse::same_text(&c.text, &plan);
                    plan = c.text;
                    if unchanged && self.stop_when_unchanged {
                        break;
                    }
                }
                Err(e) => {
                    fail(&mut item, &self.editor_llm, &e);
                    return item;
                }
            }
        }
        if rounds > 0 {
            stamp(
                &mut item,
                StageType::Editing,
                "iterative_plan_refinement",
                &self.editor_llm,
                None,
                attempts,
            );
        }
        item.metadata
            .insert("refinement_rounds".into(), Value::from(rounds));
        item.plan = Some(plan);
        item
    }
}

impl Strategy for IterativeRefinement {
    fn kind(&self) -> &str {
        "iterative_plan_refinement"
    }
    fn stage(&self) -> StageType {
        StageType::Editing
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
    fn reads(&self) -> Fields {
        PLAN_FIELDS
    }
    fn writes(&self, _: PipelineType) -> Fields {
        PLAN_FIELDS
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
                .map_concurrent(jobs, |(i, item)| self.refine(item, i, ctx))
                .await)
        })
    }
}

struct MotivationEditing {
    editor_llm: Llm,
    template: Template,
    max_reask: u32,
    max_concurrency: usize,
}

impl MotivationEditing {
    async fn summarise(&self, mut item: Item, idx: usize, ctx: &StageCtx) -> Item {
        if !item.is_candidate() {
            return item;
        }
        let task = item.input_text();
        let motivation = item.motivation.clone().unwrap_or_default();
        let output = item.output_text();
        let prompt = self.template.render(&[
            ("task", &task),
            ("motivation", &motivation),
            ("output", &output),
        ]);
        let r = ctx
            .ask(
                &self.editor_llm,
                vec![Message::user(prompt)],
                None,
                &format!("summary{idx}"),
                self.max_reask,
                |r| Some(parse::clean(r)).filter(|s| !s.is_empty()),
                "Your reply was empty. Reply with a summary of at most two sentences.",
            )
            .await;
        match r {
            Ok(a) => match a.value {
                Some(summary) => {
                    stamp(
                        &mut item,
                        StageType::Editing,
                        "motivation_aware_editing",
                        &self.editor_llm,
                        None,
                        a.attempts,
                    );
                    if let Some(raw) = item.output.take() {
                        item.metadata.insert("raw_output".into(), raw);
                    }
                    item.output = Some(Value::String(summary));
                }
                None => {
                    ctx.fallback();
                    item.flag(flags::EDIT_FAILED);
                }
            },
            Err(e) => fail(&mut item, &self.editor_llm, &e),
        }
        item
    }
}

impl Strategy for MotivationEditing {
    fn kind(&self) -> &str {
        "motivation_aware_editing"
    }
    fn stage(&self) -> StageType {
        StageType::Editing
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[PipelineType::ToolUse]
    }
    fn reads(&self) -> Fields {
        Fields {
            output: true,
            ..Fields::default()
        }
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
            let jobs: Vec<(usize, Item)> = items.into_iter().enumerate().collect();
            Ok(ctx
                .map_concurrent(jobs, |(i, item)| self.summarise(item, i, ctx))
                .await)
        })
    }
}
