//! JSON-RPC 2.0 as the gateway admits it: a body is parsed strictly, once (UTF-8 only, no lone
//! surrogates, no duplicate keys and no serde_json private keys at any depth, no members JSON-RPC
//! does not define, only the methods of the MCP specification, each with the shape its kind
//! requires), and what is forwarded is exactly those bytes: each message keeps the byte span it
//! was read from, and the only change the gateway may make is to replace a request's id with one
//! it controls.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

/// JSON-RPC: invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: the method does not exist (here: is not an MCP method the gateway forwards).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Implementation-defined: the caller may not do this (tool not allowed, session of another caller).
pub const FORBIDDEN: i64 = -32001;
/// Implementation-defined: the server behind the gateway failed.
pub const UPSTREAM_ERROR: i64 = -32002;
/// Implementation-defined: no capacity (too many sessions, too much buffered).
pub const UNAVAILABLE: i64 = -32003;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id: expects a response.
    Request,
    /// Has a method, no id.
    Notification,
    /// Has result or error and an id (a client's answer to a server request).
    Response,
}

/// The methods a client may send to an MCP server (specification revisions 2025-03-26,
/// 2025-06-18 and 2025-11-25), with their kind. Anything else is refused: a server that matched
/// methods loosely (case, spacing) could otherwise be reached around the checks below.
const CLIENT_METHODS: &[(&str, Kind)] = &[
    ("initialize", Kind::Request),
    ("ping", Kind::Request),
    ("tools/list", Kind::Request),
    ("tools/call", Kind::Request),
    ("resources/list", Kind::Request),
    ("resources/templates/list", Kind::Request),
    ("resources/read", Kind::Request),
    ("resources/subscribe", Kind::Request),
    ("resources/unsubscribe", Kind::Request),
    ("prompts/list", Kind::Request),
    ("prompts/get", Kind::Request),
    ("completion/complete", Kind::Request),
    ("logging/setLevel", Kind::Request),
    ("tasks/get", Kind::Request),
    ("tasks/list", Kind::Request),
    ("tasks/result", Kind::Request),
    ("tasks/cancel", Kind::Request),
    ("notifications/initialized", Kind::Notification),
    ("notifications/cancelled", Kind::Notification),
    ("notifications/progress", Kind::Notification),
    ("notifications/roots/list_changed", Kind::Notification),
    ("notifications/tasks/status", Kind::Notification),
];

/// The methods that name one task (`params.taskId`).
pub const TASK_METHODS: &[&str] = &["tasks/get", "tasks/result", "tasks/cancel"];

/// The kind an MCP client method has, compared byte for byte.
pub fn client_method_kind(method: &str) -> Option<Kind> {
    CLIENT_METHODS.iter().find(|(m, _)| *m == method).map(|(_, k)| *k)
}

/// One JSON-RPC message as the gateway sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Request, notification or response.
    pub kind: Kind,
    /// The method (requests and notifications).
    pub method: Option<String>,
    /// The id (requests and responses).
    pub id: Option<Value>,
    /// `params.name` of a `tools/call`.
    pub tool: Option<String>,
    /// `params.taskId` of a `tasks/get`, `tasks/result` or `tasks/cancel`.
    pub task_id: Option<String>,
    /// A request augmented with `params.task`: its answer may create a task.
    pub creates_task: bool,
    /// `params.cursor` of a `tasks/list`, and where its value is in the body.
    pub cursor: Option<(String, Range<usize>)>,
    /// Where the message is in the body.
    pub span: Range<usize>,
    /// Where its id's value is in the body.
    pub id_span: Option<Range<usize>>,
}

impl Message {
    /// A `tools/call` request.
    pub fn is_tool_call(&self) -> bool {
        self.method.as_deref() == Some("tools/call")
    }
    /// A `tools/list` request.
    pub fn is_tool_list(&self) -> bool {
        self.method.as_deref() == Some("tools/list")
    }
    /// A `tasks/list` request.
    pub fn is_task_list(&self) -> bool {
        self.method.as_deref() == Some("tasks/list")
    }
    /// An `initialize` request.
    pub fn is_initialize(&self) -> bool {
        self.method.as_deref() == Some("initialize")
    }
}

