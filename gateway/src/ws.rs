//! WebSocket pass-through (`--transport websocket`): the upgrade passes the same surface,
//! authentication, role and rate checks as any request, then every client frame goes through
//! [`admission::admit`] (and the rate limit) before it reaches the server, exactly as checked;
//! what the server sends back is filtered for restricted callers (ids restored, tool lists
//! reduced), and a frame that must be inspected but cannot be is dropped.

use crate::admission::{self, Refusal};
use crate::audit::{Decision, Record};
use crate::auth::Identity;
use crate::authz::{IdMap, ResponseFilter, TaskBinding, ToolAccess};
use crate::jsonrpc;
use crate::proxy::{empty, hold_budget, json_response, Gateway, HttpUpstream};
use crate::Body;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How often a WebSocket looks for a message that takes longer than `--body-timeout`.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// What tungstenite reads ahead at once (its default is 128 KiB): bytes read past a whole message
/// are not charged until more arrive, so this bounds what a socket holds uncharged.
const READ_BUFFER: usize = 16 * 1024;

fn config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max)).read_buffer_size(READ_BUFFER)
}

/// What a WebSocket's client side holds of the gateway's body budget: the bytes read since its
/// last whole message (a frame's declared payload is buffered whole before it makes a message),
/// charged like a request body's to `--max-buffered-bytes` and to the caller's share of it, and
/// since when a message is incomplete (`--body-timeout` bounds it, as for a request body). So a
/// caller that opens sockets and sends every message but its last byte holds no more than a
/// caller sending slow request bodies.
struct Charge {
    budget: Arc<tokio::sync::Semaphore>,
    shares: Arc<crate::inflight::InFlight>,
    owner: String,
    /// KiB of `budget` held.
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    /// KiB of the caller's share held.
    share: Option<crate::inflight::Permit>,
    bytes: usize,
    since: Option<Instant>,
}

impl Charge {
    fn new(gw: &Gateway, owner: String) -> Arc<std::sync::Mutex<Self>> {
        Arc::new(std::sync::Mutex::new(Self {
            budget: gw.body_budget.clone(),
            shares: gw.body_share.clone(),
            owner,
            held: None,
            share: None,
            bytes: 0,
            since: None,
        }))
    }

    /// `n` more bytes read: false when the budget or the caller's share cannot hold them.
    fn add(&mut self, n: usize) -> bool {
        self.bytes += n;
        self.since.get_or_insert_with(Instant::now);
        let kib = self.bytes.div_ceil(1024);
        if !hold_budget(&self.budget, &mut self.held, kib) {
            return false;
        }
        match &mut self.share {
            Some(share) => share.grow_to(kib),
            None => {
                self.share = self.shares.acquire_n(&self.owner, kib);
                self.share.is_some()
            }
        }
    }

    /// A whole message was read: what was held for it is free.
    fn settle(&mut self) {
        (self.held, self.share, self.bytes, self.since) = (None, None, 0, None);
    }

    /// A ping or pong of `payload` bytes was read (its frame: 2 bytes of header, 4 of mask). It
    /// may arrive between the fragments of an unfinished message, which stays charged and timed;
    /// on its own it settles.
    fn control(&mut self, payload: usize) {
        self.bytes = self.bytes.saturating_sub(6 + payload);
        if self.bytes == 0 {
            self.settle();
        }
    }

    /// Whether a message has been incomplete for longer than `limit`.
    fn stalled(&self, limit: Duration) -> bool {
        self.since.is_some_and(|t| t.elapsed() > limit)
    }

    /// The gateway was busy (blocked sending) until now: an unfinished message gets its time again
    /// from here, as the client could not be read meanwhile.
    fn resume(&mut self) {
        if self.since.is_some() {
            self.since = Some(Instant::now());
        }
    }
}

fn lock(charge: &std::sync::Mutex<Charge>) -> std::sync::MutexGuard<'_, Charge> {
    charge.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client's connection, every byte read charged to its [`Charge`].
