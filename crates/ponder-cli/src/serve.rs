//! `ponder serve`: the OpenAI-compatible server (`ponder-server`) in front of an upstream.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use ponder_core::Backend;
use ponder_eval::replay::{Pool, ReplayBackend};
use ponder_openai::OpenAiBackend;

use crate::config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on. Any address but a loopback one needs a token (`server.token` or
    /// PONDER_SERVER_TOKEN).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Base URL of the upstream OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1; repeat
    /// (or comma-separate) for replicas. Default: `backend.endpoints` from the config file.
    /// `replay:FILE` serves saved traces instead.
    #[arg(long, env = "PONDER_BACKEND", value_delimiter = ',')]
    pub upstream: Vec<String>,
    /// The upstream model: sent upstream, and the name clients ask for to get plain
    /// pass-through. Default: `backend.model` from the config file.
    #[arg(long, env = "PONDER_MODEL")]
    pub model: Option<String>,
    /// YAML config file (keys: backend, server; strategy, params and seed are not used here).
    #[arg(long, env = "PONDER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Strategy requests that run at once. Default: `server.limits.max_concurrent`, else 16.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// Strategy requests that may wait for a slot before the server answers 429.
    /// Default: `server.limits.queue`, else 32.
    #[arg(long)]
    pub queue: Option<usize>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::load(path)?,
        None => config::FileConfig::default(),
    };
    let mut backend_config = file.backend.unwrap_or_default();
    if !args.upstream.is_empty() {
        backend_config.endpoints = args.upstream.clone();
    }
    if let Some(model) = &args.model {
        backend_config.model = model.clone();
    }
    let replay = match backend_config.endpoints.as_slice() {
        [one] => one.strip_prefix("replay:").map(str::to_string),
        _ => None,
    };
    if backend_config.endpoints.is_empty() {
        bail!("no upstream: pass --upstream URL (or set PONDER_BACKEND, or backend.endpoints in the config file)");
    }
    let backend: Arc<dyn Backend> = match &replay {
        Some(path) => {
            if backend_config.model.is_empty() {
                backend_config.model = "replay".into();
            }
            let pool = Pool::load(Path::new(path))?;
            Arc::new(ReplayBackend::new(pool, 0, format!("replay:{path}")))
        }
        None => {
            if backend_config.model.is_empty() {
                bail!("no model: pass --model NAME (or set PONDER_MODEL, or backend.model in the config file)");
            }
            Arc::new(
                OpenAiBackend::new(backend_config.clone())
                    .context("invalid upstream configuration")?,
            )
        }
    };
    let mut server = file.server.unwrap_or_default();
    if let Some(n) = args.max_concurrent {
        server.limits.max_concurrent = n;
    }
    if let Some(n) = args.queue {
        server.limits.queue = n;
    }
    let token = server.effective_token(std::env::var(ponder_server::TOKEN_ENV).ok());
    let addr = SocketAddr::new(args.host, args.port);
    let model = backend_config.model.clone();
    let aliases: Vec<String> = server.aliases.keys().cloned().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle =
            ponder_server::spawn(addr, backend.clone(), model.clone(), server, token.clone())
                .await
                .context("cannot start the server")?;
        eprintln!(
            "ponder serve: {model} at {} (aliases: {}; authentication {})",
            backend.name(),
            if aliases.is_empty() {
                "none".to_string()
            } else {
                aliases.join(", ")
            },
            if token.is_some() { "on" } else { "off" },
        );
        let mut stdout = std::io::stdout();
        writeln!(stdout, "ponder serve listening on {}", handle.base_url())?;
        stdout.flush()?;
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                eprintln!("ponder serve: shutting down");
                handle.shutdown().await;
            }
            // No signal handling here: serve until killed.
            Err(_) => handle.wait().await,
        }
        Ok(())
    })
}
