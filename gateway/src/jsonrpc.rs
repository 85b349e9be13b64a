//! Just enough JSON-RPC 2.0 to know what a request asks for: method, id and, for `tools/call`,
//! the tool name. Everything else is forwarded untouched.

use serde_json::{json, Value};

/// JSON-RPC: invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// Implementation-defined: the caller may not do this (tool not allowed, session of another caller).
pub const FORBIDDEN: i64 = -32001;
/// Implementation-defined: the server behind the gateway failed.
pub const UPSTREAM_ERROR: i64 = -32002;
/// Implementation-defined: no capacity (too many sessions).
pub const UNAVAILABLE: i64 = -32003;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id: expects a response.
    Request,
    /// Has a method, no id.
    Notification,
    /// Has result or error and an id.
    Response,
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
}

impl Message {
    /// A `tools/call` request.
    pub fn is_tool_call(&self) -> bool {
        self.kind == Kind::Request && self.method.as_deref() == Some("tools/call")
    }
    /// A `tools/list` request.
    pub fn is_tool_list(&self) -> bool {
        self.kind == Kind::Request && self.method.as_deref() == Some("tools/list")
    }
    /// An `initialize` request.
    pub fn is_initialize(&self) -> bool {
        self.kind == Kind::Request && self.method.as_deref() == Some("initialize")
    }
}

/// A POST body: one message or a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// Sent as a JSON array.
    pub batch: bool,
    /// The messages, in order.
    pub messages: Vec<Message>,
}

impl Parsed {
    /// Messages that expect a response.
    pub fn requests(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter().filter(|m| m.kind == Kind::Request)
    }
    /// The method for audit and metrics: the single method, or `batch`.
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
}

/// Why a body is not acceptable JSON-RPC.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// -32700 or -32600.
    pub code: i64,
    /// Human readable.
    pub message: String,
    /// The id, when one could be read.
    pub id: Option<Value>,
    /// Stable label for metrics and audit.
    pub reason: &'static str,
}

impl ParseError {
    fn invalid(message: impl Into<String>, id: Option<Value>) -> Self {
        Self { code: INVALID_REQUEST, message: message.into(), id, reason: "invalid_request" }
    }
    /// The JSON-RPC error response.
    pub fn to_response(&self) -> Value {
        error_response(self.id.as_ref(), self.code, &self.message)
    }
}

/// Parse a POST body. A batch holds 1..=`max_batch` messages.
pub fn parse(body: &[u8], max_batch: usize) -> Result<Parsed, ParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ParseError {
        code: PARSE_ERROR,
        message: format!("Parse error: {e}"),
        id: None,
        reason: "parse_error",
    })?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::invalid("Invalid Request: empty batch", None));
            }
            if items.len() > max_batch {
                return Err(ParseError {
                    reason: "batch_too_large",
                    ..ParseError::invalid(
                        format!("Invalid Request: batch of {} messages (at most {max_batch})", items.len()),
                        None,
                    )
                });
            }
            let messages = items.iter().map(message).collect::<Result<Vec<_>, _>>()?;
            let mut ids: Vec<String> = messages.iter().filter_map(|m| m.id.as_ref().map(Value::to_string)).collect();
            let n = ids.len();
            ids.sort();
            ids.dedup();
            if ids.len() != n {
                return Err(ParseError::invalid("Invalid Request: duplicate ids in batch", None));
            }
            Ok(Parsed { batch: true, messages })
        }
        v => Ok(Parsed { batch: false, messages: vec![message(&v)?] }),
    }
}

/// Classify one message.
pub fn message(v: &Value) -> Result<Message, ParseError> {
    let Some(obj) = v.as_object() else {
        return Err(ParseError::invalid("Invalid Request: not an object", None));
    };
    let id = obj.get("id").cloned();
    let good_id = |id: &Option<Value>| matches!(id, Some(Value::String(_)) | Some(Value::Number(_)));
    let reply_id = id.clone().filter(|_| good_id(&id));
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(ParseError::invalid("Invalid Request: jsonrpc must be \"2.0\"", reply_id));
    }
    match obj.get("method") {
        Some(Value::String(method)) => {
            if let Some(p) = obj.get("params") {
                if !p.is_object() && !p.is_array() {
                    return Err(ParseError::invalid("Invalid Request: params must be an object or array", reply_id));
                }
            }
            let kind = match &id {
                None => Kind::Notification,
                Some(_) if good_id(&id) => Kind::Request,
                Some(_) => return Err(ParseError::invalid("Invalid Request: id must be a string or number", None)),
            };
            let tool = (kind == Kind::Request && method == "tools/call")
                .then(|| obj.get("params").and_then(|p| p.get("name")).and_then(Value::as_str).map(str::to_string))
                .flatten();
            Ok(Message { kind, method: Some(method.clone()), id, tool })
        }
        Some(_) => Err(ParseError::invalid("Invalid Request: method must be a string", reply_id)),
        None if obj.contains_key("result") || obj.contains_key("error") => {
            if !good_id(&id) && !matches!(id, Some(Value::Null)) {
                return Err(ParseError::invalid("Invalid Request: response without id", None));
            }
            Ok(Message { kind: Kind::Response, method: None, id, tool: None })
        }
        None => Err(ParseError::invalid("Invalid Request: no method, result or error", reply_id)),
    }
}

/// A JSON-RPC error response.
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": code, "message": message}})
}

/// Methods of the MCP specification; anything else is counted as `other` in metrics so that a
/// client cannot grow the label set.
pub fn method_metric_label(method: &str) -> &str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
        "batch",
        "response",
        "GET",
        "DELETE",
        "websocket",
    ];
    KNOWN.iter().find(|k| **k == method).copied().unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Parsed, ParseError> {
        parse(s.as_bytes(), 4)
    }

    #[test]
    fn request_notification_response() {
        let r = p(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#).unwrap();
        assert!(!r.batch);
        assert_eq!(r.messages[0].kind, Kind::Request);
        assert_eq!(r.messages[0].tool.as_deref(), Some("echo"));
        assert!(r.messages[0].is_tool_call());
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
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
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
    fn batches_are_bounded_and_checked() {
        let one = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let ok = p(&format!("[{one},{}]", r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)).unwrap();
        assert!(ok.batch);
        assert_eq!(ok.method_label(), "batch");
        let big = format!("[{}]", [r#"{"jsonrpc":"2.0","method":"n"}"#; 5].join(","));
        assert_eq!(p(&big).unwrap_err().reason, "batch_too_large");
        assert_eq!(p(&format!("[{one},{one}]")).unwrap_err().code, INVALID_REQUEST, "duplicate ids");
        let mixed = format!("[{one},3]");
        assert_eq!(p(&mixed).unwrap_err().code, INVALID_REQUEST);
    }

    #[test]
    fn metric_labels_are_bounded() {
        assert_eq!(method_metric_label("tools/call"), "tools/call");
        assert_eq!(method_metric_label("x/../../whatever"), "other");
    }
}
