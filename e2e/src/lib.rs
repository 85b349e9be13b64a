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

/// The operator's namespace, as in the guide.
pub const OPERATOR_NAMESPACE: &str = "mcp-system";
/// The operator's ServiceAccount, as in the guide.
pub const OPERATOR_SA: &str = "system:serviceaccount:mcp-system:mcp-operator";
