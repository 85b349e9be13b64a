//! Server-sent events, parsed as the HTML specification defines them (lines end with CRLF, LF
//! or CR; an empty line ends an event; one leading space of a field value is dropped), and one
//! body transform for every SSE answer the gateway passes on: each event is parsed and written
//! again from what was parsed (so the client receives exactly what the gateway inspected), a
//! restricted caller's events are filtered and ids restored, an event that must be inspected but
//! cannot be is replaced by a JSON-RPC error, and the stream ends with the last awaited answer.

use crate::authz::ResponseFilter;
use crate::jsonrpc::{error_response, UPSTREAM_ERROR};
use crate::{Body, BoxError};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use std::collections::HashSet;

/// Largest single event held while looking for its end.
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

/// One event: its fields as parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `id`.
    pub id: Option<String>,
    /// `event` (the type).
    pub event: Option<String>,
    /// `data` lines joined with LF.
    pub data: Option<String>,
    /// `retry`.
    pub retry: Option<String>,
}

impl Event {
    /// The event written with LF line endings, then the empty line that ends it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for (name, value) in [("id", &self.id), ("event", &self.event), ("retry", &self.retry)] {
            if let Some(v) = value {
                out.push_str(name);
                out.push_str(": ");
                out.push_str(v);
                out.push('\n');
            }
        }
        if let Some(data) = &self.data {
            for line in data.split('\n') {
                out.push_str("data: ");
                out.push_str(line);
                out.push('\n');
            }
        }
        if out.is_empty() {
            out.push_str(":\n");
        }
        out.push('\n');
        out.into_bytes()
    }
}

/// An event grew beyond [`MAX_EVENT`], or a line is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Cuts a byte stream into events, incrementally.
#[derive(Default)]
pub struct EventParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting the next one belongs to it.
    after_cr: bool,
    current: Event,
    /// The current event has any line (even a comment): it is dispatched at the empty line.
    started: bool,
    size: usize,
    bom_checked: bool,
    bom_seen: usize,
}

impl EventParser {
    /// Feed a chunk; `each` gets every event it completes.
    pub fn push(&mut self, chunk: &[u8], mut each: impl FnMut(Event)) -> Result<(), Malformed> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        for &b in chunk {
            // A byte order mark at the very start is dropped, however the chunks cut it.
            if !self.bom_checked {
                if b == BOM[self.bom_seen] {
                    self.bom_seen += 1;
                    self.bom_checked = self.bom_seen == BOM.len();
                    continue;
                }
                self.bom_checked = true;
                for &held in &BOM[..std::mem::take(&mut self.bom_seen)] {
                    self.byte(held, &mut each)?;
                }
            }
            self.byte(b, &mut each)?;
        }
        Ok(())
    }

    fn byte(&mut self, b: u8, each: &mut impl FnMut(Event)) -> Result<(), Malformed> {
        if self.after_cr {
            self.after_cr = false;
            if b == b'\n' {
                return Ok(());
            }
        }
        match b {
            b'\n' | b'\r' => {
                self.after_cr = b == b'\r';
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, each)
            }
            _ => {
                self.line.push(b);
                self.size += 1;
                if self.size > MAX_EVENT {
                    return Err(Malformed("server-sent event too large to inspect"));
                }
                Ok(())
            }
        }
    }

    fn line_done(&mut self, line: &[u8], each: &mut impl FnMut(Event)) -> Result<(), Malformed> {
        if line.is_empty() {
            if std::mem::take(&mut self.started) {
                each(std::mem::take(&mut self.current));
            }
            self.size = 0;
            return Ok(());
        }
        self.started = true;
        let line = std::str::from_utf8(line).map_err(|_| Malformed("server-sent event is not UTF-8"))?;
        if line.starts_with(':') {
            return Ok(());
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        let e = &mut self.current;
        match name {
            "data" => match &mut e.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => e.data = Some(value.to_string()),
            },
            "event" => e.event = Some(value.to_string()),
            "id" if !value.contains('\0') => e.id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                e.retry = Some(value.to_string())
            }
            _ => {}
        }
        Ok(())
    }
}

/// What the transform does with the server's SSE answer.
pub struct Transform {
    parser: EventParser,
    filter: ResponseFilter,
    /// The client's ids (JSON text) of the requests whose answers end the stream; None: the
    /// stream ends when the server ends it.
    awaited: Option<HashSet<String>>,
    done: bool,
}

impl Transform {
    /// A transform for `filter`, ending after the answers to `awaited` when given.
    pub fn new(filter: ResponseFilter, awaited: Option<HashSet<String>>) -> Self {
        Self { parser: EventParser::default(), filter, awaited: awaited.filter(|a| !a.is_empty()), done: false }
    }