/// A body: one message or a batch, and the bytes they were read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// Sent as a JSON array.
    pub batch: bool,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The body as received.
    pub body: bytes::Bytes,
}

impl Parsed {
    /// Messages that expect a response.
    pub fn requests(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter().filter(|m| m.kind == Kind::Request)
    }
    /// `params.requestId` of the message at `i` (a `notifications/cancelled`).
    pub fn cancelled_request(&self, i: usize) -> Option<Value> {
        let m = self.messages.get(i)?;
        let message: Value = serde_json::from_slice(self.body.get(m.span.clone())?).ok()?;
        message.get("params")?.get("requestId").cloned()
    }
    /// The method for audit and metrics: the single method, `response`, or `batch`.
    pub fn method_label(&self) -> String {
        match (self.batch, self.messages.first()) {
            (false, Some(m)) => m.method.clone().unwrap_or_else(|| "response".to_string()),
            _ => "batch".to_string(),
        }
    }
    /// The tool names of the `tools/call` requests, comma-separated.
    pub fn tool_label(&self) -> Option<String> {
        let tools: Vec<&str> = self.messages.iter().filter_map(|m| m.tool.as_deref()).collect();
        (!tools.is_empty()).then(|| tools.join(","))
    }
    /// The id of the single message, for error answers.
    pub fn single_id(&self) -> Option<&Value> {
        if self.batch {
            None
        } else {
            self.messages.first().and_then(|m| m.id.as_ref())
        }
    }

    /// The body to forward, with the ids of the messages at `replace` (index, new id text)
    /// replaced; every other byte as received.
    pub fn forward(&self, replace: &[(usize, String)]) -> bytes::Bytes {
        self.forward_with(replace, &[])
    }

    /// [`Parsed::forward`], and the `tasks/list` cursors of the messages at `cursors` (index, new
    /// value text) replaced too.
    pub fn forward_with(&self, replace: &[(usize, String)], cursors: &[(usize, String)]) -> bytes::Bytes {
        if replace.is_empty() && cursors.is_empty() {
            return self.body.clone();
        }
        let mut out = Vec::with_capacity(self.body.len() + 32 * replace.len());
        let mut at = 0;
        let mut spans: Vec<(Range<usize>, &str)> = self.spans(replace, cursors, 0..self.body.len());
        spans.sort_by_key(|(s, _)| s.start);
        for (span, id) in spans {
            out.extend_from_slice(&self.body[at..span.start]);
            out.extend_from_slice(id.as_bytes());
            at = span.end;
        }
        out.extend_from_slice(&self.body[at..]);
        bytes::Bytes::from(out)
    }

    /// Where the replacements go: the id spans of the messages at `replace`, the cursor spans of
    /// those at `cursors`, within `within`.
    fn spans<'a>(
        &self,
        replace: &'a [(usize, String)],
        cursors: &'a [(usize, String)],
        within: Range<usize>,
    ) -> Vec<(Range<usize>, &'a str)> {
        let ids = replace.iter().filter_map(|(i, id)| Some((self.messages.get(*i)?.id_span.clone()?, id.as_str())));
        let cursors =
            cursors.iter().filter_map(|(i, c)| Some((self.messages.get(*i)?.cursor.as_ref()?.1.clone(), c.as_str())));
        ids.chain(cursors).filter(|(s, _)| s.start >= within.start && s.end <= within.end).collect()
    }

    /// Message `i` alone on one line, with its id and cursor replaced as [`Parsed::forward_with`]
    /// would.
    pub fn line_with(&self, i: usize, replace: &[(usize, String)], cursors: &[(usize, String)]) -> Vec<u8> {
        let m = &self.messages[i];
        let mut spans = self.spans(replace, cursors, m.span.clone());
        spans.sort_by_key(|(s, _)| s.start);
        let mut raw = Vec::with_capacity(m.span.len() + 1);
        let mut at = m.span.start;
        for (span, text) in spans {
            raw.extend_from_slice(&self.body[at..span.start]);
            raw.extend_from_slice(text.as_bytes());
            at = span.end;
        }
        raw.extend_from_slice(&self.body[at..m.span.end]);
        let mut out = compact(&raw);
        out.push(b'\n');
        out
    }

    /// Message `i` alone on one line (the stdio transport: no embedded newlines), its id replaced
    /// by `id` when given. Whitespace between tokens is dropped; every token is kept as sent.
    pub fn line(&self, i: usize, id: Option<&str>) -> Vec<u8> {
        let replace: Vec<(usize, String)> = id.map(|id| (i, id.to_string())).into_iter().collect();
        self.line_with(i, &replace, &[])
    }
}

