//! Command line and the policy document (`/etc/mcp/policy.json`, rendered by the operator's
//! `policy::render_policy`).

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the gateway reaches the MCP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Streamable HTTP at --upstream.
    Http,
    /// WebSocket at --upstream (http(s) is read as ws(s)).
    Websocket,
}

/// mcp-gateway: enforces a SecurityPolicy in front of one MCP server.
#[derive(Parser, Clone, Debug)]
#[command(name = "mcp-gateway", version, about)]
pub struct Args {
    /// Where MCP clients connect (TLS when the policy asks for it).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Health, readiness, metrics and status (plain HTTP).
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// The effective policy document.
    #[arg(long, default_value = "/etc/mcp/policy.json")]
    pub policy: PathBuf,
    /// The MCP server's endpoint (http mode), e.g. http://127.0.0.1:3000/mcp.
    #[arg(long, required_unless_present_any = ["stdio", "install_to"])]
    pub upstream: Option<String>,
    /// Transport towards --upstream.
    #[arg(long, value_enum, default_value = "http")]
    pub transport: Transport,
    /// Wrap a stdio MCP server: one child process per MCP session (command after `--`).
    #[arg(long, conflicts_with = "upstream", requires = "command")]
    pub stdio: bool,
    /// Most concurrent stdio sessions (child processes).
    #[arg(long, default_value_t = 64)]
    pub max_sessions: usize,
    /// A stdio session without requests or open streams for this long is ended (e.g. 300s, 5m).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Directory for daily audit files (kept policy.audit.retentionDays).
    #[arg(long)]
    pub audit_dir: Option<PathBuf>,
    /// Name reported in logs and the status document.
    #[arg(long, default_value = "mcp-server")]
    pub name: String,
    /// HTTP path of the MCP endpoint clients use (default: the path of --upstream, else /mcp).
    #[arg(long)]
    pub path: Option<String>,
    /// How often readiness re-runs the MCP handshake with the server.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub check_interval: Duration,
    /// Largest request body read (larger: 413).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most messages in one JSON-RPC batch.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Most client connections served at once (more wait in the listen queue).
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Threads serving requests. One (the default) suits a sidecar best: no cross-thread wake-ups
    /// on the request path, and one core carries far more than an MCP server behind it.
    #[arg(long, env = "MCP_GATEWAY_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
    /// How often certificate, key and CA files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration, hide = true)]
    pub tls_reload_interval: Duration,
    /// Shortest interval between two JWKS fetches caused by an unknown `kid`.
    #[arg(long, default_value = "10s", value_parser = parse_duration, hide = true)]
    pub jwks_refresh_min_interval: Duration,
    /// The stdio server command and its arguments.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Copy this binary to the given path and exit: the operator's init container uses it to put
    /// the stdio wrapper into a server image that does not have it.
    #[arg(long, exclusive = true)]
    pub install_to: Option<PathBuf>,
}

/// Copies the running executable to `to` (mode 0755), creating its directory.
pub fn install_self(to: &Path) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("locating this executable")?;
    install_file(&me, to)
}

fn install_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Write beside the target, then rename: a reader never sees a half-copied binary.
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    Ok(())
}

impl Args {
    /// The MCP endpoint path clients use.
    pub fn mcp_path(&self) -> String {
        if let Some(p) = &self.path {
            return p.clone();
        }
        self.upstream
            .as_deref()
            .and_then(|u| u.parse::<http::Uri>().ok())
            .map(|u| u.path().to_string())
            .filter(|p| !p.is_empty() && p != "/")
            .unwrap_or_else(|| "/mcp".to_string())
    }
}

/// `300s`, `5m`, `1h`, `250ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The policy document.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// false: no enforcement at all (no policy, or `enabled: false`).
    #[serde(default)]
    pub enabled: bool,
    /// The SecurityPolicy's name.
    #[serde(default)]
    pub policy: Option<String>,
    /// TLS termination.
    #[serde(default)]
    pub tls: Option<TlsPolicy>,
    /// Who may call.
    #[serde(default)]
    pub authentication: Option<AuthnPolicy>,
    /// What a caller may do.
    #[serde(default)]
    pub authorization: Option<AuthzPolicy>,
    /// Requests per identity.
    #[serde(default)]
    pub rate_limiting: Option<RatePolicy>,
    /// Audit records.
    #[serde(default)]
    pub audit: Option<AuditPolicy>,
}

