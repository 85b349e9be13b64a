//! Writes under the operator's one field manager: objects by server-side apply, statuses by
//! replacing the status subresource whole.

use crate::consts::FIELD_MANAGER;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

/// Server-side apply, forced, under the operator's field manager. Unknown fields cannot occur in
/// the typed objects the operator builds, so the API server's search for them (a second, strict
/// parse of the YAML body, ~6 % of its CPU in a burst) is skipped.
fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force().validation_ignore()
}

/// Applies `obj` (which carries apiVersion/kind) in its namespace; returns what the server holds.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    apply_with(api, obj, apply_params()).await
}

/// What [`apply`] would do, stored nowhere (`dryRun=All`): the API server's validation and
/// admission run, so a refusal is known before anything is written.
pub async fn apply_dry_run<K>(api: &Api<K>, obj: &K) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    apply_with(api, obj, apply_params().dry_run()).await
}

async fn apply_with<K>(api: &Api<K>, obj: &K, params: PatchParams) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let mut obj = obj.clone();
    obj.meta_mut().managed_fields = None;
    let body = with_type_meta::<K>(serde_json::to_value(&obj).expect("objects serialize"));
    api.patch(&obj.name_any(), &params, &Patch::Apply(body)).await
}

/// Replaces the status of `name` with `status`, whole: a JSON patch `add /status` on the status
/// subresource. The operator is the only writer of its resources' statuses and always writes all
/// of one, so a server-side apply would only add the API server's YAML parse and merge of an
/// applied configuration (the status writes were a ninth of its CPU in a burst) to the same result:
/// what the status no longer has is gone.
pub async fn write_status<K, S>(api: &Api<K>, name: &str, status: &S) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    S: Serialize,
{
    let ops = serde_json::json!([{"op": "add", "path": "/status", "value": status}]);
    let patch = Patch::<()>::Json(serde_json::from_value(ops).expect("a JSON patch"));
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
    api.patch_status(name, &params, &patch).await
}

fn with_type_meta<K: Resource<DynamicType = ()>>(mut body: serde_json::Value) -> serde_json::Value {
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    body
}
