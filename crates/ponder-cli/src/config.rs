//! The `ponder` config file (YAML) and how flags, environment and file are merged.
//!
//! Precedence, highest first: command-line flags, environment variables (`PONDER_*`, read by
//! clap for each flag), the config file, built-in defaults. Unknown keys anywhere in the file
//! are errors that name the full key path.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ponder_core::Params;
use serde::Deserialize;

/// The file as written. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The OpenAI-compatible backend (endpoints, model, retries, limits).
    #[serde(default)]
    pub backend: Option<ponder_openai::OpenAiConfig>,
    /// Strategy name. Default: `self-consistency`.
    pub strategy: Option<String>,
    /// Strategy parameters (`--set key=value` overrides each key).
    #[serde(default)]
    pub params: Params,
    /// Base seed of the run. Default: 0.
    pub seed: Option<u64>,
    /// `ponder serve`: model aliases, bearer token, limits. Default: none.
    #[serde(default)]
    pub server: Option<ponder_server::ServerConfig>,
}

/// A config-file problem, with the file and the key path.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub path: String,
    pub message: String,
    pub line: Option<usize>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config file {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if self.path.is_empty() || self.path == "." {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": key `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Deserialises `T` from YAML text, turning errors into [`ConfigError`]s that name the key path.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
    prefix: &str,
) -> Result<T, ConfigError> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let inner = e.inner();
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let mut message = inner.to_string();
        // serde_yaml_ng prefixes nested errors with a path; the path is shown apart.
        if let Some((head, rest)) = message.split_once(": ") {
            if !head.contains(' ') && (path == head || path.starts_with(&format!("{head}."))) {
                message = rest.to_string();
            }
        }
        // Depending on the format, an unknown field is reported at its parent's path or at its
        // own; make sure the path ends with the field itself.
        if let Some(field) = unknown_field_name(&message) {
            let already = path == field || path.ends_with(&format!(".{field}"));
            path = if already {
                path
            } else if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
        }
        let path = match (prefix.is_empty(), path.is_empty()) {
            (true, _) => path,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{path}"),
        };
        ConfigError {
            file: file.to_path_buf(),
            path,
            line: inner.location().map(|l| l.line()),
            message: strip_location(&message),
        }
    })
}

/// `unknown field `foo`, expected …` → `foo`.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.split("unknown field `").nth(1)?;
    rest.split('`').next()
}

/// serde_yaml_ng appends " at line L column C"; the line is reported separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(pos) => message[..pos].to_string(),
        None => message.to_string(),
    }
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    Ok(parse_yaml(path, &text, "")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse_yaml::<FileConfig>(Path::new("c.yaml"), text, "").expect_err("must fail")
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let e = err("seed: 1\nstrategi: x\n");
        assert_eq!(e.path, "strategi");
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string()
                .starts_with("config file c.yaml, line 2: key `strategi`: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err("seed: many\n");
        assert_eq!(e.path, "seed");
    }

    #[test]
    fn unknown_server_key_is_named() {
        let e = err("server:\n  limits:\n    max_concurent: 4\n");
        assert_eq!(e.path, "server.limits.max_concurent");
        let c: FileConfig = parse_yaml(
            Path::new("c.yaml"),
            "server:\n  token: t\n  aliases:\n    math-sc16:\n      strategy: self-consistency\n      params: {n: 16}\n  limits: {max_concurrent: 4}\n",
            "",
        )
        .expect("parses");
        let server = c.server.expect("server section");
        assert_eq!(
            server.aliases["math-sc16"].params["n"],
            serde_json::json!(16)
        );
        assert_eq!(server.limits.max_concurrent, 4);
        assert_eq!(server.limits.queue, 32);
    }

    #[test]
    fn valid_file_parses() {
        let c: FileConfig = parse_yaml(
            Path::new("c.yaml"),
            "strategy: self-consistency\nparams:\n  n: 8\nseed: 3\n",
            "",
        )
        .expect("parses");
        assert_eq!(c.strategy.as_deref(), Some("self-consistency"));
        assert_eq!(c.params["n"], serde_json::json!(8));
        assert_eq!(c.seed, Some(3));
    }
}
