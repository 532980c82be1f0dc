//! The item record that flows between stages, and the pipeline and stage types.
//!
//! Every stage maps a list of [`Item`]s to a list of items. An item keeps the upstream field
//! names on the wire (`input`, `output`, `plan`, `feedback`, `score`, `metadata`, `name`, plus
//! unknown keys in `extra`) with stricter types: `metadata` is always a map (a string
//! `metadata` on input is moved to `motivation`), `score` is finite or absent, and every item has
//! a stable `id`, a [`Provenance`] and an [`ItemStatus`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The kind of pipeline a strategy is used in; it decides which item fields matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineType {
    /// Items carry plans (`plan`, `feedback`, `score`).
    Planning,
    /// Items carry tool calls: `input` = task, `output` = query then result, `motivation`, `name`.
    ToolUse,
    /// Items carry an agent's rendered input and output.
    AgentExecution,
    /// Extensions and the generic judge pipeline.
    Custom,
}

impl PipelineType {
    /// The lower-case string form (`planning`, `tool_use`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineType::Planning => "planning",
            PipelineType::ToolUse => "tool_use",
            PipelineType::AgentExecution => "agent_execution",
            PipelineType::Custom => "custom",
        }
    }
}

impl fmt::Display for PipelineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stage a strategy belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageType {
    /// Produce alternative candidates.
    Search,
    /// Refine or transform candidates.
    Editing,
    /// Attach a numeric score.
    Scoring,
    /// Down-select or merge.
    Selection,
    /// Extensions.
    Custom,
}

impl StageType {
    /// The lower-case string form (`search`, `editing`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            StageType::Search => "search",
            StageType::Editing => "editing",
            StageType::Scoring => "scoring",
            StageType::Selection => "selection",
            StageType::Custom => "custom",
        }
    }
}

impl fmt::Display for StageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an item came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// The stage that produced or last changed the item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageType>,
    /// The canonical `_type` of that stage's strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The LLM (its name in `llms`) that wrote the item's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<String>,
    /// The sampling temperature of that call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// LLM calls the last change took (1 + re-asks); 0 for items no LLM touched.
    pub attempts: u32,
    /// The item this one was derived from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
}

/// Whether an item is a usable candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ItemStatus {
    /// A usable candidate.
    #[default]
    Ok,
    /// The item's LLM or tool call failed; it never competes in scoring or selection.
    Error { message: String },
    /// No attempt gave a parsable reply; the item stays a candidate (unscored, unchanged).
    ParseFailed { stage: StageType, raw_reply: String },
}

/// One candidate: a plan, a tool call or an agent output.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Item {
    /// Stable identifier, assigned at creation and kept by every stage.
    pub id: u64,
    /// Input of the function or pipeline (structured values stay structured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Output of the function or pipeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// A plan for downstream agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Feedback from an editing stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// Quality score; `None` = unscored. Always finite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Extra data (flags such as `marker_missing`, `selection_fallback`, judge reasoning).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Why a tool is called (tool-use pipelines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motivation: Option<String>,
    /// Identifier; in tool-use pipelines the tool name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unknown keys, kept as they came.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    pub provenance: Provenance,
    pub status: ItemStatus,
}

/// The wire form accepted on input: `metadata` may be any value.
#[derive(Deserialize)]
struct ItemWire {
    #[serde(default)]
    id: u64,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    feedback: Option<String>,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    motivation: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    provenance: Provenance,
    #[serde(default)]
    status: ItemStatus,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = ItemWire::deserialize(deserializer)?;
        let mut motivation = w.motivation;
        let metadata = match w.metadata {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            // Upstream's tool-use pipeline keeps the motivation string in `metadata`.
            Some(Value::String(s)) => {
                motivation.get_or_insert(s);
                Map::new()
            }
            Some(other) => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        Ok(Item {
            id: w.id,
            input: w.input,
            output: w.output,
            plan: w.plan,
            feedback: w.feedback,
            score: w.score.filter(|s| s.is_finite()),
            metadata,
            motivation,
            name: w.name,
            extra: w.extra,
            provenance: w.provenance,
            status: w.status,
        })
    }
}

impl Item {
    /// An empty item with identifier `id`.
    pub fn new(id: u64) -> Self {
        Item {
            id,
            ..Item::default()
        }
    }

    /// Whether the item is a candidate (not an error item).
    pub fn is_candidate(&self) -> bool {
        !matches!(self.status, ItemStatus::Error { .. })
    }

    /// Sets a boolean flag in `metadata` (`marker_missing`, `edit_failed`, …).
    pub fn flag(&mut self, name: &str) {
        self.metadata.insert(name.to_string(), Value::Bool(true));
    }

    /// Whether a boolean flag is set in `metadata`.
    pub fn has_flag(&self, name: &str) -> bool {
        self.metadata.get(name) == Some(&Value::Bool(true))
    }

    /// `input` rendered as text for prompts (empty when absent).
    pub fn input_text(&self) -> String {
        self.input.as_ref().map(render_value).unwrap_or_default()
    }

    /// `output` rendered as text for prompts (empty when absent).
    pub fn output_text(&self) -> String {
        self.output.as_ref().map(render_value).unwrap_or_default()
    }
}

/// Renders a JSON value for a prompt: strings as they are, `null` as nothing, anything else as
/// pretty JSON.
pub fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    }
}

/// Flags a stage may set in `metadata`.
pub mod flags {
    /// A content marker was missing; the whole cleaned reply was used.
    pub const MARKER_MISSING: &str = "marker_missing";
    /// An edit or feedback call failed; the item is unchanged.
    pub const EDIT_FAILED: &str = "edit_failed";
    /// A selector could not parse a choice and fell back to the best-scored or first item.
    pub const SELECTION_FALLBACK: &str = "selection_fallback";
    /// A merger could not parse a merged output and returned an item unchanged.
    pub const MERGE_FALLBACK: &str = "merge_fallback";
    /// Kept by `threshold_selection`'s `min_keep` although below the threshold.
    pub const BELOW_THRESHOLD: &str = "below_threshold";
    /// The downstream agent ran without a plan (the selected plan was empty).
    pub const NO_PLAN: &str = "no_plan";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_metadata_moves_to_motivation_and_unknown_keys_round_trip() {
        let item: Item = serde_json::from_value(serde_json::json!({
            "input": "find docs", "metadata": "the user wants sources", "colour": "red",
            "score": 3.5
        }))
        .expect("parses");
        assert_eq!(item.motivation.as_deref(), Some("the user wants sources"));
        assert!(item.metadata.is_empty());
        assert_eq!(item.extra.get("colour"), Some(&serde_json::json!("red")));
        let back = serde_json::to_value(&item).expect("serialises");
        assert_eq!(back["colour"], "red");
        assert_eq!(back["score"], 3.5);
    }

    #[test]
    fn enums_use_lower_case_names() {
        assert_eq!(PipelineType::ToolUse.to_string(), "tool_use");
        assert_eq!(StageType::Selection.to_string(), "selection");
        let p: PipelineType = serde_json::from_str("\"agent_execution\"").expect("parses");
        assert_eq!(p, PipelineType::AgentExecution);
    }

    #[test]
    fn render_value_keeps_strings_and_pretty_prints_structures() {
        assert_eq!(render_value(&serde_json::json!("x")), "x");
        assert_eq!(render_value(&Value::Null), "");
        assert_eq!(
            render_value(&serde_json::json!({"a": 1})),
            "{\n  \"a\": 1\n}"
        );
    }
}
