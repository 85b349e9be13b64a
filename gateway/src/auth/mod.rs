//! Authentication: any one of the policy's methods succeeding establishes an identity.

pub mod apikey;
pub mod jwt;
pub mod mtls;
pub mod oauth2;

use crate::config::{Method, PolicyDocument};
use crate::httpclient::HttpsClient;
use rustls::pki_types::CertificateDer;
use std::time::Duration;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Token subject, API key name, certificate CN; the client address when anonymous.
    pub subject: String,
    /// How it was established: jwt, oauth2, apikey, mtls or anonymous.
    pub method: &'static str,
    /// Roles (from the roles claim, the API key name, the certificate's O).
    pub roles: Vec<String>,
    /// Let in without credentials (`required: false`, or no authentication configured).
    pub anonymous: bool,
    /// When the credential stops being accepted (unix seconds): streams opened with it end then.
    pub expires_at: Option<u64>,
    /// The token claim the subject was read from (`sub`, `client_id`, ...; empty for API keys and
    /// certificates): part of the keys sessions and rate limits go by, so that a client's id can
    /// never pass for a user's subject of the same value.
    pub subject_claim: &'static str,
}

impl Identity {
    /// An authenticated identity.
    pub fn new(subject: &str, method: &'static str, roles: Vec<String>) -> Self {
        Self { subject: subject.to_string(), method, roles, anonymous: false, expires_at: None, subject_claim: "" }
    }
    /// The same identity, its subject read from the token claim `claim`.
    pub fn from_claim(self, claim: &'static str) -> Self {
        Self { subject_claim: claim, ..self }
    }
    /// The same identity, valid until `expires_at` (unix seconds).
    pub fn until(self, expires_at: Option<u64>) -> Self {
        Self { expires_at, ..self }
    }
    /// How long the credential is still accepted; `None` when it does not expire.
    pub fn time_left(&self) -> Option<std::time::Duration> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.expires_at.map(|exp| std::time::Duration::from_secs(exp).saturating_sub(now))
    }
    /// An anonymous caller, known by its address.
    pub fn anonymous(client: &str) -> Self {
        Self {
            subject: client.to_string(),
            method: "anonymous",
            roles: vec![],
            anonymous: true,
            expires_at: None,
            subject_claim: "",
        }
    }
    /// The same caller served as anonymous (its roles not allowed where authentication is
    /// optional): no roles, anonymous grants, still known by its subject for audit and limits.
    pub fn as_anonymous(self) -> Self {
        Self { roles: vec![], anonymous: true, ..self }
    }
    /// Key for rate limiting: the identity, or the client address when it has none.
    pub fn rate_key(&self) -> String {
        if self.method == "anonymous" {
            format!("ip:{}", self.subject)
        } else {
            format!("{}:{}:{}", self.method, self.subject_claim, self.subject)
        }
    }
    /// Who owns the sessions this caller creates: its identity, or `anonymous` (whose sessions
    /// any anonymous caller may use, and no authenticated one).
    pub fn session_owner(&self) -> String {
        if self.anonymous {
            "anonymous".to_string()
        } else {
            format!("{}:{}:{}", self.method, self.subject_claim, self.subject)
        }
    }
    /// For audit records.
    pub fn audit_name(&self) -> String {
        match (self.method, self.anonymous) {
            ("anonymous", _) => "anonymous".to_string(),
            (_, true) => format!("{} (served as anonymous)", self.subject),
            _ => self.subject.clone(),
        }
    }
}

/// The reason of an [`AuthError`] that says nothing about the credentials: the introspection
/// endpoint is busy (503, retry), not the token bad.
pub const INTROSPECTION_BUSY: &str = "introspection_busy";

/// Why authentication failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError {
    /// `missing_credentials` or `invalid_token` / `invalid_api_key` / `invalid_client_certificate`.
    pub reason: &'static str,
    /// Detail for logs and audit.
    pub detail: String,
}

