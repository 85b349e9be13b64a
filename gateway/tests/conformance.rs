//! The MCP conformance suite (`@modelcontextprotocol/conformance`, npm), every server scenario,
//! against `@modelcontextprotocol/server-everything` directly, through the gateway and through the
//! stdio bridge (hack/conformance.sh does the work). Every scenario that passes directly must pass
//! through both. Dependencies come from hack/gateway-test-deps.sh; when they cannot be installed the
//! test fails, it never skips.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

#[test]
fn every_scenario_passing_directly_passes_through_the_gateway_and_the_bridge() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("mcp-gw-conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("results.json");
    let out = Command::new("bash")
        .arg(root.join("hack/conformance.sh"))
        .env("MCP_GATEWAY_BIN", env!("CARGO_BIN_EXE_mcp-gateway"))
        .env("CONFORMANCE_JSON", &json_path)
        .output()
        .expect("running hack/conformance.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "hack/conformance.sh failed ({}):\n{stdout}\n{stderr}", out.status);

    // The script's verdict, checked again from its results, so that a vacuous run cannot pass.
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("results JSON")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let scenarios: Vec<&str> = r["scenarios"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(scenarios.len() >= 20, "the suite listed only {} server scenarios", scenarios.len());
    let passes = |mode: &str, s: &str| r["results"][mode][s]["pass"].as_bool() == Some(true);
    let direct: Vec<&str> = scenarios.iter().copied().filter(|s| passes("direct", s)).collect();
    // server-everything is not the suite's own test server, so many scenarios (which call test_*
    // tools, prompts and resources) fail directly; these must not.
    for must in ["server-initialize", "ping", "tools-list", "tools-call-simple-text", "resources-list", "prompts-list"]
    {
        assert!(direct.contains(&must), "{must} does not pass directly against server-everything");
    }
    for mode in ["gateway", "stdio-bridge"] {
        for s in &direct {
            assert!(passes(mode, s), "{s} passes directly but not through {mode}: {}", r["results"][mode][s]);
        }
    }
    assert!(r["regressions"].as_array().unwrap().is_empty(), "{}", r["regressions"]);
}
