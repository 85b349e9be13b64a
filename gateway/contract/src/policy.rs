//! The policy document: a SecurityPolicy as the gateway enforces it, every Secret replaced by the
//! path of its mounted file. The operator renders it (`render_policy`), the gateway loads it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `/etc/mcp/policy.json`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    /// false: no enforcement (no policy, or `enabled: false`); the HTTP surface stays default-deny.
    pub enabled: bool,
    /// The SecurityPolicy's name.
    #[serde(default)]
    pub policy: Option<String>,
    /// Its `metadata.generation`, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// TLS termination.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// Who may call.
    #[serde(default)]
    pub authentication: Option<Authentication>,
    /// What a caller may do.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// Requests per identity.
    #[serde(default)]
    pub rate_limiting: Option<RateLimit>,
    /// Audit records.
    #[serde(default)]
    pub audit: Option<AuditSettings>,
    /// Cross-origin (browser) access. Requests with an `Origin` not listed are refused.
    #[serde(default)]
    pub cors: Cors,
}

/// Minimum TLS version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMinVersion {
    /// 1.2 and 1.3.
    #[serde(rename = "1.2")]
    V1_2,
    /// 1.3 only.
    #[default]
    #[serde(rename = "1.3")]
    V1_3,
}

/// TLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSettings {
    /// Minimum version.
    #[serde(default)]
    pub min_version: TlsMinVersion,
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// An authentication method.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Bearer JWT.
    Jwt,
    /// Bearer token checked by RFC 7662 introspection.
    Oauth2,
    /// Static API key.
    Apikey,
    /// Client certificate.
    Mtls,
}

impl Method {
    /// Spelling in the policy, in audit records and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Oauth2 => "oauth2",
            Self::Apikey => "apikey",
            Self::Mtls => "mtls",
        }
    }
}

/// Authentication settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    /// Refuse callers without valid credentials. When false, a caller without credentials is
    /// anonymous: the least privileged identity ([`Authorization::anonymous_tools`]).
    #[serde(default)]
    pub required: bool,
    /// Accepted methods, tried in order.
    #[serde(default)]
    pub methods: Vec<Method>,
    /// jwt settings.
    #[serde(default)]
    pub jwt: Option<JwtSettings>,
    /// oauth2 settings.
    #[serde(default)]
    pub oauth2: Option<OAuth2Settings>,
    /// apikey settings.
    #[serde(default)]
    pub api_keys: Option<ApiKeySettings>,
    /// mtls settings.
    #[serde(default)]
    pub mtls: Option<MtlsSettings>,
}

/// JWT settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSettings {
    /// Required `iss` (a single string, compared exactly).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// JWKS for RS/PS/ES/EdDSA.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// File with the HS* shared secret (exact bytes).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// What is wrong with a JWKS without `issuer` and `audiences` (the operator prefixes the
/// resource's field path; the CRD's CEL rule spells the same message, as a literal, and a test of
/// the operator's holds the two together).
pub const UNBOUND_JWKS: &str = "jwt.jwksUri needs issuer and audiences (else a token the identity provider signed for \
                                any other application is accepted)";

/// A JWKS signs tokens for every application of its identity provider: without an `issuer` and
/// `audiences` to check, a token issued for any of them would be accepted.
pub fn unbound_jwks(jwks_uri: bool, issuer: bool, audiences: &[String]) -> bool {
    jwks_uri && (!issuer || audiences.is_empty())
}

/// OAuth2 introspection settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuth2Settings {
    /// RFC 7662 endpoint.
    pub introspection_url: String,
    /// File with the client id used to call it.
    #[serde(default)]
    pub client_id_file: Option<PathBuf>,
    /// File with the client secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
}

/// API key settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Directory with one file per client; the file holds the key.
    pub dir: PathBuf,
}

/// mTLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsSettings {
    /// CA bundle client certificates must chain to.
    pub ca_file: PathBuf,
}

/// Authorization mode (only role-based).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationMode {
    /// Roles from the credential, checked against allowedRoles and the tool lists.
    #[default]
    Rbac,
}

