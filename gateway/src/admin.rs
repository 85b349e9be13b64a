//! The admin port: `/healthz`, `/readyz`, `/metrics`, `/status`, and the pod's preStop hooks'
//! `/drain` and `/drained`: on `/drain` readiness turns false at once (the endpoint leaves the
//! Service) and the answer comes after the drain delay; `/drained` (the server container's hook)
//! answers once that has happened. So the containers get SIGTERM only once no new traffic is
//! routed to the pod.
//!
//! `/drain` is served only on the drain socket ([`drain_socket`]: an abstract Unix socket of the
//! pod's network namespace, which `mcp-gateway --drain`, the gateway container's hook, uses), never
//! on the admin port, not even from loopback: the MCP server shares the pod's loopback, and a tool
//! that fetches URLs (`http://127.0.0.1:9090/drain`) would otherwise take the pod out of its
//! Service for good. No URL reaches a Unix socket; a process that opens sockets itself in the pod
//! (a shell tool) can, as it can do anything else in its own pod.

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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

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

/// What the preStop paths ask of a request: `None` for any other path.
#[derive(Debug, PartialEq, Eq)]
enum Hook {
    /// Drain now, answer after the delay.
    Drain,
    /// Answer once drained.
    Drained,
    /// A drain from anywhere but the drain socket: refused.
    Refused,
}

/// Where an admin request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    /// The admin port, from this address.
    Port(IpAddr),
    /// The drain socket (a process of the pod).
    DrainSocket,
}

fn hook(path: &str, from: From) -> Option<Hook> {
    match (path, from) {
        (admin::DRAIN, From::DrainSocket) => Some(Hook::Drain),
        (admin::DRAIN, From::Port(_)) => Some(Hook::Refused),
        (admin::DRAINED, _) => Some(Hook::Drained),
        _ => None,
    }
}

/// The drain socket of the gateway whose admin port is `admin_port`: an abstract Unix socket,
/// which exists in the pod's network namespace only and has no file (the containers' root
/// filesystems stay read-only).
pub fn drain_socket(admin_port: u16) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(format!("mcp-gateway-drain-{admin_port}"))
}

/// Binds the drain socket of the admin port `admin_port`.
pub fn bind_drain_socket(admin_port: u16) -> std::io::Result<UnixListener> {
    let listener = std::os::unix::net::UnixListener::bind_addr(&drain_socket(admin_port)?)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Most admin connections at once (more: the oldest of the address holding the most is closed).
const ADMIN_CONNECTIONS: usize = 128;
/// Most drain socket connections at once (more: the oldest is closed).
const DRAIN_CONNECTIONS: usize = 8;
/// Longest an admin client may take to send a request's headers (and stay idle between requests).
const ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What every admin connection shares.
#[derive(Clone)]
struct Admin {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    drain_delay: std::time::Duration,
}

/// Serve the admin port, and `/drain` on the drain socket, until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    drain: UnixListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    drain_delay: std::time::Duration,
) {
    let shared = Admin { health, metrics, drain_delay };
    let local = shared.clone();
    // The pod's own processes only: a hook or two at a time is all it ever sees.
    let drain_task = tokio::spawn(async move {
        let slots = crate::slots::Slots::new(DRAIN_CONNECTIONS);
        loop {
            match drain.accept().await {
                Ok((unix, _)) => {
                    let (slot, _) = slots.admit(IpAddr::from([127, 0, 0, 1]));
                    tokio::spawn(serve_connection(unix, From::DrainSocket, local.clone(), slot));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "drain socket accept failed");
                    tokio::time::sleep(crate::server::ACCEPT_BACKOFF).await;
                }
            }
        }
    });
    let _abort_drain = AbortOnDrop(drain_task);
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
        tokio::spawn(serve_connection(tcp, From::Port(peer.ip()), shared.clone(), slot));
    }
}

/// Aborts its task when dropped (the drain socket's, with the admin task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves one admin connection arrived `from`.
async fn serve_connection<I>(io: I, from: From, admin: Admin, slot: crate::slots::Slot)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Admin { health, metrics, drain_delay } = admin;
    let busy = Arc::new(crate::slots::Busy::default());
    let conn_busy = busy.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_progress = conn_busy.enter();
        let hook = hook(req.uri().path(), from);
        let r = match hook {
            None => route(&req, &health, &metrics),
            Some(Hook::Refused) => {
                tracing::warn!(?from, "drain refused: only the pod's preStop hook may drain it, over the drain socket");
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
        .serve_connection(TokioIo::new(io), svc);
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
}

/// Asks the gateway whose admin port is `admin` to drain and waits for its answer (the preStop
/// hook of the container the gateway runs in; a plain HTTP/1.1 GET over its drain socket, which
/// the admin port's number names).
pub async fn request_drain(admin: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let unix = std::os::unix::net::UnixStream::connect_addr(&drain_socket(admin.port())?)?;
    unix.set_nonblocking(true)?;
    let mut unix = tokio::net::UnixStream::from_std(unix)?;
    let request = format!("GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", admin::DRAIN);
    unix.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    unix.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    anyhow::ensure!(status.split(' ').nth(1) == Some("200"), "the gateway of admin port {admin} answered {status:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_drain_socket_may_drain_and_anyone_may_wait_for_the_drain() {
        let ip = |s: &str| From::Port(s.parse::<IpAddr>().unwrap());
        assert_eq!(hook(admin::DRAIN, From::DrainSocket), Some(Hook::Drain));
        // Loopback is the MCP server's too (a fetch tool reaches http://127.0.0.1:9090/drain).
        for peer in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1", "10.244.0.7", "::ffff:10.0.0.1", "0.0.0.0"] {
            assert_eq!(hook(admin::DRAIN, ip(peer)), Some(Hook::Refused), "{peer}");
            assert_eq!(hook(admin::DRAINED, ip(peer)), Some(Hook::Drained), "{peer}");
        }
        for other in ["/drain/", "/DRAIN", "/status", "/readyz"] {
            assert_eq!(hook(other, ip("10.0.0.1")), None, "{other}");
            assert_eq!(hook(other, From::DrainSocket), None, "{other}");
        }
    }

    #[test]
    fn each_admin_port_has_its_own_drain_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = |port| drain_socket(port).unwrap().as_abstract_name().map(<[u8]>::to_vec);
        assert_eq!(name(9090), Some(b"mcp-gateway-drain-9090".to_vec()));
        assert_ne!(name(9090), name(9091));
    }
}
