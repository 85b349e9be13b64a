//! SecurityPolicy: how requests to MCP servers are authenticated, authorized, limited and audited.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired security policy. Secrets are only ever referenced by name, never inlined.
// clippy 1.95 reads the repeated `type_` of separate printcolumn(...) entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "mcp.n-takatsu.dev",
    version = "v1alpha1",
    kind = "SecurityPolicy",
    plural = "securitypolicies",
    singular = "securitypolicy",
    shortname = "secpol",
    category = "mcp-all",
    namespaced,
    status = "SecurityPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "SecurityPolicy protects the MCP servers that name it: TLS, authentication, role checks, rate limits and audit, enforced per request by the MCP gateway in each server pod.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Active, Inactive or Error"
    ),
    printcolumn(
        name = "Auth",
        type_ = "string",
        json_path = ".spec.authentication.methods",
        description = "Authentication methods"
    ),
    printcolumn(
        name = "Rate",
        type_ = "integer",
        json_path = ".spec.rateLimiting.requestsPerMinute",
        description = "Requests per minute per identity"
    ),
    printcolumn(
        name = "TLS",
        type_ = "string",
        json_path = ".status.tls",
        description = "Minimum TLS version, or off"
    ),
    printcolumn(
        name = "Used-By",
        type_ = "integer",
        json_path = ".status.usedByCount",
        description = "Number of MCPServers using it"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.encryption) || !self.encryption.tlsEnabled || (has(self.encryption.certSecretName) && size(self.encryption.certSecretName) > 0)",
     "message": "spec.encryption.certSecretName is required when spec.encryption.tlsEnabled is true"},
    {"rule": "!has(self.authentication) || !self.authentication.required || size(self.authentication.methods) > 0",
     "message": "spec.authentication.methods must name at least one method when spec.authentication.required is true"},
    {"rule": "!has(self.authentication) || !('mtls' in self.authentication.methods) || (has(self.encryption) && self.encryption.tlsEnabled)",
     "message": "spec.encryption.tlsEnabled must be true when spec.authentication.methods includes mtls"}
]))]
pub struct SecurityPolicySpec {
    /// false turns enforcement off for every server that names the policy (an explicit opt-out).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Who may call the servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// What an authenticated caller may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// Requests per identity (client address when anonymous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<RateLimiting>,
    /// TLS termination at the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// One audit record per MCP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    /// Who may connect at the network level (NetworkPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Cross-origin (browser) access. The gateway refuses (403) every request whose `Origin`
    /// header is not listed, as the MCP specification requires against DNS rebinding, and
    /// answers CORS preflights itself. Default: no cross-origin access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

fn yes() -> bool {
    true
}

/// Authentication settings; any one listed method succeeding authenticates a request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// Reject requests without valid credentials.
    #[serde(default)]
    pub required: bool,
    /// Accepted methods: jwt, oauth2, apikey, mtls.
    #[serde(default)]
    #[schemars(length(max = 4), extend("x-kubernetes-list-type" = "set"))]
    pub methods: Vec<AuthMethod>,
    /// Settings of the jwt method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
    /// Settings of the oauth2 method (RFC 7662 token introspection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Auth>,
    /// Settings of the apikey method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeysAuth>,
    /// Settings of the mtls method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsAuth>,
}

/// An authentication method.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// Bearer JSON Web Token.
    Jwt,
    /// OAuth2 bearer token checked by introspection.
    Oauth2,
    /// Static API key.
    Apikey,
    /// Client certificate.
    Mtls,
}

impl AuthMethod {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Oauth2 => "oauth2",
            Self::Apikey => "apikey",
            Self::Mtls => "mtls",
        }
    }
}

/// JWT validation: HS* with a shared secret from a Secret, RS/ES/EdDSA with keys from a JWKS.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.jwksUri) || has(self.secretRef)",
     "message": "spec.authentication.jwt needs jwksUri or secretRef"},
    {"rule": "!has(self.generateSecret) || !self.generateSecret || has(self.secretRef)",
     "message": "spec.authentication.jwt.generateSecret needs spec.authentication.jwt.secretRef (the Secret to create)"},
    {"rule": "!has(self.jwksUri) || (has(self.issuer) && has(self.audiences) && size(self.audiences) > 0)",
     "message": "spec.authentication.jwt.jwksUri needs issuer and audiences (else a token the identity provider signed for any other application is accepted)"}
]))]
pub struct JwtAuth {
    /// Required `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values (any one must match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// JWKS endpoint for RS/ES/EdDSA keys (refreshed on an unknown `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^https?://"))]
    pub jwks_uri: Option<String>,
    /// Secret key holding the HS* shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// When the Secret of `secretRef` does not exist, the operator creates it holding a random
    /// 256-bit HS256 key (64 hex characters) under `secretRef.key`, so that tokens can be signed
    /// without an identity provider. A Secret the operator did not create is never changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate_secret: bool,
}

/// OAuth2 token introspection (RFC 7662).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Auth {
    /// Introspection endpoint.
    #[schemars(regex(pattern = "^https?://"))]
    pub introspection_url: String,
    /// Secret with keys `client-id` and `client-secret` used to call the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretRef>,
}

/// Static API keys.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysAuth {
    /// Secret whose every key is a client name and value an API key.
    pub secret_ref: SecretRef,
}

/// Client certificate authentication.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MtlsAuth {
    /// Secret with key `ca.crt`: the CA that client certificates must chain to.
    pub ca_secret_ref: SecretRef,
}

