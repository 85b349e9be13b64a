//! The status document the gateway serves at [`crate::admin::STATUS`]: the MCP server's identity
//! and tools from its last successful `initialize` + `tools/list`, and whether that handshake
//! succeeds now. The operator records it in MCPServer status.
//!
//! Unlike the policy, this document is read leniently (unknown fields ignored, missing ones
//! defaulted): a newer gateway must not break an older operator's status.

use serde::{Deserialize, Serialize};

/// `/status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StatusDocument {
    /// The last handshake with the server succeeded.
    pub ready: bool,
    /// Why it fails, when it does.
    pub error: Option<String>,
    /// When the server was last checked (RFC 3339).
    pub checked_at: Option<String>,
    /// serverInfo.name.
    pub name: Option<String>,
    /// serverInfo.title.
    pub title: Option<String>,
    /// serverInfo.version.
    pub version: Option<String>,
    /// Negotiated protocol version.
    pub protocol_version: Option<String>,
    /// The server's capabilities object.
    pub capabilities: Option<serde_json::Value>,
    /// Tool names, as the server lists them.
    pub tools: Vec<String>,
    /// The gateway itself.
    pub gateway: GatewayInfo,
}

/// The gateway that wrote a status document.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct GatewayInfo {
    /// `--name`.
    pub name: String,
    /// The gateway's version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_both_ways() {
        let doc: StatusDocument =
            serde_json::from_str(r#"{"ready": true, "tools": ["echo"], "futureField": 1}"#).unwrap();
        assert!(doc.ready);
        assert_eq!(doc.tools, vec!["echo"]);
        let back: StatusDocument = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(doc, back);
    }
}
