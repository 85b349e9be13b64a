//! Server-side apply under the operator's one field manager.

use crate::consts::FIELD_MANAGER;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `obj` (which carries apiVersion/kind) in its namespace; returns what the server holds.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let mut obj = obj.clone();
    obj.meta_mut().managed_fields = None;
    let body = with_type_meta::<K>(serde_json::to_value(&obj).expect("objects serialize"));
    api.patch(&obj.name_any(), &params(), &Patch::Apply(body)).await
}

/// Applies `status` to the status subresource of `name`.
pub async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    S: Serialize,
{
    let body = with_type_meta::<K>(serde_json::json!({ "status": status }));
    api.patch_status(name, &params(), &Patch::Apply(body)).await
}

fn with_type_meta<K: Resource<DynamicType = ()>>(mut body: serde_json::Value) -> serde_json::Value {
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    body
}