/// Minimum TLS version.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsPolicy {
    /// Minimum version.
    #[serde(default)]
    pub min_version: TlsMinVersion,
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// An authentication method.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Spelling in the policy and in audit records.
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
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthnPolicy {
    /// Reject callers without valid credentials.
    #[serde(default)]
    pub required: bool,
    /// Accepted methods, tried in order.
    #[serde(default)]
    pub methods: Vec<Method>,
    /// jwt settings.
    #[serde(default)]
    pub jwt: Option<JwtPolicy>,
    /// oauth2 settings.
    #[serde(default)]
    pub oauth2: Option<OAuth2Policy>,
    /// apikey settings.
    #[serde(default)]
    pub api_keys: Option<ApiKeysPolicy>,
    /// mtls settings.
    #[serde(default)]
    pub mtls: Option<MtlsPolicy>,
}

/// JWT settings.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtPolicy {
    /// Required `iss`.
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

/// OAuth2 introspection settings.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Policy {
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
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct ApiKeysPolicy {
    /// Directory with one file per client; the file holds the key.
    pub dir: PathBuf,
}

/// mTLS settings.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MtlsPolicy {
    /// CA bundle client certificates must chain to.
    pub ca_file: PathBuf,
}

/// Authorization settings.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthzPolicy {
    /// A caller needs one of these (empty: any authenticated caller).
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    /// Claim the roles are read from (dots reach into nested objects).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Per-role tool allow lists.
    #[serde(default)]
    pub tools: BTreeMap<String, Vec<String>>,
}

impl Default for AuthzPolicy {
    fn default() -> Self {
        Self { allowed_roles: vec![], roles_claim: default_roles_claim(), tools: BTreeMap::new() }
    }
}

fn default_roles_claim() -> String {
    "roles".to_string()
}

/// Rate limit.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RatePolicy {
    /// Sustained rate.
    pub requests_per_minute: u32,
    /// Burst.
    #[serde(default)]
    pub burst_size: Option<u32>,
}

