//! Objects as the controllers watch and list them ([`Guarded`]): one this operator cannot read is
//! reported on its own instead of failing the list or watch it arrives in, and with it the
//! reconciliation of every object of its kind.
//!
//! kube's `DeserializeGuard` does this for objects of another shape (written under another
//! version of the CRD), but it first builds the whole object as a value, which serde_json refuses
//! beyond 128 nested levels: a Plugin whose free-form `spec.config` nests deeper (the API server
//! takes up to 10,000) failed every list of Plugins, and the operator, waiting for its caches,
//! reconciled nothing at all. [`Guarded`] takes the object's text as it is (serde_json skips a
//! value without recursing) and reads the object from it; when that fails it reads only the
//! metadata, which has no free-form field once the managed fields are left out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::core::error_boundary::InvalidObject;
use kube::core::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A watched object: readable, or the metadata of one that is not and why.
#[derive(Debug, Clone)]
pub struct Guarded<K>(pub Result<K, InvalidObject>);

/// The metadata of an object that cannot be read, without its managed fields (whose field sets
/// nest as deep as the object does).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    #[serde(default)]
    finalizers: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Deserialize)]
struct Head {
    metadata: Metadata,
}

impl From<Metadata> for ObjectMeta {
    fn from(m: Metadata) -> Self {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            generation: m.generation,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            labels: m.labels,
            annotations: m.annotations,
            owner_references: m.owner_references,
            ..Default::default()
        }
    }
}

/// Why an object cannot be read, in words a user can act on.
fn why(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        return format!("its JSON nests more than 127 levels deep ({text}); the free-form spec.config of a Plugin is the only field that can");
    }
    text
}

impl<'de, K> Deserialize<'de> for Guarded<K>
where
    K: DeserializeOwned + Resource,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        match serde_json::from_str::<K>(raw.get()) {
            Ok(object) => Ok(Self(Ok(object))),
            Err(e) => {
                let head: Head = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
                Ok(Self(Err(InvalidObject { error: why(&e), metadata: head.metadata.into() })))
            }
        }
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|e| &e.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.as_mut().map_or_else(|e| &mut e.metadata, K::meta_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{McpServer, Plugin};
    use kube::api::ObjectList;
    use kube::ResourceExt;
    use serde_json::json;

    /// A Plugin whose spec.config nests `depth` objects deep, with the managed fields the API
    /// server would record for it (as deep again).
    fn deep_plugin(name: &str, depth: usize) -> String {
        let nested = |leaf: &str| format!("{}{leaf}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        format!(
            r#"{{"apiVersion":"mcp.n-takatsu.dev/v1alpha1","kind":"Plugin","metadata":{{"name":"{name}","namespace":"ns","uid":"u-{name}","resourceVersion":"7","managedFields":[{{"manager":"kubectl","operation":"Apply","fieldsType":"FieldsV1","fieldsV1":{}}}]}},"spec":{{"name":"{name}","image":"p:1","version":"1","config":{}}}}}"#,
            nested("{}"),
            nested("1")
        )
    }

    fn plugin_json(name: &str) -> String {
        json!({"apiVersion": "mcp.n-takatsu.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}")},
            "spec": {"name": name, "image": "p:1", "version": "1", "config": {"a": {"b": 1}}}})
        .to_string()
    }

    #[test]
    fn a_list_with_a_plugin_nested_too_deep_still_lists_the_others_and_names_it() {
        let list = format!(
            r#"{{"apiVersion":"mcp.n-takatsu.dev/v1alpha1","kind":"PluginList","metadata":{{"resourceVersion":"9"}},"items":[{},{},{}]}}"#,
            plugin_json("a"),
            deep_plugin("deep", 500),
            plugin_json("b")
        );
        // What kube's guard made of it: the whole list failed.
        assert!(serde_json::from_str::<ObjectList<kube::core::DeserializeGuard<Plugin>>>(&list).is_err());
        let read: ObjectList<Guarded<Plugin>> = serde_json::from_str(&list).expect("the list reads");
        let names: Vec<(String, bool)> = read.items.iter().map(|p| (p.name_any(), p.0.is_ok())).collect();
        assert_eq!(names, [("a".into(), true), ("deep".into(), false), ("b".into(), true)]);
        let deep = &read.items[1];
        assert_eq!((deep.namespace().as_deref(), deep.resource_version().as_deref()), (Some("ns"), Some("7")));
        assert_eq!(deep.uid().as_deref(), Some("u-deep"));
        let error = &deep.0.as_ref().unwrap_err().error;
        assert!(error.contains("127 levels") && error.contains("spec.config"), "{error}");
        // A readable one is read whole, its free-form config included.
        assert_eq!(read.items[0].0.as_ref().unwrap().spec.config, Some(json!({"a": {"b": 1}})));
    }

    #[test]
    fn a_watch_event_of_a_deep_plugin_reads_as_an_unreadable_object() {
        let line = format!(r#"{{"type":"ADDED","object":{}}}"#, deep_plugin("deep", 200));
        let event: kube::api::WatchEvent<Guarded<Plugin>> = serde_json::from_str(&line).expect("the event reads");
        let kube::api::WatchEvent::Added(p) = event else { panic!("an ADDED event") };
        assert_eq!(p.name_any(), "deep");
        assert!(p.0.is_err());
        // Below the limit the same shape reads.
        let shallow: Guarded<Plugin> = serde_json::from_str(&deep_plugin("ok", 100)).unwrap();
        assert!(shallow.0.is_ok(), "{:?}", shallow.0.err());
    }

    #[test]
    fn an_object_of_another_shape_is_named_with_its_metadata() {
        let future = json!({"apiVersion": "mcp.n-takatsu.dev/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": "f", "namespace": "ns", "finalizers": ["x"], "labels": {"l": "v"},
                "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"transport": "grpc"}});
        let guard: Guarded<McpServer> = serde_json::from_value(future).expect("any object reads");
        let invalid = guard.0.as_ref().unwrap_err();
        assert!(invalid.error.contains("grpc"), "{}", invalid.error);
        assert_eq!(guard.finalizers(), ["x"]);
        assert_eq!(guard.labels().get("l").map(String::as_str), Some("v"));
        assert!(guard.meta().deletion_timestamp.is_some());
        // Not an object at all: an error, as before.
        assert!(serde_json::from_str::<Guarded<McpServer>>("[1]").is_err());
    }
}
