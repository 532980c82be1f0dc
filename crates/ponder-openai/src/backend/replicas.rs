//! Choosing among replica endpoints: least outstanding requests among healthy endpoints, and
//! ejection of an endpoint after consecutive retryable failures.
//!
//! The decisions are pure functions of the endpoints' state and a caller-supplied `now`, so they
//! are tested without sleeping; [`ReplicaPool`] wraps them with a lock and a lease that counts
//! outstanding requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the pool knows about one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EndpointState {
    /// Requests sent and not yet finished (their stream still open).
    pub outstanding: u32,
    /// Retryable failures since the last success.
    pub consecutive_failures: u32,
    /// When the endpoint was last ejected; it is healthy again `eject_for` later.
    pub ejected_at: Option<Instant>,
}

impl EndpointState {
    fn healthy(&self, now: Instant, eject_for: Duration) -> bool {
        self.ejected_at
            .is_none_or(|at| now.saturating_duration_since(at) >= eject_for)
    }
}

/// The endpoint to use now: the healthy one with the fewest outstanding requests (ties go to
/// the first at or after `rotate`, so idle replicas share the load); when every endpoint is
/// ejected, the one ejected longest ago.
pub(crate) fn choose(
    states: &[EndpointState],
    now: Instant,
    eject_for: Duration,
    rotate: usize,
) -> usize {
    let n = states.len();
    let mut best: Option<usize> = None;
    for k in 0..n {
        let i = (rotate + k) % n;
        let s = &states[i];
        if s.healthy(now, eject_for) && best.is_none_or(|b| s.outstanding < states[b].outstanding) {
            best = Some(i);
        }
    }
    best.unwrap_or_else(|| (0..n).min_by_key(|&i| states[i].ejected_at).unwrap_or(0))
}

/// Books a retryable failure; the endpoint is ejected once `eject_after` failures are
/// consecutive. An endpoint back from ejection that fails again is ejected again at once (its
/// count is still at the threshold).
pub(crate) fn record_failure(state: &mut EndpointState, now: Instant, eject_after: u32) {
    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    if state.consecutive_failures >= eject_after {
        state.ejected_at = Some(now);
    }
}

/// Books an answer from the endpoint (a success, or an error that is the request's fault).
pub(crate) fn record_success(state: &mut EndpointState) {
    state.consecutive_failures = 0;
    state.ejected_at = None;
}

/// The endpoints of one service (generation or reward) and their state.
#[derive(Debug)]
pub(crate) struct ReplicaPool {
    /// Full URLs or base URLs, as the caller needs them.
    urls: Vec<Arc<str>>,
    /// Names for messages (the configured base URLs).
    names: Vec<Arc<str>>,
    states: Mutex<Vec<EndpointState>>,
    rotate: AtomicUsize,
    eject_after: u32,
    eject_for: Duration,
}

impl ReplicaPool {
    pub(crate) fn new(
        urls: Vec<String>,
        names: Vec<String>,
        eject_after: u32,
        eject_for: Duration,
    ) -> Self {
        let n = urls.len();
        ReplicaPool {
            urls: urls.into_iter().map(Arc::from).collect(),
            names: names.into_iter().map(Arc::from).collect(),
            states: Mutex::new(vec![EndpointState::default(); n]),
            rotate: AtomicUsize::new(0),
            eject_after,
            eject_for,
        }
    }

    fn states(&self) -> MutexGuard<'_, Vec<EndpointState>> {
        // The state is counters only; a panic elsewhere cannot leave it inconsistent.
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Picks an endpoint and counts a request on it until the lease is dropped.
    pub(crate) fn lease(self: &Arc<Self>) -> Lease {
        let rotate = self.rotate.fetch_add(1, Ordering::Relaxed);
        let mut states = self.states();
        let idx = choose(&states, Instant::now(), self.eject_for, rotate);
        states[idx].outstanding += 1;
        Lease {
            pool: self.clone(),
            idx,
        }
    }

    pub(crate) fn record_failure(&self, idx: usize) {
        record_failure(&mut self.states()[idx], Instant::now(), self.eject_after);
    }

