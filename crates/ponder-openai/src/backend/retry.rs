//! Retry decisions: which failures are retried, how long to wait, and whether a 4xx means the
//! server does not serve `n > 1`.

use std::time::Duration;

use ponder_core::{BackendError, SeededRng};

/// Exponential backoff with full jitter: retry `retry` (0 for the first retry) waits a uniform
/// random time in `[0, min(max, base · 2^retry))`.
pub(crate) fn backoff_delay(
    rng: &mut SeededRng,
    retry: u32,
    base: Duration,
    max: Duration,
) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    let cap = base.saturating_mul(factor).min(max);
    cap.mul_f64(rng.next_f64())
}

/// How long to wait before retrying after `error`: the server's `Retry-After` on 429 and 503,
/// else the jittered backoff.
pub(crate) fn retry_wait(
    error: &BackendError,
    rng: &mut SeededRng,
    retry: u32,
    base: Duration,
    max: Duration,
) -> Duration {
    match error {
        BackendError::Status {
            status: 429 | 503,
            retry_after: Some(after),
            ..
        } => *after,
        _ => backoff_delay(rng, retry, base, max),
    }
}

/// `Retry-After` in seconds (an integer, or a decimal some servers send). HTTP dates are not
/// honoured: the backoff applies.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

/// Whether a failure of a request with `n > 1` says the server serves only one choice: a 4xx
/// (other than 408/429) whose message names the parameter `n` or says "one completion choice"
/// (llama.cpp: "Only one completion choice is allowed").
pub(crate) fn rejects_n(error: &BackendError) -> bool {
    let BackendError::Status {
        status, message, ..
    } = error
    else {
        return false;
    };
    if !(400..500).contains(status) || *status == 408 || *status == 429 {
        return false;
    }
    let lower = message.to_lowercase();
    if lower.contains("one completion choice") || lower.contains("one choice") {
        return true;
    }
    // `n` as a word of its own: "'n'", "`n`", "n must be 1", "param n", "n > 1".
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word == "n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> BackendError {
        BackendError::Status {
            endpoint: "e".into(),
            status: code,
            message: message.into(),
            retry_after: None,
        }
    }

    #[test]
    fn retry_classification() {
        fn check(e: BackendError, retryable: bool) {
            assert_eq!(e.is_retryable(), retryable, "{e}");
        }
        for code in [408, 429, 500, 502, 503, 504] {
            check(status(code, ""), true);
        }
        for code in [400, 401, 403, 404, 413, 422] {
            check(status(code, ""), false);
        }
        check(
            BackendError::Connect {
                endpoint: "e".into(),
                message: "refused".into(),
            },
            true,
        );
        check(
            BackendError::Timeout {
                endpoint: "e".into(),
                after: Duration::from_secs(1),
            },
            true,
        );
        check(
            BackendError::Protocol {
                endpoint: "e".into(),
                message: "bad json".into(),
            },
            true,
        );
        check(BackendError::Deadline(Duration::from_secs(1)), false);
        check(BackendError::Cancelled, false);
    }

    #[test]
    fn backoff_stays_within_its_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut rng = SeededRng::new(1);
        for retry in 0..40 {
            let cap = (base * 2u32.saturating_pow(retry.min(20))).min(max);
            for _ in 0..50 {
                let d = backoff_delay(&mut rng, retry, base, max);
                assert!(d <= cap, "retry {retry}: {d:?} > {cap:?}");
            }
        }
        // The jitter is spread, not stuck at one end.
        let mut rng = SeededRng::new(2);
        let delays: Vec<Duration> = (0..200)
            .map(|_| backoff_delay(&mut rng, 10, base, max))
            .collect();
        assert!(delays.iter().any(|d| *d < max / 4));
        assert!(delays.iter().any(|d| *d > max * 3 / 4));
        // Same seed, same delays.
        let a: Vec<Duration> = {
            let mut r = SeededRng::new(9);
            (0..5)
                .map(|k| backoff_delay(&mut r, k, base, max))
                .collect()
        };
        let b: Vec<Duration> = {
            let mut r = SeededRng::new(9);
            (0..5)
                .map(|k| backoff_delay(&mut r, k, base, max))
                .collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn retry_after_overrides_backoff_on_429_and_503_only() {
        let mut rng = SeededRng::new(1);
        let base = Duration::from_secs(5);
        let with_after = |code| BackendError::Status {
            endpoint: "e".into(),
            status: code,
            message: String::new(),
            retry_after: Some(Duration::ZERO),
        };
        assert_eq!(
            retry_wait(&with_after(429), &mut rng, 3, base, base),
            Duration::ZERO
        );
        assert_eq!(
            retry_wait(&with_after(503), &mut rng, 3, base, base),
            Duration::ZERO
        );
        let d = retry_wait(&with_after(500), &mut rng, 3, base, base);
        assert!(d <= base);
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn n_rejection_messages() {
        fn check(code: u16, message: &str, expected: bool) {
            assert_eq!(
                rejects_n(&status(code, message)),
                expected,
                "{code} {message}"
            );
        }
        check(400, "Only one completion choice is allowed", true);
        check(400, "Invalid 'n': integer above maximum value", true);
        check(422, "n must be 1 when using greedy sampling", true);
        check(400, "unsupported parameter (param `n`)", true);
        check(400, "max_tokens is too large", false);
        check(400, "unknown field: n_probs", false);
        check(429, "n too large, slow down", false);
        check(500, "n must be 1", false);
        assert!(!rejects_n(&BackendError::Cancelled));
    }
}
