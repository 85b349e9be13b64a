//! mcp-gateway: sits in front of one MCP server and enforces a SecurityPolicy on every MCP
//! request (TLS, authentication, roles, tool allow lists, rate limits, audit), proxies Streamable
//! HTTP and WebSocket without buffering streams, bridges stdio servers (one child per session),
//! and reports MCP-level health, metrics and the server's tools on an admin port.

pub mod admin;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod config;
pub mod httpclient;
pub mod inflight;
pub mod jsonrpc;
pub mod metrics;
pub mod owners;
pub mod probe;
pub mod proxy;
pub mod ratelimit;
pub mod server;
pub mod slots;
pub mod sse;
pub mod stdio;
pub mod tls;
pub mod ws;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::sync::Arc;

/// Errors inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the gateway produces.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The one crypto provider (ring, as kube's rustls uses): no second crypto stack.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