/// JSON text without the whitespace between tokens (strings untouched).
pub fn compact(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
        }
    }
    out
}

/// Why a body is not admitted as JSON-RPC.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// -32700, -32600, -32601 or -32602.
    pub code: i64,
    /// Human readable.
    pub message: String,
    /// The id, when one could be read.
    pub id: Option<Value>,
    /// Stable label for metrics and audit.
    pub reason: &'static str,
}

impl ParseError {
    fn new(code: i64, reason: &'static str, message: impl Into<String>, id: Option<Value>) -> Self {
        Self { code, message: message.into(), id, reason }
    }
    fn invalid(message: impl Into<String>, id: Option<Value>) -> Self {
        Self::new(INVALID_REQUEST, "invalid_request", format!("Invalid Request: {}", message.into()), id)
    }
    /// The JSON-RPC error response.
    pub fn to_response(&self) -> Value {
        error_response(self.id.as_ref(), self.code, &self.message)
    }
}

/// Walks a whole document and fails on a key that appears twice in one object (serde_json
/// would keep the last, a server in another language may keep the first).
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

/// serde_json's private tokens (`$serde_json::private::RawValue`, `...::Number`): an object whose
/// first key is one is read by `serde_json::Value` as the JSON inside its string, by every other
/// parser as an ordinary object.
const SERDE_JSON_PRIVATE: &str = "$serde_json::private::";

impl<'de> Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if key.starts_with(SERDE_JSON_PRIVATE) {
                return Err(de::Error::custom(format!("reserved key {key:?}")));
            }
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

/// An object's members in order, each as its raw text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = vec![];
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value::<&'a RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The text has no escaped UTF-16 surrogate without its pair (`"\ud800"`): parsers disagree on
/// what such a string is, so what the gateway compares might not be what the server reads.
fn has_lone_surrogate(text: &str) -> bool {
    let b = text.as_bytes();
    let hex4 = |i: usize| -> Option<u16> {
        let s = std::str::from_utf8(b.get(i..i + 4)?).ok()?;
        u16::from_str_radix(s, 16).ok()
    };
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        match b[i] {
            b'"' => in_string = !in_string,
            b'\\' if in_string => {
                if b.get(i + 1) == Some(&b'u') {
                    if let Some(u) = hex4(i + 2) {
                        if (0xD800..0xDC00).contains(&u) {
                            let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                                .then(|| hex4(i + 8))
                                .flatten();
                            if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                                return true;
                            }
                            i += 12;
                            continue;
                        }
                        if (0xDC00..0xE000).contains(&u) {
                            return true;
                        }
                    }
                    i += 6;
                    continue;
                }
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

fn offset(body: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - body.as_ptr() as usize;
    start..start + part.len()
}

/// Why a text is not strict JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrictError {
    /// Not JSON at all (or not UTF-8, or an unpaired surrogate escape).
    Syntax(String),
    /// An object names a key twice.
    DuplicateKey(String),
    /// An object has a key that serde_json reads as an instruction (see `SERDE_JSON_PRIVATE`).
    ReservedKey(String),
}

impl std::fmt::Display for StrictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(m) | Self::DuplicateKey(m) | Self::ReservedKey(m) => f.write_str(m),
        }
    }
}

