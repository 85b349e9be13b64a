//! A server's environment variables checked as the API server checks a container's, so that a
//! variable it would refuse is reported naming `spec.env[i]` (the API server names the
//! Deployment's `env[i + 6]`: the operator's own variables come first) before any child is written.

use crate::quantity::{exact_nanos, nanos, qualified_name, subdomain, MAX_NANOS};
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

/// A key of a Secret or ConfigMap (not `.` or `..`, nor starting with `..`).
fn key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && k != "."
        && !k.starts_with("..")
}

/// The divisors a `resourceFieldRef` of `resource` takes, or None when `divisor` is one of them
/// (zero: unset) or may be. The API server compares the canonical form, which keeps the written
/// notation: a binary suffix stays binary from 1Ki on (`1024Ki` is `1Mi`, while `1024` stays
/// `1024`: refused), a smaller amount is written in decimal (`0.9765625Ki` is `1k`), and an
/// exponent other than zero stays (`1e3` is refused). An exponent form of 1 may come out as `1`
/// (`10e-1`) or keep its notation (`1e0` is refused): it is left to the API server, as are forms
/// it keeps as written (`+1`, `01`) and amounts too large to compare here (`1000E` is `1`), so
/// that nothing it takes is refused here. Spaces around are trimmed; zero in any form is unset.
fn divisor_problem(resource: &str, divisor: &str) -> Option<String> {
    const CPU: &[&str] = &["1m", "1"];
    const BYTES: &[&str] = &["1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei"];
    const UNIT: i128 = 1_000_000_000;
    let takes = if resource.ends_with(".cpu") { CPU } else { BYTES };
    // As the API server reads it: surrounding spaces trimmed, a sign, digits with one dot, a suffix.
    let divisor = divisor.trim();
    let negative = divisor.starts_with('-');
    let unsigned = divisor.strip_prefix(['+', '-']).unwrap_or(divisor);
    let suffix = unsigned.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    let number = &unsigned[..unsigned.len() - suffix.len()];
    let exponent = suffix.strip_prefix(['e', 'E']).filter(|_| !matches!(suffix, "E" | "Ei"));
    let well_formed = number.matches('.').count() <= 1
        && match exponent {
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
            }
            None => matches!(
                suffix,
                "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
            ),
        };
    if well_formed && number.chars().all(|c| c == '0' || c == '.') {
        // Zero, however written (`-0`, `0e40`, `.`): unset.
        return None;
    }
    // Uncapped: an amount too large to compare here (or to hold) is left to the API server.
    let value = exact_nanos(unsigned);
    let accepted = well_formed
        && !negative
        && match exponent {
            Some(_) => value.is_none_or(|v| v == UNIT),
            None if value.is_none_or(|v| v > MAX_NANOS) => true,
            None => {
                let binary = suffix.ends_with('i') && value.is_some_and(|v| v >= 1024 * UNIT);
                takes.iter().any(|t| t.ends_with('i') == binary && nanos(t) == value)
            }
        };
    (!accepted).then(|| {
        let (last, rest) = takes.split_last().expect("a divisor");
        format!("{} or {last}", rest.join(", "))
    })
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
/// refuse: a name set twice (the Deployment's server-side apply refuses duplicate entries) or
/// one of `reserved` (the operator's own variables, each with where its value comes from: the
/// container would have it twice), `value` beside `valueFrom`, a `valueFrom` naming no source or
/// several, a key a Secret or ConfigMap cannot have, a field or resource a pod cannot expose, a
/// `fileKeyRef` (the server's container has no volume of the user's to read it from).
pub fn env_problems(field: &str, env: &[EnvVar], reserved: &[(&str, &str)]) -> Vec<String> {
    let mut problems = vec![];
    let mut first = std::collections::HashMap::new();
    for (i, var) in env.iter().enumerate() {
        let at = format!("{field}[{i}] ({})", var.name);
        if let Some((_, source)) = reserved.iter().find(|(name, _)| *name == var.name) {
            problems.push(format!("{at}: reserved: the operator sets it {source}"));
        } else if let Some(earlier) = first.get(var.name.as_str()) {
            problems.push(format!("{at}: repeats {field}[{earlier}]; a variable may be set once"));
        } else {
            first.insert(var.name.as_str(), i);
        }
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
        let refs = [
            from.secret_key_ref.as_ref().map(|r| ("secretKeyRef", "Secret", &r.name, &r.key)),
            from.config_map_key_ref.as_ref().map(|r| ("configMapKeyRef", "ConfigMap", &r.name, &r.key)),
        ];
        for (source, kind, name, k) in refs.into_iter().flatten() {
            if !subdomain(name) {
                problems.push(format!(
                    "{at}: valueFrom.{source}.name {name:?} is not the name of a {kind} (a DNS subdomain)"
                ));
            }
            if !key(k) {
                problems.push(format!("{at}: valueFrom.{source}.key {k:?} is not a key a {kind} can have"));
            }
        }
        if let Some(r) = &from.field_ref {
            if r.api_version.as_deref().is_some_and(|v| !v.is_empty() && v != "v1") {
                problems.push(format!(
                    "{at}: valueFrom.fieldRef.apiVersion {:?} is not v1",
                    r.api_version.as_deref().unwrap_or_default()
                ));
            }
            let path = r.field_path.as_str();
            let keyed = [("metadata.labels['", false), ("metadata.annotations['", true)].iter().any(|(p, lower)| {
                path.strip_prefix(p).and_then(|rest| rest.strip_suffix("']")).is_some_and(|k| {
                    // An annotation's key is checked in lower case.
                    if *lower {
                        qualified_name(&k.to_ascii_lowercase())
                    } else {
                        qualified_name(k)
                    }
                })
            });
            if !(FIELD_PATHS.contains(&path) || keyed) {
                problems.push(format!(
                    "{at}: valueFrom.fieldRef.fieldPath {path:?} is not a field a pod exposes (metadata.name, \
                     metadata.namespace, metadata.uid, metadata.labels['<key>'], metadata.annotations['<key>'], \
                     spec.nodeName, spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs)"
                ));
            }
        }
        if let Some(r) = &from.resource_field_ref {
            if let Some(divisor) = r.divisor.as_ref().filter(|_| resource_field(&r.resource)) {
                if let Some(takes) = divisor_problem(&r.resource, &divisor.0) {
                    problems.push(format!(
                        "{at}: valueFrom.resourceFieldRef.divisor {:?} is not one {} takes ({takes})",
                        divisor.0, r.resource
                    ));
                }
            }
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

    const RESERVED: &[(&str, &str)] = &[("MCP_PORT", "from spec.port"), ("MCP_PATH", "from spec.path")];

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
        assert_eq!(env_problems("spec.env", &fine, RESERVED), Vec::<String>::new());
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
            env_problems("spec.env", &bad, RESERVED),
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

    #[test]
    fn a_name_set_twice_or_set_by_the_operator_is_named_with_what_sets_it() {
        // The Deployment is applied server-side, and an apply refuses a container whose env
        // repeats a name ("duplicate entries for key [name=...]"), naming the pod template's
        // env, not the spec's.
        let bad = env(r#"
- {name: A, value: x}
- {name: MCP_PORT, value: "9000"}
- {name: B, valueFrom: {secretKeyRef: {name: s, key: k}}}
- {name: A, value: y}
- {name: B, value: z}
- {name: MCP_PATH_PREFIX, value: /x}
"#);
        assert_eq!(
            env_problems("spec.env", &bad, RESERVED),
            vec![
                "spec.env[1] (MCP_PORT): reserved: the operator sets it from spec.port",
                "spec.env[3] (A): repeats spec.env[0]; a variable may be set once",
                "spec.env[4] (B): repeats spec.env[2]; a variable may be set once",
            ]
        );
    }

    #[test]
    fn references_the_api_server_would_refuse_are_named() {
        let bad = env(r#"
- {name: A, valueFrom: {secretKeyRef: {name: "", key: k}}}
- {name: B, valueFrom: {configMapKeyRef: {name: My_Map, key: k}}}
- {name: C, valueFrom: {secretKeyRef: {name: s, key: ".."}}}
- {name: D, valueFrom: {configMapKeyRef: {name: c, key: "..x"}}}
- {name: E, valueFrom: {fieldRef: {apiVersion: v2, fieldPath: metadata.name}}}
- {name: F, valueFrom: {fieldRef: {fieldPath: "metadata.labels['a b']"}}}
- {name: G, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: "2"}}}
- {name: H, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: abc}}}
- {name: I, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "1024"}}}
- {name: J, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "1e3"}}}
- {name: K, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "2e0"}}}
- {name: L, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 0.5Ki}}}
- {name: M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: "1e-3"}}}
- {name: N, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "-1"}}}
- {name: O, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "1x"}}}
- {name: P, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "1.0.0"}}}
"#);
        assert_eq!(
            env_problems("spec.env", &bad, RESERVED),
            vec![
                "spec.env[0] (A): valueFrom.secretKeyRef.name \"\" is not the name of a Secret (a DNS subdomain)",
                "spec.env[1] (B): valueFrom.configMapKeyRef.name \"My_Map\" is not the name of a ConfigMap (a DNS subdomain)",
                "spec.env[2] (C): valueFrom.secretKeyRef.key \"..\" is not a key a Secret can have",
                "spec.env[3] (D): valueFrom.configMapKeyRef.key \"..x\" is not a key a ConfigMap can have",
                "spec.env[4] (E): valueFrom.fieldRef.apiVersion \"v2\" is not v1",
                "spec.env[5] (F): valueFrom.fieldRef.fieldPath \"metadata.labels['a b']\" is not a field a pod exposes (metadata.name, metadata.namespace, metadata.uid, metadata.labels['<key>'], metadata.annotations['<key>'], spec.nodeName, spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs)",
                "spec.env[6] (G): valueFrom.resourceFieldRef.divisor \"2\" is not one limits.cpu takes (1m or 1)",
                "spec.env[7] (H): valueFrom.resourceFieldRef.divisor \"abc\" is not one limits.memory takes (1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei)",
                "spec.env[8] (I): valueFrom.resourceFieldRef.divisor \"1024\" is not one limits.memory takes (1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei)",
                "spec.env[9] (J): valueFrom.resourceFieldRef.divisor \"1e3\" is not one limits.memory takes (1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei)",
                "spec.env[10] (K): valueFrom.resourceFieldRef.divisor \"2e0\" is not one limits.memory takes (1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei)",
                "spec.env[11] (L): valueFrom.resourceFieldRef.divisor \"0.5Ki\" is not one limits.memory takes (1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei)",
                "spec.env[12] (M): valueFrom.resourceFieldRef.divisor \"1e-3\" is not one limits.cpu takes (1m or 1)",
                "spec.env[13] (N): valueFrom.resourceFieldRef.divisor \"-1\" is not one limits.memory takes (1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei)",
                "spec.env[14] (O): valueFrom.resourceFieldRef.divisor \"1x\" is not one limits.memory takes (1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei)",
                "spec.env[15] (P): valueFrom.resourceFieldRef.divisor \"1.0.0\" is not one limits.memory takes (1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei)",
            ]
        );
        let fine = env(r#"
- {name: A, valueFrom: {secretKeyRef: {name: my-secret.v1, key: .env}}}
- {name: B, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: "metadata.labels['app.kubernetes.io/name']"}}}
- {name: C, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['Example.com/Key']"}}}
- {name: D, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}
- {name: E, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
- {name: F, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "1000"}}}
- {name: G, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1024Ki}}}
- {name: H, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 0.9765625Ki}}}
- {name: I, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1E}}}
- {name: J, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "1.0"}}}
- {name: K, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1000k}}}
- {name: L, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1000m}}}
- {name: M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: "0.001"}}}
- {name: N, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Ei}}}
- {name: O, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: "10e-1"}}}
- {name: P, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: " 1Mi "}}}
- {name: Q, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "-0Mi"}}}
- {name: R, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "0e40"}}}
- {name: S, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "1000E"}}}
- {name: T, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: "10e4294967295"}}}
"#);
        assert_eq!(env_problems("spec.env", &fine, RESERVED), Vec::<String>::new());
    }
}
