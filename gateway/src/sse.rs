//! Server-sent events: an incremental filter that drops disallowed tools from `tools/list`
//! responses inside an event stream, event by event (never the whole stream), and helpers to
//! write events.

use crate::authz::{filter_tools_response, ToolAccess};
use crate::{Body, BoxError};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use std::collections::HashSet;

/// Largest single event held while looking for its end.
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

/// Which responses to filter.
#[derive(Clone, Debug)]
pub enum Target {
    /// Responses with these ids (JSON text of the id).
    Ids(HashSet<String>),
    /// Every response that carries `result.tools` (GET streams, where the request is unknown).
    AnyToolsResult,
}

impl Target {
    fn applies(&self, msg: &Value) -> bool {
        match self {
            Self::Ids(ids) => msg.get("id").is_some_and(|id| ids.contains(&id.to_string())),
            Self::AnyToolsResult => true,
        }
    }
}

/// Filter one JSON-RPC message or batch in place. True when changed.
pub fn filter_value(v: &mut Value, target: &Target, access: &ToolAccess) -> bool {
    match v {
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= filter_value(item, target, access);
            }
            changed
        }
        msg => target.applies(msg) && filter_tools_response(msg, access),
    }
}

/// Cuts a byte stream into complete events, holding at most [`MAX_EVENT`] of an unfinished one.
#[derive(Default)]
struct EventSplitter {
    buf: Vec<u8>,
}

/// An unfinished event grew beyond [`MAX_EVENT`].
struct EventTooLarge;

impl EventSplitter {
    /// Feed a chunk; `each` gets every event it completes, and the separator after it.
    fn push(&mut self, chunk: &[u8], mut each: impl FnMut(&[u8], &[u8])) -> Result<(), EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some((end, sep)) = event_end(&self.buf[start..]) {
            each(&self.buf[start..start + end], &self.buf[start + end..start + end + sep]);
            start += end + sep;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_EVENT {
            self.buf = vec![];
            return Err(EventTooLarge);
        }
        Ok(())
    }

    /// What is left at the end of the stream (an unterminated event).
    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\n' if buf.get(i + 1) == Some(&b'\n') => return Some((i, 2)),
            b'\r' if buf[i + 1..].starts_with(b"\n\r\n") => return Some((i, 4)),
            b'\r' if buf.get(i + 1) == Some(&b'\r') => return Some((i, 2)),
            _ => {}
        }
        i += 1;
    }
    None
}

/// An event's data (its `data:` lines joined by newlines) and its other lines.
fn event_fields(event: &str) -> (String, Vec<&str>) {
    let mut data = String::new();
    let mut others = vec![];
    for line in event.split(['\n', '\r']).filter(|l| !l.is_empty()) {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else {
            others.push(line);
        }
    }
    (data, others)
}

/// The incremental filter.
pub struct SseFilter {
    events: EventSplitter,
    target: Target,
    access: ToolAccess,
}

impl SseFilter {
    /// A filter for `target` under `access`.
    pub fn new(target: Target, access: ToolAccess) -> Self {
        Self { events: EventSplitter::default(), target, access }
    }

    /// Feed a chunk; returns the bytes of the complete events, filtered.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, BoxError> {
        let mut out = Vec::with_capacity(self.events.buf.len() + chunk.len());
        let (target, access) = (&self.target, &self.access);
        self.events
            .push(chunk, |event, sep| {
                out.extend_from_slice(&rewrite(event, target, access).unwrap_or_else(|| event.to_vec()));
                out.extend_from_slice(sep);
            })
            .map_err(|EventTooLarge| BoxError::from("server-sent event too large to inspect"))?;
        Ok(Bytes::from(out))
    }

    /// What is left at the end of the stream (an unterminated event), unchanged.
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(self.events.rest())
    }
}

/// A rewritten event when its data is a response to filter.
fn rewrite(event: &[u8], target: &Target, access: &ToolAccess) -> Option<Vec<u8>> {
    let (data, others) = event_fields(std::str::from_utf8(event).ok()?);
    let mut v: Value = serde_json::from_str(&data).ok()?;
    if !filter_value(&mut v, target, access) {
        return None;
    }
    let mut out = String::new();
    for l in others {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&v.to_string());
    Some(out.into_bytes())
}

/// Wrap a streamed body in the filter.
pub fn filter_body<B>(body: B, filter: SseFilter) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let stream = futures_util::stream::unfold(Some((body, filter)), |state| async move {
        let (mut body, mut filter) = state?;
        loop {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match filter.push(&data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Some((Ok(Frame::data(out)), Some((body, filter)))),
                        Err(e) => return Some((Err(e), None)),
                    },
                    Err(frame) => return Some((Ok(frame), Some((body, filter)))),
                },
                Some(Err(e)) => return Some((Err(e.into()), None)),
                None => {
                    let rest = filter.finish();
                    return (!rest.is_empty()).then(|| (Ok(Frame::data(rest)), None));
                }
            }
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(stream.boxed()))
}

