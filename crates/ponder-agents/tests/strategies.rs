//! Every built-in strategy against a scripted LLM: variables reach the prompt, parse variants
//! give the specified result, failures follow the written fallback.

mod common;

use common::*;
use ponder_agents::item::flags;
use ponder_agents::testing::ScriptedBackend;
use ponder_agents::{ItemStatus, PipelineType, StageError};
use ponder_core::BackendError;
use serde_json::json;

fn scorer_yaml(kind: &str) -> String {
    with_strategies(
        &["j"],
        &format!("s: {{ _type: {kind}, scoring_llm: j, max_reask: 1 }}"),
    )
}

#[tokio::test]
async fn single_shot_multi_plan_ramps_temperatures_and_parses_plans() {
    let llm = ScriptedBackend::sequence(
        "p",
        vec![
            "Sure.\n**PLAN:**\n1. search\n2. answer",
            "plan: just answer",
            "No marker here, 1. do it",
            "<think>PLAN: hidden</think>",
        ],
    );
    let w = load(
        &with_strategies(
            &["p"],
            "s: { _type: single_shot_multi_plan, planning_llm: p, max_reask: 0 }",
        ),
        &backends(&[("p", llm.clone())]),
    )
    .expect("builds");
    let out = invoke(
        &w,
        "s",
        PipelineType::Planning,
        vec![],
        Some("TASK-X"),
        Some("CONTEXT-Y"),
    )
    .await
    .expect("plans");
    // Four calls; the empty fourth reply is dropped (max_reask 0).
    assert_eq!(llm.requests().len(), 4);
    let temps: Vec<f64> = llm
        .requests()
        .iter()
        .map(|r| r.params.temperature.expect("set"))
        .collect();
    let want = [0.5, 0.5 + 0.5 / 3.0, 0.5 + 1.0 / 3.0, 1.0];
    let mut sorted = temps.clone();
    sorted.sort_by(f64::total_cmp);
    for (a, b) in sorted.iter().zip(want) {
        assert!((a - b).abs() < 1e-9, "{temps:?}");
    }
    for p in llm.prompts() {
        assert!(p.contains("TASK-X") && p.contains("CONTEXT-Y"), "{p}");
    }
    let plans: Vec<&str> = out.iter().filter_map(|i| i.plan.as_deref()).collect();
    assert_eq!(
        plans,
        vec![
            "1. search\n2. answer",
            "just answer",
            "No marker here, 1. do it"
        ]
    );
    assert!(out[2].has_flag(flags::MARKER_MISSING));
    assert!(!out[0].has_flag(flags::MARKER_MISSING));
    assert_eq!(out[0].provenance.llm.as_deref(), Some("p"));
}

#[tokio::test]
async fn single_plan_uses_the_minimum_temperature_and_all_empty_is_an_error() {
    let llm = ScriptedBackend::sequence("p", vec!["   "]);
    let w = load(
        &with_strategies(&["p"], "s: { _type: single_shot_multi_plan, planning_llm: p, num_plans: 1, min_temperature: 0.2 }"),
        &backends(&[("p", llm.clone())]),
    )
    .expect("builds");
    let err = invoke(
        &w,
        "s",
        PipelineType::Planning,
        vec![],
        Some("t"),
        Some("c"),
    )
    .await
    .expect_err("no plan");
    assert!(matches!(err, StageError::NoCandidates { .. }), "{err}");
    // One call plus two re-asks, all at the ramp's lower end.
    assert_eq!(llm.requests().len(), 3);
    assert!(llm
        .requests()
        .iter()
        .all(|r| r.params.temperature == Some(0.2)));
}

#[tokio::test]
async fn multi_llm_plan_orders_by_llm_then_temperature_and_isolates_errors() {
    let a = ScriptedBackend::sequence("a", vec!["PLAN: from a"]);
    let b = ScriptedBackend::new("b", |_, _| {
        Err(BackendError::Connect {
            endpoint: "b".into(),
            message: "refused".into(),
        })
    });
    let w = load(
        &with_strategies(
            &["a", "b"],
            "s: { _type: multi_llm_plan, llms: [a, b], plans_per_llm: 2 }",
        ),
        &backends(&[("a", a.clone()), ("b", b)]),
    )
    .expect("builds");
    let out = invoke(
        &w,
        "s",
        PipelineType::Planning,
        vec![],
        Some("t"),
        Some("c"),
    )
    .await
    .expect("plans");
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].plan.as_deref(), Some("from a"));
    assert_eq!(out[0].provenance.temperature, Some(0.5));
    assert_eq!(out[1].provenance.temperature, Some(1.0));
    assert!(matches!(out[2].status, ItemStatus::Error { .. }));
    assert_eq!(out[3].provenance.llm.as_deref(), Some("b"));
}

