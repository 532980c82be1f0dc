//! The server configuration as a user writes it (the `server:` section of the YAML config), and
//! its validated form.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ponder_core::Params;
use serde::Deserialize;

/// The `server:` section. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Bearer token clients must send (`Authorization: Bearer TOKEN`). Default: unset, in which
    /// case `PONDER_SERVER_TOKEN` is read; with neither, authentication is off, which is only
    /// allowed on a loopback address.
    #[serde(default)]
    pub token: Option<String>,
    /// Model names that stand for the upstream model run through a strategy, e.g.
    /// `math-sc16: {strategy: self-consistency, params: {n: 16}}`. Default: none.
    #[serde(default)]
    pub aliases: BTreeMap<String, AliasConfig>,
    /// Admission and per-request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Interval of the `: progress` comment lines of a streamed strategy response, in
    /// milliseconds. Default: 1000.
    #[serde(default = "default_progress_interval_ms")]
    pub progress_interval_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            aliases: BTreeMap::new(),
            limits: LimitsConfig::default(),
            progress_interval_ms: default_progress_interval_ms(),
        }
    }
}

/// One model alias.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    /// The strategy (`ponder strategies` lists them).
    pub strategy: String,
    /// Strategy parameters; a request's `ponder` object overrides each key. Default: none.
    #[serde(default)]
    pub params: Params,
    /// Seed of every run of this alias. Default: unset (a fresh seed per request).
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Admission control and per-request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Strategy requests that run at once. Default: 16.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Strategy requests that may wait for a slot; beyond them a request gets 429. Default: 32.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Longest wait in the queue before a 429, in milliseconds. Default: 5000.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Pass-through requests (no strategy) that run at once; the same queue rules apply.
    /// Default: 1024.
    #[serde(default = "default_max_passthrough")]
    pub max_passthrough: usize,
    /// The `Retry-After` header of a 429, in seconds. Default: 1.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
    /// Largest strategy `n` (and pass-through `n`) a request may ask. Default: 64.
    #[serde(default = "default_max_n")]
    pub max_n: u64,
    /// Largest `max_tokens` a request (or a strategy's `max_tokens`) may ask. Default: 32768.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u64,
    /// Longest a request may take before it is answered 504, in milliseconds; a request's
    /// `ponder.deadline_ms` may only shorten it. Default: 600000 (10 minutes).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_concurrent: default_max_concurrent(),
            queue: default_queue(),
            queue_timeout_ms: default_queue_timeout_ms(),
            max_passthrough: default_max_passthrough(),
            retry_after_s: default_retry_after_s(),
            max_n: default_max_n(),
            max_tokens: default_max_tokens(),
            deadline_ms: default_deadline_ms(),
        }
    }
}

fn default_progress_interval_ms() -> u64 {
    1000
}
fn default_max_concurrent() -> usize {
    16
}
fn default_queue() -> usize {
    32
}
fn default_queue_timeout_ms() -> u64 {
    5000
}
fn default_max_passthrough() -> usize {
    1024
}
fn default_retry_after_s() -> u64 {
    1
}
fn default_max_n() -> u64 {
    64
}
fn default_max_tokens() -> u64 {
    32_768
}
fn default_deadline_ms() -> u64 {
    600_000
}

/// A configuration that cannot be served; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("`server.{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("refusing to listen on {addr} without a token: set `server.token` or PONDER_SERVER_TOKEN, or bind a loopback address such as 127.0.0.1")]
    TokenRequired { addr: SocketAddr },
}

/// Name of the environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "PONDER_SERVER_TOKEN";

/// The validated limits the server works with.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_concurrent: usize,
    pub queue: usize,
    pub queue_timeout: Duration,
    pub max_passthrough: usize,
    pub retry_after_s: u64,
    pub max_n: u64,
    pub max_tokens: u64,
    pub deadline: Duration,
}

impl ServerConfig {
    /// Checks every limit; the error names the key.
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        let l = &self.limits;
        let positive = |key: &str, v: u64| -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key: format!("limits.{key}"),
                    reason: "must be ≥ 1".into(),
                });
            }
            Ok(())
        };
        positive("max_concurrent", l.max_concurrent as u64)?;
        positive("max_passthrough", l.max_passthrough as u64)?;
        positive("max_n", l.max_n)?;
        positive("max_tokens", l.max_tokens)?;
        positive("deadline_ms", l.deadline_ms)?;
        positive("queue_timeout_ms", l.queue_timeout_ms)?;
        if self.progress_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "progress_interval_ms".into(),
                reason: "must be ≥ 1".into(),
            });
        }
        // Tokio's semaphore holds at most `usize::MAX >> 3` permits.
        let most = tokio::sync::Semaphore::MAX_PERMITS;
        for (key, v) in [
            ("max_concurrent", l.max_concurrent),
            ("max_passthrough", l.max_passthrough),
        ] {
            if v > most {
                return Err(ConfigError::Invalid {
                    key: format!("limits.{key}"),
                    reason: format!("must be ≤ {most}"),
                });
            }
        }
        Ok(Limits {
            max_concurrent: l.max_concurrent,
            queue: l.queue,
            queue_timeout: Duration::from_millis(l.queue_timeout_ms),
            max_passthrough: l.max_passthrough,
            retry_after_s: l.retry_after_s,
            max_n: l.max_n,
            max_tokens: l.max_tokens,
            deadline: Duration::from_millis(l.deadline_ms),
        })
    }

    /// The token in force: `server.token`, else `env_token` (the caller reads
    /// `PONDER_SERVER_TOKEN`); empty strings count as unset.
    pub fn effective_token(&self, env_token: Option<String>) -> Option<String> {
        self.token
            .clone()
            .filter(|t| !t.is_empty())
            .or(env_token.filter(|t| !t.is_empty()))
    }
}

/// Fails when `addr` is not a loopback address and there is no token.
pub fn check_exposure(addr: SocketAddr, token: Option<&str>) -> Result<(), ConfigError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(ConfigError::TokenRequired { addr });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:8000".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:8000".parse().expect("addr");
        let v6: SocketAddr = "[::1]:8000".parse().expect("addr");
        assert!(check_exposure(lo, None).is_ok());
        assert!(check_exposure(v6, None).is_ok());
        assert!(check_exposure(any, None).is_err());
        assert!(check_exposure(any, Some("t")).is_ok());
    }

    #[test]
    fn config_token_wins_and_empty_is_unset() {
        let mut c = ServerConfig::default();
        assert_eq!(c.effective_token(Some(String::new())), None);
        assert_eq!(
            c.effective_token(Some("env".into())).as_deref(),
            Some("env")
        );
        c.token = Some("file".into());
        assert_eq!(
            c.effective_token(Some("env".into())).as_deref(),
            Some("file")
        );
    }

    #[test]
    fn zero_limits_are_named() {
        let mut c = ServerConfig::default();
        c.limits.max_n = 0;
        let e = c.limits().expect_err("invalid");
        assert_eq!(e.to_string(), "`server.limits.max_n`: must be ≥ 1");
    }
}
