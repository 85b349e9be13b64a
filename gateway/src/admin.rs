//! The admin port: `/healthz`, `/readyz`, `/metrics`, `/status`, and `/drain`, which the pod's
//! preStop hooks call: readiness turns false at once (the endpoint leaves the Service) and the
//! answer comes after the drain delay, so the containers get SIGTERM only once no new traffic
//! is routed to the pod.

use crate::metrics::Metrics;
use crate::probe::Health;
use crate::proxy::{full, json_response};
use crate::Body;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
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

/// Serve the admin port until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    drain_delay: std::time::Duration,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (health, metrics) = (health.clone(), metrics.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let draining = req.uri().path() == mcp_gateway_contract::admin::DRAIN;
                let r = if draining {
                    health.start_draining();
                    text(StatusCode::OK, "drained\n".into(), "text/plain")
                } else {
                    route(&req, &health, &metrics)
                };
                async move {
                    if draining {
                        tokio::time::sleep(drain_delay).await;
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}