    pub(crate) fn record_success(&self, idx: usize) {
        record_success(&mut self.states()[idx]);
    }

    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<EndpointState> {
        self.states().clone()
    }
}

/// One request's hold on an endpoint; dropping it ends the request's count.
#[derive(Debug)]
pub(crate) struct Lease {
    pool: Arc<ReplicaPool>,
    idx: usize,
}

impl Lease {
    pub(crate) fn idx(&self) -> usize {
        self.idx
    }
    pub(crate) fn url(&self) -> &str {
        &self.pool.urls[self.idx]
    }
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.pool.names[self.idx]
    }
    /// Books a retryable failure noticed after the attempt had succeeded (a stream cut).
    pub(crate) fn record_failure(&self) {
        self.pool.record_failure(self.idx);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut states = self.pool.states();
        states[self.idx].outstanding = states[self.idx].outstanding.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EJECT: Duration = Duration::from_secs(10);

    fn state(outstanding: u32) -> EndpointState {
        EndpointState {
            outstanding,
            ..Default::default()
        }
    }

    #[test]
    fn least_outstanding_wins_and_ties_rotate() {
        let now = Instant::now();
        let s = [state(3), state(1), state(2)];
        for r in 0..3 {
            assert_eq!(choose(&s, now, EJECT, r), 1);
        }
        let idle = [state(0), state(0), state(0)];
        let picks: Vec<usize> = (0..4).map(|r| choose(&idle, now, EJECT, r)).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
    }

    #[test]
    fn ejected_endpoints_are_skipped_until_their_time_is_up() {
        let now = Instant::now();
        let mut s = [state(0), state(5)];
        for _ in 0..2 {
            record_failure(&mut s[0], now, 3);
        }
        assert_eq!(
            s[0].ejected_at, None,
            "two failures do not eject at threshold 3"
        );
        assert_eq!(choose(&s, now, EJECT, 0), 0);
        record_failure(&mut s[0], now, 3);
        assert_eq!(s[0].ejected_at, Some(now));
        assert_eq!(
            choose(&s, now, EJECT, 0),
            1,
            "busy but healthy beats ejected"
        );
        assert_eq!(choose(&s, now + Duration::from_secs(9), EJECT, 0), 1);
        assert_eq!(choose(&s, now + EJECT, EJECT, 0), 0, "back after eject_for");
        // Back from ejection, one more failure ejects it again.
        record_failure(&mut s[0], now + EJECT, 3);
        assert_eq!(choose(&s, now + EJECT, EJECT, 0), 1);
        record_success(&mut s[0]);
        assert_eq!(s[0], state(0));
    }

    #[test]
    fn all_ejected_uses_the_one_ejected_longest_ago() {
        let t0 = Instant::now();
        let mut s = [state(0), state(0), state(0)];
        record_failure(&mut s[0], t0 + Duration::from_secs(2), 1);
        record_failure(&mut s[1], t0, 1);
        record_failure(&mut s[2], t0 + Duration::from_secs(1), 1);
        for r in 0..3 {
            assert_eq!(choose(&s, t0 + Duration::from_secs(3), EJECT, r), 1);
        }
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let now = Instant::now();
        let mut s = state(0);
        record_failure(&mut s, now, 3);
        record_failure(&mut s, now, 3);
        record_success(&mut s);
        record_failure(&mut s, now, 3);
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.ejected_at, None);
    }

    #[test]
    fn leases_count_outstanding_requests() {
        let pool = Arc::new(ReplicaPool::new(
            vec!["a".into(), "b".into()],
            vec!["a".into(), "b".into()],
            3,
            EJECT,
        ));
        let l1 = pool.lease();
        let l2 = pool.lease();
        assert_ne!(l1.idx(), l2.idx(), "the idle endpoint is chosen");
        let l3 = pool.lease();
        assert_eq!(
            pool.snapshot().iter().map(|s| s.outstanding).sum::<u32>(),
            3
        );
        drop((l1, l2, l3));
        assert!(pool.snapshot().iter().all(|s| s.outstanding == 0));
    }
}
