//! Who may do what: the role check, per-role tool allow lists, the anonymous identity, and the
//! filter that keeps a restricted caller from seeing tools it may not use in anything the server
//! sends back.
//!
//! Anonymous is the least privileged identity: a caller without credentials (authentication
//! configured but not required) may use only `authorization.anonymousTools` (default: none),
//! and every authenticated caller may use those too, so dropping a token never gains anything.

use crate::auth::Identity;
use crate::config::Authorization;
use serde_json::Value;

/// Roles from a token's claims: `claim` may be a dotted path (`realm_access.roles`); the value may
/// be an array of strings or a space/comma separated string (as `scope` is). Anything else gives
/// no roles.
pub fn roles_from_claims(claims: &Value, claim: &str) -> Vec<String> {
    let value = claims.get(claim).or_else(|| claim.split('.').try_fold(claims, |v, k| v.get(k)));
    match value {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        Some(Value::String(s)) => {
            s.split(|c: char| c.is_whitespace() || c == ',').filter(|r| !r.is_empty()).map(str::to_string).collect()
        }
        _ => vec![],
    }
}

/// What the policy grants, as the gateway applies it.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// Authentication is configured (else every caller is anonymous and unrestricted).
    pub authn_enabled: bool,
    /// Authentication is required (else a caller may come without credentials).
    pub authn_required: bool,
    /// The authorization settings, if any.
    pub authz: Option<Authorization>,
}

/// The outcome of the role check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleCheck {
    /// The caller is served with its own roles.
    Allowed,
    /// Authentication is optional and the caller's roles are not allowed: it is served as
    /// anonymous (a token never makes a caller worse off than none, and never better).
    AsAnonymous,
    /// Authentication is required and the caller has no allowed role.
    Refused,
}

impl Grants {
    /// The role check of an authenticated caller (anonymous callers always pass: what they may
    /// do is limited by [`Grants::tool_access`]).
    pub fn role_check(&self, id: &Identity) -> RoleCheck {
        let Some(p) = &self.authz else { return RoleCheck::Allowed };
        if id.anonymous || p.allowed_roles.is_empty() || id.roles.iter().any(|r| p.allowed_roles.contains(r)) {
            return RoleCheck::Allowed;
        }
        if self.authn_required {
            RoleCheck::Refused
        } else {
            RoleCheck::AsAnonymous
        }
    }

    /// The tools a caller may list and call.
    pub fn tool_access(&self, id: &Identity) -> ToolAccess {
        let anonymous =
            || -> Vec<String> { self.authz.as_ref().map(|p| p.anonymous_tools.clone()).unwrap_or_default() };
        if id.anonymous {
            if !self.authn_enabled {
                return ToolAccess::All;
            }
            return ToolAccess::only(anonymous());
        }
        let Some(p) = self.authz.as_ref().filter(|p| !p.tools.is_empty()) else {
            return ToolAccess::All;
        };
        // A role without an entry may use every tool only when `allowedRoles` names it: any other
        // role a token happens to carry (an identity provider's `offline_access`, ...) grants
        // nothing beyond the anonymous tools.
        let mut patterns = anonymous();
        for role in &id.roles {
            match p.tools.get(role.as_str()) {
                Some(allow) if p.allowed_roles.is_empty() || p.allowed_roles.contains(role) => {
                    patterns.extend(allow.iter().cloned())
                }
                None if p.allowed_roles.contains(role) => return ToolAccess::All,
                _ => {}
            }
        }
        ToolAccess::only(patterns)
    }
}

/// Which tools a caller may list and call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolAccess {
    /// Every tool.
    All,
    /// Tools matching one of these patterns (`*` alone, or a trailing `*` for a prefix).
    Only(Vec<String>),
}