impl From<StrictError> for String {
    fn from(e: StrictError) -> String {
        e.to_string()
    }
}

/// JSON every parser reads the same way: UTF-8, no unpaired surrogate escapes, no key twice in
/// one object. Returns the text.
pub fn check_strict(body: &[u8]) -> Result<&str, StrictError> {
    let text = std::str::from_utf8(body).map_err(|_| StrictError::Syntax("the text is not UTF-8".into()))?;
    if has_lone_surrogate(text) {
        return Err(StrictError::Syntax("unpaired UTF-16 surrogate escape".into()));
    }
    serde_json::from_str::<NoDuplicateKeys>(text).map_err(|e| {
        let m = e.to_string();
        if m.starts_with("duplicate key") {
            StrictError::DuplicateKey(m)
        } else if m.starts_with("reserved key") {
            StrictError::ReservedKey(m)
        } else {
            StrictError::Syntax(m)
        }
    })?;
    Ok(text)
}

/// Parse a body. A batch holds 1..=`max_batch` messages.
pub fn parse(body: bytes::Bytes, max_batch: usize) -> Result<Parsed, ParseError> {
    let parse_error = |m: String| ParseError::new(PARSE_ERROR, "parse_error", format!("Parse error: {m}"), None);
    let text = match check_strict(&body) {
        Ok(t) => t,
        Err(StrictError::Syntax(m)) => return Err(parse_error(m)),
        Err(StrictError::DuplicateKey(m) | StrictError::ReservedKey(m)) => return Err(ParseError::invalid(m, None)),
    };
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r']);
    let (batch, messages) = if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        if items.is_empty() {
            return Err(ParseError::invalid("empty batch", None));
        }
        if items.len() > max_batch {
            return Err(ParseError {
                reason: "batch_too_large",
                ..ParseError::invalid(format!("batch of {} messages (at most {max_batch})", items.len()), None)
            });
        }
        let messages = items.iter().map(|raw| message(text, raw)).collect::<Result<Vec<_>, _>>()?;
        let mut ids = HashSet::new();
        for m in &messages {
            if m.is_initialize() {
                return Err(ParseError::invalid("initialize may not be part of a batch", None));
            }
            if m.kind == Kind::Request && !ids.insert(m.id.as_ref().map(Value::to_string)) {
                return Err(ParseError::invalid("duplicate ids in batch", None));
            }
        }
        (true, messages)
    } else {
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        (false, vec![message(text, raw)?])
    };
    Ok(Parsed { batch, messages, body })
}