struct Charged<I> {
    io: I,
    charge: Arc<std::sync::Mutex<Charge>>,
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Charged<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(std::pin::Pin::new(&mut this.io).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 && !lock(&this.charge).add(n) {
            return std::task::Poll::Ready(Err(std::io::Error::other("the gateway's body budget is used up")));
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Charged<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Who a WebSocket is served to: the identity, its tool access, and its in-flight permit (held
/// until the WebSocket closes).
pub struct Caller {
    /// The authenticated (or anonymous) identity.
    pub identity: Identity,
    /// Its tool access.
    pub access: ToolAccess,
    /// Its permit.
    pub permit: crate::inflight::Permit,
}

/// Upgrade the client connection and pipe it to the server.
pub async fn proxy(
    gw: Arc<Gateway>,
    up: &HttpUpstream,
    parts: &http::request::Parts,
    on_upgrade: OnUpgrade,
    caller: Caller,
    mut rec: Record,
) -> Response<Body> {
    let Caller { identity, access, permit } = caller;
    let start = Instant::now();
    let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
        return json_response(StatusCode::BAD_REQUEST, &serde_json::json!({"error": "not a WebSocket handshake"}));
    };
    let accept = derive_accept_key(key.as_bytes());
    let url = up.ws_url.clone().unwrap_or_default();
    let mut upstream_req = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return json_response(StatusCode::BAD_GATEWAY, &serde_json::json!({"error": e.to_string()})),
    };
    if let Some(p) = parts.headers.get(header::SEC_WEBSOCKET_PROTOCOL) {
        upstream_req.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p.clone());
    }
    let (upstream, upstream_resp) =
        match tokio_tungstenite::connect_async_with_config(upstream_req, Some(config(gw.max_body)), true).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "WebSocket upstream unreachable");
                rec.status = 502;
                rec.decision = Some(Decision::Error);
                rec.reason = Some(format!("upstream: {e}"));
                rec.latency_ms = start.elapsed().as_secs_f64() * 1e3;
                gw.metrics.observe("websocket", None, 502, "error", start.elapsed());
                gw.audit.record(rec);
                return json_response(StatusCode::BAD_GATEWAY, &serde_json::json!({"error": "MCP server unreachable"}));
            }
        };
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = upstream_resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p.clone());
    }
    rec.status = 101;
    rec.decision = Some(Decision::Allow);
    rec.latency_ms = start.elapsed().as_secs_f64() * 1e3;
    gw.metrics.observe("websocket", None, 101, "allow", start.elapsed());
    let base = Record { method: None, ..rec.clone() };
    gw.audit.record(rec);
    tokio::spawn(async move {
        // The caller's permit is held until the WebSocket closes.
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => {
                let charge = Charge::new(&gw, identity.rate_key());
                let io = Charged { io: TokioIo::new(upgraded), charge: charge.clone() };
                let client = WebSocketStream::from_raw_socket(io, Role::Server, Some(config(gw.max_body))).await;
                pipe(gw, client, upstream, identity, access, base, charge).await;
            }
            Err(e) => tracing::warn!(error = %e, "WebSocket upgrade failed"),
        }
    });
    resp
}

