//! Whatever the admission function admits reaches the server with the method and tool name the
//! checker saw: the forwarded bytes (and each stdio line) are parsed as a server would, with a
//! plain JSON parser, and compared message by message; no denied tool is ever forwarded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_gateway::admission::admit;
use mcp_gateway::authz::ToolAccess;
use serde_json::Value;

/// (method, tool) of each message as a server reads it.
fn server_view(v: &Value) -> Vec<(Option<String>, Option<String>)> {
    let one = |m: &Value| {
        let method = m.get("method").and_then(Value::as_str).map(str::to_string);
        let tool = (method.as_deref() == Some("tools/call"))
            .then(|| m.get("params").and_then(|p| p.get("name")).and_then(Value::as_str).map(str::to_string))
            .flatten();
        (method, tool)
    };
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        m => vec![one(m)],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else { return };
    let access = match flags % 3 {
        0 => ToolAccess::All,
        1 => ToolAccess::Only(vec!["echo".into()]),
        _ => ToolAccess::Only(vec![]),
    };
    let rewrite_all = flags & 4 != 0;
    let anonymous = flags & 8 != 0;
    let Ok(admitted) = admit(bytes::Bytes::copy_from_slice(body), 8, &access, anonymous, rewrite_all) else { return };
    let checked: Vec<(Option<String>, Option<String>)> =
        admitted.parsed.messages.iter().map(|m| (m.method.clone(), m.tool.clone())).collect();
    for (method, tool) in &checked {
        if let Some(t) = tool {
            assert!(access.allows(t), "a denied tool was admitted: {t}");
        }
        if let (true, Some(m)) = (anonymous, method) {
            let may = m.starts_with("notifications/") || m.ends_with("/list") || m.starts_with("tasks/");
            assert!(may || ["initialize", "ping", "tools/call"].contains(&m.as_str()), "an anonymous {m} was admitted");
        }
    }
    let forwarded = admitted.forward();
    mcp_gateway::jsonrpc::check_strict(&forwarded).expect("forwarded bytes are strict JSON");
    let v: Value = serde_json::from_slice(&forwarded).expect("forwarded bytes parse");
    assert_eq!(server_view(&v), checked, "the server reads other methods or tools than were checked");
    for i in 0..admitted.parsed.messages.len() {
        let line = admitted.parsed.line(i, admitted.id_for(i));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line per message");
        let v: Value = serde_json::from_slice(&line).expect("a stdio line parses");
        assert_eq!(server_view(&v), vec![checked[i].clone()]);
    }
});
