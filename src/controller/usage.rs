//! In-use protection for Plugin and SecurityPolicy, the way a PVC in use waits: the finalizer is
//! held only while an MCPServer names the object, so an unused object (or a CRD being deleted
//! without the operator) is never blocked.

use super::{Context, Result};
use crate::consts::IN_USE_FINALIZER;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// What the in-use protection did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Nothing to change.
    Unchanged,
    /// The finalizer was added.
    Added,
    /// The finalizer was removed; a deleted object is now gone.
    Released,
}

/// The finalizer list `obj` should have given whether it is in use: None when it is right.
pub fn desired_finalizers<K: Resource>(obj: &K, in_use: bool) -> Option<Vec<String>> {
    let current = obj.finalizers();
    let has = current.iter().any(|f| f == IN_USE_FINALIZER);
    let deleting = obj.meta().deletion_timestamp.is_some();
    if in_use && !has && !deleting {
        let mut next = current.to_vec();
        next.push(IN_USE_FINALIZER.to_string());
        Some(next)
    } else if !in_use && has {
        Some(current.iter().filter(|f| *f != IN_USE_FINALIZER).cloned().collect())
    } else {
        None
    }
}

/// Adds or removes the in-use finalizer (optimistically locked on resourceVersion), and tells the
/// user with a Warning Event when a deletion waits for users to go.
pub async fn protect<K>(ctx: &Context, api: &Api<K>, obj: &K, used_by: &[String]) -> Result<Protection>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let in_use = !used_by.is_empty();
    if in_use && obj.meta().deletion_timestamp.is_some() {
        let note = format!("Deletion waits until no MCPServer uses it; used by: {}", used_by.join(", "));
        ctx.event(obj, EventType::Warning, "DeletionBlocked", "Delete", note).await;
    }
    let Some(finalizers) = desired_finalizers(obj, in_use) else {
        return Ok(Protection::Unchanged);
    };
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": obj.resource_version(), "finalizers": finalizers}
    });
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(if in_use { Protection::Added } else { Protection::Released })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::plugin;

    #[test]
    fn finalizer_follows_use() {
        let mut p = plugin("a", "None", "");
        assert_eq!(desired_finalizers(&p, false), None);
        assert_eq!(desired_finalizers(&p, true), Some(vec![IN_USE_FINALIZER.to_string()]));
        p.metadata.finalizers = Some(vec!["other".into(), IN_USE_FINALIZER.into()]);
        assert_eq!(desired_finalizers(&p, true), None);
        assert_eq!(desired_finalizers(&p, false), Some(vec!["other".to_string()]));
    }

    #[test]
    fn deleting_object_gets_no_new_finalizer() {
        let mut p = plugin("a", "None", "");
        p.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        assert_eq!(desired_finalizers(&p, true), None);
    }
}
