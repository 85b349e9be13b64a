//! The gateway's command line as the operator writes it. The gateway's own parser (clap) is
//! tested against [`GatewayCommand::args`], so a flag renamed on one side fails a test.

use crate::{policy_path, GATEWAY_ADMIN_PORT, GATEWAY_PORT};

/// How the gateway reaches the MCP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// Streamable HTTP at this URL (the server's port on the pod's loopback).
    Http(String),
    /// WebSocket at this URL.
    WebSocket(String),
    /// A stdio server: this command, started once per MCP session.
    Stdio(Vec<String>),
}

/// Everything the gateway needs on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayCommand {
    /// Port clients connect to.
    pub listen_port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// Name in logs, metrics and the status document (the MCPServer's name).
    pub name: String,
    /// The MCP endpoint path clients use; nothing else is served.
    pub path: String,
    /// Write daily audit files under [`AUDIT_DIR`].
    pub audit: bool,
    /// The server.
    pub upstream: Upstream,
}

/// Flag names, shared with the gateway's parser.
pub mod flags {
    /// `--listen`.
    pub const LISTEN: &str = "--listen";
    /// `--admin-listen`.
    pub const ADMIN_LISTEN: &str = "--admin-listen";
    /// `--policy`.
    pub const POLICY: &str = "--policy";
    /// `--name`.
    pub const NAME: &str = "--name";
    /// `--path`.
    pub const PATH: &str = "--path";
    /// `--audit-dir`.
    pub const AUDIT_DIR: &str = "--audit-dir";
    /// `--upstream`.
    pub const UPSTREAM: &str = "--upstream";
    /// `--transport`.
    pub const TRANSPORT: &str = "--transport";
    /// `--stdio`.
    pub const STDIO: &str = "--stdio";
    /// `--install-to`.
    pub const INSTALL_TO: &str = "--install-to";
    /// `--drain`.
    pub const DRAIN: &str = "--drain";
}

impl GatewayCommand {
    /// The default ports.
    pub fn new(name: &str, path: &str, upstream: Upstream) -> Self {
        Self {
            listen_port: GATEWAY_PORT,
            admin_port: GATEWAY_ADMIN_PORT,
            name: name.to_string(),
            path: path.to_string(),
            audit: false,
            upstream,
        }
    }

    /// The arguments (after the binary).
    pub fn args(&self) -> Vec<String> {
        use flags::*;
        let mut a = vec![];
        if matches!(self.upstream, Upstream::Stdio(_)) {
            a.push(STDIO.to_string());
        }
        a.push(format!("{LISTEN}=0.0.0.0:{}", self.listen_port));
        a.push(format!("{ADMIN_LISTEN}=0.0.0.0:{}", self.admin_port));
        a.push(format!("{POLICY}={}", policy_path()));
        a.push(format!("{NAME}={}", self.name));
        a.push(format!("{PATH}={}", self.path));
        if self.audit {
            a.push(format!("{}={}", flags::AUDIT_DIR, crate::AUDIT_DIR));
        }
        match &self.upstream {
            Upstream::Http(url) => {
                a.push(format!("{UPSTREAM}={url}"));
                a.push(format!("{TRANSPORT}=http"));
            }
            Upstream::WebSocket(url) => {
                a.push(format!("{UPSTREAM}={url}"));
                a.push(format!("{TRANSPORT}=websocket"));
            }
            Upstream::Stdio(command) => {
                a.push("--".to_string());
                a.extend(command.iter().cloned());
            }
        }
        a
    }
}

/// The command that asks the gateway in the same pod, its admin port `admin_port`, to drain and
/// waits until it has (the preStop hook of the container the gateway runs in): `binary` is
/// where the gateway's binary is in that container.
pub fn drain_command(binary: &str, admin_port: u16) -> Vec<String> {
    vec![binary.to_string(), format!("{}=127.0.0.1:{admin_port}", flags::DRAIN)]
}

/// The init container's arguments: copy the gateway binary to `to` and exit.
pub fn install_args(to: &str) -> Vec<String> {
    vec![format!("{}={to}", flags::INSTALL_TO)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_stdio_shapes() {
        let mut c = GatewayCommand::new("s", "/mcp", Upstream::Http("http://127.0.0.1:3000/mcp".into()));
        c.audit = true;
        assert_eq!(
            c.args(),
            vec![
                "--listen=0.0.0.0:8443",
                "--admin-listen=0.0.0.0:9090",
                "--policy=/etc/mcp/policy.json",
                "--name=s",
                "--path=/mcp",
                "--audit-dir=/var/log/mcp-audit",
                "--upstream=http://127.0.0.1:3000/mcp",
                "--transport=http",
            ]
        );
        let s = GatewayCommand::new("s", "/x", Upstream::Stdio(vec!["node".into(), "--flag".into()]));
        let args = s.args();
        assert_eq!(args[0], "--stdio");
        assert_eq!(&args[args.len() - 3..], ["--", "node", "--flag"]);
    }
}
