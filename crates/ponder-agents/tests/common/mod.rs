//! Shared helpers: load a workflow whose LLMs are scripted backends, invoke one strategy.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use ponder_agents::testing::ScriptedBackend;
use ponder_agents::{
    BuildError, Item, LlmConfig, Loader, PipelineType, Registry, RunCtx, StageError, Workflow,
};
use ponder_core::Backend;

pub type Backends = HashMap<&'static str, Arc<ScriptedBackend>>;

/// Loads `yaml` with the built-in registry; each LLM `name` uses `backends[name]`.
pub fn load(yaml: &str, backends: &Backends) -> Result<Workflow, BuildError> {
    load_with(&Registry::builtin(), yaml, backends)
}

pub fn load_with(
    registry: &Registry,
    yaml: &str,
    backends: &Backends,
) -> Result<Workflow, BuildError> {
    let backends = backends.clone();
    let factory = move |name: &str, _: &LlmConfig| -> Result<Arc<dyn Backend>, String> {
        backends
            .get(name)
            .cloned()
            .map(|b| b as Arc<dyn Backend>)
            .ok_or_else(|| format!("no scripted backend for `{name}`"))
    };
    Loader::new(registry, &factory).load_str(yaml)
}

/// Runs strategy `name` of `workflow` on `items` under `pipeline`.
pub async fn invoke(
    workflow: &Workflow,
    name: &str,
    pipeline: PipelineType,
    items: Vec<Item>,
    prompt: Option<&str>,
    context: Option<&str>,
) -> Result<Vec<Item>, StageError> {
    let strategy = workflow.strategy(name).expect("strategy exists");
    let bound = ponder_agents::Bound {
        stage: strategy.stage(),
        strategy,
        name: name.into(),
        pipeline,
        slot: "slot".into(),
    };
    bound.invoke(items, &RunCtx::new(1), prompt, context).await
}

/// A workflow file with `llms` (each name an `openai` LLM), `strategies` and a trivial root.
pub fn with_strategies(llms: &[&str], strategies: &str) -> String {
    let mut s = String::from("llms:\n");
    for l in llms {
        s.push_str(&format!("  {l}: {{ _type: openai, model: m }}\n"));
    }
    s.push_str("strategies:\n");
    for line in strategies.lines() {
        s.push_str(&format!("  {line}\n"));
    }
    s.push_str(&format!(
        "functions:\n  chat: {{ _type: llm_chat, llm: {}, description: d }}\nworkflow: chat\n",
        llms[0]
    ));
    s
}

pub fn backends(list: &[(&'static str, Arc<ScriptedBackend>)]) -> Backends {
    list.iter().cloned().collect()
}

pub fn plan_item(id: u64, plan: &str) -> Item {
    Item {
        id,
        plan: Some(plan.into()),
        ..Item::default()
    }
}

pub fn output_item(id: u64, output: &str) -> Item {
    Item {
        id,
        output: Some(serde_json::Value::String(output.into())),
        ..Item::default()
    }
}