    /// Every awaited answer has been passed on.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feed a chunk: the events it completes, as the client gets them.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Malformed> {
        let mut out = vec![];
        let mut events = vec![];
        self.parser.push(chunk, |e| events.push(e))?;
        for mut e in events {
            if self.done {
                break;
            }
            // An event without data carries no message (clients drop it); the resumption ids of
            // such priming events pass as they are.
            if let Some(data) = e.data.as_ref().filter(|d| !d.is_empty()) {
                let inspect = !self.filter.passes_untouched(data.as_bytes()) || self.awaited.is_some();
                if inspect {
                    match self.inspect(data) {
                        Ok(Some(rewritten)) => e.data = Some(rewritten),
                        Ok(None) => {}
                        Err(why) => {
                            tracing::warn!(error = %why, "an event from the server could not be inspected: replaced by an error");
                            let err = error_response(
                                None,
                                UPSTREAM_ERROR,
                                "the MCP server sent an event the gateway could not inspect",
                            );
                            e.data = Some(err.to_string());
                        }
                    }
                }
            }
            out.extend_from_slice(&e.to_bytes());
        }
        Ok(out)
    }

    /// The data rewritten (when the filter changes anything), and the awaited answers noted.
    fn inspect(&mut self, data: &str) -> Result<Option<String>, String> {
        let untouched = self.filter.passes_untouched(data.as_bytes());
        let mut v: Value = match crate::jsonrpc::check_strict(data.as_bytes()) {
            Ok(_) => serde_json::from_str(data).map_err(|e| e.to_string())?,
            Err(e) if untouched => {
                // Nothing to hide from this caller: not ours to judge, passed on as it is.
                let _ = e;
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
        };
        let rewritten = if untouched {
            None
        } else {
            self.filter.apply(&mut v);
            Some(v.to_string())
        };
        if let Some(waiting) = &mut self.awaited {
            let mut answered = |m: &Value| {
                if m.get("method").is_none() && (m.get("result").is_some() || m.get("error").is_some()) {
                    waiting.remove(&m.get("id").cloned().unwrap_or(Value::Null).to_string());
                }
            };
            match &v {
                Value::Array(items) => items.iter().for_each(&mut answered),
                m => answered(m),
            }
            if waiting.is_empty() {
                self.done = true;
            }
        }
        Ok(rewritten)
    }
}

