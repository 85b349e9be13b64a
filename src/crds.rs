//! Keeping the operator's own CRDs current: `helm upgrade` (and the guide's
//! `kubectl apply -f k8s/manifests/`) never touches CRDs that were installed from the chart's
//! `crds/` folder or with `kubectl apply -f k8s/crds/`, so the operator upgrades them itself when
//! it starts leading. Only the three CRDs it ships (update by name, never create or delete), only
//! forward: a CRD written by a newer operator is left alone, so a rollback or an older replica
//! never downgrades a schema. Uninstalling never deletes them.

use crate::api::{crds, CRD_VERSION_ANNOTATION};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use serde_json::Value;

/// What to do with one installed CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrdPlan {
    /// Not installed: nothing to upgrade (the controllers wait for it).
    Missing,
    /// Already what this operator ships.
    Current,
    /// Written by a newer operator (this version): left alone.
    Newer(String),
    /// Older (this version, if it says) or different: replaced by what this operator ships.
    Upgrade(Option<String>),
}

/// `X.Y.Z` (a pre-release or build suffix ignored) as a comparable triple.
fn version_key(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.trim_start_matches('v').split(['-', '+']).next()?;
    let mut parts = core.split('.').map(str::parse::<u64>);
    let key = (parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?);
    parts.next().is_none().then_some(key)
}

/// Whether every field of `want` is in `have` with the same value (`have` may hold more: the
/// defaults the API server fills in).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv)),
        _ => have == want,
    }
}

/// What to do with `installed`, given the CRD this operator ships (`desired`, annotated with its
/// version).
pub fn plan(installed: Option<&CustomResourceDefinition>, desired: &CustomResourceDefinition) -> CrdPlan {
    let Some(installed) = installed else { return CrdPlan::Missing };
    let ours = desired.annotations().get(CRD_VERSION_ANNOTATION).cloned().unwrap_or_default();
    let theirs = installed.annotations().get(CRD_VERSION_ANNOTATION).cloned();
    if let (Some(t), Some(o)) = (theirs.as_deref().and_then(version_key), version_key(&ours)) {
        if t > o {
            return CrdPlan::Newer(theirs.unwrap_or_default());
        }
    }
    let same_spec = contains(
        &serde_json::to_value(&installed.spec).unwrap_or_default(),
        &serde_json::to_value(&desired.spec).unwrap_or_default(),
    );
    if same_spec && theirs.as_deref() == Some(ours.as_str()) {
        CrdPlan::Current
    } else {
        CrdPlan::Upgrade(theirs)
    }
}

/// `installed` with the spec and version of `desired`; other labels and annotations (and the
/// resourceVersion, so the write is optimistic) are kept.
pub fn upgraded(installed: &CustomResourceDefinition, desired: &CustomResourceDefinition) -> CustomResourceDefinition {
    let mut out = installed.clone();
    out.spec = desired.spec.clone();
    out.status = None;
    out.metadata.managed_fields = None;
    let annotations = out.metadata.annotations.get_or_insert_with(Default::default);
    annotations.extend(desired.annotations().clone());
    out
}

/// Brings each installed CRD of this operator up to its version (see the module doc); returns
/// what was done, by CRD name. A CRD that could not be read or written is an error for that CRD
/// only.
pub async fn upgrade(client: &kube::Client) -> Vec<(String, anyhow::Result<CrdPlan>)> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut done = Vec::new();
    for desired in crds() {
        let name = desired.name_any();
        let result = async {
            let installed = api.get_opt(&name).await?;
            let plan = plan(installed.as_ref(), &desired);
            if let (CrdPlan::Upgrade(_), Some(installed)) = (&plan, &installed) {
                api.replace(&name, &PostParams::default(), &upgraded(installed, &desired)).await?;
            }
            Ok(plan)
        }
        .await;
        done.push((name, result));
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired() -> CustomResourceDefinition {
        crds().into_iter().next().unwrap()
    }

    /// `desired` as the API server returns it: defaults added, metadata filled in.
    fn installed(version: Option<&str>) -> CustomResourceDefinition {
        let mut v = serde_json::to_value(desired()).unwrap();
        v["spec"]["conversion"] = json!({"strategy": "None"});
        v["metadata"]["resourceVersion"] = json!("42");
        v["metadata"]["labels"] = json!({"team": "platform"});
        v["metadata"]["annotations"] = match version {
            Some(ver) => json!({CRD_VERSION_ANNOTATION: ver, "kubectl.kubernetes.io/last-applied-configuration": "{}"}),
            None => json!({}),
        };
        v["status"] =
            json!({"acceptedNames": {"kind": "MCPServer", "plural": "mcpservers"}, "storedVersions": ["v1alpha1"]});
        serde_json::from_value(v).unwrap()
    }

    fn ours() -> String {
        desired().annotations()[CRD_VERSION_ANNOTATION].clone()
    }

    #[test]
    fn the_shipped_crds_carry_the_operator_version() {
        for crd in crds() {
            assert_eq!(
                crd.annotations().get(CRD_VERSION_ANNOTATION).map(String::as_str),
                Some(env!("CARGO_PKG_VERSION"))
            );
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_key("0.10.2"), Some((0, 10, 2)));
        assert_eq!(version_key("v1.2.3-rc.1"), Some((1, 2, 3)));
        assert!(version_key("0.10.0") > version_key("0.9.9"));
        assert_eq!(version_key("1.2"), None);
        assert_eq!(version_key("one.two.three"), None);
    }

    #[test]
    fn what_is_installed_decides_the_plan() {
        assert_eq!(plan(None, &desired()), CrdPlan::Missing);
        assert_eq!(
            plan(Some(&installed(Some(&ours()))), &desired()),
            CrdPlan::Current,
            "API defaults are no difference"
        );
        assert_eq!(plan(Some(&installed(Some("0.0.1"))), &desired()), CrdPlan::Upgrade(Some("0.0.1".into())));
        assert_eq!(plan(Some(&installed(None)), &desired()), CrdPlan::Upgrade(None), "unversioned: an early install");
        assert_eq!(plan(Some(&installed(Some("999.0.0"))), &desired()), CrdPlan::Newer("999.0.0".into()));

        // Same version, but the schema was changed by hand (or by a development build).
        let mut edited = installed(Some(&ours()));
        edited.spec.versions[0].additional_printer_columns = None;
        assert_eq!(plan(Some(&edited), &desired()), CrdPlan::Upgrade(Some(ours())));
    }

    #[test]
    fn an_upgrade_replaces_the_spec_and_keeps_the_rest() {
        let mut old = installed(Some("0.0.1"));
        old.spec.versions[0].additional_printer_columns = None;
        let new = upgraded(&old, &desired());
        assert_eq!(new.spec, desired().spec);
        assert_eq!(new.metadata.resource_version.as_deref(), Some("42"), "optimistic: the read's resourceVersion");
        assert_eq!(new.labels()["team"], "platform");
        assert_eq!(new.annotations()[CRD_VERSION_ANNOTATION], ours());
        assert!(new.annotations().contains_key("kubectl.kubernetes.io/last-applied-configuration"), "kept");
        assert_eq!(new.status, None);
        assert_eq!(plan(Some(&new), &desired()), CrdPlan::Current);
    }
}