fn message(body: &str, raw: &RawValue) -> Result<Message, ParseError> {
    let members: Members =
        serde_json::from_str(raw.get()).map_err(|_| ParseError::invalid("a message must be an object", None))?;
    let get = |k: &str| members.0.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
    let value = |r: &RawValue| serde_json::from_str::<Value>(r.get()).unwrap_or(Value::Null);
    let id_raw = get("id");
    let id = id_raw.map(value);
    let good_id = matches!(id, Some(Value::String(_) | Value::Number(_)));
    let reply_id = id.clone().filter(|_| good_id);
    for (k, _) in &members.0 {
        if !matches!(k.as_str(), "jsonrpc" | "id" | "method" | "params" | "result" | "error") {
            return Err(ParseError::invalid(format!("unexpected member {k:?}"), reply_id));
        }
    }
    if get("jsonrpc").map(value) != Some(Value::String("2.0".into())) {
        return Err(ParseError::invalid("jsonrpc must be \"2.0\"", reply_id));
    }
    let span = offset(body, raw.get());
    let id_span = id_raw.map(|r| offset(body, r.get()));
    let Some(method_raw) = get("method") else {
        let (result, error) = (get("result").is_some(), get("error").is_some());
        if result == error {
            return Err(ParseError::invalid("a message needs a method, a result or an error", reply_id));
        }
        if !(good_id || (error && id == Some(Value::Null))) {
            return Err(ParseError::invalid("a response needs a string or number id", None));
        }
        return Ok(Message {
            kind: Kind::Response,
            method: None,
            id,
            tool: None,
            task_id: None,
            creates_task: false,
            cursor: None,
            span,
            id_span,
        });
    };
    let Value::String(method) = value(method_raw) else {
        return Err(ParseError::invalid("method must be a string", reply_id));
    };
    if get("result").is_some() || get("error").is_some() {
        return Err(ParseError::invalid("a request has no result or error", reply_id));
    }
    let Some(kind) = client_method_kind(&method) else {
        return Err(ParseError::new(
            METHOD_NOT_FOUND,
            "unknown_method",
            format!("Method not found: {method:?} is not an MCP client method"),
            reply_id,
        ));
    };
    match (kind, &id) {
        (Kind::Request, _) if !good_id => {
            return Err(ParseError::invalid(format!("{method} is a request and needs a string or number id"), None));
        }
        (Kind::Notification, Some(_)) => {
            return Err(ParseError::invalid(format!("{method} is a notification and has no id"), reply_id));
        }
        _ => {}
    }
    let params = get("params").map(value);
    if params.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(ParseError::new(
            INVALID_PARAMS,
            "invalid_params",
            "Invalid params: params must be an object",
            reply_id,
        ));
    }
    // Go's encoding/json matches keys without regard to case (the last match wins): a server
    // written with it reads `{"name":"echo","Name":"delete"}` as a call of `delete`, and a lone
    // `Cursor` as the cursor: a key the gateway checks may only be spelled exactly.
    if let Some(Value::Object(members)) = &params {
        let mut folded = HashSet::new();
        if let Some(k) = members.keys().find(|k| !folded.insert(k.to_uppercase().to_lowercase())) {
            return Err(ParseError::new(
                INVALID_PARAMS,
                "invalid_params",
                format!("Invalid params: {k:?} differs from another key of params only in case"),
                reply_id,
            ));
        }
        const CHECKED: &[&str] = &["name", "taskId", "cursor", "task"];
        let folds = |k: &str| k.to_uppercase().to_lowercase();
        let misspelled = |k: &&String| !CHECKED.contains(&k.as_str()) && CHECKED.iter().any(|c| folds(c) == folds(k));
        if let Some(k) = members.keys().find(misspelled) {
            return Err(ParseError::new(
                INVALID_PARAMS,
                "invalid_params",
                format!("Invalid params: {k:?} is spelled differently from a key the gateway checks"),
                reply_id,
            ));
        }
    }
    // `params.<key>`, a string, which `method` needs (what the checks below compare).
    let required = |needed: bool, key: &str| -> Result<Option<String>, ParseError> {
        if !needed {
            return Ok(None);
        }
        match params.as_ref().and_then(|p| p.get(key)) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(ParseError::new(
                INVALID_PARAMS,
                "invalid_params",
                format!("Invalid params: {method} needs params.{key}, a string"),
                reply_id.clone(),
            )),
        }
    };
    let tool = required(method == "tools/call", "name")?;
    let task_id = required(TASK_METHODS.contains(&method.as_str()), "taskId")?;
    let creates_task = kind == Kind::Request && params.as_ref().is_some_and(|p| p.get("task").is_some());
    let bad_cursor = || {
        ParseError::new(
            INVALID_PARAMS,
            "invalid_params",
            "Invalid params: tasks/list params.cursor must be a string",
            reply_id.clone(),
        )
    };
    let cursor = match (method == "tasks/list", params.as_ref().and_then(|p| p.get("cursor"))) {
        (true, Some(Value::String(c))) => {
            // Where the value is: the params object's members, read from the same text.
            let span = get("params")
                .and_then(|p| serde_json::from_str::<Members>(p.get()).ok())
                .and_then(|m| m.0.into_iter().find(|(k, _)| k == "cursor").map(|(_, v)| offset(body, v.get())));
            Some((c.clone(), span.ok_or_else(bad_cursor)?))
        }
        (true, Some(Value::Null)) | (_, None) | (false, _) => None,
        (true, Some(_)) => return Err(bad_cursor()),
    };
    Ok(Message { kind, method: Some(method), id, tool, task_id, creates_task, cursor, span, id_span })
}