/// Wrap a streamed SSE body in a [`Transform`]. When every awaited answer has been passed on,
/// the stream ends for the client at once and what the server still sends is read and dropped
/// in the background, so that its connection can be reused.
pub fn transform_body<B>(body: B, transform: Transform) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let stream = futures_util::stream::unfold(Some((body, transform)), |state| async move {
        let (mut body, mut t) = state?;
        loop {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match t.push(&data) {
                        Ok(out) if out.is_empty() && !t.is_done() => continue,
                        Ok(out) => {
                            if t.is_done() {
                                tokio::spawn(async move {
                                    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
                                });
                                return Some((Ok(Frame::data(Bytes::from(out))), None));
                            }
                            return Some((Ok(Frame::data(Bytes::from(out))), Some((body, t))));
                        }
                        Err(e) => return Some((Err(BoxError::from(e.0)), None)),
                    },
                    Err(_) => continue,
                },
                Some(Err(e)) => return Some((Err(e.into()), None)),
                // An event the server did not end with an empty line is not an event (dropped).
                None => return None,
            }
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(stream.boxed()))
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
    use crate::authz::{IdMap, ToolAccess};
    use hyper::body::Body as _;
    use serde_json::json;

    fn events(input: &[&[u8]]) -> Vec<Event> {
        let mut p = EventParser::default();
        let mut out = vec![];
        for chunk in input {
            p.push(chunk, |e| out.push(e)).unwrap();
        }
        out
    }

    fn data(e: &[Event]) -> Vec<&str> {
        e.iter().filter_map(|e| e.data.as_deref()).collect()
    }

    #[test]
    fn every_line_ending_the_spec_allows() {
        for sep in ["\n\n", "\r\r", "\r\n\r\n", "\n\r\n", "\r\n\n", "\n\r", "\r\n\r"] {
            let text = format!("data: a{sep}data: b{sep}");
            assert_eq!(data(&events(&[text.as_bytes()])), vec!["a", "b"], "{sep:?}");
            // the same, one byte at a time (a CR at a chunk's end, its LF in the next)
            let bytes: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
            assert_eq!(data(&events(&bytes)), vec!["a", "b"], "{sep:?} byte by byte");
        }
        assert_eq!(data(&events(&[b"data: a\r\n\r", b"\ndata: b\n\n"])), vec!["a", "b"]);
    }

    #[test]
    fn fields_as_the_spec_reads_them() {
        let e =
            events(&[b"\xEF\xBB\xBFid: 7\nevent: message\ndata:x\ndata:  y\ndata\n: comment\nretry: 10\nbogus: 1\n\n"]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].id.as_deref(), Some("7"));
        assert_eq!(e[0].data.as_deref(), Some("x\n y\n"));
        assert_eq!(e[0].retry.as_deref(), Some("10"));
        assert_eq!(
            String::from_utf8(e[0].to_bytes()).unwrap(),
            "id: 7\nevent: message\nretry: 10\ndata: x\ndata:  y\ndata: \n\n"
        );
        assert_eq!(events(&[b"data: unterminated"]).len(), 0, "not ended: no event");
        let bom: Vec<&[u8]> = b"\xEF\xBB\xBFdata: one\n\n".chunks(1).collect();
        assert_eq!(data(&events(&bom)), vec!["one"], "a BOM cut over chunks");
        assert!(EventParser::default().push(b"\xEF\xBBdata: x\n\n", |_| {}).is_err(), "half a BOM is not UTF-8");
        let mut p = EventParser::default();
        assert!(p.push(&vec![b'x'; MAX_EVENT + 1], |_| {}).is_err(), "oversized event fails closed");
        assert!(EventParser::default().push(b"data: \xff\n\n", |_| {}).is_err(), "not UTF-8");
    }

    fn restricted() -> ResponseFilter {
        ResponseFilter::new(ToolAccess::Only(vec!["echo".into()]), IdMap { entries: vec![("gw-9".into(), json!(2))] })
    }

    #[test]
    fn filters_whatever_the_line_endings_and_ids() {
        let list = json!({"jsonrpc":"2.0","id":"gw-9","result":{"tools":[{"name":"echo"},{"name":"secret"}]}});
        let odd = json!({"jsonrpc":"2.0","id":2.0,"result":{"tools":[{"name":"secret2"}]}});
        let note = json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info"}});
        let stream = format!("id: 7\revent: message\rdata: {note}\r\revent: message\n\rdata: {list}\n\r\ndata: {odd}\r\n\r\n: comment\n\n");
        let mut t = Transform::new(restricted(), None);
        let (a, b) = stream.as_bytes().split_at(40);
        let mut out = t.push(a).unwrap();
        out.extend(t.push(b).unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("secret"), "{out}");
        assert!(out.contains(r#""id":2,"#) && out.contains(r#""tools":[{"name":"echo"}]"#), "{out}");
        assert!(out.contains("notifications/message"), "{out}");
        assert!(!out.contains('\r'), "written again with LF");
    }

    #[test]
    fn what_cannot_be_inspected_is_replaced_by_an_error() {
        let mut t = Transform::new(restricted(), None);
        let out = String::from_utf8(t.push(b"data: {\"tools\": [ {\"name\":\"secret\"}\n\n").unwrap()).unwrap();
        assert!(!out.contains("secret") && out.contains("-32002"), "{out}");
        let dup = br#"data: {"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"secret"}]}}"#;
        let out = String::from_utf8(t.push(&[&dup[..], b"\n\n"].concat()).unwrap()).unwrap();
        assert!(!out.contains("secret"), "{out}");
        // An unrestricted caller's stream is not judged.
        let mut open = Transform::new(ResponseFilter::new(ToolAccess::All, IdMap::default()), None);
        assert_eq!(open.push(b"data: not json\n\n").unwrap(), b"data: not json\n\n");
    }

    #[tokio::test]
    async fn ends_when_every_request_is_answered() {
        use futures_util::stream;
        let frames = |parts: Vec<&'static str>| {
            let s = stream::iter(parts.into_iter().map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from(p)))));
            BodyExt::boxed_unsync(StreamBody::new(s))
        };
        let ids = |l: &[&str]| Some(l.iter().map(|s| s.to_string()).collect::<HashSet<_>>());
        let open = || ResponseFilter::new(ToolAccess::All, IdMap::default());
        let progress =
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n";
        let answer1 = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        let answer2 = "data: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":\"b\",\"error\":{\"code\":1}}\r\n\r\n";

        let mut b = transform_body(
            frames(vec![progress, &answer1[..10], &answer1[10..], "data: late\n\n"]),
            Transform::new(open(), ids(&["1"])),
        );
        let first = b.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));
        let second = b.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(String::from_utf8_lossy(&second).contains("\"id\":1"));
        assert!(b.frame().await.is_none(), "answered: nothing after");

        let mut b = transform_body(
            frames(vec![answer1, answer2, "data: late\n\n"]),
            Transform::new(open(), ids(&["1", "\"b\""])),
        );
        b.frame().await.unwrap().unwrap();
        b.frame().await.unwrap().unwrap();
        assert!(b.frame().await.is_none());

        let mut b = transform_body(frames(vec![progress]), Transform::new(open(), ids(&["9"])));
        b.frame().await.unwrap().unwrap();
        assert!(b.frame().await.is_none(), "never answered: ends when the server ends it");
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
}
