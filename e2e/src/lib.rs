//! End-to-end harness for mcp-operator: one cluster per test run (k3s in a container, the local
//! kwok control plane, or an existing cluster), the CRDs and chart installed once, the operator
//! running, a throw-away namespace per test, real kubectl and helm, and watch-based waits.
//!
//! `E2E_CLUSTER` selects the provider: `k3s`, `local` or `existing`; by default k3s where a
//! Docker engine answers, else local. A provider that cannot start fails the run (no skips).

pub mod cluster;
pub mod env;
pub mod guide;
pub mod wait;

pub use env::{env, Env, TestNamespace};
pub use wait::{wait_for, wait_gone, DEADLINE};

/// An HS256 JWT signed with `key`, as a client of a policy with a shared JWT key sends it:
/// issuer, audience `aud`, subject alice, `roles`, valid ten minutes.
pub fn hs256_token(key: &str, issuer: &str, aud: &str, roles: &[&str]) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 600;
    let claims = serde_json::json!({"iss": issuer, "aud": aud, "sub": "alice", "exp": exp, "roles": roles});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes())?,
    )?)
}

/// The operator's namespace, as in the guide.
pub const OPERATOR_NAMESPACE: &str = "mcp-system";
/// The operator's ServiceAccount, as in the guide.
pub const OPERATOR_SA: &str = "system:serviceaccount:mcp-system:mcp-operator";