async fn pipe<C, U>(
    gw: Arc<Gateway>,
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
    identity: Identity,
    access: ToolAccess,
    base: Record,
    charge: Arc<std::sync::Mutex<Charge>>,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    // The gateway's ids of this connection's restricted tools/list requests, until answered.
    // Tasks: an anonymous caller's are this connection's.
    let tasks = gw.task_binding(&identity, Some(&admission::gateway_id()));
    let mut filter = ResponseFilter::new(access.clone(), IdMap::default()).with_tasks(tasks.clone());
    // The connection ends when the caller's credential expires (the client reconnects with a new one).
    let expiry = tokio::time::sleep(identity.time_left().unwrap_or(Duration::MAX));
    tokio::pin!(expiry);
    // This socket's requests awaiting their answers, each holding one of the caller's in-flight
    // permits (as an HTTP request does until answered): a socket cannot have more requests running
    // at the server than the caller may.
    let mut awaiting = Awaiting::default();
    let mut watch = tokio::time::interval(STALL_CHECK);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the last message was taken up: handling it may block (sending to a slow client or
    // server), and that time does not count against the client's unfinished message.
    let mut woke: Option<Instant> = None;
    loop {
        if woke.take().is_some_and(|w| w.elapsed() >= STALL_CHECK) {
            lock(&charge).resume();
        }
        tokio::select! {
            _ = watch.tick() => {
                if lock(&charge).stalled(gw.body_timeout) {
                    tracing::info!(identity = %identity.audit_name(), "a WebSocket message was not completed in time: closed");
                    gw.metrics.deny("body_timeout");
                    refuse(&mut c_tx, &mut u_tx, CloseCode::Policy, "message not completed in time").await;
                    break;
                }
            }
            _ = &mut expiry => {
                tracing::info!(identity = %identity.audit_name(), "credential expired: WebSocket closed");
                gw.metrics.deny("stream_credential_expired");
                refuse(&mut c_tx, &mut u_tx, CloseCode::Policy, "credential expired").await;
                break;
            }
            m = c_rx.next() => { woke = Some(Instant::now());
            match &m {
                Some(Ok(Message::Ping(p) | Message::Pong(p))) => lock(&charge).control(p.len()),
                Some(Ok(_)) => lock(&charge).settle(),
                _ => {}
            }
            if let Some(frame) = ending(&m) {
                let _ = u_tx.send(Message::Close(frame)).await;
                break;
            }
            match m {
                Some(Ok(Message::Text(text))) => {
                    let start = Instant::now();
                    let mut rec = base.clone();
                    let checked = check(&gw, text.as_str(), &identity, &access, tasks.as_ref(), &mut rec)
                        .and_then(|admitted| hold(&gw, &identity, admitted, &mut awaiting));
                    match checked {
                        Ok(admitted) => {
                            filter.ids.entries.extend(admitted.ids.entries.iter().cloned());
                            // Remember the most recent ids only: an answer later than 256 lists is not restored.
                            let excess = filter.ids.entries.len().saturating_sub(256);
                            filter.ids.entries.drain(..excess);
                            let forward = String::from_utf8_lossy(&admitted.forward()).into_owned();
                            if u_tx.send(Message::text(forward)).await.is_err() { break; }
                            finish(&gw, rec, 200, Decision::Allow, None, start);
                        }
                        Err((refusal, reply)) => {
                            finish(&gw, rec, refusal.status().as_u16(), Decision::Deny, Some((refusal.reason(), refusal.detail())), start);
                            if let Some(reply) = reply {
                                if c_tx.send(Message::text(reply.to_string())).await.is_err() { break; }
                            }
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    refuse(&mut c_tx, &mut u_tx, CloseCode::Unsupported, "MCP messages are text").await;
                    break;
                }
                _ => {}
            }},
            m = u_rx.next() => { woke = Some(Instant::now());
            if let Some(frame) = ending(&m) {
                let _ = c_tx.send(Message::Close(frame)).await;
                break;
            }
            match m {
                Some(Ok(Message::Text(text))) => {
                    awaiting.answered(text.as_str());
                    let out = if filter.passes_untouched(text.as_bytes()) {
                        Message::Text(text)
                    } else {
                        match filter.apply_text(text.as_bytes()) {
                            Ok(out) => Message::text(String::from_utf8_lossy(&out).into_owned()),
                            Err(e) => {
                                tracing::warn!(error = %e, "a WebSocket message from the server could not be inspected: dropped");
                                gw.metrics.deny("uninspectable_answer");
                                continue;
                            }
                        }
                    };
                    if c_tx.send(out).await.is_err() { break; }
                }
                // MCP messages are text: binary frames pass only where nothing is inspected.
                Some(Ok(Message::Binary(b))) => {
                    awaiting.answered(&String::from_utf8_lossy(&b));
                    if filter.is_noop() {
                        if c_tx.send(Message::Binary(b)).await.is_err() { break; }
                    } else {
                        gw.metrics.deny("uninspectable_answer");
                    }
                }
                _ => {}
            }},
        }
    }
}

/// Closes a connection the gateway ends: the client is told why, the server gets a plain close.
async fn refuse<C, U>(client: &mut C, server: &mut U, code: CloseCode, reason: &'static str)
where
    C: futures_util::Sink<Message> + Unpin,
    U: futures_util::Sink<Message> + Unpin,
{
    let _ = client.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    let _ = server.send(Message::Close(None)).await;
}

/// Whether `m`, one side's next message, ends the connection, and then the close frame the other
/// side gets: the one it sent, or none when it failed or went away without one.
fn ending<E>(m: &Option<Result<Message, E>>) -> Option<Option<CloseFrame>> {
    match m {
        Some(Ok(Message::Close(frame))) => Some(frame.clone()),
        Some(Err(_)) | None => Some(None),
        Some(Ok(_)) => None,
    }
}

/// Check one client frame: what may be forwarded, or the refusal and the reply it gets (requests
/// get a JSON-RPC error; notifications and answers get none).
fn check(
    gw: &Gateway,
    text: &str,
    identity: &Identity,
    access: &ToolAccess,
    tasks: Option<&TaskBinding>,
    rec: &mut Record,
) -> Result<admission::Admitted, (Refusal, Option<Value>)> {
    // Every frame counts against the rate limit, refused ones too, and before the work of
    // checking it (only the id of a refused one is read, for its error).
    if let Err(refusal) = gw.rate_check(&identity.rate_key()) {
        // Each request (id and method) gets its error; notifications and answers get none.
        let error = |m: &Value| match (m.get("id"), m.get("method")) {
            (Some(id), Some(_)) if !id.is_null() => Some(refusal.rpc_error(Some(id))),
            _ => None,
        };
        let reply = match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(batch)) => {
                let errors: Vec<Value> = batch.iter().filter_map(error).collect();
                (!errors.is_empty()).then_some(Value::Array(errors))
            }
            Ok(message) => error(&message),
            Err(_) => Some(refusal.rpc_error(None)),
        };
        return Err((refusal, reply));
    }
    let anonymous = identity.anonymous && access.is_restricted();
    let bytes = bytes::Bytes::copy_from_slice(text.as_bytes());
    let admitted = match admission::admit(bytes, gw.max_batch, access, anonymous, false, tasks) {
        Ok(a) => a,
        Err(denied) => {
            let denied = *denied;
            rec.method = denied.method;
            rec.tool = denied.tool;
            return Err((denied.refusal, Some(denied.reply)));
        }
    };
    rec.method = Some(admitted.parsed.method_label());
    rec.tool = admitted.parsed.tool_label();
    Ok(admitted)
}

/// Most requests one socket may have awaiting their answers (without authentication the
/// caller's in-flight limit does not apply).
const MAX_AWAITING: usize = 4096;

/// A request id as a key: numbers by value (`1`, `1.0` and `1e0` are one id; a server may write
/// back any of them), anything else as its JSON text.
fn id_key(id: &Value) -> String {
    match id.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => id.to_string(),
    }
}

/// A socket's requests awaiting their answers, by the id the server got ([`id_key`]), each
/// holding one of the caller's in-flight permits.
#[derive(Default)]
struct Awaiting(std::collections::HashMap<String, crate::inflight::Permit>);

impl Awaiting {
    /// The server's frame `text`: its answers' requests are done. An error the server could not
    /// tie to a request (id null: a batch it does not take, say) frees one.
    fn answered(&mut self, text: &str) {
        if self.0.is_empty() {
            return;
        }
        let mut done = |m: &Value| {
            if m.get("method").is_some() || !(m.get("result").is_some() || m.get("error").is_some()) {
                return;
            }
            match m.get("id").filter(|id| !id.is_null()) {
                Some(id) => {
                    self.0.remove(&id_key(id));
                }
                None => {
                    if let Some(any) = self.0.keys().next().cloned() {
                        self.0.remove(&any);
                    }
                }
            }
        };
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(batch)) => batch.iter().for_each(done),
            Ok(message) => done(&message),
            Err(_) => {}
        }
    }
}