#[tokio::test]
async fn multi_query_search_keeps_the_original_and_drops_duplicates() {
    let llm = ScriptedBackend::new("q", |r, _| {
        let p = format!("{:?}", r.prompt);
        Ok(if p.contains("FIRST") {
            "first task".into()
        } else {
            "alternative query".into()
        })
    });
    let w = load(
        &with_strategies(
            &["q"],
            "s: { _type: multi_query_retrieval_search, llms: [q] }",
        ),
        &backends(&[("q", llm.clone())]),
    )
    .expect("builds");
    let items = vec![
        ponder_agents::Item {
            id: 1,
            input: Some(json!("FIRST TASK")),
            motivation: Some("MOTIVE-1".into()),
            name: Some("t".into()),
            ..Default::default()
        },
        ponder_agents::Item {
            id: 2,
            input: Some(json!("second")),
            ..Default::default()
        },
    ];
    let out = invoke(&w, "s", PipelineType::ToolUse, items, None, None)
        .await
        .expect("ok");
    // Item 1: original only (its rewrite equals the task); item 2: original + rewrite.
    assert_eq!(out.len(), 3, "{out:#?}");
    assert_eq!(out[0].output, Some(json!("FIRST TASK")));
    assert_eq!(out[2].output, Some(json!("alternative query")));
    assert_eq!(out[2].provenance.parent, Some(2));
    assert!(llm
        .prompts()
        .iter()
        .any(|p| p.contains("MOTIVE-1") && p.contains("FIRST TASK")));
}

#[tokio::test]
async fn multi_llm_generation_excludes_failures_and_can_fill_plans() {
    let good = ScriptedBackend::sequence("g", vec!["<think>hmm</think> The answer."]);
    let bad = ScriptedBackend::new("x", |_, _| {
        Err(BackendError::Connect {
            endpoint: "x".into(),
            message: "down".into(),
        })
    });
    let w = load(
        &with_strategies(
            &["g", "x"],
            "s: { _type: multi_llm_generation, llms: [g, x], use_output_as_plan: true }",
        ),
        &backends(&[("g", good.clone()), ("x", bad)]),
    )
    .expect("builds");
    let out = invoke(
        &w,
        "s",
        PipelineType::Planning,
        vec![],
        Some("QUERY-Z"),
        None,
    )
    .await
    .expect("ok");
    assert_eq!(out[0].output, Some(json!("The answer.")));
    assert_eq!(out[0].plan.as_deref(), Some("The answer."));
    assert_eq!(out[0].metadata["model"], "g");
    assert!(matches!(out[1].status, ItemStatus::Error { .. }));
    assert!(good.prompts()[0].contains("QUERY-Z"));
}

#[tokio::test]
async fn judge_editor_gives_feedback_then_edits_and_keeps_items_on_failure() {
    let fb = ScriptedBackend::new("f", |r, _| {
        let p = format!("{:?}", r.prompt);
        Ok(if p.contains("PLAN-BAD") {
            "no numbered points".into()
        } else {
            "FEEDBACK:\n1. good\n2. add checks".into()
        })
    });
    let ed = ScriptedBackend::sequence("e", vec!["Here you go.\nEDITED PLAN:\n1. better"]);
    let w = load(
        &with_strategies(&["f", "e"], "s: { _type: llm_as_a_judge_editor, editing_llm: e, feedback_llm: f, num_feedback: 2, max_reask: 1 }"),
        &backends(&[("f", fb.clone()), ("e", ed.clone())]),
    )
    .expect("builds");
    let out = invoke(
        &w,
        "s",
        PipelineType::Planning,
        vec![plan_item(1, "PLAN-GOOD"), plan_item(2, "PLAN-BAD")],
        Some("GOAL"),
        Some("SYSTEM"),
    )
    .await
    .expect("ok");
    assert_eq!(out[0].plan.as_deref(), Some("1. better"));
    assert_eq!(out[0].feedback.as_deref(), Some("1. good\n2. add checks"));
    assert_eq!(out[0].id, 1);
    assert_eq!(out[1].plan.as_deref(), Some("PLAN-BAD"));
    assert!(out[1].has_flag(flags::EDIT_FAILED));
    let p = &fb.prompts()[0];
    assert!(
        p.contains("GOAL") && p.contains("SYSTEM") && p.contains("exactly 2"),
        "{p}"
    );
    assert!(ed.prompts()[0].contains("2. add checks"));
}

