//! Workflow files: build-time validation errors for each kind of mistake (with YAML path and
//! line), custom strategies from Rust, and the pre-built functions end to end against scripted
//! LLMs.

mod common;

use std::sync::Arc;

use common::*;
use futures_util::StreamExt;
use ponder_agents::testing::ScriptedBackend;
use ponder_agents::{
    BuildErrorKind, Builder, ClosureFunction, FunctionError, Item, LlmConfig, Loader, PipelineType,
    Registry, RunCtx, StageCtx, StageError, StageType, Strategy,
};
use ponder_core::{Backend, BackendError, BoxFuture};
use serde_json::{json, Value};

fn any_llm() -> Backends {
    backends(&[(
        "m",
        ScriptedBackend::sequence("m", vec!["PLAN: x\nFINAL SCORE: 5"]),
    )])
}

const PSE: &str = "llms:
  m: { _type: openai, model: m }
functions:
  agent: { _type: llm_chat, llm: m, description: An agent. }
strategies:
  plans: { _type: single_shot_multi_plan, planning_llm: m, num_plans: 2 }
  rate: { _type: llm_based_plan_scoring, scoring_llm: m }
  pick: { _type: best_of_n_selection }
workflow:
  _type: plan_select_execute_function
  augmented_fn: agent
  planner: plans
  scorer: rate
  selector: pick
";

fn build_err(yaml: &str) -> ponder_agents::BuildError {
    load(yaml, &any_llm()).expect_err("must not build")
}

#[test]
fn a_valid_workflow_builds() {
    let w = load(PSE, &any_llm()).expect("builds");
    assert_eq!(w.strategy_names(), vec!["pick", "plans", "rate"]);
}

#[test]
fn selection_strategy_in_a_scoring_slot_names_strategy_stage_and_path() {
    let e = build_err(&PSE.replace("  scorer: rate", "  scorer: pick"));
    assert_eq!(e.path, "workflow.scorer");
    assert_eq!(e.line, Some(13));
    assert!(matches!(
        e.kind,
        BuildErrorKind::WrongStage { ref strategy, actual: StageType::Selection, expected: StageType::Scoring, .. }
            if strategy == "pick"
    ));
    assert_eq!(
        e.to_string(),
        "`workflow.scorer` (line 13): strategy `pick` (best_of_n_selection) is a selection \
         strategy, but this slot takes a scoring strategy"
    );
}