/// Takes one of the caller's in-flight permits per request in `admitted` into `awaiting`, or
/// refuses the frame (429 `caller_in_flight`: an error per request) when the caller holds its
/// limit (or the socket [`MAX_AWAITING`]). A request the client cancels
/// (`notifications/cancelled`; the server sends no answer) is done.
fn hold(
    gw: &Gateway,
    identity: &Identity,
    admitted: admission::Admitted,
    awaiting: &mut Awaiting,
) -> Result<admission::Admitted, (Refusal, Option<Value>)> {
    let forwarded_id = |i: usize, id: Option<&Value>| {
        let rewritten = admitted.rewrites.iter().find(|(at, _)| *at == i).map(|(_, text)| text.clone());
        rewritten.or_else(|| id.map(id_key))
    };
    let mut held = vec![];
    let mut cancelled = vec![];
    for (i, m) in admitted.parsed.messages.iter().enumerate() {
        match m.kind {
            jsonrpc::Kind::Request => {
                let permit = (awaiting.0.len() + held.len() < MAX_AWAITING)
                    .then(|| gw.in_flight.acquire(&identity.rate_key()))
                    .flatten();
                let Some(permit) = permit else {
                    let refusal = Refusal::CallerBusy;
                    let mut errors: Vec<Value> =
                        admitted.parsed.requests().map(|m| refusal.rpc_error(m.id.as_ref())).collect();
                    let reply =
                        if admitted.parsed.batch { Value::Array(errors) } else { errors.pop().unwrap_or_default() };
                    return Err((refusal, Some(reply)));
                };
                held.push((forwarded_id(i, m.id.as_ref()).unwrap_or_default(), permit));
            }
            jsonrpc::Kind::Notification if m.method.as_deref() == Some("notifications/cancelled") => {
                cancelled.extend(admitted.parsed.cancelled_request(i));
            }
            _ => {}
        }
    }
    awaiting.0.extend(held);
    // After: a batch may cancel a request of its own.
    for id in cancelled {
        awaiting.0.remove(&id_key(&id));
    }
    Ok(admitted)
}

