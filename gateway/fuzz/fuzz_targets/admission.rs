//! Whatever the admission function admits reaches the server with the method and tool name the
//! checker saw: the forwarded bytes (and each stdio line) are parsed as a server would, with a
//! plain JSON parser, and compared message by message; no denied tool is ever forwarded, and with
//! a task binding no task of another caller is ever named.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_gateway::admission::admit;
use mcp_gateway::authz::{TaskBinding, ToolAccess};
use serde_json::Value;

type View = (Option<String>, Option<String>, Option<String>);

/// (method, tool, task id) of each message as a server reads it.
fn server_view(v: &Value) -> Vec<View> {
    let one = |m: &Value| {
        let method = m.get("method").and_then(Value::as_str).map(str::to_string);
        let param = |key: &str| m.get("params").and_then(|p| p.get(key)).and_then(Value::as_str).map(str::to_string);
        let tool = (method.as_deref() == Some("tools/call")).then(|| param("name")).flatten();
        let task = method.as_deref().is_some_and(|m| mcp_gateway::jsonrpc::TASK_METHODS.contains(&m));
        (method, tool, task.then(|| param("taskId")).flatten())
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
    let tasks = (flags & 16 != 0).then(|| {
        let table = std::sync::Arc::new(mcp_gateway::owners::OwnerTable::new(4, 4, std::time::Duration::from_secs(60)));
        table.bind("t-mine", "me");
        table.bind("t-other", "other");
        TaskBinding::new(table, "me")
    });
    let body = bytes::Bytes::copy_from_slice(body);
    let Ok(admitted) = admit(body, 8, &access, anonymous, rewrite_all, tasks.as_ref()) else { return };
    let checked: Vec<View> =
        admitted.parsed.messages.iter().map(|m| (m.method.clone(), m.tool.clone(), m.task_id.clone())).collect();
    for (method, tool, task) in &checked {
        if let Some(t) = tool {
            assert!(access.allows(t), "a denied tool was admitted: {t}");
        }
        if let (Some(_), Some(t)) = (&tasks, task) {
            assert_eq!(t, "t-mine", "another caller's task was admitted");
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
        let line = admitted.line(i);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line per message");
        let v: Value = serde_json::from_slice(&line).expect("a stdio line parses");
        assert_eq!(server_view(&v), vec![checked[i].clone()]);
    }
});