impl ToolAccess {
    /// Access to the tools matching `patterns` (none when empty).
    pub fn only(mut patterns: Vec<String>) -> Self {
        if patterns.iter().any(|p| p == "*") {
            return Self::All;
        }
        patterns.sort();
        patterns.dedup();
        Self::Only(patterns)
    }
    /// The tool may be called.
    pub fn allows(&self, tool: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(patterns) => patterns.iter().any(|p| pattern_matches(p, tool)),
        }
    }
    /// Anything is restricted.
    pub fn is_restricted(&self) -> bool {
        *self != Self::All
    }
}

/// `*` matches everything, `abc*` every name starting with `abc`, anything else itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// What an anonymous caller (no credentials where they are optional) may ask for: initialize,
/// ping, the lists (its `tools/list` filtered), `tools/call` of its tools and the tasks those
/// start, and notifications. Anything else (reading resources and prompts, completions,
/// logging, a method a later revision adds) needs credentials.
const ANONYMOUS_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

/// The methods of a request an anonymous caller may not use.
pub fn denied_to_anonymous(parsed: &crate::jsonrpc::Parsed) -> Vec<String> {
    parsed
        .messages
        .iter()
        .filter_map(|m| m.method.as_deref())
        .filter(|m| !m.starts_with("notifications/") && !ANONYMOUS_METHODS.contains(m))
        .map(str::to_string)
        .collect()
}

/// The `tools/call`s of a request that `access` refuses (their tool names).
pub fn denied_tools(parsed: &crate::jsonrpc::Parsed, access: &ToolAccess) -> Vec<String> {
    parsed
        .messages
        .iter()
        .filter(|m| m.is_tool_call())
        .filter_map(|m| m.tool.clone())
        .filter(|t| !access.allows(t))
        .collect()
}

/// Ids the gateway gave to requests whose answers it must recognise (a restricted caller's
/// `tools/list`), and the ids the client used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdMap {
    /// (the gateway's id, the client's id).
    pub entries: Vec<(String, Value)>,
}

impl IdMap {
    /// The client's id back in place of the gateway's, when `msg` carries one.
    pub fn restore(&self, msg: &mut Value) {
        let Some(Value::String(id)) = msg.get("id") else { return };
        if let Some((_, original)) = self.entries.iter().find(|(gw, _)| gw == id) {
            msg["id"] = original.clone();
        }
    }
}

/// MCP tasks bound to the caller they were created for. The gateway does not pass the caller's
/// credentials on (no token passthrough), so a server that keeps tasks beyond one session (a
/// stateless server, a shared task store, several replicas) cannot tell callers apart; the
/// gateway does: a task id the server returns in a `CreateTaskResult` (`result.task.taskId`)
/// to a caller is that caller's, `tasks/get`, `tasks/result` and `tasks/cancel` of any other id
/// are refused as "task not found" (another caller's task is indistinguishable from none), and
/// `tasks/list` answers keep only the caller's tasks. Fails closed: a task the gateway did not
/// see created (before a restart, through another replica, evicted from the bounded table) is
/// not found either.
#[derive(Clone)]
pub struct TaskBinding {
    /// Task id → owner (bounded, per-caller limit, idle expiry).
    pub table: std::sync::Arc<crate::owners::OwnerTable>,
    /// The caller (an authenticated subject; an anonymous caller per session or connection).
    pub owner: String,
    /// The `tasks/list` cursors handed out.
    pub cursors: std::sync::Arc<Cursors>,
    /// The other callers' table (authenticated and anonymous callers' tasks are kept apart): an
    /// id one of them holds is never bound in this one.
    pub other: Option<std::sync::Arc<crate::owners::OwnerTable>>,
    /// The owner can never be named again (an anonymous caller without a session): nothing is
    /// recorded, lists are empty and have no next page.
    pub ephemeral: bool,
}

/// `tasks/list` cursors: a server's `nextCursor` may itself name a task (the Python SDK's is the
/// last task id of the page, whoever's), so the caller gets an opaque cursor of the gateway's,
/// valid for it alone, and the server gets its own back. Stateless: the server's cursor and an
/// HMAC over it and the caller, under a key of this process (nothing to fill or evict; a restart
/// invalidates the cursors handed out).
pub struct Cursors(ring::hmac::Key);