#[tokio::test]
async fn iterative_refinement_defaults_to_three_rounds_and_stops_when_unchanged() {
    let yaml = with_strategies(
        &["r"],
        "s: { _type: iterative_plan_refinement, editor_llm: r }",
    );
    let llm = ScriptedBackend::sequence(
        "r",
        vec![
            "EDITED PLAN: v1",
            "EDITED PLAN: v2",
            "EDITED PLAN: v3",
            "EDITED PLAN: v4",
        ],
    );
    let w = load(&yaml, &backends(&[("r", llm.clone())])).expect("builds without num_iterations");
    let out = invoke(
        &w,
        "s",
        PipelineType::Planning,
        vec![plan_item(1, "v0")],
        Some("O"),
        Some("C"),
    )
    .await
    .expect("ok");
    assert_eq!(out[0].plan.as_deref(), Some("v3"));
    assert_eq!(llm.requests().len(), 3);
    assert!(llm.prompts()[1].contains("v1") && llm.prompts()[1].contains("O"));
    // v0 → v1 → v1 (unchanged): stop after two rounds.
    let llm = ScriptedBackend::sequence("r", vec!["EDITED PLAN: v1"]);
    let w = load(&yaml, &backends(&[("r", llm.clone())])).expect("builds");
    let out = invoke(
        &w,
        "s",
        PipelineType::Planning,
        vec![plan_item(1, "v0")],
        Some("O"),
        Some("C"),
    )
    .await
    .expect("ok");
    assert_eq!(
        (out[0].plan.as_deref(), llm.requests().len()),
        (Some("v1"), 2)
    );
}

#[tokio::test]
async fn motivation_editing_keeps_score_and_raw_output() {
    let llm = ScriptedBackend::sequence("m", vec!["  A short summary.  "]);
    let w = load(
        &with_strategies(
            &["m"],
            "s: { _type: motivation_aware_summarization, editor_llm: m }",
        ),
        &backends(&[("m", llm.clone())]),
    )
    .expect("alias builds");
    let item = ponder_agents::Item {
        id: 4,
        input: Some(json!("TASK")),
        output: Some(json!("DOCS")),
        motivation: Some("WHY".into()),
        score: Some(6.0),
        ..Default::default()
    };
    let out = invoke(&w, "s", PipelineType::ToolUse, vec![item], None, None)
        .await
        .expect("ok");
    assert_eq!(out[0].output, Some(json!("A short summary.")));
    assert_eq!(out[0].metadata["raw_output"], "DOCS");
    assert_eq!(out[0].score, Some(6.0));
    assert_eq!(out[0].id, 4);
    let p = &llm.prompts()[0];
    assert!(p.contains("TASK") && p.contains("DOCS") && p.contains("WHY"));
}

async fn score_with(
    kind: &str,
    pipeline: PipelineType,
    replies: Vec<&str>,
) -> (Option<f64>, ItemStatus, usize) {
    let llm = ScriptedBackend::sequence("j", replies);
    let w = load(&scorer_yaml(kind), &backends(&[("j", llm.clone())])).expect("builds");
    let item = ponder_agents::Item {
        id: 1,
        input: Some(json!("IN")),
        output: Some(json!("OUT")),
        plan: Some("PLAN-TEXT".into()),
        motivation: Some("MOT".into()),
        ..Default::default()
    };
    let out = invoke(&w, "s", pipeline, vec![item], Some("PROMPT"), Some("CTX"))
        .await
        .expect("ok");
    (out[0].score, out[0].status.clone(), llm.requests().len())
}

