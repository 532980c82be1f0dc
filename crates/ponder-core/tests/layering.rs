//! Layering rules of ARCHITECTURE.md, checked against the real dependency graph
//! (`cargo metadata`), including transitive dependencies.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

/// Crates that mean HTTP, a server, or tensors.
const HTTP_SERVER_TENSOR: &[&str] = &[
    "reqwest",
    "hyper",
    "hyper-util",
    "http",
    "http-body",
    "h2",
    "rustls",
    "native-tls",
    "axum",
    "tower",
    "tower-http",
    "actix-web",
    "warp",
    "rocket",
    "tonic",
    "tiny_http",
    "candle-core",
    "tch",
    "ndarray",
    "burn",
    "ort",
    "llama-cpp-2",
    "llama-cpp-sys-2",
];

struct Graph {
    /// package name → names of its normal (non-dev, non-build) dependencies.
    deps: HashMap<String, Vec<String>>,
}

impl Graph {
    fn load() -> Graph {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("metadata is JSON");
        let names: HashMap<String, String> = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().expect("id").to_string(),
                    p["name"].as_str().expect("name").to_string(),
                )
            })
            .collect();
        let mut deps = HashMap::new();
        for node in meta["resolve"]["nodes"].as_array().expect("resolve nodes") {
            let name = names[node["id"].as_str().expect("id")].clone();
            let normal: Vec<String> = node["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
                })
                .map(|d| names[d["pkg"].as_str().expect("pkg")].clone())
                .collect();
            deps.insert(name, normal);
        }
        Graph { deps }
    }

    /// Every package `root` depends on at run time, transitively.
    fn closure(&self, root: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![root.to_string()];
        while let Some(p) = stack.pop() {
            for d in self.deps.get(&p).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    }

    fn assert_free_of(&self, root: &str, forbidden: &[&str]) {
        assert!(
            self.deps.contains_key(root),
            "{root} is not in the workspace"
        );
        let closure = self.closure(root);
        let bad: Vec<&&str> = forbidden.iter().filter(|f| closure.contains(**f)).collect();
        assert!(
            bad.is_empty(),
            "{root} must not depend on {bad:?} (directly or transitively)"
        );
    }
}

#[test]
fn core_has_no_http_server_or_tensor_dependency() {
    Graph::load().assert_free_of("ponder-core", HTTP_SERVER_TENSOR);
}

#[test]
fn answers_strategies_and_task_see_no_transport() {
    let g = Graph::load();
    let mut forbidden = HTTP_SERVER_TENSOR.to_vec();
    forbidden.push("ponder-openai");
    for krate in [
        "ponder-answer",
        "ponder-strategies",
        "ponder-task",
        "ponder-eval",
    ] {
        g.assert_free_of(krate, &forbidden);
    }
}

#[test]
fn the_checker_sees_transitive_dependencies() {
    // Guards the test itself: the CLI reaches reqwest only through ponder-openai.
    let g = Graph::load();
    assert!(g.closure("ponder-cli").contains("reqwest"));
    assert!(!g.deps["ponder-cli"].contains(&"reqwest".to_string()));
}