impl Cursors {
    /// Cursors under a fresh random key; fails when the system has no randomness to give (the
    /// gateway then does not start: a key anyone could guess would let callers forge cursors).
    pub fn generate() -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("no randomness from the system for the task-list cursor key"))?;
        Ok(Self(key))
    }
}

const CURSOR_PREFIX: &str = "mcpgw-c1.";

impl Cursors {
    fn message(owner: &str, cursor: &str) -> Vec<u8> {
        [owner.as_bytes(), b"\0", cursor.as_bytes()].concat()
    }

    /// The cursor `owner` gets for the server's `cursor`.
    pub fn issue(&self, owner: &str, cursor: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let tag = ring::hmac::sign(&self.0, &Self::message(owner, cursor));
        format!("{CURSOR_PREFIX}{}.{}", b64.encode(cursor), b64.encode(tag.as_ref()))
    }

    /// The server's cursor behind `token`, when `owner` was given it.
    pub fn server_cursor(&self, token: &str, owner: &str) -> Option<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (cursor, tag) = token.strip_prefix(CURSOR_PREFIX)?.split_once('.')?;
        let cursor = String::from_utf8(b64.decode(cursor).ok()?).ok()?;
        let tag = b64.decode(tag).ok()?;
        ring::hmac::verify(&self.0, &Self::message(owner, &cursor), &tag).ok()?;
        Some(cursor)
    }
}

impl std::fmt::Debug for TaskBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBinding").field("owner", &self.owner).finish_non_exhaustive()
    }
}

impl TaskBinding {
    /// `owner`'s tasks in `table`, with cursors of its own and no other table (tests).
    ///
    /// # Panics
    /// When the system has no randomness for the cursor key.
    pub fn new(table: std::sync::Arc<crate::owners::OwnerTable>, owner: &str) -> Self {
        let cursors = std::sync::Arc::new(Cursors::generate().expect("system randomness"));
        Self { table, owner: owner.to_string(), cursors, other: None, ephemeral: false }
    }

    /// The task ids a request names that are not the caller's.
    pub fn not_owned(&self, parsed: &crate::jsonrpc::Parsed) -> Vec<String> {
        parsed
            .messages
            .iter()
            .filter_map(|m| m.task_id.as_deref())
            .filter(|id| self.table.check(id, &self.owner).is_err())
            .map(str::to_string)
            .collect()
    }

    /// Records the task a message creates for the caller, and keeps only the caller's tasks in
    /// a task list.
    fn apply(&self, msg: &mut Value) {
        let Some(Value::Object(result)) = msg.get_mut("result") else { return };
        if let Some(id) = result.get("task").and_then(|t| t.get("taskId")).and_then(Value::as_str) {
            let elsewhere = self.other.as_ref().is_some_and(|o| o.holds(id));
            if !self.ephemeral && !elsewhere {
                self.table.bind(id, &self.owner);
            }
        }
        if let Some(tasks) = result.get_mut("tasks").and_then(Value::as_array_mut) {
            tasks.retain(|t| {
                t.get("taskId").and_then(Value::as_str).is_some_and(|id| self.table.owned_by(id, &self.owner))
            });
            let next = result.remove("nextCursor");
            if let (Some(Value::String(cursor)), false) = (next, self.ephemeral) {
                result.insert("nextCursor".into(), Value::String(self.cursors.issue(&self.owner, &cursor)));
            }
        }
    }
}

/// How what the server sends back is made fit for the caller: ids restored, for a restricted
/// caller every `result.tools` list (whatever request it answers, whatever id the server wrote)
/// reduced to the tools the caller may use, and with a [`TaskBinding`] tasks recorded and task
/// lists reduced to the caller's.
#[derive(Clone, Debug)]
pub struct ResponseFilter {
    /// The caller's access.
    pub access: ToolAccess,
    /// Ids to restore.
    pub ids: IdMap,
    /// Tasks to record and lists to reduce.
    pub tasks: Option<TaskBinding>,
}