#[tokio::test]
async fn scorers_parse_every_variant_and_never_default_to_zero() {
    for (kind, pipeline) in [
        ("llm_based_plan_scoring", PipelineType::Planning),
        ("llm_based_agent_scorer", PipelineType::AgentExecution),
        ("motivation_aware_scoring", PipelineType::ToolUse),
    ] {
        let cases: Vec<(&str, Option<f64>)> = vec![
            ("**FINAL SCORE:** **8**", Some(8.0)),
            ("final score: 6.5", Some(6.5)),
            ("Long text first.\nMore text.\nFINAL SCORE: 3/10", Some(3.0)),
            ("FINAL SCORE: 2\nrevised FINAL SCORE: 9", Some(9.0)),
        ];
        for (reply, want) in cases {
            let (score, status, calls) = score_with(kind, pipeline, vec![reply]).await;
            assert_eq!(score, want, "{kind}: {reply:?}");
            assert_eq!(status, ItemStatus::Ok);
            assert_eq!(calls, 1);
        }
        // None: one re-ask (max_reask 1), then parse_failed and no score.
        let (score, status, calls) =
            score_with(kind, pipeline, vec!["I like it.", "Still good."]).await;
        assert_eq!(score, None, "{kind}");
        assert!(
            matches!(status, ItemStatus::ParseFailed { ref raw_reply, .. } if raw_reply == "Still good.")
        );
        assert_eq!(calls, 2);
        // Re-ask succeeds.
        let (score, _, calls) = score_with(kind, pipeline, vec!["nothing", "FINAL SCORE: 7"]).await;
        assert_eq!((score, calls), (Some(7.0), 2));
        // Out of range is not a score.
        let (score, _, _) = score_with(kind, pipeline, vec!["FINAL SCORE: 0"]).await;
        assert_eq!(score, None);
    }
}

#[tokio::test]
async fn scorer_prompts_carry_their_variables() {
    let cases = [
        (
            "llm_based_plan_scoring",
            PipelineType::Planning,
            vec!["PROMPT", "CTX", "PLAN-TEXT"],
        ),
        (
            "llm_based_agent_scoring",
            PipelineType::AgentExecution,
            vec!["PROMPT", "CTX", "OUT"],
        ),
        (
            "motivation_aware_scorer",
            PipelineType::ToolUse,
            vec!["IN", "MOT", "OUT"],
        ),
    ];
    for (kind, pipeline, wants) in cases {
        let llm = ScriptedBackend::sequence("j", vec!["FINAL SCORE: 5"]);
        let w = load(&scorer_yaml(kind), &backends(&[("j", llm.clone())])).expect("builds");
        let item = ponder_agents::Item {
            id: 1,
            input: Some(json!("IN")),
            output: Some(json!("OUT")),
            plan: Some("PLAN-TEXT".into()),
            motivation: Some("MOT".into()),
            ..Default::default()
        };
        invoke(&w, "s", pipeline, vec![item], Some("PROMPT"), Some("CTX"))
            .await
            .expect("ok");
        for want in wants {
            assert!(llm.prompts()[0].contains(want), "{kind}: {want}");
        }
    }
}

#[tokio::test]
async fn best_of_n_variants() {
    let w = load(
        &with_strategies(
            &["j"],
            "a: { _type: best_of_n_selector }\nb: { _type: best_of_n_selection, k: 2, on_unscored: lowest }\nc: { _type: best_of_n_selection, per_name: true }\nd: { _type: best_of_n_selection, on_unscored: error }",
        ),
        &backends(&[("j", ScriptedBackend::sequence("j", vec![""]))]),
    )
    .expect("builds");
    let mk = |id: u64, score: Option<f64>, name: &str| ponder_agents::Item {
        id,
        score,
        name: Some(name.into()),
        ..Default::default()
    };
    let items = vec![
        mk(1, Some(3.0), "x"),
        mk(2, None, "x"),
        mk(3, Some(8.0), "y"),
        mk(4, Some(8.0), "y"),
    ];
    let a = invoke(&w, "a", PipelineType::Planning, items.clone(), None, None)
        .await
        .expect("ok");
    assert_eq!(
        a.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![3],
        "ties keep the first"
    );
    let b = invoke(&w, "b", PipelineType::Planning, items.clone(), None, None)
        .await
        .expect("ok");
    assert_eq!(b.iter().map(|i| i.id).collect::<Vec<_>>(), vec![3, 4]);
    let c = invoke(&w, "c", PipelineType::ToolUse, items.clone(), None, None)
        .await
        .expect("ok");
    assert_eq!(c.iter().map(|i| i.id).collect::<Vec<_>>(), vec![1, 3]);
    let d = invoke(&w, "d", PipelineType::Planning, items.clone(), None, None).await;
    assert!(matches!(d, Err(StageError::Invalid { .. })));
    let unscored = vec![mk(5, None, "x"), mk(6, None, "x")];
    let a = invoke(&w, "a", PipelineType::Planning, unscored, None, None)
        .await
        .expect("ok");
    assert_eq!(a[0].id, 5);
    assert!(a[0].has_flag(flags::SELECTION_FALLBACK));
    let empty = invoke(&w, "a", PipelineType::Planning, vec![], None, None).await;
    assert!(matches!(empty, Err(StageError::NoCandidates { .. })));
}

