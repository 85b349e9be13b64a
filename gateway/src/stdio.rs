//! The stdio bridge: one child process per MCP session, newline-delimited JSON-RPC on its stdin
//! and stdout (MCP stdio transport), exposed as Streamable HTTP by the front end. Sessions are
//! bounded in number and ended on DELETE, after an idle timeout and at shutdown.
//!
//! Server messages that are not responses go where Streamable HTTP says they should: those related
//! to a request still in flight (its progress notifications, matched by `progressToken`; anything
//! else while exactly one request stream is open, e.g. a `sampling/createMessage` during a
//! `tools/call`) onto that request's SSE answer, everything else onto the session's GET stream.

use crate::metrics::Metrics;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

/// Largest line read from a child (one JSON-RPC message).
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// Server messages of the GET stream kept for a client that reconnects (at most), and the most
/// queued for a stream that is not read.
const BACKLOG: usize = 256;
/// Bytes (as the server wrote them) of the GET stream's messages kept for a client that
/// reconnects, and, apart from them, the most queued for one live stream that is not read: a
/// caller that asks for large answers and never reads them holds no more than this per stream
/// (else 256 messages of up to [`MAX_LINE`] each). Messages are kept as the lines the server
/// wrote (shared by the history and the stream), parsed again when written.
pub const MAX_STREAM_BYTES: usize = 4 * 1024 * 1024;

/// A message of the GET stream (the line the server wrote) and its event number (its SSE id is
/// `get-N`), holding its share of its stream's byte budget until it is written.
pub type Numbered = (u64, bytes::Bytes, Queued);

/// A queued message's share of [`MAX_STREAM_BYTES`], given back when the message is dropped.
pub struct Queued(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// The session's GET stream: the live one, and the recent messages a client that comes back
/// with `Last-Event-ID` missed.
#[derive(Default)]
struct GetStream {
    /// The live stream and its byte budget (each stream its own: an old one not yet gone still
    /// holds its own).
    tx: Option<(mpsc::Sender<Numbered>, Arc<tokio::sync::Semaphore>)>,
    /// Recent messages: number and line.
    history: VecDeque<(u64, bytes::Bytes)>,
    /// Their lines' bytes.
    history_bytes: usize,
    /// Number of the last message.
    last: u64,
    /// Number of the last message handed to a live stream.
    delivered: u64,
}

/// `size` bytes of a stream's `budget` (all of it for a message larger than that), if free.
fn reserve(budget: &Arc<tokio::sync::Semaphore>, size: usize) -> Option<Queued> {
    let permits = u32::try_from(size.clamp(1, MAX_STREAM_BYTES)).ok()?;
    budget.clone().try_acquire_many_owned(permits).ok().map(Queued)
}

/// The SSE id of a GET stream event.
pub fn event_id(n: u64) -> String {
    format!("get-{n}")
}

/// The event number in a `Last-Event-ID` this bridge gave out.
pub fn parse_event_id(id: &str) -> Option<u64> {
    id.trim().strip_prefix("get-")?.parse().ok()
}
/// How long a child gets to exit after its stdin is closed (then SIGTERM, then SIGKILL).
const GRACE: Duration = Duration::from_secs(2);

/// Why a bridge call failed; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// No Mcp-Session-Id and not an initialize request (400).
    #[error("Bad Request: no valid session ID provided")]
    NoSession,
    /// Unknown or ended session (404).
    #[error("Session not found")]
    UnknownSession,
    /// --max-sessions reached (503).
    #[error("too many sessions")]
    TooMany,
    /// The caller holds as many sessions as one caller may (429).
    #[error("too many sessions of this caller")]
    CallerTooMany,
    /// The command could not be started (502).
    #[error("starting the server failed: {0}")]
    Spawn(String),
    /// The child exited or closed its output (502).
    #[error("the server process ended")]
    Gone,
}