fn finish(
    gw: &Gateway,
    mut rec: Record,
    status: u16,
    decision: Decision,
    reason: Option<(&str, String)>,
    start: Instant,
) {
    let took = start.elapsed();
    rec.http_method = "WS".into();
    rec.status = status;
    rec.decision = Some(decision);
    rec.latency_ms = (took.as_secs_f64() * 1e6).round() / 1e3;
    if let Some((label, detail)) = reason {
        if decision == Decision::Deny {
            gw.metrics.deny(label);
        }
        rec.reason = Some(detail);
    }
    let method = rec.method.clone().unwrap_or_else(|| "websocket".into());
    gw.metrics.observe(&method, rec.tool.as_deref(), status, decision.as_str(), took);
    gw.audit.record(rec);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_id_is_one_key_however_the_server_writes_its_number() {
        assert_eq!(id_key(&json!(1)), id_key(&json!(1.0)));
        assert_eq!(id_key(&json!(-0.0)), id_key(&json!(0)));
        assert_ne!(id_key(&json!(1)), id_key(&json!("1")));
        assert_ne!(id_key(&json!(1.5)), id_key(&json!(1)));
        assert_eq!(id_key(&json!("mcpgw-a-1")), "\"mcpgw-a-1\"");
    }

    #[test]
    fn answers_free_their_requests_and_an_error_without_id_frees_one() {
        let table = crate::inflight::InFlight::new(10);
        let mut awaiting = Awaiting::default();
        for id in [json!(1), json!("a"), json!(3)] {
            awaiting.0.insert(id_key(&id), table.acquire("c").unwrap());
        }
        assert_eq!(table.held("c"), 3);
        awaiting.answered(r#"{"jsonrpc":"2.0","id":1.0,"result":{}}"#);
        awaiting.answered(r#"{"jsonrpc":"2.0","id":"a","method":"sampling/createMessage","params":{}}"#);
        awaiting.answered(r#"[{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"m"}}]"#);
        assert_eq!(table.held("c"), 1, "1 and a answered; a server request is no answer");
        awaiting.answered(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"batch"}}"#);
        assert_eq!(table.held("c"), 0);
    }
}
