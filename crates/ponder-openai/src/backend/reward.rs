//! Process reward models behind vLLM's pooling API: rendering a question and its steps into the
//! PRM's input, and reading one probability of a good step per row.

use ponder_core::RewardRequest;

use crate::config::{RewardConfig, RewardFormat, QWEN_MATH_SYSTEM_PROMPT};
use crate::wire::PoolingData;

/// Qwen2.5-Math-PRM's step separator and terminator.
pub(crate) const QWEN_STEP_TAG: &str = "<extra_0>";
/// Math-Shepherd's step tag (a space, then `ки`).
pub(crate) const SHEPHERD_STEP_TAG: &str = " ки";

/// The PRM input for one trajectory. Steps are trimmed at their end so the tag follows the
/// step's last character, as in the models' training data.
pub(crate) fn render(config: &RewardConfig, request: &RewardRequest) -> String {
    match config.format {
        RewardFormat::Qwen => {
            // Qwen2.5's chat template for [system, user, assistant] without a generation prompt.
            let system = config
                .system_prompt
                .as_deref()
                .unwrap_or(QWEN_MATH_SYSTEM_PROMPT);
            let mut steps = String::new();
            for step in &request.steps {
                steps.push_str(step.trim_end());
                steps.push_str(QWEN_STEP_TAG);
            }
            format!(
                "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n\
                 <|im_start|>assistant\n{steps}<|im_end|>\n",
                request.question
            )
        }
        RewardFormat::MathShepherd => {
            let steps: Vec<String> = request
                .steps
                .iter()
                .map(|s| format!("{}{SHEPHERD_STEP_TAG}", s.trim_end()))
                .collect();
            format!("{} {}", request.question, steps.join("\n"))
        }
    }
}

/// P(good step) for each row of a STEP-pooled output. A row that is not already a probability
/// pair (both in [0, 1], summing to 1 within 1e-3) is soft-maxed. The number of rows must equal
/// the number of steps.
pub(crate) fn step_rewards(
    format: RewardFormat,
    data: PoolingData,
    n_steps: usize,
) -> Result<Vec<f64>, String> {
    let rows = match data {
        PoolingData::Matrix(rows) => rows,
        // One step pooled into a flat pair.
        PoolingData::Vector(v) if n_steps == 1 && v.len() == 2 => vec![v],
        PoolingData::Vector(v) => {
            return Err(format!(
                "expected one row per step tag, got a flat vector of {} numbers",
                v.len()
            ))
        }
        PoolingData::Encoded(_) => return Err("base64-encoded output is not supported".into()),
    };
    if rows.len() != n_steps {
        return Err(format!(
            "{} rows for {n_steps} steps (a step may contain the step tag, or the input was \
             truncated)",
            rows.len()
        ));
    }
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let &[a, b] = row.as_slice() else {
                return Err(format!("row {i} has {} values, expected 2", row.len()));
            };
            if !(a.is_finite() && b.is_finite()) {
                return Err(format!("row {i} is not finite: [{a}, {b}]"));
            }
            let is_pair = (0.0..=1.0).contains(&a)
                && (0.0..=1.0).contains(&b)
                && ((a + b) - 1.0).abs() <= 1e-3;
            let (p0, p1) = if is_pair {
                (a, b)
            } else {
                // softmax([a, b]) without overflow.
                let p1 = 1.0 / (1.0 + (a - b).exp());
                (1.0 - p1, p1)
            };
            Ok(match format {
                RewardFormat::Qwen => p1,
                RewardFormat::MathShepherd => p0,
            })
        })
        .collect()
}