/// Read one line of at most `max` bytes (without the newline). `Ok(None)` at EOF.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty() && !too_long).then_some(line));
        }
        let (chunk, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(buf.len());
        r.consume(used);
        if found.is_some() {
            if too_long {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// One child process.
pub struct Session {
    /// Mcp-Session-Id.
    pub id: String,
    /// Rate key of the identity that created it.
    pub owner: String,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    child: tokio::sync::Mutex<Option<Child>>,
    pid: Option<u32>,
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    stream: Mutex<GetStream>,
    routes: Mutex<Vec<Route>>,
    next_route: AtomicU64,
    last_active: Mutex<Instant>,
    busy: AtomicUsize,
    alive: AtomicBool,
}

/// Counts a request or stream as activity while it lives.
pub struct Busy(Arc<Session>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// An open request stream: the SSE answer of a POST whose requests are still in flight.
struct Route {
    id: u64,
    /// `params._meta.progressToken` of its requests, as JSON text.
    progress: Vec<String>,
    tx: mpsc::Sender<Value>,
}

/// Keeps a request stream registered while it lives.
pub struct RouteGuard {
    session: Arc<Session>,
    id: u64,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.session.routes.lock().unwrap_or_else(|e| e.into_inner()).retain(|r| r.id != self.id);
    }
}

/// The progress token of a request, as JSON text.
pub fn progress_token(request: &Value) -> Option<String> {
    request.get("params")?.get("_meta")?.get("progressToken").map(Value::to_string)
}

struct PendingGuard<'a> {
    session: &'a Session,
    key: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.session.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Session {
    /// Start the command.
    pub fn spawn(command: &[String], id: String, owner: String) -> Result<Arc<Self>, BridgeError> {
        let (program, args) = command.split_first().ok_or_else(|| BridgeError::Spawn("no command".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| BridgeError::Spawn(format!("{program}: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| BridgeError::Spawn("no stdout".into()))?;
        let stderr = child.stderr.take().ok_or_else(|| BridgeError::Spawn("no stderr".into()))?;
        let session = Arc::new(Self {
            id: id.clone(),
            owner,
            stdin: tokio::sync::Mutex::new(stdin),
            pid: child.id(),
            child: tokio::sync::Mutex::new(Some(child)),
            pending: Mutex::default(),
            stream: Mutex::default(),
            routes: Mutex::default(),
            next_route: AtomicU64::new(0),
            last_active: Mutex::new(Instant::now()),
            busy: AtomicUsize::new(0),
            alive: AtomicBool::new(true),
        });
        tracing::info!(session = %id, pid = ?session.pid, "stdio server started");
        let reader = session.clone();
        tokio::spawn(async move {
            let mut out = BufReader::with_capacity(64 * 1024, stdout);
            loop {
                match read_line_bounded(&mut out, MAX_LINE).await {
                    Ok(Some(line)) if line.iter().all(u8::is_ascii_whitespace) => {}
                    Ok(Some(line)) => match serde_json::from_slice::<Value>(&line) {
                        // Without the spare capacity reading left: the bytes counted are held.
                        Ok(msg) => reader.dispatch(msg, bytes::Bytes::copy_from_slice(&line)),
                        Err(_) => tracing::warn!(session = %reader.id, line = %String::from_utf8_lossy(&line),
                            "stdio server wrote a line that is not JSON-RPC"),
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(session = %reader.id, error = %e, "reading the stdio server's output");
                        break;
                    }
                }
            }
            reader.closed().await;
        });
        let id2 = id.clone();
        tokio::spawn(async move {
            let mut err = BufReader::new(stderr);
            while let Ok(Some(line)) = read_line_bounded(&mut err, 64 * 1024).await {
                tracing::info!(target: "mcp_gateway::child", session = %id2, "{}", String::from_utf8_lossy(&line));
            }
        });
        Ok(session)
    }

    /// The child is running.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Mark activity for as long as the guard lives.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(self.clone())
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.busy.load(Ordering::SeqCst) == 0)
            .then(|| self.last_active.lock().unwrap_or_else(|e| e.into_inner()).elapsed())
    }

    /// A line from the child (`msg` parsed): a response to a waiting request, a message related
    /// to a request stream, or a message for the GET stream.
    fn dispatch(&self, msg: Value, line: bytes::Bytes) {
        let is_response = msg.get("method").is_none() && (msg.get("result").is_some() || msg.get("error").is_some());
        if is_response {
            if let Some(id) = msg.get("id") {
                let waiter = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id.to_string());
                if let Some(tx) = waiter {
                    let _ = tx.send(msg);
                    return;
                }
            }
            self.to_stream(line);
            return;
        }
        let msg = match self.route_for(&msg) {
            Some(tx) => match tx.try_send(msg) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => m,
            },
            None => msg,
        };
        drop(msg);
        self.to_stream(line);
    }

    /// The request stream a server request or notification belongs to: by progress token, or the
    /// only one open. Session-wide notifications (list changes, resource updates), ambiguous and
    /// unrelated messages go to the GET stream.
    fn route_for(&self, msg: &Value) -> Option<mpsc::Sender<Value>> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if routes.is_empty() {
            return None;
        }
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        if method == "notifications/progress" {
            let token = msg.get("params").and_then(|p| p.get("progressToken")).map(Value::to_string)?;
            return routes.iter().find(|r| r.progress.contains(&token)).map(|r| r.tx.clone());
        }
        if method.ends_with("/list_changed") || method == "notifications/resources/updated" {
            return None;
        }
        match routes.as_slice() {
            [only] => Some(only.tx.clone()),
            _ => None,
        }
    }

    /// Open a request stream for requests carrying `progress` tokens: related server messages are
    /// delivered to the receiver until the guard is dropped.
    pub fn open_route(self: &Arc<Self>, progress: Vec<String>) -> (RouteGuard, mpsc::Receiver<Value>) {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let id = self.next_route.fetch_add(1, Ordering::Relaxed);
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).push(Route { id, progress, tx });
        (RouteGuard { session: self.clone(), id }, rx)
    }

    fn to_stream(&self, line: bytes::Bytes) {
        let size = line.len();
        let mut g = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        g.last += 1;
        let n = g.last;
        // The history keeps the latest BACKLOG messages within MAX_STREAM_BYTES; a larger message
        // is delivered live only.
        let keep = size <= MAX_STREAM_BYTES;
        while !g.history.is_empty()
            && (g.history.len() >= BACKLOG || (keep && g.history_bytes + size > MAX_STREAM_BYTES))
        {
            if let Some((old, old_line)) = g.history.pop_front() {
                g.history_bytes -= old_line.len();
                if old > g.delivered {
                    tracing::warn!(session = %self.id, "no GET stream; oldest server message dropped");
                }
            }
        }
        if keep {
            g.history.push_back((n, line.clone()));
            g.history_bytes += size;
        }
        let sent = g.tx.as_ref().map(|(tx, budget)| {
            // Not read (its budget or queue full) or gone: end it; a client that reconnects
            // with Last-Event-ID gets what it missed from the history.
            reserve(budget, size).is_some_and(|queued| tx.try_send((n, line, queued)).is_ok())
        });
        match sent {
            Some(true) => g.delivered = n,
            Some(false) => g.tx = None,
            None => {}
        }
        if !keep && sent != Some(true) {
            tracing::warn!(session = %self.id, bytes = size, "a server message larger than a GET stream keeps had no stream to take it: dropped");
        }
    }

    /// Open the session's GET stream (replacing an older one): first the messages after
    /// `last_event` (`Last-Event-ID`), or without one those no stream has had yet; then live ones.
    /// A replay that does not fit the stream's budget ends it after what fits (the client comes
    /// back for the rest).
    pub fn open_stream(&self, last_event: Option<u64>) -> mpsc::Receiver<Numbered> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let budget = Arc::new(tokio::sync::Semaphore::new(MAX_STREAM_BYTES));
        let mut g = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let after = last_event.unwrap_or(g.delivered);
        let mut delivered = g.delivered;
        let mut complete = true;
        for (n, line) in g.history.iter().filter(|(n, _)| *n > after) {
            let sent =
                reserve(&budget, line.len()).is_some_and(|queued| tx.try_send((*n, line.clone(), queued)).is_ok());
            if !sent {
                complete = false;
                break;
            }
            delivered = delivered.max(*n);
        }
        g.delivered = delivered;
        g.tx = complete.then_some((tx, budget));
        rx
    }

    /// Write one message as a line.
    pub async fn send(&self, msg: &Value) -> Result<(), BridgeError> {
        let mut line = serde_json::to_vec(msg).map_err(|_| BridgeError::Gone)?;
        line.push(b'\n');
        self.send_line(&line).await
    }

    /// Write one line (a message the front end checked, exactly as checked, ending in a newline).
    pub async fn send_line(&self, line: &[u8]) -> Result<(), BridgeError> {
        let mut stdin = self.stdin.lock().await;
        let w = stdin.as_mut().ok_or(BridgeError::Gone)?;
        w.write_all(line).await.map_err(|_| BridgeError::Gone)?;
        w.flush().await.map_err(|_| BridgeError::Gone)
    }

    /// Send a request and wait for its response.
    pub async fn request(&self, msg: &Value) -> Result<Value, BridgeError> {
        let id = msg.get("id").ok_or(BridgeError::Gone)?.to_string();
        let mut line = serde_json::to_vec(msg).map_err(|_| BridgeError::Gone)?;
        line.push(b'\n');
        self.request_line(&line, id).await
    }

    /// Send a request line whose id is `id` (JSON text) and wait for its response.
    pub async fn request_line(&self, line: &[u8], id: String) -> Result<Value, BridgeError> {
        let (tx, rx) = oneshot::channel();
        if !self.is_alive() {
            return Err(BridgeError::Gone);
        }
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), tx);
        let _guard = PendingGuard { session: self, key: id };
        self.send_line(line).await?;
        rx.await.map_err(|_| BridgeError::Gone)
    }

    async fn closed(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.stream.lock().unwrap_or_else(|e| e.into_inner()).tx = None;
        if let Some(mut child) = self.child.lock().await.take() {
            let status = tokio::time::timeout(GRACE, child.wait()).await;
            match status {
                Ok(Ok(s)) => tracing::info!(session = %self.id, status = %s, "stdio server exited"),
                _ => {
                    self.signal_group(nix::sys::signal::Signal::SIGKILL);
                    let _ = child.kill().await;
                }
            }
        }
    }

    fn signal_group(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// End the child: close its stdin (the MCP way), then SIGTERM, then SIGKILL, to its whole
    /// process group (a wrapper such as npx takes its children along).
    pub async fn terminate(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.stdin.lock().await.take();
        let Some(mut child) = self.child.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
            self.signal_group(nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                self.signal_group(nix::sys::signal::Signal::SIGKILL);
                let _ = child.kill().await;
            }
        }
        // Whatever else is left in the group.
        self.signal_group(nix::sys::signal::Signal::SIGKILL);
        tracing::info!(session = %self.id, "stdio server ended");
    }
}

