//! No finalizers: nothing this operator manages can be kept from being deleted, so no uninstall
//! order, no CRD deletion and no absent operator can leave an object stuck.
//!
//! - An MCPServer's children carry owner references: the garbage collector removes them (and
//!   their pods) when the server goes, with or without the operator.
//! - Deleting a Plugin or SecurityPolicy that servers still name is safe instead of blocked:
//!   those servers fail closed (nothing new starts; their running pods keep the configuration
//!   that was admitted, policy included; only the replica count follows the spec), say so in
//!   their conditions and with Warning Events, and resume when the object is back.
//!
//! Earlier versions held finalizers (`mcp.n-takatsu.dev/finalizer` on servers,
//! `mcp.n-takatsu.dev/in-use-protection` on plugins and policies); the controllers release them
//! wherever they find them.

use super::Result;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// The finalizer list `obj` should have once `ours` is gone: None when it does not hold it.
pub fn without_finalizer<K: Resource>(obj: &K, ours: &str) -> Option<Vec<String>> {
    let current = obj.finalizers();
    current.iter().any(|f| f == ours).then(|| current.iter().filter(|f| *f != ours).cloned().collect())
}

/// Removes the finalizer `ours` from `obj` (optimistically locked on resourceVersion) when it has
/// it. True when it was removed (a deleted object is then gone).
pub async fn release_finalizer<K>(api: &Api<K>, obj: &K, ours: &str) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(finalizers) = without_finalizer(obj, ours) else {
        return Ok(false);
    };
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": obj.resource_version(), "finalizers": finalizers}
    });
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    tracing::info!(kind = K::kind(&()).as_ref(), name = %obj.name_any(), finalizer = ours, "released a finalizer of an earlier version");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::plugin;
    use crate::consts::IN_USE_FINALIZER;

    #[test]
    fn only_our_finalizer_goes() {
        let mut p = plugin("a", "None", "");
        assert_eq!(without_finalizer(&p, IN_USE_FINALIZER), None, "nothing to release");
        p.metadata.finalizers = Some(vec!["other".into(), IN_USE_FINALIZER.into()]);
        assert_eq!(without_finalizer(&p, IN_USE_FINALIZER), Some(vec!["other".to_string()]));
    }
}
