//! mcp-operator: runs MCP servers on Kubernetes from MCPServer, Plugin and SecurityPolicy.
#![warn(missing_docs)]

pub mod api;
pub mod build;
pub mod consts;
pub mod controller;
pub mod crds;
pub mod env;
pub mod issue;
pub mod leader;
pub mod metrics;
pub mod plugins;
pub mod policy;
pub mod quantity;
pub mod runtime;