impl ResponseFilter {
    /// Restores `ids` and filters tool lists for `access`.
    pub fn new(access: ToolAccess, ids: IdMap) -> Self {
        Self { access, ids, tasks: None }
    }

    /// Also records the caller's tasks and reduces task lists to them.
    pub fn with_tasks(mut self, tasks: Option<TaskBinding>) -> Self {
        self.tasks = tasks;
        self
    }

    /// Nothing to change: the server's bytes may pass untouched.
    pub fn is_noop(&self) -> bool {
        !self.access.is_restricted() && self.ids.entries.is_empty() && self.tasks.is_none()
    }

    /// Whether `text` may pass untouched: nothing to restrict or restore, and with a task binding
    /// nothing in it that could create or list a task (the keys `task` and `tasks` appear in the
    /// text as written or, escaped, with a `\u`), so that an unrestricted caller's messages are
    /// not rewritten just because tasks are bound.
    pub fn passes_untouched(&self, text: &[u8]) -> bool {
        if self.access.is_restricted() || !self.ids.entries.is_empty() {
            return false;
        }
        let has = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
        self.tasks.is_none() || !(has(b"task") || has(b"\\u"))
    }

    /// Apply to one message or a batch in place.
    pub fn apply(&self, v: &mut Value) {
        match v {
            Value::Array(items) => items.iter_mut().for_each(|m| self.apply(m)),
            msg => {
                self.ids.restore(msg);
                if self.access.is_restricted() {
                    if let Some(tools) =
                        msg.get_mut("result").and_then(|r| r.get_mut("tools")).and_then(Value::as_array_mut)
                    {
                        tools.retain(|t| t.get("name").and_then(Value::as_str).is_some_and(|n| self.access.allows(n)));
                    }
                }
                if let Some(tasks) = &self.tasks {
                    tasks.apply(msg);
                }
            }
        }
    }

