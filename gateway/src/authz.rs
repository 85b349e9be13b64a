//! Role checks and per-role tool allow lists.

use crate::auth::Identity;
use crate::config::AuthzPolicy;
use serde_json::Value;

/// Roles from a token's claims: `claim` may be a dotted path (`realm_access.roles`); the value may
/// be an array of strings or a space/comma separated string (as `scope` is).
pub fn roles_from_claims(claims: &Value, claim: &str) -> Vec<String> {
    let value = claims.get(claim).or_else(|| claim.split('.').try_fold(claims, |v, k| v.get(k)));
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::String(s)) => {
            s.split(|c: char| c.is_whitespace() || c == ',').filter(|r| !r.is_empty()).map(str::to_string).collect()
        }
        _ => vec![],
    }
}

/// The caller has one of `allowedRoles` (or none are required). Anonymous callers (let in by
/// `required: false`) are not role-checked.
pub fn role_allowed(policy: Option<&AuthzPolicy>, id: &Identity) -> bool {
    match policy {
        None => true,
        Some(_) if id.anonymous => true,
        Some(p) => p.allowed_roles.is_empty() || id.roles.iter().any(|r| p.allowed_roles.contains(r)),
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

/// The `tools/call`s of a request that `access` refuses: the tool names and the JSON-RPC reply
/// (one error per request, an array for a batch); None when every call is allowed.
pub fn refuse_tools(parsed: &crate::jsonrpc::Parsed, access: &ToolAccess) -> Option<(Vec<String>, Value)> {
    use crate::jsonrpc::{error_response, FORBIDDEN};
    let denied: Vec<String> = parsed
        .messages
        .iter()
        .filter(|m| m.is_tool_call() && !m.tool.as_deref().is_some_and(|t| access.allows(t)))
        .map(|m| m.tool.clone().unwrap_or_default())
        .collect();
    if denied.is_empty() {
        return None;
    }
    let msg = format!("Forbidden: tool {:?} is not allowed", denied.join(","));
    let errors: Vec<Value> = parsed.requests().map(|m| error_response(m.id.as_ref(), FORBIDDEN, &msg)).collect();
    let reply = if parsed.batch { Value::Array(errors) } else { errors.into_iter().next().unwrap_or(Value::Null) };
    Some((denied, reply))
}

/// The caller's tool access: the union over its roles (those in `allowedRoles` when that is set);
/// a role without an entry may use every tool. Anonymous callers use the entry of the role
/// `anonymous` when there is one.
pub fn tool_access(policy: Option<&AuthzPolicy>, id: &Identity) -> ToolAccess {
    let Some(p) = policy.filter(|p| !p.tools.is_empty()) else {
        return ToolAccess::All;
    };
    let anonymous = ["anonymous".to_string()];
    let roles: Vec<&String> = if id.anonymous {
        anonymous.iter().collect()
    } else {
        id.roles.iter().filter(|r| p.allowed_roles.is_empty() || p.allowed_roles.contains(r)).collect()
    };
    let mut patterns = vec![];
    for role in roles {
        match p.tools.get(role.as_str()) {
            None => return ToolAccess::All,
            Some(allow) => patterns.extend(allow.iter().cloned()),
        }
    }
    if patterns.iter().any(|p| p == "*") {
        return ToolAccess::All;
    }
    patterns.sort();
    patterns.dedup();
    ToolAccess::Only(patterns)
}

/// Drop the tools the caller may not use from a `tools/list` response (`result.tools`).
/// Returns true when something was removed.
pub fn filter_tools_response(msg: &mut Value, access: &ToolAccess) -> bool {
    let Some(tools) = msg.get_mut("result").and_then(|r| r.get_mut("tools")).and_then(Value::as_array_mut) else {
        return false;
    };
    let before = tools.len();
    tools.retain(|t| t.get("name").and_then(Value::as_str).is_some_and(|n| access.allows(n)));
    tools.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn id(roles: &[&str]) -> Identity {
        Identity::new("alice", "jwt", roles.iter().map(|r| r.to_string()).collect())
    }

    fn policy(allowed: &[&str], tools: &[(&str, &[&str])]) -> AuthzPolicy {
        AuthzPolicy {
            allowed_roles: allowed.iter().map(|r| r.to_string()).collect(),
            roles_claim: "roles".into(),
            tools: tools
                .iter()
                .map(|(r, a)| (r.to_string(), a.iter().map(|t| t.to_string()).collect()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn roles_from_arrays_strings_and_nested_claims() {
        let c = json!({"roles": ["admin", 3, "dev"], "scope": "read write", "realm_access": {"roles": ["ops"]}});
        assert_eq!(roles_from_claims(&c, "roles"), vec!["admin", "dev"]);
        assert_eq!(roles_from_claims(&c, "scope"), vec!["read", "write"]);
        assert_eq!(roles_from_claims(&c, "realm_access.roles"), vec!["ops"]);
        assert!(roles_from_claims(&c, "missing").is_empty());
        assert_eq!(roles_from_claims(&json!({"a.b": "x,y"}), "a.b"), vec!["x", "y"]);
    }

    #[test]
    fn role_check() {
        let p = policy(&["admin", "developer"], &[]);
        assert!(role_allowed(Some(&p), &id(&["developer"])));
        assert!(!role_allowed(Some(&p), &id(&["guest"])));
        assert!(!role_allowed(Some(&p), &id(&[])));
        assert!(role_allowed(Some(&policy(&[], &[])), &id(&[])));
        assert!(role_allowed(None, &id(&[])));
        assert!(role_allowed(Some(&p), &Identity::anonymous("127.0.0.1")));
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
        let p =
            policy(&["admin", "developer", "viewer"], &[("developer", &["search*", "echo"]), ("viewer", &["get*"])]);
        assert_eq!(tool_access(Some(&p), &id(&["admin"])), ToolAccess::All, "no entry: every tool");
        let dev = tool_access(Some(&p), &id(&["developer"]));
        assert!(dev.allows("echo") && dev.allows("search_x") && !dev.allows("get-sum"));
        let both = tool_access(Some(&p), &id(&["developer", "viewer"]));
        assert!(both.allows("get-sum") && both.allows("echo"));
        assert_eq!(tool_access(Some(&p), &id(&["developer", "admin"])), ToolAccess::All);
        assert_eq!(tool_access(None, &id(&["developer"])), ToolAccess::All);
        // roles outside allowedRoles do not widen access
        let p2 = policy(&["developer"], &[("developer", &["echo"])]);
        assert_eq!(tool_access(Some(&p2), &id(&["developer", "root"])), ToolAccess::Only(vec!["echo".into()]));
        let anon = policy(&[], &[("anonymous", &["echo"]), ("developer", &["*"])]);
        assert_eq!(tool_access(Some(&anon), &Identity::anonymous("ip")), ToolAccess::Only(vec!["echo".into()]));
        assert_eq!(tool_access(Some(&anon), &id(&["developer"])), ToolAccess::All);
    }

    #[test]
    fn filters_tools_list_results() {
        let access = ToolAccess::Only(vec!["echo".into(), "get*".into()]);
        let mut msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "echo"}, {"name": "get-sum"}, {"name": "trigger-long-running-operation"}, {"noname": 1}
        ], "nextCursor": "x"}});
        assert!(filter_tools_response(&mut msg, &access));
        let names: Vec<_> = msg["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect();
        assert_eq!(names, vec![json!("echo"), json!("get-sum")]);
        assert_eq!(msg["result"]["nextCursor"], "x");
        let mut other = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": []}});
        assert!(!filter_tools_response(&mut other, &access));
    }
}