impl AuthError {
    /// A failure with a label and detail.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
    /// For audit records: `reason: detail`.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.reason, self.detail)
    }
}

/// Credentials of one request.
#[derive(Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// `Authorization: Bearer ...`.
    pub bearer: Option<&'a str>,
    /// `X-API-Key: ...`.
    pub api_key: Option<&'a str>,
    /// Client certificate chain from the TLS handshake.
    pub client_cert: Option<&'a [CertificateDer<'static>]>,
}

impl<'a> Credentials<'a> {
    /// Read bearer token and API key from request headers.
    pub fn from_headers(headers: &'a http::HeaderMap, client_cert: Option<&'a [CertificateDer<'static>]>) -> Self {
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty());
        Self { bearer, api_key, client_cert }
    }
}

/// The configured methods.
pub struct Authenticator {
    required: bool,
    methods: Vec<Method>,
    jwt: Option<jwt::JwtVerifier>,
    oauth2: Option<oauth2::Introspector>,
    apikeys: Option<apikey::ApiKeys>,
    mtls: Option<mtls::MtlsVerifier>,
    /// Authentication is configured at all.
    pub enabled: bool,
}

impl Authenticator {
    /// Build from the policy. `client_ca` is the mTLS CA the TLS layer keeps current.
    pub fn from_policy(
        policy: &PolicyDocument,
        client: HttpsClient,
        client_ca: Option<mtls::ClientCa>,
        jwks_refresh_min_interval: Duration,
    ) -> anyhow::Result<Self> {
        let Some(a) = policy.authn() else {
            return Ok(Self::none());
        };
        let roles_claim = policy.authz().map(|z| z.roles_claim.clone()).unwrap_or_else(|| "roles".into());
        let uses = |m| a.methods.contains(&m);
        let jwt = match (uses(Method::Jwt), &a.jwt) {
            (true, Some(j)) => Some(jwt::JwtVerifier::new(j, &roles_claim, client.clone(), jwks_refresh_min_interval)?),
            _ => None,
        };
        let oauth2 = match (uses(Method::Oauth2), &a.oauth2) {
            (true, Some(o)) => Some(oauth2::Introspector::new(o, &roles_claim, client)?),
            _ => None,
        };
        let apikeys = match (uses(Method::Apikey), &a.api_keys) {
            (true, Some(k)) => Some(apikey::ApiKeys::load(&k.dir)?),
            _ => None,
        };
        let mtls = match (uses(Method::Mtls), client_ca) {
            (true, Some(ca)) => Some(mtls::MtlsVerifier::new(ca)),
            (true, None) => anyhow::bail!("mtls needs TLS with a client CA"),
            _ => None,
        };
        Ok(Self { required: a.required, methods: a.methods.clone(), jwt, oauth2, apikeys, mtls, enabled: true })
    }

    /// No authentication: everyone is anonymous.
    pub fn none() -> Self {
        Self { required: false, methods: vec![], jwt: None, oauth2: None, apikeys: None, mtls: None, enabled: false }
    }

    /// The JWT issuer, for the protected resource metadata.
    pub fn issuer(&self) -> Option<&str> {
        self.jwt.as_ref().and_then(|j| j.issuer())
    }

    /// Bearer tokens are accepted.
    pub fn accepts_bearer(&self) -> bool {
        self.jwt.is_some() || self.oauth2.is_some() || self.apikeys.is_some()
    }