#[tokio::test]
async fn threshold_selection_and_min_keep() {
    let w = load(
        &with_strategies(&["j"], "t: { _type: threshold_selector, threshold: 5 }\nm: { _type: threshold_selection, threshold: 9, min_keep: 1 }"),
        &backends(&[("j", ScriptedBackend::sequence("j", vec![""]))]),
    )
    .expect("builds");
    let mk = |id: u64, score: Option<f64>| ponder_agents::Item {
        id,
        score,
        ..Default::default()
    };
    let items = vec![
        mk(1, Some(5.0)),
        mk(2, Some(4.9)),
        mk(3, None),
        mk(4, Some(7.0)),
    ];
    let t = invoke(&w, "t", PipelineType::ToolUse, items.clone(), None, None)
        .await
        .expect("ok");
    assert_eq!(t.iter().map(|i| i.id).collect::<Vec<_>>(), vec![1, 4]);
    let m = invoke(&w, "m", PipelineType::ToolUse, items, None, None)
        .await
        .expect("ok");
    assert_eq!(m.iter().map(|i| i.id).collect::<Vec<_>>(), vec![4]);
    assert!(m[0].has_flag(flags::BELOW_THRESHOLD));
}

async fn select(
    kind_yaml: &str,
    pipeline: PipelineType,
    replies: Vec<&str>,
    items: Vec<ponder_agents::Item>,
) -> (Vec<ponder_agents::Item>, Vec<String>) {
    let llm = ScriptedBackend::sequence("j", replies);
    let w = load(
        &with_strategies(&["j"], kind_yaml),
        &backends(&[("j", llm.clone())]),
    )
    .expect("builds");
    let out = invoke(
        &w,
        "s",
        pipeline,
        items,
        Some("THE-QUERY"),
        Some("THE-CONTEXT"),
    )
    .await
    .expect("ok");
    (out, llm.prompts())
}

#[tokio::test]
async fn llm_selectors_parse_late_bold_and_repeated_markers_and_fall_back() {
    let plans = || {
        let mut a = plan_item(1, "1. step\n2. step");
        a.feedback = Some("FEEDBACK-A".into());
        let mut b = plan_item(2, "PLAN-B");
        b.score = Some(9.0);
        vec![a, b]
    };
    let outputs = || {
        vec![
            output_item(1, "OUT-A"),
            output_item(2, "OUT-B"),
            output_item(3, "OUT-C"),
        ]
    };
    let cases: Vec<(&str, PipelineType, &str, bool)> = vec![
        (
            "s: { _type: llm_based_plan_selector, selection_llm: j }",
            PipelineType::Planning,
            "SELECTED PLAN",
            true,
        ),
        (
            "s: { _type: llm_based_agent_output_selection, selection_llm: j }",
            PipelineType::AgentExecution,
            "SELECTED ITEM",
            false,
        ),
        (
            "s: { _type: llm_judge_selection, judge_llm: j }",
            PipelineType::Custom,
            "SELECTED ITEM",
            false,
        ),
    ];
    for (yaml, pipeline, marker, planning) in cases {
        let items = if planning { plans() } else { outputs() };
        let late = format!("A long explanation.\n\n**{}:** 2", marker.to_lowercase());
        let (out, prompts) = select(yaml, pipeline, vec![&late], items.clone()).await;
        assert_eq!(out[0].id, 2, "{yaml}");
        assert!(!out[0].has_flag(flags::SELECTION_FALLBACK));
        assert!(prompts[0].contains("THE-QUERY"), "{yaml}");
        assert!(prompts[0].contains("--- candidate 2 ---"), "{yaml}");
        if planning {
            assert!(
                prompts[0].contains("FEEDBACK-A") && prompts[0].contains("Score of this plan: 9")
            );
            assert!(prompts[0].contains("THE-CONTEXT"));
        }
        let several = format!("{marker}: 1\nOn second thought, {marker}: 2");
        let (out, _) = select(yaml, pipeline, vec![&several], items.clone()).await;
        assert_eq!(out[0].id, 2, "last match wins: {yaml}");
        // None: three attempts, then the fallback (best score, else first).
        let (out, prompts) = select(
            yaml,
            pipeline,
            vec!["no choice", "still none", "nope"],
            items.clone(),
        )
        .await;
        assert_eq!(prompts.len(), 3);
        assert!(out[0].has_flag(flags::SELECTION_FALLBACK), "{yaml}");
        assert_eq!(out[0].id, if planning { 2 } else { 1 });
    }
}

