//! A server's environment variables checked as the API server checks a container's, so that a
//! `valueFrom` it would refuse is reported naming `spec.env[i]` (the API server names the
//! Deployment's `env[i + 6]`: the operator's own variables come first) before any child is written.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource};

/// The pod fields a `fieldRef` may name (besides `metadata.labels['…']` and
/// `metadata.annotations['…']`).
const FIELD_PATHS: [&str; 10] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    // The API server's older name of spec.nodeName.
    "spec.host",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// The container resources a `resourceFieldRef` may name.
fn resource_field(resource: &str) -> bool {
    let Some((side, name)) = resource.split_once('.') else { return false };
    matches!(side, "limits" | "requests")
        && (matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-"))
}

/// A key of a Secret or ConfigMap.
fn key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 253 && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The sources `valueFrom` names.
fn sources(from: &EnvVarSource) -> Vec<&'static str> {
    [
        (from.secret_key_ref.is_some(), "secretKeyRef"),
        (from.config_map_key_ref.is_some(), "configMapKeyRef"),
        (from.field_ref.is_some(), "fieldRef"),
        (from.resource_field_ref.is_some(), "resourceFieldRef"),
        (from.file_key_ref.is_some(), "fileKeyRef"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

/// One message per variable of `env` (the field `field`, e.g. `spec.env`) the API server would
/// refuse: `value` beside `valueFrom`, a `valueFrom` naming no source or several, a key a Secret
/// or ConfigMap cannot have, a field or resource a pod cannot expose, a `fileKeyRef` (the server's
/// container has no volume of the user's to read it from).
pub fn env_problems(field: &str, env: &[EnvVar]) -> Vec<String> {
    let mut problems = vec![];
    for (i, var) in env.iter().enumerate() {
        let at = format!("{field}[{i}] ({})", var.name);
        let Some(from) = &var.value_from else { continue };
        if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            problems.push(format!("{at}: value and valueFrom are exclusive"));
        }
        let named = sources(from);
        match named.as_slice() {
            [] => problems.push(format!(
                "{at}: valueFrom names no source (one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)"
            )),
            [_] => {}
            many => problems.push(format!("{at}: valueFrom names {} sources; one only", many.join(" and "))),
        }
        if from.file_key_ref.is_some() {
            problems.push(format!(
                "{at}: valueFrom.fileKeyRef is not supported (the server's container has no volume of yours to read it from)"
            ));
        }
        if let Some(r) = &from.secret_key_ref {
            if !key(&r.key) {
                problems.push(format!("{at}: valueFrom.secretKeyRef.key {:?} is not a key a Secret can have", r.key));
            }
        }
        if let Some(r) = &from.config_map_key_ref {
            if !key(&r.key) {
                problems
                    .push(format!("{at}: valueFrom.configMapKeyRef.key {:?} is not a key a ConfigMap can have", r.key));
            }
        }
        if let Some(r) = &from.field_ref {
            let path = r.field_path.as_str();
            let keyed = ["metadata.labels['", "metadata.annotations['"]
                .iter()
                .any(|p| path.strip_prefix(p).is_some_and(|rest| rest.len() > 2 && rest.ends_with("']")));
            if !(FIELD_PATHS.contains(&path) || keyed) {
                problems.push(format!(
                    "{at}: valueFrom.fieldRef.fieldPath {path:?} is not a field a pod exposes (metadata.name, \
                     metadata.namespace, metadata.uid, metadata.labels['<key>'], metadata.annotations['<key>'], \
                     spec.nodeName, spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs)"
                ));
            }
        }
        if let Some(r) = &from.resource_field_ref {
            if !resource_field(&r.resource) {
                problems.push(format!(
                    "{at}: valueFrom.resourceFieldRef.resource {:?} is not a container resource (limits.cpu, \
                     limits.memory, limits.ephemeral-storage, requests.cpu, requests.memory, requests.ephemeral-storage)",
                    r.resource
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(yaml: &str) -> Vec<EnvVar> {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn what_a_container_accepts_passes() {
        let fine = env(r#"
- {name: A, value: x}
- {name: B}
- {name: C, value: "", valueFrom: {secretKeyRef: {name: s, key: api.key}}}
- {name: D, valueFrom: {configMapKeyRef: {name: c, key: K_1}}}
- {name: E, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
- {name: F, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
- {name: G, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: H, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
- {name: I, valueFrom: {fieldRef: {fieldPath: spec.host}}}
"#);
        assert_eq!(env_problems("spec.env", &fine), Vec::<String>::new());
    }

    #[test]
    fn what_the_api_server_would_refuse_names_the_variable_and_its_field() {
        let bad = env(r#"
- {name: A, value: x, valueFrom: {secretKeyRef: {name: s, key: k}}}
- {name: B, valueFrom: {}}
- {name: C, valueFrom: {secretKeyRef: {name: s, key: k}, fieldRef: {fieldPath: metadata.name}}}
- {name: D, valueFrom: {secretKeyRef: {name: s, key: "my key"}}}
- {name: E, valueFrom: {fieldRef: {fieldPath: metadata.labels}}}
- {name: F, valueFrom: {resourceFieldRef: {resource: cpu}}}
- {name: G, valueFrom: {configMapKeyRef: {name: c, key: ""}}}
- {name: H, valueFrom: {fieldRef: {fieldPath: metadata.generateName}}}
"#);
        assert_eq!(
            env_problems("spec.env", &bad),
            vec![
                "spec.env[0] (A): value and valueFrom are exclusive",
                "spec.env[1] (B): valueFrom names no source (one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)",
                "spec.env[2] (C): valueFrom names secretKeyRef and fieldRef sources; one only",
                "spec.env[3] (D): valueFrom.secretKeyRef.key \"my key\" is not a key a Secret can have",
                "spec.env[4] (E): valueFrom.fieldRef.fieldPath \"metadata.labels\" is not a field a pod exposes (metadata.name, metadata.namespace, metadata.uid, metadata.labels['<key>'], metadata.annotations['<key>'], spec.nodeName, spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs)",
                "spec.env[5] (F): valueFrom.resourceFieldRef.resource \"cpu\" is not a container resource (limits.cpu, limits.memory, limits.ephemeral-storage, requests.cpu, requests.memory, requests.ephemeral-storage)",
                "spec.env[6] (G): valueFrom.configMapKeyRef.key \"\" is not a key a ConfigMap can have",
                "spec.env[7] (H): valueFrom.fieldRef.fieldPath \"metadata.generateName\" is not a field a pod exposes (metadata.name, metadata.namespace, metadata.uid, metadata.labels['<key>'], metadata.annotations['<key>'], spec.nodeName, spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs)",
            ]
        );
    }
}
