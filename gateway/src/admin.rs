//! The admin port: `/healthz`, `/readyz`, `/metrics`, `/status`, and the pod's preStop hooks'
//! `/drain` and `/drained`: on `/drain` (from loopback only: the gateway container's own hook,
//! `mcp-gateway --drain`) readiness turns false at once (the endpoint leaves the Service) and the
//! answer comes after the drain delay; `/drained` (the server container's hook) answers once
//! that has happened. So the containers get SIGTERM only once no new traffic is routed to the pod,
//! and a client that reaches the admin port cannot take a pod out of its Service.

use crate::metrics::Metrics;
use crate::probe::Health;
use crate::proxy::{full, json_response};
use crate::Body;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mcp_gateway_contract::admin;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Answer one admin request.
pub fn route(req: &Request<Incoming>, health: &Health, metrics: &Metrics) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, &serde_json::json!({"error": "GET only"}));
    }
    match req.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => match health.ready() {
            true => text(StatusCode::OK, "ready\n".into(), "text/plain"),
            false => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", health.error().unwrap_or_else(|| "no MCP handshake yet".into())),
                "text/plain",
            ),
        },
        "/metrics" => {
            text(StatusCode::OK, metrics.encode(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
        }
        "/status" => json_response(StatusCode::OK, &serde_json::to_value(health.status()).unwrap_or_default()),
        _ => json_response(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not found"})),
    }
}

fn text(status: StatusCode, body: String, ct: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// What the preStop paths ask of a request from `peer`: `None` for any other path.
#[derive(Debug, PartialEq, Eq)]
enum Hook {
    /// Drain now, answer after the delay.
    Drain,
    /// Answer once drained.
    Drained,
    /// A drain from outside the pod: refused.
    Refused,
}

fn hook(path: &str, peer: IpAddr) -> Option<Hook> {
    match path {
        admin::DRAIN if peer.to_canonical().is_loopback() => Some(Hook::Drain),
        admin::DRAIN => Some(Hook::Refused),
        admin::DRAINED => Some(Hook::Drained),
        _ => None,
    }
}

/// Most admin connections at once (more: the oldest of the address holding the most is closed).
const ADMIN_CONNECTIONS: usize = 128;
/// Longest an admin client may take to send a request's headers (and stay idle between requests).
const ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serve the admin port until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    drain_delay: std::time::Duration,
) {
    // Probes, Prometheus and the operator each need a few connections: an address opening more
    // pushes out its own oldest, and idle ones close after ADMIN_HEADER_TIMEOUT.
    let slots = crate::slots::Slots::new(ADMIN_CONNECTIONS);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(crate::server::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (slot, _) = slots.admit(peer.ip());
        let (health, metrics) = (health.clone(), metrics.clone());
        let busy = Arc::new(crate::slots::Busy::default());
        let conn_busy = busy.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let in_progress = conn_busy.enter();
                let hook = hook(req.uri().path(), peer.ip());
                let r = match hook {
                    None => route(&req, &health, &metrics),
                    Some(Hook::Refused) => {
                        tracing::warn!(%peer, "drain refused: only the pod's own preStop hook may drain it");
                        json_response(StatusCode::FORBIDDEN, &serde_json::json!({"error": "drain is local to the pod"}))
                    }
                    Some(Hook::Drain) => {
                        health.start_draining();
                        text(StatusCode::OK, "drained\n".into(), "text/plain")
                    }
                    Some(Hook::Drained) => text(StatusCode::OK, "drained\n".into(), "text/plain"),
                };
                let health = health.clone();
                async move {
                    let _in_progress = in_progress;
                    match hook {
                        Some(Hook::Drain) => tokio::time::sleep(drain_delay).await,
                        Some(Hook::Drained) => {
                            let began = tokio::time::timeout(drain_delay, async {
                                while !health.is_draining() {
                                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                }
                            });
                            let _ = began.await;
                            tokio::time::sleep(drain_delay).await;
                        }
                        _ => {}
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Chosen to make room: a request in progress (a preStop drain, say) is answered
                // first; an idle connection closes at once.
                _ = slot.closed() => {
                    if busy.is_busy() {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.as_mut().await;
                    }
                }
            }
        });
    }
}

/// Asks the gateway whose admin port is `admin` to drain and waits for its answer (the preStop
/// hook of the container the gateway runs in; a plain HTTP/1.1 GET over loopback).
pub async fn request_drain(admin: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin).await?;
    let request = format!("GET {} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n", admin::DRAIN);
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    anyhow::ensure!(status.split(' ').nth(1) == Some("200"), "the gateway at {admin} answered {status:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pod_itself_may_drain_it_and_anyone_may_wait_for_the_drain() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for local in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(hook(admin::DRAIN, ip(local)), Some(Hook::Drain), "{local}");
        }
        for remote in ["10.244.0.7", "192.168.1.1", "::ffff:10.0.0.1", "fe80::1", "0.0.0.0"] {
            assert_eq!(hook(admin::DRAIN, ip(remote)), Some(Hook::Refused), "{remote}");
            assert_eq!(hook(admin::DRAINED, ip(remote)), Some(Hook::Drained), "{remote}");
        }
        for other in ["/drain/", "/DRAIN", "/status", "/readyz"] {
            assert_eq!(hook(other, ip("10.0.0.1")), None, "{other}");
        }
    }
}