#[test]
fn unsupported_pipeline() {
    let yaml = PSE.replace(
        "pick: { _type: best_of_n_selection }",
        "pick: { _type: threshold_selection }",
    );
    let e = build_err(&yaml);
    assert_eq!(e.path, "workflow.selector");
    assert!(
        matches!(
            e.kind,
            BuildErrorKind::UnsupportedPipeline {
                pipeline: PipelineType::Planning,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_references_and_types() {
    let e = build_err(&PSE.replace("planning_llm: m", "planning_llm: nope"));
    assert_eq!(e.path, "strategies.plans.planning_llm");
    assert_eq!(e.line, Some(6));
    assert!(
        matches!(e.kind, BuildErrorKind::UnknownReference { what: "llm", ref name, .. } if name == "nope")
    );
    let e = build_err(&PSE.replace("  selector: pick", "  selector: missing"));
    assert_eq!(e.path, "workflow.selector");
    assert!(matches!(
        e.kind,
        BuildErrorKind::UnknownReference {
            what: "strategy",
            ..
        }
    ));
    let e = build_err(&PSE.replace("augmented_fn: agent", "augmented_fn: ghost"));
    assert!(matches!(
        e.kind,
        BuildErrorKind::UnknownReference {
            what: "function",
            ..
        }
    ));
    let e = build_err(&PSE.replace("_type: best_of_n_selection", "_type: best_of_all"));
    assert_eq!(e.path, "strategies.pick._type");
    assert!(matches!(
        e.kind,
        BuildErrorKind::UnknownType {
            what: "strategy",
            ..
        }
    ));
    let e = build_err(&PSE.replace("{ _type: best_of_n_selection }", "{ k: 1 }"));
    assert!(matches!(e.kind, BuildErrorKind::MissingType), "{e}");
}

#[test]
fn full_and_doc_type_names_are_accepted() {
    let yaml = PSE
        .replace(
            "_type: best_of_n_selection",
            "_type: nat.experimental.test_time_compute/best_of_n_selector",
        )
        .replace(
            "_type: plan_select_execute_function",
            "_type: plan_select_execute",
        );
    load(&yaml, &any_llm()).expect("aliases build");
}

#[test]
fn fields_ranges_and_templates() {
    let e = build_err(&PSE.replace("num_plans: 2", "num_plans: 0"));
    assert_eq!(e.path, "strategies.plans.num_plans");
    assert!(matches!(e.kind, BuildErrorKind::Range { .. }));
    let e = build_err(&PSE.replace("num_plans: 2", "num_plans: 2, min_temperature: 2.0"));
    assert!(matches!(e.kind, BuildErrorKind::Range { .. }), "{e}");
    let e = build_err(&PSE.replace("num_plans: 2", "num_plns: 2"));
    assert_eq!(e.path, "strategies.plans.num_plns");
    assert!(matches!(e.kind, BuildErrorKind::Field { .. }));
    let e = build_err(&PSE.replace("num_plans: 2", "planning_template: \"{prompt} {task}\""));
    assert!(
        matches!(
            e.kind,
            BuildErrorKind::Template(ponder_agents::template::TemplateError::Unknown { .. })
        ),
        "{e}"
    );
    let e = build_err(&PSE.replace("num_plans: 2", "planning_template: \"only {prompt}\""));
    assert_eq!(e.path, "strategies.plans.planning_template");
    assert!(matches!(
        e.kind,
        BuildErrorKind::Template(ponder_agents::template::TemplateError::Missing { .. })
    ));
    let e = build_err(&PSE.replace(
        "rate: { _type: llm_based_plan_scoring, scoring_llm: m }",
        "rate: { _type: llm_based_plan_scoring, scoring_llm: m, score_min: 5, score_max: 5 }",
    ));
    assert!(matches!(e.kind, BuildErrorKind::Range { .. }));
}

#[test]
fn stage_chain_checks() {
    let e = build_err(&PSE.replace("  scorer: rate\n", ""));
    assert_eq!(e.path, "workflow.selector");
    assert!(matches!(e.kind, BuildErrorKind::Chain { .. }), "{e}");
    let yaml = PSE.replace(
        "plans: { _type: single_shot_multi_plan, planning_llm: m, num_plans: 2 }",
        "plans: { _type: multi_llm_generation, llms: [m] }",
    );
    let e = build_err(&yaml.replace("  scorer: rate\n", "").replace(
        "pick: { _type: best_of_n_selection }",
        "pick: { _type: llm_judge_selection, judge_llm: m }",
    ));
    assert_eq!(e.path, "workflow.planner");
    assert!(e.to_string().contains("use_output_as_plan"), "{e}");
}

#[test]
fn sections_duplicates_and_cycles() {
    let e = build_err("llms: {}\nembedders: {}\nworkflow: x\n");
    assert_eq!(e.path, "embedders");
    assert!(matches!(e.kind, BuildErrorKind::UnknownSection));
    let e = build_err("its_strategies:\n  a: { _type: best_of_n_selection }\nttc_strategies:\n  a: { _type: best_of_n_selection }\nworkflow: x\n");
    assert_eq!(e.path, "ttc_strategies.a");
    assert_eq!(e.line, Some(4));
    let e = build_err(
        "llms:\n  m: { _type: openai, model: m }\nfunctions:\n  w1: { _type: ttc_tool_wrapper, augmented_fn: w2, input_llm: m }\n  w2: { _type: ttc_tool_wrapper, augmented_fn: w1, input_llm: m }\nworkflow: w1\n",
    );
    assert!(matches!(e.kind, BuildErrorKind::Cycle { .. }), "{e}");
    let e = build_err("llms:\n  m: { _type: anthropic, model: m }\nworkflow: x\n");
    assert_eq!(e.path, "llms.m._type");
    let e = build_err("llms:\n  m: { _type: openai, model: m }\n");
    assert!(matches!(e.kind, BuildErrorKind::NoWorkflow));
}

/// A custom strategy that needs `agent_context`, registered from Rust.
struct NeedsContext;

impl Strategy for NeedsContext {
    fn kind(&self) -> &str {
        "needs_context"
    }
    fn stage(&self) -> StageType {
        StageType::Search
    }
    fn pipelines(&self) -> &[PipelineType] {
        &[PipelineType::Custom]
    }
    fn needs(&self) -> ponder_agents::Needs {
        ponder_agents::Needs {
            original_prompt: true,
            agent_context: true,
        }
    }
    fn invoke<'a>(
        &'a self,
        items: Vec<Item>,
        _ctx: &'a StageCtx,
    ) -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
        Box::pin(async move { Ok(items) })
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[test]
fn missing_context_and_custom_registration() {
    let mut r = Registry::builtin();
    r.register_strategy(
        "needs_context",
        &[],
        StageType::Search,
        &[PipelineType::Custom],
        |_: Empty, _: &mut Builder<'_>| Ok(Arc::new(NeedsContext) as Arc<dyn Strategy>),
    )
    .expect("new name");
    assert!(r
        .register_strategy(
            "best_of_n_selector",
            &[],
            StageType::Selection,
            &[],
            |_: Empty, _: &mut Builder<'_>| { Ok(Arc::new(NeedsContext) as Arc<dyn Strategy>) }
        )
        .is_err());
    let yaml = "llms:\n  m: { _type: openai, model: m }\nstrategies:\n  s: { _type: needs_context }\n  j: { _type: llm_judge_selection, judge_llm: m }\nworkflow:\n  _type: multi_llm_judge\n  search_strategy: s\n  selection_strategy: j\n";
    let e = load_with(&r, yaml, &any_llm()).expect_err("judge gives no agent context");
    assert_eq!(e.path, "workflow.search_strategy");
    assert!(
        matches!(
            e.kind,
            BuildErrorKind::MissingContext {
                needs: "agent_context",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn plan_select_execute_runs_all_stages_and_streams() {
    let m = ScriptedBackend::new("m", |r, _| {
        let p = format!("{:?}", r.prompt);
        Ok(if p.contains("FINAL SCORE") {
            if p.contains("second") {
                "FINAL SCORE: 9"
            } else {
                "FINAL SCORE: 4"
            }
            .into()
        } else if p.contains("`PLAN:`") {
            if r.params.temperature == Some(1.0) {
                "PLAN: second plan"
            } else {
                "PLAN: first plan"
            }
            .into()
        } else {
            "streamed final answer".into()
        })
    });
    let w = load(PSE, &backends(&[("m", m.clone())])).expect("builds");
    let ctx = RunCtx::new(3);
    let out = w.run(json!("How do I X?"), &ctx).await.expect("runs");
    assert_eq!(out.output, json!("streamed final answer"));
    let stages: Vec<StageType> = out.trace.iter().map(|r| r.stage).collect();
    assert_eq!(
        stages,
        vec![StageType::Search, StageType::Scoring, StageType::Selection]
    );
    let last = m.prompts().pop().expect("downstream call");
    assert!(
        last.contains("second plan") && last.contains("user: How do I X?"),
        "{last}"
    );
    assert!(out.cost.llm_calls >= 5);
    // Streaming: the same answer in chunks.
    let ctx = RunCtx::new(3);
    assert!(w.root().streams());
    let chunks: Vec<String> = w
        .stream(json!("How do I X?"), &ctx)
        .await
        .expect("streams")
        .map(|c| c.expect("chunk"))
        .collect()
        .await;
    assert!(chunks.len() > 1);
    assert_eq!(chunks.concat(), "streamed final answer");
}

#[tokio::test]
async fn execute_score_select_maps_back_by_id_with_structured_outputs() {
    let judge = ScriptedBackend::new("j", |r, _| {
        let p = format!("{:?}", r.prompt);
        Ok(if p.contains("\\\"n\\\": 2") {
            "FINAL SCORE: 9"
        } else {
            "FINAL SCORE: 2"
        }
        .into())
    });
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c2 = counter.clone();
    let agent = ClosureFunction::new("Counts.", move |_v: Value, _ctx| {
        let n = c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        async move {
            if n == 3 {
                Err(FunctionError::Tool {
                    tool: "agent".into(),
                    message: "flaky".into(),
                })
            } else {
                Ok(json!({ "n": n }))
            }
        }
    })
    .with_schemas(json!({}), json!({"type": "object"}));
    let yaml = "llms:\n  j: { _type: openai, model: j }\nstrategies:\n  rate: { _type: llm_based_agent_scoring, scoring_llm: j }\n  pick: { _type: best_of_n_selection }\nworkflow:\n  _type: execute_score_select_function\n  augmented_fn: agent\n  num_iterations: 3\n  max_concurrency: 1\n  scorer: rate\n  selector: pick\n";
    let bs = backends(&[("j", judge.clone())]);
    let factory = move |name: &str, _: &LlmConfig| -> Result<Arc<dyn Backend>, String> {
        Ok(bs[name].clone() as Arc<dyn Backend>)
    };
    let registry = Registry::builtin();
    let w = Loader::new(&registry, &factory)
        .with_function("agent", Arc::new(agent))
        .load_str(yaml)
        .expect("builds");
    let out = w.run(json!("task"), &RunCtx::new(0)).await.expect("runs");
    assert_eq!(
        out.output,
        json!({"n": 2}),
        "the structured value, mapped back by id"
    );
    assert_eq!(judge.requests().len(), 2, "the failed run is excluded");
    assert!(
        judge.prompts()[0].contains("Counts."),
        "agent context is the description"
    );
}

#[tokio::test]
async fn execute_score_select_returns_a_merged_text_output() {
    let m = ScriptedBackend::new("m", |r, _| {
        let p = format!("{:?}", r.prompt);
        Ok(if p.contains("MERGED OUTPUT") {
            "MERGED OUTPUT: both answers".into()
        } else {
            "an answer".into()
        })
    });
    let yaml = "llms:\n  m: { _type: openai, model: m }\nfunctions:\n  a: { _type: llm_chat, llm: m }\nstrategies:\n  merge: { _type: llm_based_agent_output_merging, selection_llm: m }\nworkflow:\n  _type: execute_score_select\n  augmented_fn: a\n  num_executions: 2\n  selector: merge\n";
    let w = load(yaml, &backends(&[("m", m)])).expect("builds");
    let out = w.run(json!("q"), &RunCtx::new(0)).await.expect("runs");
    assert_eq!(out.output, json!("both answers"));
}

#[tokio::test]
async fn one_merging_strategy_bound_under_two_pipelines() {
    let m = ScriptedBackend::new("m", |r, _| {
        let p = format!("{:?}", r.prompt);
        Ok(if p.contains("MERGED OUTPUT") {
            "MERGED OUTPUT: merged".into()
        } else if p.contains("`PLAN:`") {
            "PLAN: a plan".into()
        } else {
            "answer".into()
        })
    });
    let yaml = "llms:\n  m: { _type: openai, model: m }\nfunctions:\n  a: { _type: llm_chat, llm: m, description: Agent. }\n  ess: { _type: execute_score_select, augmented_fn: a, num_executions: 2, selector: merge }\nstrategies:\n  merge: { _type: llm_based_agent_output_merging, selection_llm: m }\n  plans: { _type: single_shot_multi_plan, planning_llm: m, num_plans: 2 }\nworkflow:\n  _type: plan_select_execute\n  augmented_fn: ess\n  planner: plans\n  selector: merge\n";
    let w = load(yaml, &backends(&[("m", m.clone())])).expect("builds");
    let out = w.run(json!("q"), &RunCtx::new(0)).await.expect("runs");
    let merges: Vec<_> = out.trace.iter().filter(|r| r.strategy == "merge").collect();
    assert_eq!(merges.len(), 2);
    assert_eq!(merges[0].pipeline, PipelineType::Planning);
    assert_eq!(merges[0].items_out[0].plan.as_deref(), Some("merged"));
    assert_eq!(merges[1].pipeline, PipelineType::AgentExecution);
    assert_eq!(merges[1].items_out[0].plan, None);
    assert_eq!(out.output, json!("merged"));
}

#[tokio::test]
async fn multi_llm_judge_with_one_failing_llm() {
    let good = ScriptedBackend::sequence("g", vec!["good answer"]);
    let bad = ScriptedBackend::new("b", |_, _| {
        Err(BackendError::Connect {
            endpoint: "b".into(),
            message: "down".into(),
        })
    });
    let judge = ScriptedBackend::sequence("j", vec!["SELECTED ITEM: 1 because"]);
    let yaml = "llms:\n  g: { _type: openai, model: g }\n  b: { _type: openai, model: b }\n  j: { _type: openai, model: j }\nstrategies:\n  gen: { _type: multi_llm_generation, llms: [b, g] }\n  pick: { _type: llm_judge_selection, judge_llm: j }\nworkflow: { _type: multi_llm_judge_function, search_strategy: gen, selection_strategy: pick }\n";
    let w = load(
        yaml,
        &backends(&[("g", good), ("b", bad.clone()), ("j", judge.clone())]),
    )
    .expect("builds");
    let out = w.run(json!("q?"), &RunCtx::new(0)).await.expect("runs");
    assert_eq!(out.output, json!("good answer"));
    let p = &judge.prompts()[0];
    assert!(
        p.contains("good answer") && !p.contains("down") && p.contains("q?"),
        "{p}"
    );
    // Every LLM failing is an error, not an empty string.
    let yaml2 = yaml.replace("llms: [b, g]", "llms: [b]");
    let w = load(
        &yaml2,
        &backends(&[
            ("g", ScriptedBackend::sequence("g", vec!["x"])),
            ("b", bad),
            ("j", judge),
        ]),
    )
    .expect("builds");
    let e = w
        .run(json!("q?"), &RunCtx::new(0))
        .await
        .expect_err("all failed");
    assert!(
        matches!(
            e,
            FunctionError::Stage {
                source: StageError::AllFailed { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn orchestration_without_search_calls_tools_with_the_task_and_selects_per_tool() {
    let judge = ScriptedBackend::new("j", |r, _| {
        let p = format!("{:?}", r.prompt);
        Ok(if p.contains("RESULT-b") {
            "FINAL SCORE: 8"
        } else {
            "FINAL SCORE: 3"
        }
        .into())
    });
    let echo = ClosureFunction::new("Echoes.", |v: Value, _| async move {
        Ok(json!(format!("RESULT-{}", v.as_str().unwrap_or("?"))))
    });
    let fails = ClosureFunction::new("Fails.", |_v: Value, _| async move {
        Err(FunctionError::Tool {
            tool: "broken".into(),
            message: "boom".into(),
        })
    });
    let yaml = "llms:\n  j: { _type: openai, model: j }\nstrategies:\n  rate: { _type: motivation_aware_scoring, scoring_llm: j }\n  best: { _type: best_of_n_selection }\nworkflow:\n  _type: ttc_tool_orchestration\n  augmented_fns: [echo, broken]\n  scoring_strategy: rate\n  selection_strategy: best\n";
    let bs = backends(&[("j", judge)]);
    let factory = move |name: &str, _: &LlmConfig| -> Result<Arc<dyn Backend>, String> {
        Ok(bs[name].clone() as Arc<dyn Backend>)
    };
    let registry = Registry::builtin();
    let w = Loader::new(&registry, &factory)
        .with_function("echo", Arc::new(echo))
        .with_function("broken", Arc::new(fails))
        .load_str(yaml)
        .expect("builds");
    let input = json!({"tools": [
        {"tool_name": "echo", "task_description": "a"},
        {"tool_name": "echo", "task_description": "b", "motivation": "why"},
        {"tool_name": "broken", "task_description": "c"}
    ]});
    let out = w.run(input.clone(), &RunCtx::new(0)).await.expect("runs");
    let tools = out.output["tools"].as_array().expect("list");
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert_eq!(tools[0]["output"], "RESULT-b");
    assert_eq!(tools[0]["score"], 8.0);
    assert!(tools[1]["output"].as_str().expect("text").contains("boom"));
    let bad = json!({"tools": [{"tool_name": "nope", "task_description": "x"}]});
    let e = w.run(bad, &RunCtx::new(0)).await.expect_err("unknown tool");
    assert!(
        e.to_string()
            .contains("unknown tool `nope` (known: broken, echo)"),
        "{e}"
    );
}

#[tokio::test]
async fn tool_wrapper_builds_validated_input_and_reports_missing_information() {
    let llm = ScriptedBackend::new("m", |r, _| {
        let p = format!("{:?}", r.prompt);
        Ok(if p.contains("Oslo") {
            if p.contains("not a valid input") {
                "```json\n{\"city\": \"Oslo\", \"days\": 3}\n```".into()
            } else {
                "{\"city\": 5}".into()
            }
        } else {
            "Not enough information.".into()
        })
    });
    let weather = ClosureFunction::new("Weather forecast for a city.", |v: Value, _| async move {
        Ok(json!(format!("sunny in {}", v["city"].as_str().unwrap_or("?"))))
    })
    .with_schemas(
        json!({"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}),
        json!({"type": "string"}),
    );
    let yaml = "llms:\n  m: { _type: openai, model: m }\nfunctions:\n  wrapped: { _type: its_tool_wrapper_function, augmented_fn: weather, input_llm: m }\nworkflow: wrapped\n";
    let bs = backends(&[("m", llm.clone())]);
    let factory = move |name: &str, _: &LlmConfig| -> Result<Arc<dyn Backend>, String> {
        Ok(bs[name].clone() as Arc<dyn Backend>)
    };
    let registry = Registry::builtin();
    let w = Loader::new(&registry, &factory)
        .with_function("weather", Arc::new(weather))
        .load_str(yaml)
        .expect("builds");
    let out = w
        .run(json!("weather in Oslo for three days"), &RunCtx::new(0))
        .await
        .expect("runs");
    assert_eq!(out.output, json!("sunny in Oslo"));
    assert_eq!(
        llm.requests().len(),
        2,
        "one re-ask after the invalid input"
    );
    assert!(llm.prompts()[1].contains("input.city: expected string"));
    assert!(
        llm.prompts()[0].contains("\"required\""),
        "schemas shown as JSON Schema"
    );
    let e = w
        .run(json!("weather somewhere"), &RunCtx::new(0))
        .await
        .expect_err("sentinel");
    assert!(
        matches!(e, FunctionError::InsufficientInformation { .. }),
        "{e}"
    );
}
