//! The built-in strategies (spec §5), their default prompt templates and shared helpers.
//!
//! Search: `single_shot_multi_plan`, `multi_llm_plan`, `multi_query_retrieval_search`,
//! `multi_llm_generation`. Editing: `llm_as_a_judge_editor`, `iterative_plan_refinement`,
//! `motivation_aware_editing`. Scoring: `llm_based_plan_scoring`, `llm_based_agent_scoring`,
//! `motivation_aware_scoring`. Selection: `best_of_n_selection`, `threshold_selection`,
//! `llm_based_plan_selection`, `llm_based_agent_output_selection`,
//! `llm_based_agent_output_merging`, `llm_judge_selection`.

pub mod editing;
pub mod scoring;
pub mod search;
pub mod selection;
pub mod templates;

use ponder_core::BackendError;

use crate::error::StageError;
use crate::item::{Item, ItemStatus, StageType};
use crate::llm::Llm;
use crate::registry::Registry;
use crate::strategy::{DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_REASK};

/// Registers every built-in strategy in `r`.
pub fn register(r: &mut Registry) {
    search::register(r);
    editing::register(r);
    scoring::register(r);
    selection::register(r);
}

pub(crate) fn default_max_reask() -> u32 {
    DEFAULT_MAX_REASK
}
pub(crate) fn default_max_concurrency() -> usize {
    DEFAULT_MAX_CONCURRENCY
}

/// Sets an item's provenance after an LLM wrote or changed it.
pub(crate) fn stamp(
    item: &mut Item,
    stage: StageType,
    kind: &str,
    llm: &Llm,
    temperature: Option<f64>,
    attempts: u32,
) {
    item.provenance.stage = Some(stage);
    item.provenance.strategy = Some(kind.to_string());
    item.provenance.llm = Some(llm.name().to_string());
    item.provenance.temperature = Some(temperature.unwrap_or(llm.temperature()));
    item.provenance.attempts = attempts;
}

/// Marks `item` as failed by a call error.
pub(crate) fn fail(item: &mut Item, llm: &Llm, error: &BackendError) {
    item.status = ItemStatus::Error {
        message: format!("llm `{}`: {error}", llm.name()),
    };
}

/// Result of a search stage: the candidates it produced, or a stage error when it produced
/// none (`AllFailed` when calls failed, else `NoCandidates`).
pub(crate) fn finish_search(kind: &str, items: Vec<Item>) -> Result<Vec<Item>, StageError> {
    if items.iter().any(Item::is_candidate) {
        return Ok(items);
    }
    let messages: Vec<String> = items
        .iter()
        .filter_map(|i| match &i.status {
            ItemStatus::Error { message } => Some(message.clone()),
            _ => None,
        })
        .collect();
    if messages.is_empty() {
        Err(StageError::NoCandidates {
            strategy: kind.to_string(),
        })
    } else {
        Err(StageError::AllFailed {
            strategy: kind.to_string(),
            messages,
        })
    }
}

/// The linear temperature ramp: `t_i = min + i/(n−1)·(max − min)`; `[min]` for `n = 1`.
pub fn temperature_ramp(n: usize, min: f64, max: f64) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![min],
        _ => (0..n)
            .map(|i| min + (i as f64) / ((n - 1) as f64) * (max - min))
            .collect(),
    }
}

/// The fallback pick of a selector: the highest existing score (first on ties), else the first
/// candidate.
pub(crate) fn fallback_pick(candidates: &[Item]) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (i, item) in candidates.iter().enumerate() {
        if let Some(s) = item.score {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// The corrective re-ask message for a value marker.
pub(crate) fn correction(marker: &str, value: &str) -> String {
    format!(
        "Your reply could not be read. Answer again in the required format: a line \
         `{marker}: {value}`."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps() {
        assert_eq!(temperature_ramp(1, 0.5, 1.0), vec![0.5]);
        assert_eq!(temperature_ramp(2, 0.5, 1.0), vec![0.5, 1.0]);
        // 0.5 + i/3 · 0.5 for i = 0..3
        let r = temperature_ramp(4, 0.5, 1.0);
        let want = [0.5, 0.5 + 0.5 / 3.0, 0.5 + 1.0 / 3.0, 1.0];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{r:?}");
        }
    }

    #[test]
    fn fallback_pick_prefers_the_best_score_then_the_first() {
        let mut a = Item::new(1);
        let mut b = Item::new(2);
        let c = Item::new(3);
        assert_eq!(fallback_pick(&[a.clone(), b.clone(), c.clone()]), 0);
        a.score = Some(3.0);
        b.score = Some(7.0);
        assert_eq!(fallback_pick(&[a, b, c]), 1);
    }
}