/// An SSE answer to a POST that ends for the client as soon as every request of the POST has its
/// response (the server closes such a stream then anyway), so that the last event and the end of
/// the stream leave together instead of in two writes. Whatever the server still sends is read
/// and dropped in the background, so that its connection can be reused.
pub struct EndWhenAnswered {
    inner: Option<Body>,
    waiting: HashSet<String>,
    events: EventSplitter,
}

/// Just what is needed to see whether an event is a response and to which request.
#[derive(serde::Deserialize)]
struct ResponseProbe {
    id: Option<Value>,
    method: Option<serde::de::IgnoredAny>,
    result: Option<serde::de::IgnoredAny>,
    error: Option<serde::de::IgnoredAny>,
}

impl EndWhenAnswered {
    /// Wrap `body`, the answer to requests with `ids` (JSON text of each id).
    pub fn wrap(body: Body, ids: HashSet<String>) -> Body {
        Self { inner: Some(body), waiting: ids, events: EventSplitter::default() }.boxed_unsync()
    }

    /// The requests that `data` (one message or a batch) answers are no longer awaited.
    fn answered(waiting: &mut HashSet<String>, data: &str) {
        let probe = |d: &str| -> Option<String> {
            let p: ResponseProbe = serde_json::from_str(d).ok()?;
            (p.method.is_none() && (p.result.is_some() || p.error.is_some()))
                .then(|| p.id.unwrap_or(Value::Null).to_string())
        };
        if let Some(id) = probe(data) {
            waiting.remove(&id);
        } else if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(data) {
            for item in items {
                if let Some(id) = probe(&item.to_string()) {
                    waiting.remove(&id);
                }
            }
        }
    }

    /// Look at the complete events in `chunk` (with what was left over before it).
    fn scan(&mut self, chunk: &[u8]) {
        let waiting = &mut self.waiting;
        let scanned = self.events.push(chunk, |event, _| {
            let (data, _) = event_fields(std::str::from_utf8(event).unwrap_or(""));
            if !data.is_empty() {
                Self::answered(waiting, &data);
            }
        });
        if scanned.is_err() {
            // Too large to inspect: stop looking, pass the rest through as it comes.
            self.waiting.insert(String::new());
        }
    }
}

impl hyper::body::Body for EndWhenAnswered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let data = data.clone();
                self.scan(&data);
                if self.waiting.is_empty() {
                    if let Some(mut rest) = self.inner.take() {
                        tokio::spawn(async move {
                            let drain = async { while let Some(Ok(_)) = rest.frame().await {} };
                            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
                        });
                    }
                }
            }
        }
        if matches!(polled, std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_)))) {
            self.inner = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }
}

/// A stream that ends when the credential it was opened with stops being accepted: the client
/// reconnects with a fresh one. `on_expiry` runs when that cuts the stream.
pub struct UntilExpiry {
    inner: Option<Body>,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    on_expiry: Option<Box<dyn FnOnce() + Send>>,
}

impl UntilExpiry {
    /// `body`, ended after `left` (unchanged when `None`).
    pub fn wrap(body: Body, left: Option<std::time::Duration>, on_expiry: impl FnOnce() + Send + 'static) -> Body {
        match left {
            None => body,
            Some(left) => Self {
                inner: Some(body),
                deadline: Box::pin(tokio::time::sleep(left)),
                on_expiry: Some(Box::new(on_expiry)),
            }
            .boxed_unsync(),
        }
    }
}

impl hyper::body::Body for UntilExpiry {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.inner.is_none() {
            return std::task::Poll::Ready(None);
        }
        if std::future::Future::poll(self.deadline.as_mut(), cx).is_ready() {
            self.inner = None;
            if let Some(f) = self.on_expiry.take() {
                f();
            }
            return std::task::Poll::Ready(None);
        }
        let polled = self.inner.as_mut().map(|b| std::pin::Pin::new(b).poll_frame(cx));
        polled.unwrap_or(std::task::Poll::Ready(None))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }
}

/// One event carrying a JSON-RPC message.
pub fn event(msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}

