//! The server reaches its upstream only through `ponder_core::Backend`: it has no HTTP client
//! of its own (`ponder-openai` is there for the wire types alone).

#[test]
fn no_direct_http_client_dependency() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    for forbidden in ["reqwest", "hyper", "ponder-sim"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(forbidden)),
            "ponder-server must not depend on {forbidden} directly"
        );
    }
}