#[tokio::test]
async fn judge_reasoning_is_kept_and_vote_mode_saves_a_call() {
    let (out, _) = select(
        "s: { _type: llm_judge_selection, judge_llm: j }",
        PipelineType::Custom,
        vec!["SELECTED ITEM: 3\nIt is clearest."],
        vec![
            output_item(1, "a"),
            output_item(2, "b"),
            output_item(3, "c"),
        ],
    )
    .await;
    assert_eq!(out[0].id, 3);
    assert!(out[0].metadata["judge_reasoning"]
        .as_str()
        .expect("text")
        .contains("clearest"));
    let (out, prompts) = select(
        "s: { _type: llm_based_agent_output_selection, selection_llm: j, vote_mode: exact_answer }",
        PipelineType::AgentExecution,
        vec!["SELECTED ITEM: 1"],
        vec![
            output_item(1, "42"),
            output_item(2, "41"),
            output_item(3, " 42 "),
        ],
    )
    .await;
    assert_eq!((out[0].id, prompts.len()), (1, 0));
    assert_eq!(out[0].metadata["vote_count"], 2);
}

#[tokio::test]
async fn merging_depends_on_the_bound_pipeline_and_falls_back() {
    let yaml = "s: { _type: llm_based_output_merging_selector, selection_llm: j }";
    let (out, prompts) = select(
        yaml,
        PipelineType::Planning,
        vec!["Combined.\nMERGED OUTPUT:\n1. all steps"],
        vec![plan_item(1, "P1"), plan_item(2, "P2")],
    )
    .await;
    assert_eq!(out[0].plan.as_deref(), Some("1. all steps"));
    assert_eq!(out[0].metadata["merged_from"], json!([1, 2]));
    assert!(prompts[0].contains("execution plans") && prompts[0].contains("P2"));
    let (out, prompts) = select(
        yaml,
        PipelineType::AgentExecution,
        vec!["merged output: both"],
        vec![output_item(1, "O1"), output_item(2, "O2")],
    )
    .await;
    assert_eq!(out[0].output, Some(json!("both")));
    assert_eq!(out[0].plan, None);
    assert!(prompts[0].contains("agent outputs"));
    let (out, _) = select(
        yaml,
        PipelineType::AgentExecution,
        vec!["no marker"],
        vec![output_item(1, "O1"), output_item(2, "O2")],
    )
    .await;
    assert_eq!(out[0].id, 1);
    assert!(out[0].has_flag(flags::MERGE_FALLBACK));
}

#[tokio::test]
async fn error_items_never_compete_in_selection() {
    let mut bad = output_item(1, "llm error text");
    bad.status = ItemStatus::Error {
        message: "down".into(),
    };
    bad.score = Some(10.0);
    let mut good = output_item(2, "fine");
    good.score = Some(1.0);
    let w = load(
        &with_strategies(&["j"], "s: { _type: best_of_n_selection }"),
        &backends(&[("j", ScriptedBackend::sequence("j", vec![""]))]),
    )
    .expect("builds");
    let out = invoke(
        &w,
        "s",
        PipelineType::AgentExecution,
        vec![bad, good],
        None,
        None,
    )
    .await
    .expect("ok");
    assert_eq!(out[0].id, 2);
}
