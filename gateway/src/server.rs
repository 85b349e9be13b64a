//! Wiring: policy → authenticator, limiter, auditor, TLS; listeners; graceful shutdown.

use crate::admin;
use crate::admission::Surface;
use crate::audit::{Auditor, Decision, Record};
use crate::auth::Authenticator;
use crate::authz::Grants;
use crate::config::{load_policy, Args, Method, Transport};
use crate::metrics::Metrics;
use crate::owners::OwnerTable;
use crate::probe::{self, Health};
use crate::proxy::{self, Backend, ConnInfo, Gateway, HttpUpstream};
use crate::ratelimit::{Limiter, DEFAULT_MAX_KEYS};
use crate::stdio::Bridge;
use crate::tls::TlsState;
use anyhow::Context;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long open connections get at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors, say) before the next.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A running gateway's addresses (useful when binding port 0).
#[derive(Clone, Debug)]
pub struct Bound {
    /// MCP listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
}

/// Start everything, then serve until `shutdown` resolves. `on_bound` is told the addresses.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>, on_bound: impl FnOnce(Bound)) -> anyhow::Result<()> {
    let policy = load_policy(&args.policy)?;
    tracing::info!(policy = ?policy.policy, enabled = policy.enabled, "policy loaded");
    let metrics = Arc::new(Metrics::new());

    let mtls_ca = policy
        .authn()
        .filter(|a| a.methods.contains(&Method::Mtls))
        .and_then(|a| a.mtls.as_ref())
        .map(|m| m.ca_file.clone());
    let tls = match policy.tls_in_force() {
        Some(t) => Some(TlsState::load(t, mtls_ca.as_deref()).context("TLS")?),
        None => None,
    };
    if let Some(t) = &tls {
        t.spawn_watcher(args.tls_reload_interval);
    }
    let authn = Authenticator::from_policy(
        &policy,
        crate::httpclient::https_client(),
        tls.as_ref().and_then(|t| t.client_ca.clone()),
        args.jwks_refresh_min_interval,
    )
    .context("authentication")?;
    let limiter = policy
        .rate()
        .map(|r| Limiter::new(r.requests_per_minute, r.burst_size.unwrap_or(r.requests_per_minute), DEFAULT_MAX_KEYS));
    let audit = Auditor::start(policy.audit_in_force(), args.audit_dir.clone(), &args.name);
    if policy.audit_in_force().is_none() && args.audit_dir.is_some() {
        tracing::info!("--audit-dir given but the policy has no audit settings: no audit records");
    }

    let health = Health::new(&args.name, metrics.clone());
    let (backend, target) = if args.stdio {
        // When the policy authenticates, a quarter of the processes stays for other callers.
        let per_caller = match policy.authn() {
            Some(_) => args.max_sessions_per_caller.min(args.max_sessions - args.max_sessions / 4),
            None => args.max_sessions,
        };
        let bridge =
            Bridge::new(args.command.clone(), args.max_sessions, per_caller, args.idle_timeout, metrics.clone());
        bridge.spawn_reaper();
        (Backend::Stdio(bridge.clone()), probe::Target::Stdio(bridge))
    } else {
        let upstream = args.upstream.as_deref().context("--upstream is required without --stdio")?;
        let up = Arc::new(HttpUpstream::new(upstream, args.transport == Transport::Websocket)?);
        let target = match &up.ws_url {
            Some(url) => probe::Target::Ws(url.clone()),
            None => probe::Target::Http(up.clone()),
        };
        (Backend::Http(up), target)
    };
    let bridge = match &backend {
        Backend::Stdio(b) => Some(b.clone()),
        Backend::Http(_) => None,
    };
    let surface = Surface {
        mcp_path: args.mcp_path(),
        cors: policy.cors.clone(),
        websocket: matches!(&backend, Backend::Http(u) if u.ws_url.is_some()),
        authn: authn.enabled,
    };
    let grants = Grants {
        authn_enabled: authn.enabled,
        authn_required: policy.authn().is_some_and(|a| a.required),
        authz: policy.authz().cloned(),
    };
    let gw = Arc::new(Gateway {
        name: args.name.clone(),
        tls: tls.is_some(),
        surface,
        authn,
        grants,
        limiter,
        audit,
        metrics: metrics.clone(),
        backend,
        in_flight: crate::inflight::InFlight::new(if policy.authn().is_some() {
            args.max_in_flight_per_caller
        } else {
            usize::MAX
        }),
        sessions: OwnerTable::new(
            args.max_tracked_sessions,
            if policy.authn().is_some() { args.max_sessions_per_caller } else { args.max_tracked_sessions },
            args.session_idle_timeout,
        ),
        // Tasks are bound to callers only where there are callers to tell apart.
        tasks: policy.authn().is_some().then(crate::proxy::TaskTables::new).transpose()?,
        max_body: args.max_body_bytes,
        max_batch: args.max_batch,
        body_timeout: args.body_timeout,
        body_budget: Arc::new(tokio::sync::Semaphore::new((args.max_buffered_bytes / 1024).max(1))),
        body_share: crate::inflight::InFlight::new(if policy.authn().is_some() {
            // A quarter of the budget, and never less than one largest body.
            (args.max_buffered_bytes / 1024 / 4)
                .max(args.max_body_bytes.div_ceil(1024))
                .max(crate::proxy::MIN_BODY_SHARE_KIB)
        } else {
            usize::MAX
        }),
    });

    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let admin_listener =
        TcpListener::bind(args.admin_listen).await.with_context(|| format!("binding {}", args.admin_listen))?;
    let bound = Bound { listen: listener.local_addr()?, admin: admin_listener.local_addr()? };
    tracing::info!(listen = %bound.listen, admin = %bound.admin, tls = tls.is_some(), path = %gw.surface.mcp_path, "mcp-gateway serving");
    let drain_listener = admin::bind_drain_socket(bound.admin.port())
        .with_context(|| format!("binding the drain socket of admin port {}", bound.admin.port()))?;
    on_bound(bound);
    let admin_task =
        tokio::spawn(admin::serve(admin_listener, drain_listener, health.clone(), metrics.clone(), args.drain_delay));
    health.spawn(target, args.check_interval);

    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_connections.max(1)));
    // Connections that have not yet sent an authenticated request: bounded; beyond it the oldest
    // of the address that holds the most is closed (a slowloris pushes out only its own).
    let unauthenticated = crate::slots::Slots::new(args.max_unauthenticated_connections);
    let header_timeout = args.header_timeout;
    tokio::pin!(shutdown);
    loop {
        let (permit, accepted) = tokio::select! {
            _ = &mut shutdown => break,
            next = async {
                let permit = slots.clone().acquire_owned().await;
                (permit, listener.accept().await)
            } => next,
        };
        let (permit, (tcp, remote)) = match (permit, accepted) {
            (Ok(permit), Ok(accepted)) => (permit, accepted),
            (_, Err(e)) => {
                // Out of file descriptors, say: no busy loop, and the connections open go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            (Err(_), _) => continue,
        };
        let (slot, evicted) = unauthenticated.admit(remote.ip());
        if evicted {
            gw.metrics.deny("too_many_unauthenticated_connections");
        }
        let _ = tcp.set_nodelay(true);
        let (gw, tls, stop, open) = (gw.clone(), tls.clone(), stop_rx.clone(), open.clone());
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            serve_conn(gw, tls, tcp, remote, slot, header_timeout, stop).await;
            open.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
    }
    tracing::info!("shutting down");
    drop(listener);
    let _ = stop_tx.send(true);
    if let Some(b) = bridge {
        b.shutdown().await;
    }
    let deadline = tokio::time::Instant::now() + DRAIN;
    while open.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin_task.abort();
    gw.audit.flush();
    Ok(())
}

