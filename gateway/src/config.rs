//! Command line, and the policy document (`/etc/mcp/policy.json`), whose types are the contract
//! crate's: the operator renders exactly what the gateway reads.

use anyhow::Context;
use clap::{Parser, ValueEnum};
pub use mcp_gateway_contract::policy::*;
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
    #[arg(long, required_unless_present_any = ["stdio", "install_to", "drain"])]
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
    /// How long `/drain` (the pod's preStop hooks) waits before answering: readiness is off from
    /// the call, so this is the time the endpoint controllers and every node's proxy have to stop
    /// routing to the pod before SIGTERM (seconds on a busy cluster; 10 s is what ingress
    /// controllers commonly wait too).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_delay: Duration,
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
    /// Most connections that have not yet sent an authenticated request (when full, the oldest idle
    /// one of the address holding the most is closed to make room).
    #[arg(long, default_value_t = 256)]
    pub max_unauthenticated_connections: usize,
    /// Longest a client may take to send a request's headers.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Longest an (authenticated) client may take to send a request body.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Most request-body bytes held at once across all requests (more: 503).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_buffered_bytes: usize,
    /// Most HTTP-mode sessions remembered; the least recently used is then forgotten (and refused).
    #[arg(long, default_value_t = 10_000)]
    pub max_tracked_sessions: usize,
    /// Most HTTP-mode sessions of one caller (all anonymous callers are one) when the policy
    /// authenticates; a caller opening more loses its own least recently used one. Without
    /// authentication everyone is the one anonymous caller and only --max-tracked-sessions applies.
    #[arg(long, default_value_t = 1_000)]
    pub max_sessions_per_caller: usize,
    /// Most requests and streams (SSE streams, WebSockets) of one caller at once when the policy
    /// authenticates (anonymous callers by client address); more are refused with 429.
    #[arg(long, default_value_t = 1_024)]
    pub max_in_flight_per_caller: usize,
    /// A session unused for this long is forgotten (and refused).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub session_idle_timeout: Duration,
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
    /// Ask the gateway whose admin port is this to drain (over the drain socket its port number
    /// names), wait until it has, and exit: the preStop hook of the container the gateway runs in.
    #[arg(long, exclusive = true, value_name = "ADMIN_ADDR")]
    pub drain: Option<SocketAddr>,
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

/// Load and check the policy document.
pub fn load_policy(path: &Path) -> anyhow::Result<PolicyDocument> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PolicyDocument::from_json(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("in {}", path.display()))
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

    #[test]
    fn the_operators_command_lines_parse() {
        use mcp_gateway_contract::command::{install_args, GatewayCommand, Upstream};
        let mut http = GatewayCommand::new("srv", "/rpc", Upstream::Http("http://127.0.0.1:3000/rpc".into()));
        http.audit = true;
        let a = Args::try_parse_from(std::iter::once("mcp-gateway".to_string()).chain(http.args())).unwrap();
        assert_eq!((a.listen.port(), a.admin_listen.port()), (8443, 9090));
        assert_eq!(a.policy, Path::new("/etc/mcp/policy.json"));
        assert_eq!((a.name.as_str(), a.mcp_path()), ("srv", "/rpc".to_string()));
        assert_eq!(a.audit_dir.as_deref(), Some(Path::new("/var/log/mcp-audit")));
        assert_eq!((a.upstream.as_deref(), a.transport), (Some("http://127.0.0.1:3000/rpc"), Transport::Http));
        let ws = GatewayCommand::new("w", "/mcp", Upstream::WebSocket("http://127.0.0.1:3000/mcp".into()));
        let a = Args::try_parse_from(std::iter::once("mcp-gateway".to_string()).chain(ws.args())).unwrap();
        assert_eq!(a.transport, Transport::Websocket);
        let stdio =
            GatewayCommand::new("s", "/mcp", Upstream::Stdio(vec!["node".into(), "--x".into(), "stdio".into()]));
        let a = Args::try_parse_from(std::iter::once("mcp-gateway".to_string()).chain(stdio.args())).unwrap();
        assert!(a.stdio && a.upstream.is_none());
        assert_eq!(a.command, vec!["node", "--x", "stdio"]);
        let i = Args::try_parse_from(
            std::iter::once("mcp-gateway".to_string()).chain(install_args("/opt/mcp-gateway/mcp-gateway")),
        )
        .unwrap();
        assert_eq!(i.install_to.as_deref(), Some(Path::new("/opt/mcp-gateway/mcp-gateway")));
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