/// Splits the batch's prompt tokens over its inputs in proportion to their length (the pooling
/// API reports one total); the parts add up to the total exactly.
pub(crate) fn split_tokens(total: u64, input_lens: &[usize]) -> Vec<u64> {
    let sum: u128 = input_lens.iter().map(|&l| l as u128).sum();
    if input_lens.is_empty() {
        return Vec::new();
    }
    let mut parts: Vec<u64> = input_lens
        .iter()
        .map(|&l| {
            (u128::from(total) * l as u128)
                .checked_div(sum)
                .map_or(0, |p| p as u64)
        })
        .collect();
    let given: u64 = parts.iter().sum();
    if let Some(last) = parts.last_mut() {
        *last += total - given;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(format: RewardFormat) -> RewardConfig {
        RewardConfig {
            endpoints: vec![],
            path: "/pooling".into(),
            model: "prm".into(),
            format,
            system_prompt: None,
            task: None,
        }
    }

    fn request() -> RewardRequest {
        RewardRequest {
            question: "1+1?".into(),
            steps: vec!["One plus one.\n\n".into(), "It is 2.".into()],
        }
    }

    #[test]
    fn qwen_input_uses_the_chat_template_and_extra_0() {
        assert_eq!(
            render(&config(RewardFormat::Qwen), &request()),
            "<|im_start|>system\nPlease reason step by step, and put your final answer within \
             \\boxed{}.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n\
             One plus one.<extra_0>It is 2.<extra_0><|im_end|>\n"
        );
    }

    #[test]
    fn math_shepherd_input_tags_every_step() {
        assert_eq!(
            render(&config(RewardFormat::MathShepherd), &request()),
            "1+1? One plus one. ки\nIt is 2. ки"
        );
    }

    #[test]
    fn rows_are_read_per_format() {
        let rows = PoolingData::Matrix(vec![vec![0.1, 0.9], vec![0.75, 0.25]]);
        assert_eq!(
            step_rewards(RewardFormat::Qwen, rows.clone(), 2),
            Ok(vec![0.9, 0.25])
        );
        assert_eq!(
            step_rewards(RewardFormat::MathShepherd, rows, 2),
            Ok(vec![0.1, 0.75])
        );
    }

    #[test]
    fn logit_rows_are_softmaxed() {
        // softmax([0, ln 3]) = [1/4, 3/4]
        let rows = PoolingData::Matrix(vec![vec![0.0, 3f64.ln()], vec![2.0, 2.0]]);
        let r = step_rewards(RewardFormat::Qwen, rows, 2).expect("reads");
        assert!((r[0] - 0.75).abs() < 1e-12, "{r:?}");
        assert!((r[1] - 0.5).abs() < 1e-12, "{r:?}");
        // A pair summing to 1 but outside [0, 1] is not a probability pair: softmax([1.5, -0.5]).
        let r = step_rewards(
            RewardFormat::MathShepherd,
            PoolingData::Matrix(vec![vec![1.5, -0.5]]),
            1,
        )
        .expect("reads");
        let expected = 1.0 / (1.0 + (-2f64).exp());
        assert!((r[0] - expected).abs() < 1e-12);
        // Within 1e-3 of 1 is taken as is.
        assert_eq!(
            step_rewards(
                RewardFormat::Qwen,
                PoolingData::Matrix(vec![vec![0.3, 0.7005]]),
                1
            ),
            Ok(vec![0.7005])
        );
    }

    #[test]
    fn row_count_must_match_steps() {
        let rows = PoolingData::Matrix(vec![vec![0.1, 0.9]]);
        assert!(step_rewards(RewardFormat::Qwen, rows, 2).is_err());
        assert!(step_rewards(
            RewardFormat::Qwen,
            PoolingData::Matrix(vec![vec![0.1, 0.2, 0.7]]),
            1
        )
        .is_err());
        assert_eq!(
            step_rewards(RewardFormat::Qwen, PoolingData::Vector(vec![0.2, 0.8]), 1),
            Ok(vec![0.8])
        );
        assert!(step_rewards(RewardFormat::Qwen, PoolingData::Vector(vec![0.2, 0.8]), 2).is_err());
        assert!(step_rewards(RewardFormat::Qwen, PoolingData::Encoded("AAAA".into()), 1).is_err());
    }

    #[test]
    fn token_split_adds_up() {
        assert_eq!(split_tokens(10, &[1, 1]), vec![5, 5]);
        assert_eq!(split_tokens(10, &[1, 2]), vec![3, 7]);
        assert_eq!(split_tokens(7, &[5]), vec![7]);
        assert_eq!(split_tokens(0, &[]), Vec::<u64>::new());
        assert_eq!(split_tokens(3, &[0, 0]), vec![0, 3]);
    }
}