    /// Establish who is calling: the first method that succeeds. Credentials that were presented
    /// and all failed are an error even when authentication is optional.
    pub async fn authenticate(&self, creds: Credentials<'_>, client: &str) -> Result<Identity, AuthError> {
        if !self.enabled {
            return Ok(Identity::anonymous(client));
        }
        let mut first_err: Option<AuthError> = None;
        let mut tried = false;
        for m in &self.methods {
            let result = match m {
                Method::Jwt => match (&self.jwt, creds.bearer) {
                    (Some(v), Some(t)) => Some(v.verify(t).await),
                    _ => None,
                },
                Method::Oauth2 => match (&self.oauth2, creds.bearer) {
                    (Some(v), Some(t)) => Some(v.introspect(t, client).await),
                    _ => None,
                },
                Method::Apikey => match (&self.apikeys, creds.api_key.or(creds.bearer)) {
                    (Some(k), Some(key)) => Some(k.check(key)),
                    _ => None,
                },
                Method::Mtls => match (&self.mtls, creds.client_cert) {
                    (Some(v), Some(chain)) => Some(v.verify(chain)),
                    _ => None,
                },
            };
            match result {
                Some(Ok(id)) => return Ok(id),
                Some(Err(e)) => {
                    tried = true;
                    first_err.get_or_insert(e);
                }
                None => {}
            }
        }
        if tried {
            return Err(first_err.unwrap_or_else(|| AuthError::new("invalid_credentials", "rejected")));
        }
        if self.required {
            Err(AuthError::new("missing_credentials", "no credentials for any accepted method"))
        } else {
            Ok(Identity::anonymous(client))
        }
    }
}

/// A NumericDate claim (`exp`, ...) as whole unix seconds: an integer, or a non-integer number as
/// RFC 7519 allows (rounded down), so that a token's expiry is never lost to its number type
/// (a stream opened with `"exp": 1767225600.5` once never ended).
pub fn numeric_date(value: Option<&serde_json::Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| value.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f.floor() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_dates_of_either_number_type_are_read() {
        use serde_json::json;
        let read = |v: serde_json::Value| numeric_date(Some(&v));
        assert_eq!(read(json!(1767225600)), Some(1767225600));
        assert_eq!(read(json!(1767225600.5)), Some(1767225600), "a non-integer NumericDate");
        assert_eq!(read(json!(1.7672256e9)), Some(1767225600));
        assert_eq!((read(json!(-1)), read(json!(-0.5)), read(json!("1767225600"))), (None, None, None));
        assert_eq!(numeric_date(None), None);
    }

    #[test]
    fn credentials_from_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "bearer abc.def".parse().unwrap());
        h.insert("x-api-key", " k1 ".parse().unwrap());
        let c = Credentials::from_headers(&h, None);
        assert_eq!(c.bearer, Some("abc.def"));
        assert_eq!(c.api_key, Some("k1"));
        h.insert("authorization", "Basic Zm9vOmJhcg==".parse().unwrap());
        assert_eq!(Credentials::from_headers(&h, None).bearer, None);
    }

    #[tokio::test]
    async fn optional_authentication_lets_anonymous_in_but_not_bad_credentials() {
        let dir = std::env::temp_dir().join(format!("mcp-gw-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ci.developer"), "s3cret\n").unwrap();
        let policy = PolicyDocument::from_json(&format!(
            r#"{{"enabled": true, "authentication": {{"required": false, "methods": ["apikey"],
                "apiKeys": {{"dir": "{}"}}}}}}"#,
            dir.display()
        ))
        .unwrap();
        let a = Authenticator::from_policy(&policy, crate::httpclient::https_client(), None, Duration::ZERO).unwrap();
        let anon = a.authenticate(Credentials::default(), "10.0.0.1").await.unwrap();
        assert!(anon.anonymous);
        assert_eq!(anon.rate_key(), "ip:10.0.0.1");
        let ok = a.authenticate(Credentials { api_key: Some("s3cret"), ..Default::default() }, "x").await.unwrap();
        assert_eq!((ok.subject.as_str(), ok.roles.clone()), ("ci", vec!["developer".to_string()]));
        let bad = a.authenticate(Credentials { bearer: Some("nope"), ..Default::default() }, "x").await.unwrap_err();
        assert_eq!(bad.reason, "invalid_api_key");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