/// Authorization settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    /// The mode.
    #[serde(default)]
    pub mode: AuthorizationMode,
    /// An authenticated caller needs one of these (empty: any authenticated caller).
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    /// Claim the roles are read from (dots reach into nested objects).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Per-role tool allow lists (`*` alone, or a trailing `*` for a prefix); a role without an
    /// entry may use every tool if `allowed_roles` names it, and no tool otherwise (when any list
    /// exists).
    #[serde(default)]
    pub tools: BTreeMap<String, Vec<String>>,
    /// Tools a caller without credentials may use (when authentication is not required);
    /// empty: none. Every authenticated caller may use them too, so that anonymous is never
    /// more privileged than a logged-in user.
    #[serde(default)]
    pub anonymous_tools: Vec<String>,
}

impl Default for Authorization {
    fn default() -> Self {
        Self {
            mode: AuthorizationMode::Rbac,
            allowed_roles: vec![],
            roles_claim: default_roles_claim(),
            tools: BTreeMap::new(),
            anonymous_tools: vec![],
        }
    }
}

fn default_roles_claim() -> String {
    "roles".to_string()
}

/// Rate limit per identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate.
    pub requests_per_minute: u32,
    /// Burst (default: the sustained rate).
    #[serde(default)]
    pub burst_size: Option<u32>,
}

/// Audit level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum AuditLevel {
    /// Every request.
    #[default]
    Info,
    /// Denials and errors.
    Warn,
    /// Errors.
    Error,
}

/// Audit settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSettings {
    /// Lowest level written.
    #[serde(default)]
    pub log_level: AuditLevel,
    /// Days a daily file is kept.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
}

fn default_retention() -> u32 {
    30
}