/// A fresh, unguessable session id.
pub fn new_session_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).expect("system randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// All sessions.
pub struct Bridge {
    command: Vec<String>,
    max: usize,
    per_owner: usize,
    idle: Duration,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    metrics: Arc<Metrics>,
}

impl Bridge {
    /// A bridge for `command`: at most `max` sessions (child processes), `per_owner` of one caller.
    pub fn new(command: Vec<String>, max: usize, per_owner: usize, idle: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        let per_owner = per_owner.max(1);
        Arc::new(Self { command, max: max.max(1), per_owner, idle, sessions: Mutex::default(), metrics })
    }

    fn update_gauge(&self, n: usize) {
        self.metrics.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Start a session for an initialize request.
    pub fn create(&self, owner: &str) -> Result<Arc<Session>, BridgeError> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.is_alive());
        if map.len() >= self.max {
            return Err(BridgeError::TooMany);
        }
        if map.values().filter(|s| s.owner == owner).count() >= self.per_owner {
            return Err(BridgeError::CallerTooMany);
        }
        let s = Session::spawn(&self.command, new_session_id(), owner.to_string())?;
        map.insert(s.id.clone(), s.clone());
        self.update_gauge(map.len());
        Ok(s)
    }

    /// A child for the readiness handshake, not counted as a session.
    pub fn spawn_probe(&self) -> Result<Arc<Session>, BridgeError> {
        Session::spawn(&self.command, format!("probe-{}", new_session_id()), String::new())
    }

    /// A running session.
    pub fn get(&self, id: &str) -> Result<Arc<Session>, BridgeError> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|s| s.is_alive()).cloned().ok_or(BridgeError::UnknownSession)
    }

    /// End a session (DELETE).
    pub async fn remove(&self, id: &str) -> Result<(), BridgeError> {
        let s = {
            let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let s = map.remove(id);
            self.update_gauge(map.len());
            s
        };
        let s = s.ok_or(BridgeError::UnknownSession)?;
        s.terminate().await;
        Ok(())
    }

    /// End sessions that are idle or whose child died.
    pub async fn reap(&self) {
        let gone: Vec<Arc<Session>> = {
            let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, s)| !s.is_alive() || s.idle_for().is_some_and(|d| d > self.idle))
                .map(|(k, _)| k.clone())
                .collect();
            let gone = ids.iter().filter_map(|k| map.remove(k)).collect();
            self.update_gauge(map.len());
            gone
        };
        for s in gone {
            if s.is_alive() {
                tracing::info!(session = %s.id, "stdio session idle, ending it");
            }
            s.terminate().await;
        }
    }

    /// Reap periodically.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        let every = (self.idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(b) = this.upgrade() else { return };
                b.reap().await;
            }
        });
    }

    /// End every session (shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Session>> = {
            let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            self.update_gauge(0);
            map.drain().map(|(_, s)| s).collect()
        };
        futures_util::future::join_all(all.iter().map(|s| s.terminate())).await;
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// No sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GET stream message as JSON.
    trait Json {
        fn json(&self) -> Value;
    }

    impl Json for Numbered {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.1).unwrap()
        }
    }
    use serde_json::json;

    #[tokio::test]
    async fn bounded_lines() {
        let data = b"{\"a\":1}\r\n\nxxxxxxxxxxxxxxxxxxxx\n{\"b\":2}".to_vec();
        let mut r = BufReader::with_capacity(4, &data[..]);
        assert_eq!(read_line_bounded(&mut r, 10).await.unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(read_line_bounded(&mut r, 10).await.unwrap().unwrap(), b"");
        assert!(read_line_bounded(&mut r, 10).await.is_err(), "too long");
        assert_eq!(read_line_bounded(&mut r, 10).await.unwrap().unwrap(), b"{\"b\":2}");
        assert_eq!(read_line_bounded(&mut r, 10).await.unwrap(), None);
    }

    fn cat_bridge(max: usize, idle: Duration) -> Arc<Bridge> {
        // `cat` echoes each request line back: a response-shaped line resolves the request.
        Bridge::new(vec!["cat".into()], max, max, idle, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn request_response_and_stream_routing() {
        let b = cat_bridge(2, Duration::from_secs(60));
        let s = b.create("jwt:alice").unwrap();
        let echoed = s.request(&json!({"jsonrpc": "2.0", "id": 5, "result": {"ok": true}})).await.unwrap();
        assert_eq!(echoed["result"]["ok"], true);
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/message"})).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut rx = s.open_stream(None);
        assert_eq!(rx.recv().await.unwrap().json()["method"], "notifications/message", "backlog delivered");
        assert_eq!(b.len(), 1);
        b.remove(&s.id).await.unwrap();
        assert!(b.get(&s.id).is_err());
        assert!(!s.is_alive());
    }

    #[tokio::test]
    async fn related_messages_go_to_their_request_stream() {
        let b = cat_bridge(1, Duration::from_secs(60));
        let s = b.create("a").unwrap();
        let progress = |token: &str| json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}});
        let log = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info"}});
        assert_eq!(progress_token(&json!({"params": {"_meta": {"progressToken": "t1"}}})).as_deref(), Some("\"t1\""));

        // One request stream: its progress and other server messages go to it, session-wide
        // notifications to the GET stream.
        let (g1, mut r1) = s.open_route(vec!["\"t1\"".into()]);
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})).await.unwrap();
        s.send(&progress("t1")).await.unwrap();
        s.send(&log).await.unwrap();
        assert_eq!(r1.recv().await.unwrap()["params"]["progressToken"], "t1");
        assert_eq!(r1.recv().await.unwrap()["method"], "notifications/message");
        let mut get = s.open_stream(None);
        assert_eq!(get.recv().await.unwrap().json()["method"], "notifications/tools/list_changed");

        // Two: progress by token; anything else is ambiguous and goes to the GET stream.
        let (g2, mut r2) = s.open_route(vec!["\"t2\"".into()]);
        s.send(&progress("t2")).await.unwrap();
        s.send(&progress("t1")).await.unwrap();
        s.send(&log).await.unwrap();
        assert_eq!(r2.recv().await.unwrap()["params"]["progressToken"], "t2");
        assert_eq!(r1.recv().await.unwrap()["params"]["progressToken"], "t1");
        assert_eq!(get.recv().await.unwrap().json()["method"], "notifications/message");

        // Closed streams no longer receive; an unknown token goes to the GET stream.
        drop((g1, g2));
        s.send(&progress("t1")).await.unwrap();
        assert_eq!(get.recv().await.unwrap().json()["params"]["progressToken"], "t1");
        assert!(r1.try_recv().is_err() && r2.try_recv().is_err());
        b.remove(&s.id).await.unwrap();
    }

    #[tokio::test]
    async fn get_stream_resumes_after_last_event_id() {
        let b = cat_bridge(1, Duration::from_secs(60));
        let s = b.create("a").unwrap();
        let note = |i: u64| json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"i": i}});
        let mut get = s.open_stream(None);
        for i in 1..=3 {
            s.send(&note(i)).await.unwrap();
        }
        let first = get.recv().await.unwrap();
        let (n1, m1) = (first.0, first.json());
        assert_eq!((n1, m1["params"]["i"].as_u64()), (1, Some(1)));
        assert_eq!(parse_event_id(&event_id(n1)), Some(1));
        assert_eq!(parse_event_id("other-7"), None);
        // The connection breaks after the first event; two more come meanwhile.
        drop(get);
        s.send(&note(4)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = s.open_stream(Some(n1));
        let replayed: Vec<u64> = [again.recv().await, again.recv().await, again.recv().await]
            .into_iter()
            .map(|m| m.unwrap().json()["params"]["i"].as_u64().unwrap())
            .collect();
        assert_eq!(replayed, vec![2, 3, 4], "what came after event 1, once");
        // A new stream without Last-Event-ID does not repeat what a stream already had.
        drop(again);
        let mut fresh = s.open_stream(None);
        s.send(&note(5)).await.unwrap();
        assert_eq!(fresh.recv().await.unwrap().json()["params"]["i"], 5);
        b.remove(&s.id).await.unwrap();
    }

    #[tokio::test]
    async fn an_unread_get_stream_and_its_history_hold_bounded_bytes() {
        let b = cat_bridge(1, Duration::from_secs(60));
        let s = b.create("a").unwrap();
        let big = |i: u64| {
            // Each a little over half the budget.
            let fill = "x".repeat(MAX_STREAM_BYTES / 2 - 10);
            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"i": i, "data": fill}})
        };
        // A stream that is not read: the first fits its budget, the second ends it.
        let mut get = s.open_stream(None);
        for i in 1..=3 {
            s.send(&big(i)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get.recv().await.unwrap().0, 1);
        assert!(get.recv().await.is_none(), "ended once its budget was full");
        {
            let g = s.stream.lock().unwrap();
            assert!(g.history_bytes <= MAX_STREAM_BYTES, "{} bytes kept", g.history_bytes);
            assert_eq!(g.history.iter().map(|h| h.0).collect::<Vec<_>>(), vec![3], "the newest that fit");
        }
        // The client comes back with Last-Event-ID and gets what the history kept.
        let mut again = s.open_stream(Some(1));
        assert_eq!(again.recv().await.unwrap().json()["params"]["i"], 3);
        // Larger than the whole budget: delivered live, not kept.
        let huge = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "y".repeat(MAX_STREAM_BYTES + 1)}});
        s.send(&huge).await.unwrap();
        let huge_got = again.recv().await.unwrap();
        let (n, m) = (huge_got.0, huge_got.json());
        assert_eq!((n, m["params"]["data"].as_str().map(str::len)), (4, Some(MAX_STREAM_BYTES + 1)));
        assert!(s.stream.lock().unwrap().history.iter().all(|h| h.0 != 4));
        // An old stream not read (its connection not yet gone) holds its own budget only: the
        // stream the client reconnects with is not starved by it.
        let mut old = s.open_stream(None);
        s.send(&big(5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut new = s.open_stream(Some(5));
        s.send(&big(6)).await.unwrap();
        assert_eq!(new.recv().await.unwrap().json()["params"]["i"], 6);
        assert_eq!(old.recv().await.unwrap().json()["params"]["i"], 5);
        assert!(old.recv().await.is_none(), "replaced");
        b.remove(&s.id).await.unwrap();
    }

    #[tokio::test]
    async fn bounded_and_reaped() {
        let b = cat_bridge(2, Duration::from_millis(100));
        let s1 = b.create("a").unwrap();
        let _s2 = b.create("b").unwrap();
        assert!(matches!(b.create("c"), Err(BridgeError::TooMany)));
        let busy = s1.busy();
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.reap().await;
        assert_eq!(b.len(), 1, "the busy one stays");
        drop(busy);
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.reap().await;
        assert!(b.is_empty());
    }

    #[tokio::test]
    async fn one_caller_holds_at_most_its_share_of_the_processes() {
        let b = Bridge::new(vec!["cat".into()], 4, 2, Duration::from_secs(60), Arc::new(Metrics::new()));
        let _a1 = b.create("a").unwrap();
        let a2 = b.create("a").unwrap();
        assert_eq!(b.create("a").err(), Some(BridgeError::CallerTooMany));
        let _b1 = b.create("b").expect("another caller starts a session");
        b.remove(&a2.id).await.unwrap();
        b.create("a").expect("a session ended frees the caller's share");
    }

    #[tokio::test]
    async fn dead_child_fails_requests() {
        let b = Bridge::new(vec!["true".into()], 1, 1, Duration::from_secs(60), Arc::new(Metrics::new()));
        let s = b.create("a").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!s.is_alive());
        assert_eq!(
            s.request(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await.unwrap_err(),
            BridgeError::Gone
        );
        assert!(matches!(
            Session::spawn(&["/nonexistent/x".into()], "x".into(), String::new()),
            Err(BridgeError::Spawn(_))
        ));
    }
}