/// A Secret in the policy's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Secret name (a DNS subdomain: lowercase letters, digits, '-' and '.').
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// One key of a Secret in the policy's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name (a DNS subdomain: lowercase letters, digits, '-' and '.').
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key in the Secret (letters, digits, '-', '_' and '.').
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Role-based authorization.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// Authorization mode; only rbac exists.
    #[serde(default)]
    pub mode: AuthorizationMode,
    /// A caller needs at least one of these roles (403 otherwise). Empty: any authenticated caller.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_roles: Vec<String>,
    /// Token claim the roles are read from: a claim name, or a dotted path into nested claims
    /// (`realm_access.roles`) when no claim has that exact name.
    #[serde(default = "default_roles_claim")]
    #[schemars(length(min = 1, max = 256))]
    pub roles_claim: String,
    /// Per-role allow lists of tool names, one per role. A role without an entry may use every
    /// tool if `allowedRoles` names it; other roles grant no tool (only `anonymousTools`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["role"]))]
    pub tools: Vec<ToolAccess>,
    /// Tools a caller without credentials may list and call when authentication is not required
    /// (exact names, `prefix*`, or `*`). Default: none; anonymous callers may still initialize,
    /// ping and list. Every authenticated caller may use these too, so that anonymous is never
    /// more privileged than a logged-in user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub anonymous_tools: Vec<String>,
}

fn default_roles_claim() -> String {
    "roles".to_string()
}

/// Authorization mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationMode {
    /// Roles from the token.
    #[default]
    Rbac,
}

/// The tools one role may list and call.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ToolAccess {
    /// Role name.
    #[schemars(length(min = 1))]
    pub role: String,
    /// Tool names; a trailing `*` matches a prefix, `*` alone every tool.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// Token-bucket rate limit per identity.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimiting {
    /// Turn rate limiting on.
    #[serde(default)]
    pub enabled: bool,
    /// Sustained requests per minute per identity.
    #[serde(default = "default_rpm")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: i32,
    /// Requests allowed at once above the sustained rate (default: requestsPerMinute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub burst_size: Option<i32>,
}

fn default_rpm() -> i32 {
    60
}

/// TLS at the gateway.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Serve MCP over TLS only.
    #[serde(default)]
    pub tls_enabled: bool,
    /// Minimum TLS version: "1.2" or "1.3".
    #[serde(default)]
    pub tls_version: TlsVersion,
    /// kubernetes.io/tls Secret (tls.crt, tls.key) in the policy's namespace (a DNS subdomain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub cert_secret_name: Option<String>,
    /// When the Secret `certSecretName` does not exist, the operator creates it: a self-signed
    /// certificate (ECDSA P-256, one year) for the Services of the policy's namespace
    /// (`*.NAMESPACE.svc`, `*.NAMESPACE.svc.cluster.local`, `localhost`), renewed 30 days before it
    /// expires. Clients must then skip verification or trust that certificate; use a certificate
    /// from your CA otherwise. A Secret the operator did not create is never changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_signed: bool,
}

/// Minimum TLS version.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[default]
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_2 => "1.2",
            Self::V1_3 => "1.3",
        }
    }
}

/// Audit records.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Write audit records.
    #[serde(default)]
    pub enabled: bool,
    /// Lowest level written: info (every request), warn (denials and errors) or error.
    #[serde(default)]
    pub log_level: AuditLevel,
    /// Days a rotated audit file is kept when a volume is given.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 3650))]
    pub retention_days: i32,
}

fn default_retention() -> i32 {
    30
}

/// Audit level.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditLevel {
    /// Every request.
    #[default]
    Info,
    /// Denials and failures.
    Warn,
    /// Failures only.
    Error,
}

/// Origins browsers may call the server from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Exact origins (`https://app.example.com`, `http://localhost:6274`), or `*` for any origin.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "set", "maxItems" = 64, "items" = {"type": "string", "maxLength": 256, "pattern": r"^(\*|[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s]+)$"}))]
    pub allowed_origins: Vec<String>,
}

/// Network-level admission (rendered as a NetworkPolicy on the server pods).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Client address ranges that may connect.
    #[serde(default, rename = "allowedCIDRs")]
    #[schemars(extend("items" = {"type": "string", "maxLength": 43, "pattern": r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$|^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8])$"}))]
    pub allowed_cidrs: Vec<String>,
    /// Namespaces whose pods may connect (namespace names).
    #[serde(default)]
    #[schemars(extend("items" = {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}))]
    pub allowed_namespaces: Vec<String>,
}

/// Lifecycle phase of a SecurityPolicy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SecurityPolicyPhase {
    /// Valid and enforced.
    #[default]
    Active,
    /// `enabled: false`: servers naming it run without enforcement.
    Inactive,
    /// A referenced Secret is missing or lacks a key, or a method has no settings.
    Error,
}

/// Observed state of a security policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPolicyStatus {
    /// Active, Inactive or Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SecurityPolicyPhase>,
    /// MCPServers that name this policy.
    #[serde(default)]
    pub used_by: Vec<String>,
    /// Number of MCPServers in usedBy.
    #[serde(default)]
    pub used_by_count: i32,
    /// Minimum TLS version clients must use, or "off".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Valid.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions")]
    pub conditions: Vec<Condition>,
}

/// Condition types of a SecurityPolicy.
pub mod policy_condition_types {
    /// Referenced Secrets exist and hold the expected keys; every method has its settings.
    pub const VALID: &str = "Valid";
}