    /// Apply to JSON text. The text is parsed strictly (a duplicate key could hide a second tool
    /// list from the gateway but not from the client); what cannot be parsed is an error, never
    /// passed through.
    pub fn apply_text(&self, text: &[u8]) -> Result<Vec<u8>, String> {
        crate::jsonrpc::check_strict(text)?;
        let mut v: Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        self.apply(&mut v);
        serde_json::to_vec(&v).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn id(roles: &[&str]) -> Identity {
        Identity::new("alice", "jwt", roles.iter().map(|r| r.to_string()).collect())
    }

    fn grants(required: bool, allowed: &[&str], tools: &[(&str, &[&str])], anonymous: &[&str]) -> Grants {
        Grants {
            authn_enabled: true,
            authn_required: required,
            authz: Some(Authorization {
                allowed_roles: allowed.iter().map(|r| r.to_string()).collect(),
                tools: tools
                    .iter()
                    .map(|(r, a)| (r.to_string(), a.iter().map(|t| t.to_string()).collect()))
                    .collect::<BTreeMap<_, _>>(),
                anonymous_tools: anonymous.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn roles_from_arrays_strings_and_nested_claims() {
        let c = json!({"roles": ["admin", "dev"], "scope": "read write", "realm_access": {"roles": ["ops"]}});
        assert_eq!(roles_from_claims(&c, "roles"), vec!["admin", "dev"]);
        assert_eq!(roles_from_claims(&c, "scope"), vec!["read", "write"]);
        assert_eq!(roles_from_claims(&c, "realm_access.roles"), vec!["ops"]);
        assert!(roles_from_claims(&c, "missing").is_empty());
        assert_eq!(roles_from_claims(&json!({"a.b": "x,y"}), "a.b"), vec!["x", "y"]);
        assert!(roles_from_claims(&json!({"roles": ["admin", 3]}), "roles").is_empty(), "mixed types: no roles");
        assert!(roles_from_claims(&json!({"roles": {"admin": true}}), "roles").is_empty());
    }

    #[test]
    fn role_check() {
        let required = grants(true, &["admin", "developer"], &[], &[]);
        assert_eq!(required.role_check(&id(&["developer"])), RoleCheck::Allowed);
        assert_eq!(required.role_check(&id(&["guest"])), RoleCheck::Refused);
        assert_eq!(required.role_check(&id(&[])), RoleCheck::Refused);
        let optional = grants(false, &["admin", "developer"], &[], &[]);
        assert_eq!(optional.role_check(&id(&["guest"])), RoleCheck::AsAnonymous);
        assert_eq!(optional.role_check(&Identity::anonymous("127.0.0.1")), RoleCheck::Allowed);
        assert_eq!(Grants::default().role_check(&id(&[])), RoleCheck::Allowed);
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("search*", "search_docs"));
        assert!(pattern_matches("search*", "search"));
        assert!(!pattern_matches("search*", "research"));
        assert!(pattern_matches("echo", "echo"));
        assert!(!pattern_matches("echo", "echo2"));
    }

    #[test]
    fn access_is_the_union_over_roles() {
        let g = grants(
            true,
            &["admin", "developer", "viewer"],
            &[("developer", &["search*", "echo"]), ("viewer", &["get*"])],
            &[],
        );
        assert_eq!(g.tool_access(&id(&["admin"])), ToolAccess::All, "no entry: every tool");
        let dev = g.tool_access(&id(&["developer"]));
        assert!(dev.allows("echo") && dev.allows("search_x") && !dev.allows("get-sum"));
        let both = g.tool_access(&id(&["developer", "viewer"]));
        assert!(both.allows("get-sum") && both.allows("echo"));
        assert_eq!(g.tool_access(&id(&["developer", "admin"])), ToolAccess::All);
        let g2 = grants(true, &["developer"], &[("developer", &["echo"])], &[]);
        assert_eq!(g2.tool_access(&id(&["developer", "root"])), ToolAccess::Only(vec!["echo".into()]));
        // Any role admitted (no allowedRoles): a role without an entry grants nothing, so a
        // token's incidental roles never widen what its listed roles allow.
        let any = grants(true, &[], &[("developer", &["echo"])], &[]);
        let dev = id(&["developer", "offline_access", "uma_authorization"]);
        assert_eq!(any.tool_access(&dev), ToolAccess::Only(vec!["echo".into()]));
        assert_eq!(any.tool_access(&id(&["offline_access"])), ToolAccess::Only(vec![]));
    }

    #[test]
    fn anonymous_is_the_least_privileged_identity() {
        let anon = Identity::anonymous("10.0.0.1");
        // Authentication optional, developer may call echo only: anonymous gets nothing by default.
        let g = grants(false, &["developer"], &[("developer", &["echo"])], &[]);
        assert_eq!(g.tool_access(&anon), ToolAccess::Only(vec![]));
        assert!(!g.tool_access(&anon).allows("get-env") && !g.tool_access(&anon).allows("echo"));
        // Without any tool lists, authenticated callers get everything, anonymous still nothing.
        let open = grants(false, &[], &[], &[]);
        assert_eq!(open.tool_access(&id(&["x"])), ToolAccess::All);
        assert_eq!(open.tool_access(&anon), ToolAccess::Only(vec![]));
        // Granted tools of anonymous are granted to every authenticated caller too.
        let g = grants(false, &["developer"], &[("developer", &["echo"])], &["get-sum"]);
        assert!(g.tool_access(&anon).allows("get-sum") && !g.tool_access(&anon).allows("echo"));
        let dev = g.tool_access(&id(&["developer"]));
        assert!(dev.allows("get-sum") && dev.allows("echo"));
        // For every tool name, anonymous is allowed only where every role is.
        for tool in ["echo", "get-sum", "get-env", "x"] {
            if g.tool_access(&anon).allows(tool) {
                assert!(dev.allows(tool), "{tool}");
            }
        }
        // No authentication configured at all: an open server.
        assert_eq!(Grants::default().tool_access(&anon), ToolAccess::All);
    }

    #[test]
    fn response_filter_restores_ids_and_filters_every_tool_list() {
        let f = ResponseFilter::new(
            ToolAccess::Only(vec!["echo".into(), "get*".into()]),
            IdMap { entries: vec![("gw-1".into(), json!(1))] },
        );
        let mut msg = json!({"jsonrpc": "2.0", "id": "gw-1", "result": {"tools": [
            {"name": "echo"}, {"name": "get-sum"}, {"name": "trigger-long-running-operation"}, {"noname": 1}
        ], "nextCursor": "x"}});
        f.apply(&mut msg);
        assert_eq!(msg["id"], 1);
        let names: Vec<_> = msg["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect();
        assert_eq!(names, vec![json!("echo"), json!("get-sum")]);
        // An answer with an id the gateway did not give still gets filtered.
        let mut other = json!([{"jsonrpc": "2.0", "id": 1.0, "result": {"tools": [{"name": "secret"}]}}]);
        f.apply(&mut other);
        assert_eq!(other[0]["result"]["tools"], json!([]));
        // Text with a duplicate key is not passed on.
        assert!(f
            .apply_text(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"secret"}]}}"#)
            .is_err());
        assert!(f.apply_text(b"not json").is_err());
    }

    #[test]
    fn tasks_are_the_callers_they_were_created_for() {
        let table = std::sync::Arc::new(crate::owners::OwnerTable::new(16, 8, std::time::Duration::from_secs(60)));
        let cursors = std::sync::Arc::new(Cursors::generate().expect("system randomness"));
        let bind = |owner: &str| TaskBinding {
            table: table.clone(),
            owner: owner.into(),
            cursors: cursors.clone(),
            other: None,
            ephemeral: false,
        };
        let (alice, bob) = (bind("jwt:sub:alice"), bind("jwt:sub:bob"));
        let filter =
            |b: &TaskBinding| ResponseFilter::new(ToolAccess::All, IdMap::default()).with_tasks(Some(b.clone()));
        assert!(!filter(&alice).is_noop());
        // Alice's task-augmented call is answered with a CreateTaskResult: the task is hers.
        let mut created =
            json!({"jsonrpc": "2.0", "id": 1, "result": {"task": {"taskId": "t-a", "status": "working"}}});
        filter(&alice).apply(&mut created);
        assert_eq!(created["result"]["task"]["taskId"], "t-a", "passed on unchanged");
        let mut bobs = json!([{"jsonrpc": "2.0", "id": 2, "result": {"task": {"taskId": "t-b", "status": "working"}}}]);
        filter(&bob).apply(&mut bobs);
        let get = |id: &str| {
            let text = json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/result", "params": {"taskId": id}});
            crate::jsonrpc::parse(bytes::Bytes::from(text.to_string()), 4).unwrap()
        };
        assert!(alice.not_owned(&get("t-a")).is_empty());
        assert_eq!(alice.not_owned(&get("t-b")), vec!["t-b".to_string()], "bob's task");
        assert_eq!(alice.not_owned(&get("t-unknown")), vec!["t-unknown".to_string()], "never seen");
        assert!(bob.not_owned(&get("t-b")).is_empty());
        // A server naming alice's task to bob again does not hand it over.
        let mut again = json!({"jsonrpc": "2.0", "id": 4, "result": {"task": {"taskId": "t-a"}}});
        filter(&bob).apply(&mut again);
        assert_eq!(bob.not_owned(&get("t-a")), vec!["t-a".to_string()]);
        // A task list keeps only the caller's tasks, the rest of the answer as it was.
        let list = json!({"jsonrpc": "2.0", "id": 5, "result": {"tasks": [
            {"taskId": "t-a", "status": "working"}, {"taskId": "t-b", "status": "completed"},
            {"taskId": "t-other"}, {"status": "no id"}
        ], "nextCursor": "c"}});
        let mut for_alice = list.clone();
        filter(&alice).apply(&mut for_alice);
        assert_eq!(for_alice["result"]["tasks"], json!([{"taskId": "t-a", "status": "working"}]));
        // The server's cursor (which may name someone's task) is not shown: alice gets one of the
        // gateway's that gives the server its own back, to her alone.
        let token = for_alice["result"]["nextCursor"].as_str().unwrap().to_string();
        assert_ne!(token, "c");
        assert_eq!(cursors.server_cursor(&token, "jwt:sub:alice").as_deref(), Some("c"));
        assert_eq!(cursors.server_cursor(&token, "jwt:sub:bob"), None);
        assert_eq!(cursors.server_cursor("c", "jwt:sub:alice"), None);
        let forged = token.replacen(&token[9..10], if &token[9..10] == "Y" { "Z" } else { "Y" }, 1);
        assert_eq!(cursors.server_cursor(&forged, "jwt:sub:alice"), None, "another server cursor, same tag");
        // A server cursor that is not a string is not passed on.
        let mut odd = json!({"jsonrpc": "2.0", "id": 6, "result": {"tasks": [], "nextCursor": 5}});
        filter(&alice).apply(&mut odd);
        assert!(odd["result"].get("nextCursor").is_none());

        // Anonymous callers' tasks are kept apart from authenticated callers' and never take an
        // id one of them holds; an anonymous caller nobody can name again records nothing and
        // gets no next page.
        let anonymous = std::sync::Arc::new(crate::owners::OwnerTable::new(16, 8, std::time::Duration::from_secs(60)));
        let anon = TaskBinding { other: Some(table.clone()), ..TaskBinding::new(anonymous.clone(), "anonymous:s1") };
        let mut reused = json!({"jsonrpc": "2.0", "id": 7, "result": {"task": {"taskId": "t-a"}}});
        filter(&anon).apply(&mut reused);
        assert_eq!(anon.not_owned(&get("t-a")), vec!["t-a".to_string()], "alice's id is not bound to anyone else");
        let once = TaskBinding { ephemeral: true, ..TaskBinding::new(anonymous.clone(), "anonymous:once") };
        let mut made = json!({"jsonrpc": "2.0", "id": 8, "result": {"task": {"taskId": "t-once"}}});
        filter(&once).apply(&mut made);
        assert!(!anonymous.holds("t-once"));
        let mut page =
            json!({"jsonrpc": "2.0", "id": 9, "result": {"tasks": [{"taskId": "t-once"}], "nextCursor": "c"}});
        filter(&once).apply(&mut page);
        assert_eq!(page["result"], json!({"tasks": []}));
        let mut for_bob = list;
        filter(&bob).apply(&mut for_bob);
        assert_eq!(for_bob["result"]["tasks"], json!([{"taskId": "t-b", "status": "completed"}]));
        // What could name a task is inspected, anything else passes as it came.
        let f = filter(&alice);
        assert!(f.passes_untouched(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#));
        assert!(!f.passes_untouched(br#"{"jsonrpc":"2.0","id":1,"result":{"tasks":[]}}"#));
        assert!(!f.passes_untouched(br#"{"jsonrpc":"2.0","id":1,"result":{"\u0074ask":{"t\u0061skId":"x"}}}"#));
        assert!(ResponseFilter::new(ToolAccess::All, IdMap::default()).passes_untouched(b"task"));
        assert!(!ResponseFilter::new(ToolAccess::Only(vec![]), IdMap::default()).passes_untouched(b"{}"));
    }
}
