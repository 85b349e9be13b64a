//! API keys: a directory (a mounted Secret) with one file per client, the file holding the key.
//! The file name is `CLIENT` or `CLIENT.ROLE[.ROLE...]`: the roles the key carries. Keys are
//! compared as SHA-256 digests in constant time, every key each time.

use super::{AuthError, Identity};
use std::path::Path;
use subtle::ConstantTimeEq;

/// The loaded keys.
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

fn digest(b: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().try_into().expect("sha256 is 32 bytes")
}

impl ApiKeys {
    /// Read every regular file (hidden ones, such as a Secret volume's `..data`, are skipped).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut keys = vec![];
        for entry in std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let value = std::fs::read(entry.path())?;
            let value = value.trim_ascii();
            if !value.is_empty() {
                keys.push((name, digest(value)));
            }
        }
        keys.sort();
        tracing::info!(dir = %dir.display(), keys = keys.len(), "API keys loaded");
        Ok(Self { keys })
    }

    /// From (name, key) pairs.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self { keys: pairs.iter().map(|(n, k)| (n.to_string(), digest(k.as_bytes()))).collect() }
    }

    /// The identity of a presented key.
    pub fn check(&self, presented: &str) -> Result<Identity, AuthError> {
        let d = digest(presented.trim().as_bytes());
        let mut found: Option<&str> = None;
        for (name, key) in &self.keys {
            if bool::from(key.ct_eq(&d)) {
                found = Some(name);
            }
        }
        let name = found.ok_or_else(|| AuthError::new("invalid_api_key", "unknown API key"))?;
        let mut parts = name.split('.');
        let client = parts.next().unwrap_or(name);
        Ok(Identity::new(client, "apikey", parts.filter(|r| !r.is_empty()).map(str::to_string).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles() {
        let k = ApiKeys::from_pairs(&[("ci", "k1"), ("ops.admin.developer", "k2")]);
        let ci = k.check("k1").unwrap();
        assert_eq!((ci.subject.as_str(), ci.roles.len()), ("ci", 0));
        let ops = k.check("k2").unwrap();
        assert_eq!(ops.subject, "ops");
        assert_eq!(ops.roles, vec!["admin", "developer"]);
        assert_eq!(k.check("k3").unwrap_err().reason, "invalid_api_key");
        assert!(k.check("").is_err());
    }
}
