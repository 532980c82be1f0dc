//! Token sampling from logits, and the log-probabilities reported with each token.
//!
//! Pure Rust over a logits slice, so it is tested without a model.
//!
//! * Log-probabilities are the log-softmax of the model's raw logits (temperature 1, no
//!   filtering), as vLLM reports them by default; the top-k alternatives come from the same
//!   distribution, most likely first, ties broken by the lower token id.
//! * Sampling applies, in order: banned tokens (end-of-generation tokens before `min_tokens`),
//!   temperature, top-k, top-p, min-p (vLLM's order), then draws from the renormalised
//!   distribution with a [`SeededRng`]. Temperature 0 is greedy (argmax, lowest id on ties).

use ponder_core::SeededRng;

/// Sampling settings of one sequence. Defaults: temperature 1, no top-k/top-p/min-p.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f64,
    pub top_k: Option<u32>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
        }
    }
}

/// A chosen token with its log-probability and the top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Log-probability of `token` under the raw model distribution.
    pub logprob: f64,
    /// The `k` most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f64)>,
}

/// Log-softmax of `logits`, in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max: f64 = logits
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
        .into();
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let log_z = max + sum.ln();
    logits.iter().map(|&x| f64::from(x) - log_z).collect()
}

/// The `k` largest entries of `values` as (index, value), largest first, lower index on ties.
pub fn top_k(values: &[f64], k: usize) -> Vec<(u32, f64)> {
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &u32, b: &u32| {
        values[*b as usize]
            .partial_cmp(&values[*a as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx.into_iter().map(|i| (i, values[i as usize])).collect()
}

/// Picks the next token of one sequence.
///
/// `banned` tokens are never chosen (unless every token is banned, then the ban is ignored).
pub fn sample(
    config: &SamplerConfig,
    rng: &mut SeededRng,
    logits: &[f32],
    top_logprobs: u8,
    banned: &[u32],
) -> Sampled {
    let logprobs = log_softmax(logits);
    let top = top_k(&logprobs, usize::from(top_logprobs));
    let allowed = |i: usize| !banned.contains(&(i as u32));
    let any_allowed = (0..logits.len()).any(allowed);
    let allowed = |i: usize| !any_allowed || allowed(i);

    let token = if config.temperature <= 0.0 {
        argmax(logits, allowed)
    } else {
        draw(config, rng, logits, allowed)
    };
    Sampled {
        token,
        logprob: logprobs[token as usize],
        top,
    }
}

fn argmax(logits: &[f32], allowed: impl Fn(usize) -> bool) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if !allowed(i) || x.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

fn draw(
    config: &SamplerConfig,
    rng: &mut SeededRng,
    logits: &[f32],
    allowed: impl Fn(usize) -> bool,
) -> u32 {
    // Candidates as (token, scaled logit), most likely first.
    let t = config.temperature;
    let mut cand: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .filter(|&(i, x)| allowed(i) && !x.is_nan())
        .map(|(i, &x)| (i as u32, f64::from(x) / t))
        .collect();
    if cand.is_empty() {
        return argmax(logits, |_| true);
    }
    let by_value = |a: &(u32, f64), b: &(u32, f64)| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    };
    if let Some(k) = config.top_k {
        let k = (k as usize).clamp(1, cand.len());
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, by_value);
            cand.truncate(k);
        }
    }
    cand.sort_unstable_by(by_value);
    let max = cand[0].1;
    let mut probs: Vec<f64> = cand.iter().map(|&(_, x)| (x - max).exp()).collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    if let Some(top_p) = config.top_p.filter(|&p| p < 1.0) {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    if let Some(min_p) = config.min_p.filter(|&p| p > 0.0) {
        let floor = probs[0] * min_p;
        let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
        probs.truncate(keep);
    }
    let z: f64 = probs.iter().sum();
    let mut u = rng.next_f64() * z;
    for (i, p) in probs.iter().enumerate() {
        if u < *p {
            return cand[i].0;
        }
        u -= p;
    }
    cand[probs.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_by_hand() {
        // logits (0, ln 3): probabilities 1/4 and 3/4.
        let lp = log_softmax(&[0.0, 3.0f32.ln()]);
        assert!((lp[0] - 0.25f64.ln()).abs() < 1e-6);
        assert!((lp[1] - 0.75f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_id() {
        let v = [0.1, 0.5, 0.5, -1.0, 0.3];
        let ids: Vec<u32> = top_k(&v, 3).into_iter().map(|(i, _)| i).collect();
        assert_eq!(ids, vec![1, 2, 4]);
        assert!(top_k(&v, 0).is_empty());
        assert_eq!(top_k(&v, 10).len(), 5);
    }

    #[test]
    fn greedy_takes_argmax_and_reports_raw_logprob() {
        let cfg = SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        };
        let mut rng = SeededRng::new(1);
        let s = sample(&cfg, &mut rng, &[1.0, 3.0, 2.0], 2, &[]);
        assert_eq!(s.token, 1);
        let lp = log_softmax(&[1.0, 3.0, 2.0]);
        assert!((s.logprob - lp[1]).abs() < 1e-12);
        assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        // Banned tokens are skipped.
        assert_eq!(sample(&cfg, &mut rng, &[1.0, 3.0, 2.0], 0, &[1]).token, 2);
        // Everything banned: the ban is ignored rather than failing.
        assert_eq!(sample(&cfg, &mut rng, &[1.0, 3.0], 0, &[0, 1]).token, 1);
    }

    #[test]
    fn filters_restrict_the_draw() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let mut rng = SeededRng::new(7);
        let k1 = SamplerConfig {
            top_k: Some(1),
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(sample(&k1, &mut rng, &logits, 0, &[]).token, 3);
        }
        // Probabilities ∝ e^0..e^3 ≈ .032 .087 .237 .644: top_p 0.8 keeps {3, 2}.
        let p = SamplerConfig {
            top_p: Some(0.8),
            ..Default::default()
        };
        let mut seen = [0u32; 4];
        for _ in 0..400 {
            seen[sample(&p, &mut rng, &logits, 0, &[]).token as usize] += 1;
        }
        assert_eq!(seen[0] + seen[1], 0);
        assert!(seen[2] > 50 && seen[3] > 200, "{seen:?}");
        // min_p 0.3 keeps tokens with p ≥ 0.3·0.644 = 0.193: {3, 2}.
        let m = SamplerConfig {
            min_p: Some(0.3),
            ..Default::default()
        };
        for _ in 0..200 {
            assert!(sample(&m, &mut rng, &logits, 0, &[]).token >= 2);
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = SamplerConfig::default();
        let draws = |seed| {
            let mut rng = SeededRng::new(seed);
            (0..20)
                .map(|_| sample(&cfg, &mut rng, &logits, 0, &[]).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
    }
}