/// Audit level.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
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
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditPolicy {
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

impl Policy {
    /// Parse and check the document.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let p: Policy = serde_json::from_str(text).context("policy document is not valid")?;
        p.check()?;
        Ok(p)
    }

    /// Read the document from a file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in {}", path.display()))
    }

    fn check(&self) -> anyhow::Result<()> {
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
                    bail!("authentication method {} has no settings", m.as_str());
                }
            }
            if a.methods.contains(&Method::Mtls) && self.tls.is_none() {
                bail!("authentication method mtls needs tls");
            }
            if a.required && a.methods.is_empty() {
                bail!("authentication is required but no method is given");
            }
        }
        if let Some(r) = &self.rate_limiting {
            if r.requests_per_minute == 0 || r.burst_size == Some(0) {
                bail!("rateLimiting needs requestsPerMinute and burstSize of at least 1");
            }
        }
        Ok(())
    }

    /// Authentication settings in force, if any.
    pub fn authn(&self) -> Option<&AuthnPolicy> {
        self.authentication.as_ref().filter(|_| self.enabled)
    }

    /// Authorization settings in force, if any.
    pub fn authz(&self) -> Option<&AuthzPolicy> {
        self.authorization.as_ref().filter(|_| self.enabled)
    }

    /// TLS settings in force, if any.
    pub fn tls_in_force(&self) -> Option<&TlsPolicy> {
        self.tls.as_ref().filter(|_| self.enabled)
    }

    /// Rate limit in force, if any.
    pub fn rate(&self) -> Option<&RatePolicy> {
        self.rate_limiting.as_ref().filter(|_| self.enabled)
    }

    /// Audit settings in force, if any.
    pub fn audit_in_force(&self) -> Option<&AuditPolicy> {
        self.audit.as_ref().filter(|_| self.enabled)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn install_to_copies_an_executable_and_stands_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mcp-gw-install-{}", std::process::id()));
        let src = dir.join("src-bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&src, b"#!/bin/sh\n").unwrap();
        let to = dir.join("opt/mcp-gateway/mcp-gateway");
        install_file(&src, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"#!/bin/sh\n");
        assert_eq!(std::fs::metadata(&to).unwrap().permissions().mode() & 0o777, 0o755);
        let args = Args::try_parse_from(["mcp-gateway", "--install-to=/x/mcp-gateway"]).unwrap();
        assert_eq!(args.install_to.as_deref(), Some(Path::new("/x/mcp-gateway")));
        assert!(Args::try_parse_from(["mcp-gateway", "--install-to=/x", "--stdio"]).is_err(), "exclusive");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;
    use serde_json::json;

    /// What `render_policy` writes for the guide's policy (see src/policy.rs).
    fn rendered() -> serde_json::Value {
        json!({
            "enabled": true, "policy": "default-policy", "generation": 2,
            "tls": {"minVersion": "1.3", "certFile": "/etc/mcp/tls/tls.crt", "keyFile": "/etc/mcp/tls/tls.key"},
            "authentication": {
                "required": true, "methods": ["jwt", "oauth2"],
                "jwt": {"issuer": "https://auth.example.com", "audiences": ["mcp"],
                        "jwksUri": "https://auth.example.com/jwks.json", "secretFile": null},
                "oauth2": {"introspectionUrl": "https://auth.example.com/introspect",
                           "clientIdFile": "/var/run/secrets/mcp/oauth2-client/client-id",
                           "clientSecretFile": "/var/run/secrets/mcp/oauth2-client/client-secret"},
                "apiKeys": null, "mtls": null
            },
            "authorization": {"mode": "rbac", "allowedRoles": ["admin", "developer"], "rolesClaim": "roles",
                              "tools": {"developer": ["search*"]}},
            "rateLimiting": {"requestsPerMinute": 100, "burstSize": 200},
            "audit": {"logLevel": "info", "retentionDays": 30}
        })
    }

    #[test]
    fn parses_the_rendered_policy() {
        let p = Policy::from_json(&rendered().to_string()).unwrap();
        assert!(p.enabled);
        assert_eq!(p.tls.as_ref().unwrap().min_version, TlsMinVersion::V1_3);
        let a = p.authn().unwrap();
        assert_eq!(a.methods, vec![Method::Jwt, Method::Oauth2]);
        assert_eq!(a.jwt.as_ref().unwrap().audiences, vec!["mcp"]);
        assert_eq!(p.authz().unwrap().tools["developer"], vec!["search*"]);
        assert_eq!(p.rate().unwrap().burst_size, Some(200));
        assert_eq!(p.audit_in_force().unwrap().log_level, AuditLevel::Info);
    }

    #[test]
    fn disabled_policy_enforces_nothing() {
        let p = Policy::from_json(r#"{"enabled": false, "policy": null}"#).unwrap();
        assert!(p.authn().is_none() && p.tls_in_force().is_none() && p.audit_in_force().is_none());
    }

    #[test]
    fn method_without_settings_is_rejected() {
        let mut doc = rendered();
        doc["authentication"]["oauth2"] = json!(null);
        let err = Policy::from_json(&doc.to_string()).unwrap_err();
        assert!(format!("{err:#}").contains("oauth2 has no settings"), "{err:#}");
    }

    #[test]
    fn mtls_needs_tls() {
        let mut doc = rendered();
        doc["tls"] = json!(null);
        doc["authentication"]["methods"] = json!(["mtls"]);
        doc["authentication"]["mtls"] = json!({"caFile": "/x/ca.crt"});
        assert!(Policy::from_json(&doc.to_string()).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn cli_shapes() {
        let a = Args::try_parse_from([
            "mcp-gateway",
            "--listen",
            "0.0.0.0:8443",
            "--admin-listen",
            "0.0.0.0:9090",
            "--policy",
            "/p.json",
            "--upstream",
            "http://127.0.0.1:3000/mcp",
            "--transport",
            "websocket",
            "--audit-dir",
            "/a",
            "--name",
            "x",
        ])
        .unwrap();
        assert_eq!(a.transport, Transport::Websocket);
        assert_eq!(a.mcp_path(), "/mcp");
        let a = Args::try_parse_from([
            "mcp-gateway",
            "--stdio",
            "--listen",
            "127.0.0.1:1",
            "--admin-listen",
            "127.0.0.1:2",
            "--policy",
            "/p",
            "--max-sessions",
            "3",
            "--idle-timeout",
            "5m",
            "--",
            "node",
            "server.js",
            "--flag",
        ])
        .unwrap();
        assert!(a.stdio);
        assert_eq!(a.command, vec!["node", "server.js", "--flag"]);
        assert_eq!(a.idle_timeout, Duration::from_secs(300));
        assert_eq!(a.worker_threads, 1, "one thread by default");
        assert!(
            Args::try_parse_from(["mcp-gateway", "--upstream", "http://127.0.0.1:1", "--worker-threads", "0"]).is_err()
        );
        assert!(Args::try_parse_from(["mcp-gateway", "--policy", "/p"]).is_err(), "needs --upstream or --stdio");
    }
}
