//! OAuth2 token introspection (RFC 7662), cached within the token's lifetime, bounded.

use super::{AuthError, Identity};
use crate::authz::roles_from_claims;
use crate::config::OAuth2Settings;
use crate::httpclient::{fetch, HttpsClient};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest an active answer is reused, even when the token lives longer.
const MAX_CACHE: Duration = Duration::from_secs(300);
/// Most cached tokens.
const MAX_ENTRIES: usize = 10_000;
/// How long a token found inactive (or expired) is refused without asking again.
const REFUSED_FOR: Duration = Duration::from_secs(30);
/// Most introspection calls at once, and of one client address: a client sending random tokens
/// cannot flood the endpoint, nor take every call from the others.
const MAX_CALLS: usize = 16;
const MAX_CALLS_PER_CLIENT: usize = 8;
/// Longest a token waits for a free call (then 503: the caller may retry, its token may be good).
const CALL_WAIT: Duration = Duration::from_secs(5);

/// Calls the introspection endpoint.
pub struct Introspector {
    url: String,
    basic: Option<String>,
    client: HttpsClient,
    roles_claim: String,
    cache: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
    refused: Mutex<HashMap<[u8; 32], Instant>>,
    calls: tokio::sync::Semaphore,
    calls_by_client: std::sync::Arc<crate::inflight::InFlight>,
}

/// Remembers `key` until `until` in `map`, making room (expired entries first, then all) at
/// [`MAX_ENTRIES`].
fn remember<V>(map: &Mutex<HashMap<[u8; 32], V>>, key: [u8; 32], v: V, live: impl Fn(&V) -> bool) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, v| live(v));
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(key, v);
}

/// `application/x-www-form-urlencoded` value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn read_trimmed(path: &std::path::Path) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    Ok(s.trim().to_string())
}

/// How long an introspection answer may be reused: until the token expires, at most
/// [`MAX_CACHE`]; `None` when it has already expired.
pub fn cache_for(exp: Option<u64>, now_unix: u64) -> Option<Duration> {
    match exp {
        Some(exp) if exp <= now_unix => None,
        Some(exp) => Some(Duration::from_secs(exp - now_unix).min(MAX_CACHE)),
        None => Some(MAX_CACHE),
    }
}

impl Introspector {
    /// From the policy; reads the client credentials now.
    pub fn new(p: &OAuth2Settings, roles_claim: &str, client: HttpsClient) -> anyhow::Result<Self> {
        let basic = match (&p.client_id_file, &p.client_secret_file) {
            (Some(id), Some(secret)) => {
                let pair = format!("{}:{}", form_encode(&read_trimmed(id)?), form_encode(&read_trimmed(secret)?));
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
            }
            _ => None,
        };
        Ok(Self {
            url: p.introspection_url.clone(),
            basic,
            client,
            roles_claim: roles_claim.to_string(),
            cache: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            calls: tokio::sync::Semaphore::new(MAX_CALLS),
            calls_by_client: crate::inflight::InFlight::new(MAX_CALLS_PER_CLIENT),
        })
    }

    fn digest(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        d.as_ref().try_into().expect("sha256 is 32 bytes")
    }

    /// Ask the endpoint (or the cache) whether the token of a caller at `client` is active.
    pub async fn introspect(&self, token: &str, client: &str) -> Result<Identity, AuthError> {
        let key = Self::digest(token);
        let now = Instant::now();
        if let Some((id, until)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if *until > now {
                return Ok(id.clone());
            }
        }
        if self.refused.lock().unwrap_or_else(|e| e.into_inner()).get(&key).is_some_and(|until| *until > now) {
            return Err(AuthError::new("invalid_token", "token is not active"));
        }
        let busy = || AuthError::new(super::INTROSPECTION_BUSY, "too many introspections at once");
        let waited = tokio::time::timeout(CALL_WAIT, async {
            let own = loop {
                match self.calls_by_client.acquire(client) {
                    Some(own) => break own,
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            (own, self.calls.acquire().await)
        });
        let (_own, _call) = waited.await.map_err(|_| busy())?;
        let result = self.ask(token).await;
        match &result {
            Ok(id) => {
                remember(&self.cache, key, (id.identity.clone(), Instant::now() + id.ttl), |(_, until)| *until > now);
            }
            Err(e) if e.reason == "invalid_token" => {
                remember(&self.refused, key, Instant::now() + REFUSED_FOR, |until| *until > now);
            }
            Err(_) => {}
        }
        result.map(|id| id.identity)
    }

    /// The endpoint's answer on `token`.
    async fn ask(&self, token: &str) -> Result<Answer, AuthError> {
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let mut req = http::Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json");
        if let Some(b) = &self.basic {
            req = req.header(http::header::AUTHORIZATION, b);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AuthError::new("introspection_failed", e.to_string()))?;
        let (status, answer) =
            fetch(&self.client, req).await.map_err(|e| AuthError::new("introspection_failed", e.to_string()))?;
        if !status.is_success() {
            return Err(AuthError::new("introspection_failed", format!("endpoint answered {status}")));
        }
        let doc: Value =
            serde_json::from_slice(&answer).map_err(|e| AuthError::new("introspection_failed", e.to_string()))?;
        if doc.get("active") != Some(&Value::Bool(true)) {
            return Err(AuthError::new("invalid_token", "token is not active"));
        }
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let Some(ttl) = cache_for(super::numeric_date(doc.get("exp")), unix) else {
            return Err(AuthError::new("invalid_token", "token expired"));
        };
        // An answer that names no subject is refused: all of them would be one caller.
        let Some((claim, subject)) = ["sub", "username", "client_id"]
            .into_iter()
            .find_map(|c| doc.get(c).and_then(Value::as_str).map(|s| (c, s.to_string())))
        else {
            return Err(AuthError::new("invalid_token", "the introspection answer names no subject"));
        };
        let identity = Identity::new(&subject, "oauth2", roles_from_claims(&doc, &self.roles_claim))
            .until(super::numeric_date(doc.get("exp")))
            .from_claim(claim);
        Ok(Answer { identity, ttl })
    }
}

/// An active token's identity and how long it may be reused.
struct Answer {
    identity: Identity,
    ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetime_is_within_the_token_lifetime() {
        assert_eq!(cache_for(Some(1_000), 1_000), None);
        assert_eq!(cache_for(Some(1_010), 1_000), Some(Duration::from_secs(10)));
        assert_eq!(cache_for(Some(100_000), 1_000), Some(MAX_CACHE));
        assert_eq!(cache_for(None, 1_000), Some(MAX_CACHE));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b+c/d=é"), "a+b%2Bc%2Fd%3D%C3%A9");
    }
}