/// A JSON-RPC error response.
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": code, "message": message}})
}

/// Methods counted by name in metrics; anything else is `other`, so that a client cannot grow
/// the label set.
pub fn method_metric_label(method: &str) -> &str {
    const OTHERS: &[&str] = &["batch", "response", "GET", "DELETE", "OPTIONS", "websocket"];
    if let Some((m, _)) = CLIENT_METHODS.iter().find(|(m, _)| *m == method) {
        return m;
    }
    OTHERS.iter().find(|k| **k == method).copied().unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Parsed, ParseError> {
        parse(bytes::Bytes::copy_from_slice(s.as_bytes()), 4)
    }

    #[test]
    fn request_notification_response() {
        let r = p(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#).unwrap();
        assert!(!r.batch);
        assert_eq!(r.messages[0].kind, Kind::Request);
        assert_eq!(r.messages[0].tool.as_deref(), Some("echo"));
        assert_eq!(r.method_label(), "tools/call");
        assert_eq!(r.tool_label().as_deref(), Some("echo"));
        let n = p(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(n.messages[0].kind, Kind::Notification);
        assert_eq!(n.requests().count(), 0);
        let s = p(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(s.messages[0].kind, Kind::Response);
        assert_eq!(s.method_label(), "response");
    }

    #[test]
    fn not_json_is_a_parse_error() {
        let e = p("{not json").unwrap_err();
        assert_eq!((e.code, e.reason), (PARSE_ERROR, "parse_error"));
        assert_eq!(e.to_response()["id"], Value::Null);
        assert_eq!(p("").unwrap_err().code, PARSE_ERROR);
        let latin1 = parse(bytes::Bytes::from_static(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xe9\"}"), 4);
        assert_eq!(latin1.unwrap_err().reason, "parse_error", "non-UTF-8");
    }

    #[test]
    fn lone_surrogates_are_refused_pairs_are_not() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo\ud800"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\udc00echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e\ud800\u0041"}}"#,
        ] {
            assert_eq!(p(body).unwrap_err().reason, "parse_error", "{body}");
        }
        let ok = p(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e\ud83d\ude00","x":"\\ud800"}}"#);
        assert_eq!(ok.unwrap().messages[0].tool.as_deref(), Some("e\u{1F600}"));
    }

    #[test]
    fn duplicate_keys_at_any_depth_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"get-env"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":1,"a":2}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","\u006eame":"x"}}"#,
        ] {
            let e = p(body).unwrap_err();
            assert_eq!(e.code, INVALID_REQUEST, "{body}");
            assert!(e.message.contains("duplicate key"), "{e:?}");
        }
    }

    /// serde_json (with `raw_value`, which the gateway needs for byte spans) reads an object whose
    /// first key is its private RawValue token as the JSON inside the string: the gateway would
    /// check `{"name":"echo"}` where any other parser reads an object with no name. Such keys, at
    /// any depth and however escaped, are refused before anything is read from the message.
    #[test]
    fn serde_json_private_keys_are_refused_at_any_depth() {
        let token = r#""$serde_json::private::RawValue""#;
        let escaped = r#""\u0024serde_json::private::RawValue""#;
        let number = r#""$serde_json::private::Number""#;
        for body in [
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{{token}:"{{\"name\":\"echo\"}}"}}}}"#),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{{escaped}:"{{\"name\":\"echo\"}}"}}}}"#
            ),
            format!(r#"{{"jsonrpc":"2.0","id":{{{token}:"1"}},"method":"ping"}}"#),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{{number}:"1"}}}}}}"#
            ),
            format!(r#"[{{"jsonrpc":"2.0","id":1,"result":{{"x":[{{{token}:"2"}}]}}}}]"#),
        ] {
            let e = p(&body).unwrap_err();
            assert_eq!(e.code, INVALID_REQUEST, "{body}");
            assert!(e.message.contains("reserved key"), "{e:?}");
        }
        assert!(matches!(check_strict(format!("{{{token}:\"1\"}}").as_bytes()), Err(StrictError::ReservedKey(_))));
        // Near misses are ordinary keys.
        let ok = p(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"$serde_json":1}}}"#,
        );
        assert_eq!(ok.unwrap().messages[0].tool.as_deref(), Some("echo"));
    }

    /// A server may read keys without regard to case (Go's encoding/json does, and takes the last
    /// match): params whose keys differ only in case are refused, whatever the method.
    #[test]
    fn params_keys_that_differ_only_in_case_are_refused() {
        for (method, params) in [
            ("tools/call", r#"{"name":"echo","Name":"get-env"}"#),
            ("tools/call", r#"{"name":"echo","NAME":"get-env","arguments":{}}"#),
            ("tools/call", r#"{"Name":"get-env","name":"echo"}"#),
            ("tools/call", r#"{"name":"echo","arguments":{},"Arguments":{"x":1}}"#),
            ("resources/read", r#"{"uri":"file:///a","URI":"file:///etc/passwd"}"#),
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{params}}}"#);
            let e = p(&body).unwrap_err();
            assert_eq!((e.code, e.reason), (INVALID_PARAMS, "invalid_params"), "{body}");
            assert!(e.message.contains("only in case"), "{e:?}");
            assert_eq!(e.id, Some(json!(7)));
        }
        // Case inside arguments is the tool's business; distinct keys pass.
        let ok =
            p(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":1,"A":2}}}"#);
        assert_eq!(ok.unwrap().messages[0].tool.as_deref(), Some("echo"));
    }

    #[test]
    fn methods_are_compared_exactly_and_must_be_known() {
        for m in ["Tools/Call", "tools/call ", "tools//call", "TOOLS/CALL", "tools/call\u{0000}", "rpc.discover"] {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": m, "params": {"name": "x"}}).to_string();
            let e = p(&body).unwrap_err();
            assert_eq!((e.code, e.reason), (METHOD_NOT_FOUND, "unknown_method"), "{m:?}");
            assert_eq!(e.id, Some(json!(1)));
        }
    }

    #[test]
    fn requests_need_ids_and_notifications_have_none() {
        let e = p(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"}}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST, "a tools/call without an id is not a notification");
        let e = p(r#"{"jsonrpc":"2.0","id":3,"method":"notifications/initialized"}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        for params in [r#""x""#, r#"["echo"]"#, r#"{"name":7}"#, r#"{}"#] {
            let e = p(&format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#)).unwrap_err();
            assert_eq!(e.code, INVALID_PARAMS, "{params}");
        }
    }

    #[test]
    fn invalid_requests() {
        for body in [
            r#"42"#,
            r#""x""#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","name":"x"}"#,
            r#"[]"#,
            r#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#,
        ] {
            let e = p(body).unwrap_err();
            assert_eq!(e.code, INVALID_REQUEST, "{body}");
        }
        let e = p(r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#).unwrap_err();
        assert_eq!(e.to_response()["id"], 7, "the id is echoed when readable");
    }

    #[test]
    fn batches_are_bounded_and_every_element_checked() {
        let one = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let ok = p(&format!("[{one},{}]", r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)).unwrap();
        assert!(ok.batch);
        assert_eq!(ok.method_label(), "batch");
        let big = format!("[{}]", [r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#; 5].join(","));
        assert_eq!(p(&big).unwrap_err().reason, "batch_too_large");
        assert_eq!(p(&format!("[{one},{one}]")).unwrap_err().code, INVALID_REQUEST, "duplicate ids");
        assert_eq!(p(&format!("[{one},3]")).unwrap_err().code, INVALID_REQUEST);
        let hidden = r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"get-env"}}"#;
        assert_eq!(p(&format!("[{one},{hidden}]")).unwrap_err().code, INVALID_REQUEST, "notification tools/call");
        let init = r#"{"jsonrpc":"2.0","id":2,"method":"initialize","params":{}}"#;
        assert_eq!(p(&format!("[{init}]")).unwrap_err().code, INVALID_REQUEST);
    }

    #[test]
    fn forwards_exact_bytes_or_only_the_replaced_ids() {
        let body = "[ {\"jsonrpc\":\"2.0\", \"id\" : 1.0 ,\"method\":\"tools/list\"},\n {\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"n\":123456789012345678901234567890}}} ]";
        let parsed = p(body).unwrap();
        assert_eq!(parsed.forward(&[]), body.as_bytes(), "untouched");
        let out = parsed.forward(&[(0, "\"gw-1\"".into())]);
        assert_eq!(std::str::from_utf8(&out).unwrap(), body.replacen("1.0", "\"gw-1\"", 1));
        let line = parsed.line(1, None);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"n\":123456789012345678901234567890}}}\n",
            "one line, the big number as sent"
        );
        let line = parsed.line(0, Some("\"gw-2\""));
        assert_eq!(line, b"{\"jsonrpc\":\"2.0\",\"id\":\"gw-2\",\"method\":\"tools/list\"}\n");
    }

    #[test]
    fn compact_keeps_strings() {
        assert_eq!(compact(b"{ \"a b\" : [1, \"x\\\" y\" ]\n}"), b"{\"a b\":[1,\"x\\\" y\"]}");
    }

    #[test]
    fn metric_labels_are_bounded() {
        assert_eq!(method_metric_label("tools/call"), "tools/call");
        assert_eq!(method_metric_label("x/../../whatever"), "other");
    }

    #[test]
    fn task_ids_and_task_augmented_requests_are_read() {
        for method in TASK_METHODS {
            let ok = p(&format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"taskId":"t-1"}}}}"#));
            assert_eq!(ok.unwrap().messages[0].task_id.as_deref(), Some("t-1"), "{method}");
            for params in [r#"{}"#, r#"{"taskId":7}"#, r#"{"taskId":null}"#] {
                let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#);
                let e = p(&body).unwrap_err();
                assert_eq!((e.code, e.reason), (INVALID_PARAMS, "invalid_params"), "{body}");
                assert!(e.message.contains("params.taskId"), "{e:?}");
            }
            let e = p(&format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#)).unwrap_err();
            assert_eq!(e.code, INVALID_PARAMS, "{method} without params");
            // A second spelling a server might read instead is refused with the rest.
            let folded =
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"taskId":"a","TaskId":"b"}}}}"#);
            assert_eq!(p(&folded).unwrap_err().reason, "invalid_params");
        }
        for params in [r#"{"Cursor":"x"}"#, r#"{"curſor":"x"}"#, r#"{"name":"x","Task":{}}"#, r#"{"TASKID":"t"}"#] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{params}}}"#);
            assert_eq!(p(&body).unwrap_err().reason, "invalid_params", "{body}");
        }
        let listed = p(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{"cursor":"c-1"}}"#).unwrap();
        let (cursor, span) = listed.messages[0].cursor.clone().unwrap();
        assert_eq!((cursor.as_str(), &listed.body[span]), ("c-1", &br#""c-1""#[..]));
        let null = p(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{"cursor":null}}"#).unwrap();
        assert!(null.messages[0].cursor.is_none(), "null: no cursor");
        assert!(p(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{"cursor":3}}"#).is_err());
        let list = p(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{}}"#).unwrap();
        assert!(list.messages[0].is_task_list() && list.messages[0].task_id.is_none());
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","task":{"ttl":60000}}}"#;
        assert!(p(call).unwrap().messages[0].creates_task);
        let plain = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"task":1}}}"#;
        assert!(!p(plain).unwrap().messages[0].creates_task, "a tool argument named task is not augmentation");
    }
}
