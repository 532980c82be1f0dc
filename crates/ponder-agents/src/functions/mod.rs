//! Function kinds of the registry: the basic ones (`llm_chat`, `http_tool`, `command_tool`)
//! and the pre-built test-time-compute functions (spec §6): `ttc_tool_wrapper`,
//! `ttc_tool_orchestration`, `execute_score_select_function`, `plan_select_execute_function`,
//! `multi_llm_judge_function`; plus the build-time stage-chain check they share.

pub mod execute_score_select;
pub mod multi_llm_judge;
pub mod orchestration;
pub mod plan_select_execute;
pub mod schema;
pub mod tool_wrapper;

use std::sync::Arc;

use crate::error::{BuildError, BuildErrorKind};
use crate::function::{
    CommandTool, CommandToolConfig, Function, HttpTool, HttpToolConfig, LlmChat, LlmChatConfig,
};
use crate::registry::{Builder, Registry};
use crate::strategy::{Bound, Fields};

/// Registers every built-in function kind in `r`.
pub fn register(r: &mut Registry) {
    let results = [
        r.register_function("llm_chat", &[], |c: LlmChatConfig, b: &mut Builder<'_>| {
            let llm = b.llm("llm", &c.llm)?;
            Ok(Arc::new(LlmChat::new(llm, c.description, c.system_prompt)) as Arc<dyn Function>)
        }),
        r.register_function(
            "http_tool",
            &[],
            |c: HttpToolConfig, b: &mut Builder<'_>| {
                b.check(
                    "url",
                    c.url.starts_with("http://") || c.url.starts_with("https://"),
                    format!("`url` must start with http:// or https://, got {:?}", c.url),
                )?;
                let tool = HttpTool::new(c)
                    .map_err(|reason| b.error("url", BuildErrorKind::Range { reason }))?;
                Ok(Arc::new(tool) as Arc<dyn Function>)
            },
        ),
        r.register_function(
            "command_tool",
            &[],
            |c: CommandToolConfig, b: &mut Builder<'_>| {
                let tool = CommandTool::new(c)
                    .map_err(|reason| b.error("command", BuildErrorKind::Range { reason }))?;
                Ok(Arc::new(tool) as Arc<dyn Function>)
            },
        ),
    ];
    for r in results {
        r.expect("built-in function names are unique");
    }
    tool_wrapper::register(r);
    orchestration::register(r);
    execute_score_select::register(r);
    plan_select_execute::register(r);
    multi_llm_judge::register(r);
}

/// Checks that each slot of a chain reads only fields the earlier slots (or the function,
/// `initial`) fill; errors name the slot.
pub(crate) fn check_chain(
    b: &Builder<'_>,
    initial: Fields,
    slots: &[Option<&Bound>],
) -> Result<(), BuildError> {
    let mut have = initial;
    for bound in slots.iter().flatten() {
        let reads = bound.strategy.reads();
        let missing: Vec<&str> = [
            (reads.plan && !have.plan, "plan"),
            (reads.output && !have.output, "output"),
            (reads.score && !have.score, "score"),
        ]
        .into_iter()
        .filter_map(|(m, n)| m.then_some(n))
        .collect();
        if !missing.is_empty() {
            let hint = if missing == ["score"] {
                " (add a scoring strategy before it)"
            } else if missing == ["plan"] && bound.slot != "planner" {
                " (use a planner that fills `plan`; `multi_llm_generation` needs `use_output_as_plan: true`)"
            } else {
                ""
            };
            return Err(b.error(
                &bound.slot,
                BuildErrorKind::Chain {
                    reason: format!(
                        "strategy `{}` ({}) reads `{}`, which no earlier stage fills{hint}",
                        bound.name,
                        bound.strategy.kind(),
                        missing.join("`, `")
                    ),
                },
            ));
        }
        let w = bound.strategy.writes(bound.pipeline);
        have.plan |= w.plan;
        have.output |= w.output;
        have.score |= w.score;
    }
    Ok(())
}