async fn serve_conn(
    gw: Arc<Gateway>,
    tls: Option<TlsState>,
    tcp: TcpStream,
    remote: SocketAddr,
    slot: crate::slots::Slot,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    // Fires only while the connection has not yet authenticated (the slot is then given back).
    let closed = slot.close_signal();
    match tls {
        None => serve_http(gw, tcp, ConnInfo::new(remote, None, Some(slot)), header_timeout, closed, stop).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let handshake = tokio::select! {
                done = tokio::time::timeout(header_timeout, acceptor.accept(tcp)) => done,
                _ = closed.notified() => return,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    let client_cert = stream.get_ref().1.peer_certificates().map(|c| c.to_vec());
                    let info = ConnInfo::new(remote, client_cert, Some(slot));
                    serve_http(gw, stream, info, header_timeout, closed, stop).await;
                }
                Ok(Err(e)) => tls_failure(&gw, remote, e.to_string()),
                Err(_) => tls_failure(&gw, remote, "handshake timed out".into()),
            }
        }
    }
}

fn tls_failure(gw: &Gateway, remote: SocketAddr, detail: String) {
    tracing::debug!(client = %remote, error = %detail, "TLS handshake failed");
    gw.metrics.deny("tls_handshake");
    gw.audit.record(Record {
        client: remote.to_string(),
        http_method: "TLS".into(),
        decision: Some(Decision::Deny),
        reason: Some(format!("tls_handshake: {detail}")),
        status: 0,
        ..Default::default()
    });
}

async fn serve_http<I>(
    gw: Arc<Gateway>,
    io: I,
    info: ConnInfo,
    header_timeout: Duration,
    closed: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let busy = Arc::new(crate::slots::Busy::default());
    let (conn_info, conn_busy) = (info.clone(), busy.clone());
    let svc = hyper::service::service_fn(move |req| {
        let (gw, info, busy) = (gw.clone(), conn_info.clone(), conn_busy.clone());
        async move {
            let _in_progress = busy.enter();
            Ok::<_, Infallible>(proxy::handle(gw, info, req).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            // Chosen to make room while unauthenticated: a connection that has authenticated
            // since goes on; one answering a request (authenticating it, say) answers it, then
            // closes; an idle one, or one still sending headers, closes at once.
            _ = closed.notified() => {
                if info.is_authenticated() {
                    continue;
                }
                if busy.is_busy() {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
                break;
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, conn).await;
                break;
            }
        }
    }
}