/// Cross-origin access: the MCP specification requires servers to validate `Origin` (DNS
/// rebinding); the gateway refuses every request whose `Origin` is not listed here and answers
/// CORS preflights itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`, `http://localhost:6274`), or `*` for any
    /// origin (never the opaque `null`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl Cors {
    /// Whether a request carrying `Origin: origin` may be served.
    pub fn allows(&self, origin: &str) -> bool {
        origin != "null" && self.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

impl PolicyDocument {
    /// Parse and check a document.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let p: PolicyDocument = serde_json::from_str(text).map_err(|e| format!("policy document is not valid: {e}"))?;
        p.validate()?;
        Ok(p)
    }

    /// What the types cannot say: every method has its settings, mtls has TLS, a required
    /// authentication names a method, rates are positive.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(a) = &self.authentication {
            for m in &a.methods {
                let ok = match m {
                    Method::Jwt => a.jwt.as_ref().is_some_and(|j| j.jwks_uri.is_some() || j.secret_file.is_some()),
                    Method::Oauth2 => a.oauth2.is_some(),
                    Method::Apikey => a.api_keys.is_some(),
                    Method::Mtls => a.mtls.is_some(),
                };
                if !ok {
                    return Err(format!("authentication method {} has no settings", m.as_str()));
                }
            }
            if a.jwt.as_ref().is_some_and(|j| unbound_jwks(j.jwks_uri.is_some(), j.issuer.is_some(), &j.audiences)) {
                return Err(UNBOUND_JWKS.into());
            }
            if a.methods.contains(&Method::Mtls) && self.tls.is_none() {
                return Err("authentication method mtls needs tls".into());
            }
            if a.required && a.methods.is_empty() {
                return Err("authentication is required but no method is given".into());
            }
        }
        if let Some(r) = &self.rate_limiting {
            if r.requests_per_minute == 0 || r.burst_size == Some(0) {
                return Err("rateLimiting needs requestsPerMinute and burstSize of at least 1".into());
            }
        }
        if self.cors.allowed_origins.iter().any(|o| o == "null" || o.is_empty()) {
            return Err("cors.allowedOrigins may not hold \"null\" or an empty origin".into());
        }
        Ok(())
    }

    /// Authentication settings in force, if any.
    pub fn authn(&self) -> Option<&Authentication> {
        self.authentication.as_ref().filter(|_| self.enabled)
    }

    /// Authorization settings in force, if any.
    pub fn authz(&self) -> Option<&Authorization> {
        self.authorization.as_ref().filter(|_| self.enabled)
    }

    /// TLS settings in force, if any.
    pub fn tls_in_force(&self) -> Option<&TlsSettings> {
        self.tls.as_ref().filter(|_| self.enabled)
    }

    /// Rate limit in force, if any.
    pub fn rate(&self) -> Option<&RateLimit> {
        self.rate_limiting.as_ref().filter(|_| self.enabled)
    }

    /// Audit settings in force, if any.
    pub fn audit_in_force(&self) -> Option<&AuditSettings> {
        self.audit.as_ref().filter(|_| self.enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> serde_json::Value {
        json!({
            "enabled": true, "policy": "default-policy", "generation": 2,
            "tls": {"minVersion": "1.3", "certFile": "/etc/mcp/tls/tls.crt", "keyFile": "/etc/mcp/tls/tls.key"},
            "authentication": {
                "required": true, "methods": ["jwt", "oauth2"],
                "jwt": {"issuer": "https://auth.example.com", "audiences": ["mcp"],
                        "jwksUri": "https://auth.example.com/jwks.json", "secretFile": null},
                "oauth2": {"introspectionUrl": "https://auth.example.com/introspect",
                           "clientIdFile": "/var/run/secrets/mcp/c/client-id",
                           "clientSecretFile": "/var/run/secrets/mcp/c/client-secret"},
                "apiKeys": null, "mtls": null
            },
            "authorization": {"mode": "rbac", "allowedRoles": ["admin", "developer"], "rolesClaim": "roles",
                              "tools": {"developer": ["search*"]}, "anonymousTools": []},
            "rateLimiting": {"requestsPerMinute": 100, "burstSize": 200},
            "audit": {"logLevel": "info", "retentionDays": 30},
            "cors": {"allowedOrigins": ["https://app.example.com"]}
        })
    }

    #[test]
    fn round_trips() {
        let p = PolicyDocument::from_json(&full().to_string()).unwrap();
        assert_eq!(p.authn().unwrap().methods, vec![Method::Jwt, Method::Oauth2]);
        assert_eq!(p.authz().unwrap().tools["developer"], vec!["search*"]);
        let again = PolicyDocument::from_json(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(p, again);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut doc = full();
        doc["authorization"]["denyAll"] = json!(true);
        let e = PolicyDocument::from_json(&doc.to_string()).unwrap_err();
        assert!(e.contains("denyAll"), "{e}");
    }

    #[test]
    fn a_method_needs_its_settings() {
        let mut doc = full();
        doc["authentication"]["oauth2"] = json!(null);
        assert!(PolicyDocument::from_json(&doc.to_string()).unwrap_err().contains("oauth2 has no settings"));
        let mut doc = full();
        doc["tls"] = json!(null);
        doc["authentication"]["methods"] = json!(["mtls"]);
        doc["authentication"]["mtls"] = json!({"caFile": "/x"});
        assert!(PolicyDocument::from_json(&doc.to_string()).is_err());
    }

    #[test]
    fn keys_from_a_jwks_need_an_issuer_and_an_audience() {
        for (field, empty) in [("issuer", json!(null)), ("audiences", json!([]))] {
            let mut doc = full();
            doc["authentication"]["jwt"][field] = empty;
            let e = PolicyDocument::from_json(&doc.to_string()).unwrap_err();
            assert!(e.contains("jwt.jwksUri needs issuer and audiences"), "{field}: {e}");
        }
    }

    #[test]
    fn disabled_enforces_nothing_but_keeps_origins() {
        let p = PolicyDocument::from_json(r#"{"enabled": false, "policy": "p"}"#).unwrap();
        assert!(p.authn().is_none() && p.tls_in_force().is_none() && p.audit_in_force().is_none());
        assert!(!p.cors.allows("https://a.example"));
    }

    #[test]
    fn origins() {
        let c = Cors { allowed_origins: vec!["https://app.example.com".into()] };
        assert!(c.allows("https://app.example.com") && c.allows("HTTPS://APP.example.com"));
        assert!(!c.allows("https://evil.example") && !c.allows("null") && !c.allows(""));
        let any = Cors { allowed_origins: vec!["*".into()] };
        assert!(any.allows("https://x.example") && !any.allows("null"));
        assert!(Cors::default().allowed_origins.is_empty() && !Cors::default().allows("http://localhost"));
    }
}
