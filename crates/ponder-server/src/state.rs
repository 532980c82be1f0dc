//! What every handler shares: the upstream, the configuration, the registry, the gates and the
//! counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ponder_core::{Backend, SeededRng};
use ponder_strategies::Registry;

use crate::admission::Admission;
use crate::config::{ConfigError, Limits, ServerConfig};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The server's shared state.
pub struct AppState {
    pub backend: Arc<dyn Backend>,
    /// The upstream model's name, as clients ask for it.
    pub model: String,
    pub config: ServerConfig,
    pub limits: Limits,
    pub token: Option<String>,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub strategy_gate: Admission,
    pub passthrough_gate: Admission,
    pub progress_interval: Duration,
    /// Seeds of requests that name none: drawn from a generator seeded at start-up; each run
    /// reports its seed, so it can be replayed.
    seeds: Mutex<SeededRng>,
    ids: AtomicU64,
}

impl AppState {
    /// Checks the configuration (limits, and every alias's strategy and parameters against the
    /// upstream's capabilities) and builds the state.
    pub fn new(
        backend: Arc<dyn Backend>,
        model: String,
        config: ServerConfig,
        token: Option<String>,
    ) -> Result<Self, ConfigError> {
        let limits = config.limits()?;
        if model.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "model".into(),
                reason: "the upstream model name must not be empty".into(),
            });
        }
        let registry = Registry::builtin();
        for (name, alias) in &config.aliases {
            if *name == model {
                return Err(ConfigError::Invalid {
                    key: format!("aliases.{name}"),
                    reason: "an alias may not be named like the upstream model".into(),
                });
            }
            registry
                .get(&alias.strategy)
                .and_then(|f| f.build(&alias.params, backend.name(), &backend.capabilities()))
                .map_err(|e| ConfigError::Invalid {
                    key: format!("aliases.{name}"),
                    reason: e.to_string(),
                })?;
        }
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(AppState {
            strategy_gate: Admission::new(
                limits.max_concurrent,
                limits.queue,
                limits.queue_timeout,
            ),
            passthrough_gate: Admission::new(
                limits.max_passthrough,
                limits.queue,
                limits.queue_timeout,
            ),
            progress_interval: Duration::from_millis(config.progress_interval_ms),
            backend,
            model,
            config,
            limits,
            token,
            registry,
            metrics: Arc::new(Metrics::default()),
            seeds: Mutex::new(SeededRng::derive(start, "server-seeds")),
            ids: AtomicU64::new(0),
        })
    }

    /// The upstream model and every alias.
    pub fn model_names(&self) -> Vec<String> {
        std::iter::once(self.model.clone())
            .chain(self.config.aliases.keys().cloned())
            .collect()
    }

    /// A seed for a request that names none (below 2^53, so that every JSON reader keeps it
    /// exact).
    pub fn fresh_seed(&self) -> u64 {
        let mut rng = self.seeds.lock().unwrap_or_else(|p| p.into_inner());
        rng.next_u64() >> 11
    }

    /// A response id: `PREFIX-ponder-N`.
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-ponder-{n:x}")
    }

    /// The 429 error of a rejected admission, counted.
    pub fn rejected(&self, what: &str) -> ApiError {
        self.metrics.record_rejected();
        ApiError::over_capacity(self.limits.retry_after_s, what)
    }
}

/// Seconds since the Unix epoch (`created`).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
