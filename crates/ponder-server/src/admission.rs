//! Admission control: a bound on requests running at once with a short, bounded queue in front
//! of it. A request takes one permit before its work starts and holds it until its response is
//! complete, so a strategy is never rejected half-way through its fan-out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Every slot is taken and the queue is full.
    QueueFull,
    /// The request waited in the queue for the longest allowed time.
    Waited,
}

/// A gate of `capacity` permits and a queue of `queue` waiters.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    capacity: usize,
    queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
}

/// A running request's permit; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
}

/// Counts a waiter while it lives.
struct Waiter<'a>(&'a AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(capacity: usize, queue: usize, queue_timeout: Duration) -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            queue,
            queue_timeout,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Takes a permit at once, or waits in the queue if there is room there.
    pub async fn admit(&self) -> Result<Permit, Rejected> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(Permit { _permit: p });
        }
        // Reserve a queue place, or give up when the queue is full.
        let mut now = self.waiting.load(Ordering::Acquire);
        loop {
            if now >= self.queue {
                return Err(Rejected::QueueFull);
            }
            match self.waiting.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => now = actual,
            }
        }
        let _waiter = Waiter(&self.waiting);
        match tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Permit { _permit: p }),
            // The semaphore is never closed; a closed one admits nobody.
            Ok(Err(_)) => Err(Rejected::QueueFull),
            Err(_) => Err(Rejected::Waited),
        }
    }

    /// Requests holding a permit now.
    pub fn running(&self) -> usize {
        self.capacity
            .saturating_sub(self.permits.available_permits())
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_rejects_at_once_and_a_freed_slot_admits_a_waiter() {
        let gate = Arc::new(Admission::new(1, 1, Duration::from_secs(5)));
        let first = gate.admit().await.expect("slot");
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit().await.map(|_| ()) })
        };
        // Let the waiter enter the queue.
        for _ in 0..100 {
            if gate.queued() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(gate.queued(), 1);
        assert_eq!(gate.admit().await.err(), Some(Rejected::QueueFull));
        drop(first);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        assert_eq!(gate.queued(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gives_up_after_the_queue_timeout() {
        let gate = Admission::new(1, 4, Duration::from_millis(20));
        let _held = gate.admit().await.expect("slot");
        assert_eq!(gate.admit().await.err(), Some(Rejected::Waited));
        assert_eq!(gate.running(), 1);
        assert_eq!(gate.queued(), 0);
    }
}