/// One event with an id (a client may resume after it with `Last-Event-ID`).
pub fn event_with_id(id: &str, msg: &Value) -> Bytes {
    Bytes::from(format!("id: {id}\nevent: message\ndata: {msg}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;
    use serde_json::json;

    fn ids(list: &[Value]) -> Target {
        Target::Ids(list.iter().map(Value::to_string).collect())
    }

    #[test]
    fn filters_split_events_and_leaves_others_alone() {
        let access = ToolAccess::Only(vec!["echo".into()]);
        let mut f = SseFilter::new(ids(&[json!(2)]), access);
        let list = json!({"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo"},{"name":"secret"}]}});
        let note = json!({"jsonrpc":"2.0","method":"notifications/message","params":{"tools":[]}});
        let stream =
            format!("id: 7\nevent: message\ndata: {note}\n\nevent: message\r\ndata: {list}\r\n\r\n: comment\n\n");
        let (a, b) = stream.as_bytes().split_at(40);
        let mut out = f.push(a).unwrap().to_vec();
        out.extend_from_slice(&f.push(b).unwrap());
        out.extend_from_slice(&f.finish());
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with(&format!("id: 7\nevent: message\ndata: {note}\n\n")), "{out}");
        assert!(out.contains(r#""tools":[{"name":"echo"}]"#), "{out}");
        assert!(!out.contains("secret"));
        assert!(out.ends_with(": comment\n\n"));
    }

    #[test]
    fn other_ids_and_multiline_data() {
        let access = ToolAccess::Only(vec![]);
        let mut f = SseFilter::new(ids(&[json!("a")]), access.clone());
        let other = "data: {\"jsonrpc\":\"2.0\",\"id\":\"b\",\ndata: \"result\":{\"tools\":[{\"name\":\"x\"}]}}\n\n";
        assert_eq!(f.push(other.as_bytes()).unwrap(), other.as_bytes(), "not the tools/list id");
        let mut any = SseFilter::new(Target::AnyToolsResult, access);
        let out = any.push(other.as_bytes()).unwrap();
        assert!(String::from_utf8_lossy(&out).contains(r#""tools":[]"#));
    }

    #[tokio::test]
    async fn ends_when_every_request_is_answered() {
        use futures_util::stream;
        let frames = |parts: Vec<&'static str>| {
            let s = stream::iter(parts.into_iter().map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from(p)))));
            BodyExt::boxed_unsync(StreamBody::new(s))
        };
        let ids = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        let progress =
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n";
        let answer1 = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        let answer2 = "data: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":\"b\",\"error\":{\"code\":1}}\r\n\r\n";

        // One request: a notification, then its answer split over two frames; what follows is dropped.
        let mut b = EndWhenAnswered::wrap(
            frames(vec![progress, &answer1[..10], &answer1[10..], "data: late\n\n"]),
            ids(&["1"]),
        );
        assert_eq!(b.frame().await.unwrap().unwrap().into_data().unwrap(), progress);
        assert!(!b.is_end_stream());
        assert_eq!(b.frame().await.unwrap().unwrap().into_data().unwrap(), &answer1[..10]);
        assert!(!b.is_end_stream(), "half an event");
        assert_eq!(b.frame().await.unwrap().unwrap().into_data().unwrap(), &answer1[10..]);
        assert!(b.is_end_stream(), "answered: the stream ends with this frame");
        assert!(b.frame().await.is_none());

        // Two requests (multi-line data, CRLF): the end comes with the second answer only.
        let mut b = EndWhenAnswered::wrap(frames(vec![answer1, answer2]), ids(&["1", "\"b\""]));
        b.frame().await.unwrap().unwrap();
        assert!(!b.is_end_stream());
        b.frame().await.unwrap().unwrap();
        assert!(b.is_end_stream());

        // Never answered: the stream ends when the server ends it.
        let mut b = EndWhenAnswered::wrap(frames(vec![progress]), ids(&["9"]));
        b.frame().await.unwrap().unwrap();
        assert!(!b.is_end_stream());
        assert!(b.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn streams_end_when_the_credential_expires() {
        let forever = || {
            let s = futures_util::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                Some((Ok::<_, BoxError>(Frame::data(Bytes::from(format!(": {n}\n\n")))), n + 1))
            });
            BodyExt::boxed_unsync(StreamBody::new(s.boxed()))
        };
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cut.clone();
        let mut b = UntilExpiry::wrap(forever(), Some(std::time::Duration::from_millis(2500)), move || {
            c.store(true, std::sync::atomic::Ordering::SeqCst)
        });
        let start = tokio::time::Instant::now();
        let mut frames = 0;
        while b.frame().await.is_some() {
            frames += 1;
        }
        assert_eq!(frames, 2, "frames before the deadline pass, none after");
        assert_eq!(start.elapsed().as_millis(), 2500);
        assert!(cut.load(std::sync::atomic::Ordering::SeqCst) && b.is_end_stream());
        // No expiry: the body is left alone.
        let mut b = UntilExpiry::wrap(forever(), None, || {});
        assert!(b.frame().await.is_some());
    }

    #[test]
    fn oversized_event_fails_closed() {
        let mut f = SseFilter::new(Target::AnyToolsResult, ToolAccess::All);
        assert!(f.push(&vec![b'x'; MAX_EVENT + 1]).is_err());
    }
}
