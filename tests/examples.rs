//! Every example a user copies must be accepted: each YAML example of the user guide
//! (`docs/operator-guide.ja.md`) and of `k8s/manifests/examples.yaml` deserializes
//! into its typed resource and validates against the generated CRD schema. Also: the committed
//! CRD files are what `src/api` generates, the CEL rules are in the CRDs, bad objects are
//! rejected with the field named, and no schema uses a `format` the API server warns about.

use mcp_operator::api::{crd_files, crds, McpServer, Plugin, SecurityPolicy};
use rstest::rstest;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const API_VERSION: &str = "mcp.n-takatsu.dev/v1alpha1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Kubernetes structural schema -> plain JSON Schema
// ---------------------------------------------------------------------------------------------

/// The openAPIV3Schema of `kind` as the API server holds it (from the generated CRD).
fn crd_schema(kind: &str) -> Value {
    let crd = crds().into_iter().find(|c| c.spec.names.kind == kind).unwrap_or_else(|| panic!("no CRD for {kind}"));
    assert_eq!(crd.spec.versions.len(), 1, "{kind}: one version");
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// How strictly a (converted) schema is applied.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A whole object: `required` holds.
    Whole,
    /// An excerpt (a `spec:` or `status:` fragment of the guide): every field shown must exist
    /// with the right type, bounds and enum, but fields left out are not missing.
    Excerpt,
}

/// Converts a Kubernetes structural schema into plain JSON Schema:
/// - `x-kubernetes-*` keys are dropped; `x-kubernetes-int-or-string` becomes integer|string and
///   `x-kubernetes-list-type: set` becomes `uniqueItems` (the API server rejects duplicates);
/// - `nullable: true` allows null (also in an `enum`);
/// - objects with `properties` and no `additionalProperties` reject unknown fields, like
///   `kubectl apply` does with its default strict field validation, except where
///   `x-kubernetes-preserve-unknown-fields` keeps them;
/// - in [`Mode::Excerpt`], `required` is dropped.
fn to_json_schema(schema: &Value, mode: Mode) -> Value {
    let Value::Object(node) = schema else { return schema.clone() };
    let mut out = Map::new();
    let flag = |key: &str| node.get(key).and_then(Value::as_bool).unwrap_or(false);
    for (key, value) in node {
        match key.as_str() {
            k if k.starts_with("x-kubernetes-") => {}
            "nullable" => {}
            "required" if mode == Mode::Excerpt => {}
            "properties" => {
                let props = value.as_object().expect("properties is an object");
                let props = props.iter().map(|(k, v)| (k.clone(), to_json_schema(v, mode))).collect();
                out.insert(key.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(key.clone(), to_json_schema(value, mode));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = value.as_array().expect("a list of schemas");
                out.insert(key.clone(), list.iter().map(|s| to_json_schema(s, mode)).collect());
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if flag("x-kubernetes-int-or-string") {
        out.insert("anyOf".into(), json!([{"type": "integer"}, {"type": "string"}]));
    }
    if node.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
        out.insert("uniqueItems".into(), json!(true));
    }
    if out.contains_key("properties")
        && !out.contains_key("additionalProperties")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        out.insert("additionalProperties".into(), json!(false));
    }
    if flag("nullable") {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = t.clone();
                out.insert("type".into(), json!([t, "null"]));
            }
            Some(Value::Array(types)) => types.push(json!("null")),
            Some(_) => panic!("unexpected type in {schema}"),
            None => {
                if let Some(Value::Array(any)) = out.get_mut("anyOf") {
                    any.push(json!({"type": "null"}));
                }
            }
        }
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// The whole-object schema of `kind`: the root also admits what every object carries.
fn object_schema(kind: &str) -> Value {
    let mut schema = to_json_schema(&crd_schema(kind), Mode::Whole);
    let props = schema["properties"].as_object_mut().expect("root properties");
    props.insert("apiVersion".into(), json!({"const": API_VERSION}));
    props.insert("kind".into(), json!({"const": kind}));
    props.insert("metadata".into(), json!({"type": "object"}));
    schema
}

/// The schema of `spec` or `status` of `kind`, for excerpts.
fn excerpt_schema(kind: &str, part: &str) -> Value {
    let schema = crd_schema(kind);
    let part_schema = schema["properties"].get(part).unwrap_or_else(|| panic!("{kind} has no {part}"));
    to_json_schema(part_schema, Mode::Excerpt)
}

/// Every schema violation as `path: message` (the path names the field).
fn violations(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("converted schema is not valid JSON Schema: {e}"));
    validator.iter_errors(instance).map(|e| format!("{}: {e}", e.instance_path)).collect()
}

fn assert_valid(what: &str, schema: &Value, instance: &Value) {
    let errors = violations(schema, instance);
    assert!(errors.is_empty(), "{what} does not validate against the CRD schema:\n  {}", errors.join("\n  "));
}

/// Deserializes a whole document into its typed resource, and checks that what the operator
/// would write back (its own serialization) validates too.
fn assert_typed(what: &str, kind: &str, doc: &Value) {
    fn roundtrip<K: serde::de::DeserializeOwned + serde::Serialize>(what: &str, doc: &Value) -> Value {
        let typed: K = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
        serde_json::to_value(&typed).expect("typed objects serialize")
    }
    let written = match kind {
        "MCPServer" => roundtrip::<McpServer>(what, doc),
        "Plugin" => roundtrip::<Plugin>(what, doc),
        "SecurityPolicy" => roundtrip::<SecurityPolicy>(what, doc),
        other => panic!("{what}: unknown kind {other}"),
    };
    assert_valid(&format!("{what} (as serialized by the operator)"), &object_schema(kind), &written);
}

// ---------------------------------------------------------------------------------------------
// The user guide
// ---------------------------------------------------------------------------------------------

/// One YAML example of the guide.
#[derive(Debug)]
struct Snippet {
    /// Nearest heading above it.
    heading: String,
    /// 1-based line of its first line in the guide.
    line: usize,
    text: String,
}

impl Snippet {
    fn what(&self) -> String {
        format!("guide line {} (under {:?})", self.line, self.heading)
    }
}

fn guide_path() -> PathBuf {
    repo().join("docs/operator-guide.ja.md")
}

/// Fenced ```yaml blocks, and the `<<EOF ... EOF` heredocs inside ```bash blocks.
fn guide_snippets() -> Vec<Snippet> {
    let path = guide_path();
    // Fail, do not skip: a missing guide must not pass silently.
    assert!(path.is_file(), "the user guide is missing at {}", path.display());
    let text = read(&path);
    let mut snippets = vec![];
    let mut heading = String::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_string();
            continue;
        }
        let Some(lang) = line.strip_prefix("```") else { continue };
        let lang = lang.trim().to_string();
        let mut body: Vec<(usize, &str)> = vec![];
        for (i, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push((i + 1, l));
        }
        match lang.as_str() {
            "yaml" | "yml" => snippets.push(Snippet {
                heading: heading.clone(),
                line: body.first().map_or(0, |(n, _)| *n),
                text: body.iter().map(|(_, l)| format!("{l}\n")).collect(),
            }),
            "bash" | "sh" | "shell" => {
                let mut it = body.into_iter();
                while let Some((_, l)) = it.next() {
                    if !(l.contains("<<EOF") || l.contains("<< EOF") || l.contains("<<'EOF'")) {
                        continue;
                    }
                    let doc: Vec<(usize, &str)> = it.by_ref().take_while(|(_, l)| l.trim() != "EOF").collect();
                    snippets.push(Snippet {
                        heading: heading.clone(),
                        line: doc.first().map_or(0, |(n, _)| *n),
                        text: doc.iter().map(|(_, l)| format!("{l}\n")).collect(),
                    });
                }
            }
            _ => {}
        }
    }
    snippets
}

/// Which kind each excerpt of the guide belongs to, by the heading it sits under.
const EXCERPT_KINDS: &[(&str, &str)] = &[
    ("Status フィールド", "MCPServer"),
    ("1. リソース制限の設定", "MCPServer"),
    ("2. セキュリティポリシーの使用", "MCPServer"),
    ("3. プラグインの隔離", "Plugin"),
];

/// Kinds that appear in the guide but are not ours.
const FOREIGN_KINDS: &[&str] = &[
    // The monitoring example (apiVersion v1, kind ServiceMonitor) is Prometheus Operator's
    // resource, not one of this operator's CRDs: nothing of ours to validate it against.
    "ServiceMonitor",
];

#[test]
fn every_guide_example_is_accepted() {
    let mut whole = vec![];
    let mut excerpts = vec![];
    let mut skipped = vec![];
    for snippet in guide_snippets() {
        let what = snippet.what();
        let doc: Value = serde_norway::from_str(&snippet.text).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
        let obj = doc.as_object().unwrap_or_else(|| panic!("{what}: not a YAML mapping"));
        match obj.get("apiVersion").and_then(Value::as_str) {
            Some(API_VERSION) => {
                let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_else(|| panic!("{what}: no kind"));
                let name = doc["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{what}: no name"));
                assert_typed(&what, kind, &doc);
                assert_valid(&what, &object_schema(kind), &doc);
                whole.push(format!("{kind}/{name}"));
            }
            Some(other) => {
                let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
                assert!(FOREIGN_KINDS.contains(&kind), "{what}: unexpected {other} {kind}: test it or list it");
                skipped.push(kind.to_string());
            }
            None => {
                let parts: Vec<&str> = obj.keys().map(String::as_str).collect();
                let [part @ ("spec" | "status")] = parts[..] else {
                    panic!("{what}: an excerpt should hold only spec or status, not {parts:?}")
                };
                let kind = EXCERPT_KINDS
                    .iter()
                    .find(|(h, _)| *h == snippet.heading)
                    .map(|(_, k)| *k)
                    .unwrap_or_else(|| panic!("{what}: new excerpt: add its heading to EXCERPT_KINDS"));
                assert_valid(&what, &excerpt_schema(kind, part), &doc[part]);
                excerpts.push(format!("{kind}.{part}"));
            }
        }
    }
    // Catch an extraction that silently finds fewer examples than the guide has.
    assert_eq!(
        whole,
        [
            "MCPServer/example-mcpserver",
            "Plugin/wordpress-plugin",
            "SecurityPolicy/default-policy",
            "MCPServer/my-mcp-server",
            "Plugin/wordpress-plugin",
            "SecurityPolicy/public-policy",
            "MCPServer/mcp-server-canary",
            "MCPServer/mcp-server-production",
            "MCPServer/mcp-server-a",
        ]
    );
    assert_eq!(excerpts, ["MCPServer.status", "MCPServer.spec", "MCPServer.spec", "Plugin.spec"]);
    assert_eq!(skipped, ["ServiceMonitor"]);
}

/// The guide's `kubectl patch` and `kubectl scale` commands give valid objects.
#[test]
fn guide_patches_and_scale_give_valid_objects() {
    let schema = crd_schema("MCPServer");
    // `kubectl patch --type=json` adds to /spec/plugins/- on my-mcp-server, whose YAML has no
    // plugins: that only works because the API server defaults the list to [].
    assert_eq!(schema["properties"]["spec"]["properties"]["plugins"]["default"], json!([]));
    let mut server: Value = serde_norway::from_str(
        "apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: my-mcp-server}\n\
         spec: {replicas: 2, image: \"mcp-rs:latest\", transport: http, port: 3000}\n",
    )
    .unwrap();
    server["spec"]["plugins"] = json!(["wordpress-plugin"]);
    server["spec"]["securityPolicy"] = json!("default-policy");
    server["spec"]["replicas"] = json!(5);
    assert_typed("patched my-mcp-server", "MCPServer", &server);
    assert_valid("patched my-mcp-server", &object_schema("MCPServer"), &server);
    // The guide's manual escape hatch: finalizers emptied by a merge patch.
    server["metadata"]["finalizers"] = json!([]);
    assert_valid("my-mcp-server without finalizers", &object_schema("MCPServer"), &server);
}

// ---------------------------------------------------------------------------------------------
// k8s/manifests/examples.yaml
// ---------------------------------------------------------------------------------------------

#[test]
fn every_manifest_example_is_accepted() {
    let path = repo().join("k8s/manifests/examples.yaml");
    let text = read(&path);
    let mut names = vec![];
    for (i, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let doc = <Value as serde::Deserialize>::deserialize(document)
            .unwrap_or_else(|e| panic!("examples.yaml document {i}: {e}"));
        if doc.is_null() {
            continue; // the leading comment block
        }
        let what = format!("examples.yaml document {i}");
        assert_eq!(doc["apiVersion"], API_VERSION, "{what}");
        let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{what}: no kind"));
        assert!(doc["metadata"].get("namespace").is_none(), "{what}: lands in the namespace kubectl targets");
        assert_typed(&what, kind, &doc);
        assert_valid(&what, &object_schema(kind), &doc);
        names.push(format!("{kind}/{}", doc["metadata"]["name"].as_str().unwrap_or_default()));
    }
    // The policies the guide names: default-policy, production-policy, tenant-a-policy.
    assert_eq!(
        names,
        ["SecurityPolicy/default-policy", "SecurityPolicy/production-policy", "SecurityPolicy/tenant-a-policy"]
    );
}

// ---------------------------------------------------------------------------------------------
// The schemas themselves
// ---------------------------------------------------------------------------------------------

fn valid_server() -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "MCPServer",
        "metadata": {"name": "s"},
        "spec": {"replicas": 2, "transport": "http", "port": 3000},
    })
}

fn valid_plugin() -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "Plugin",
        "metadata": {"name": "p"},
        "spec": {"name": "p", "image": "p:1", "isolation": {"level": "Container"}},
    })
}

#[rstest]
#[case::replicas_above_10("MCPServer", "/spec/replicas", json!(11))]
#[case::replicas_zero("MCPServer", "/spec/replicas", json!(0))]
#[case::privileged_port("MCPServer", "/spec/port", json!(80))]
#[case::unknown_transport("MCPServer", "/spec/transport", json!("grpc"))]
#[case::duplicate_plugins("MCPServer", "/spec/plugins", json!(["a", "a"]))]
#[case::path_without_slash("MCPServer", "/spec/path", json!("mcp"))]
#[case::unknown_field("MCPServer", "/spec", json!({"replicas": 1, "replica": 2}))]
#[case::unknown_isolation_level("Plugin", "/spec/isolation/level", json!("Sandbox"))]
fn bad_objects_are_rejected_naming_the_field(#[case] kind: &str, #[case] field: &str, #[case] value: Value) {
    let mut obj = if kind == "MCPServer" { valid_server() } else { valid_plugin() };
    assert_valid("the unchanged object", &object_schema(kind), &obj);
    let (parent, key) = field.rsplit_once('/').expect("a JSON pointer");
    let parent = obj.pointer_mut(parent).and_then(Value::as_object_mut).unwrap_or_else(|| panic!("{parent} exists"));
    parent.insert(key.to_string(), value.clone());
    let errors = violations(&object_schema(kind), &obj);
    assert!(!errors.is_empty(), "{kind} with {field} = {value} must be rejected");
    assert!(
        errors.iter().all(|e| e.starts_with(&format!("{field}: "))),
        "{kind} with {field} = {value}: every error names the field: {errors:?}"
    );
}

fn validations(schema: &Value, pointer: &str) -> Vec<(String, String)> {
    let rules = schema.pointer(pointer).unwrap_or_else(|| panic!("no x-kubernetes-validations at {pointer}"));
    rules
        .as_array()
        .expect("a list of rules")
        .iter()
        .map(|r| (r["rule"].as_str().unwrap().to_string(), r["message"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn cel_rules_are_in_the_crds() {
    let server = validations(&crd_schema("MCPServer"), "/properties/spec/x-kubernetes-validations");
    assert_eq!(
        server,
        [
            (
                "self.transport != 'stdio' || (has(self.command) && size(self.command) > 0)".to_string(),
                "spec.command is required when spec.transport is stdio".to_string()
            ),
            (
                "!has(self.command) || size(self.command) == 0 || size(self.command[0]) > 0".to_string(),
                "spec.command[0] (the executable) must not be empty".to_string()
            )
        ]
    );

    let policy = crd_schema("SecurityPolicy");
    let messages: Vec<String> =
        validations(&policy, "/properties/spec/x-kubernetes-validations").into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        messages,
        [
            "spec.encryption.certSecretName is required when spec.encryption.tlsEnabled is true",
            "spec.authentication.methods must name at least one method when spec.authentication.required is true",
            "spec.encryption.tlsEnabled must be true when spec.authentication.methods includes mtls",
        ]
    );
    let jwt =
        validations(&policy, "/properties/spec/properties/authentication/properties/jwt/x-kubernetes-validations");
    let jwt: Vec<String> = jwt.into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        jwt,
        [
            "spec.authentication.jwt needs jwksUri or secretRef",
            "spec.authentication.jwt.generateSecret needs spec.authentication.jwt.secretRef (the Secret to create)",
            "spec.authentication.jwt.jwksUri needs issuer and audiences (else a token the identity provider signed for any other application is accepted)"
        ]
    );
    for (kind, label) in [("MCPServer", "DNS-1035"), ("Plugin", "DNS-1123")] {
        let root = validations(&crd_schema(kind), "/x-kubernetes-validations");
        assert_eq!(root.len(), 1, "{kind}: {root:?}");
        assert!(root[0].0.contains("self.metadata.name"), "{kind}: {root:?}");
        assert!(root[0].1.starts_with(&format!("metadata.name must be a {label} label")), "{kind}: {root:?}");
    }
}

/// `format`s the API server knows; others (uint32, double, ...) make it log a warning per CRD.
const KNOWN_FORMATS: &[&str] = &["int32", "int64", "date-time", "byte"];

fn collect_formats(schema: &Value, at: &str, out: &mut Vec<(String, String)>) {
    let Value::Object(node) = schema else { return };
    if let Some(f) = node.get("format") {
        out.push((at.to_string(), f.as_str().unwrap_or("<not a string>").to_string()));
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        for (name, sub) in props {
            collect_formats(sub, &format!("{at}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(sub) = node.get(key) {
            collect_formats(sub, &format!("{at}[{key}]"), out);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in node.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            collect_formats(sub, &format!("{at}[{key}/{i}]"), out);
        }
    }
}

#[test]
fn schemas_use_only_formats_the_api_server_knows() {
    for kind in ["MCPServer", "Plugin", "SecurityPolicy"] {
        let mut formats = vec![];
        collect_formats(&crd_schema(kind), kind, &mut formats);
        assert!(!formats.is_empty(), "{kind}: the walk finds the int32 fields");
        let unknown: Vec<_> = formats.iter().filter(|(_, f)| !KNOWN_FORMATS.contains(&f.as_str())).collect();
        assert!(unknown.is_empty(), "{kind}: formats the API server warns about: {unknown:?}");
    }
}

/// The converted schemas are themselves valid, and strict where the API server is.
#[test]
fn conversion_keeps_free_form_config_and_allows_null() {
    let mut plugin = valid_plugin();
    plugin["spec"]["config"] = json!({"anything": {"nested": [1, "x"]}});
    plugin["spec"]["port"] = Value::Null;
    assert_valid("plugin with free-form config", &object_schema("Plugin"), &plugin);
    let mut server = valid_server();
    server["spec"]["resources"] = json!({"limits": {"cpu": 1, "memory": "512Mi"}});
    server["spec"]["imagePullPolicy"] = Value::Null;
    assert_valid("server with int-or-string quantities", &object_schema("MCPServer"), &server);
}

/// What the pod would refuse is refused by the schema already, naming the field.
#[test]
fn quantities_and_env_names_the_pod_would_refuse_are_refused() {
    let schema = object_schema("MCPServer");
    for good in [json!("500m"), json!("1.5Gi"), json!("2"), json!(1), json!("1e3"), json!(".5")] {
        let mut server = valid_server();
        server["spec"]["resources"] = json!({"limits": {"cpu": good}, "requests": {"memory": good}});
        assert_valid(&format!("quantity {good}"), &schema, &server);
    }
    for bad in ["1.5.5", "500 m", "1GB", "lots", ""] {
        let mut server = valid_server();
        server["spec"]["resources"] = json!({"requests": {"cpu": bad}});
        let errors = violations(&schema, &server);
        assert!(errors.iter().any(|e| e.starts_with("/spec/resources/requests/cpu")), "{bad:?}: {errors:?}");
    }
    for good in ["MCP_PORT", "a.b-c", "_x", "LOG_LEVEL2"] {
        let mut server = valid_server();
        server["spec"]["env"] = json!([{"name": good, "value": "v"}]);
        assert_valid(&format!("env name {good}"), &schema, &server);
    }
    for bad in ["", "1ABC", "A=B", "with space"] {
        let mut server = valid_server();
        server["spec"]["env"] = json!([{"name": bad, "value": "v"}]);
        let errors = violations(&schema, &server);
        assert!(errors.iter().any(|e| e.starts_with("/spec/env/0/name")), "{bad:?}: {errors:?}");
    }
    let mut plugin = valid_plugin();
    plugin["spec"]["resources"] = json!({"limits": {"memory": "1.5.5"}});
    let errors = violations(&object_schema("Plugin"), &plugin);
    assert!(errors.iter().any(|e| e.starts_with("/spec/resources/limits/memory")), "{errors:?}");
}

// ---------------------------------------------------------------------------------------------
// Generated files
// ---------------------------------------------------------------------------------------------

#[test]
fn committed_crds_match_the_generated_ones() {
    let generated = crd_files();
    let expected: BTreeSet<&str> = generated.iter().map(|(f, _)| f.as_str()).collect();
    for dir in ["k8s/crds", "charts/mcp-operator/crds"] {
        let dir_path = repo().join(dir);
        let committed: BTreeSet<String> = std::fs::read_dir(&dir_path)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
            .collect();
        let committed: BTreeSet<&str> = committed.iter().map(String::as_str).collect();
        assert_eq!(committed, expected, "{dir} holds other files than the generated CRDs: run `just generate`");
        for (file, yaml) in &generated {
            let on_disk = read(&dir_path.join(file));
            assert!(on_disk == *yaml, "{dir}/{file} differs from src/api: run `just generate`");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The guide's commands, as the e2e suite runs them
// ---------------------------------------------------------------------------------------------

#[path = "../e2e/src/guide.rs"]
#[allow(dead_code)]
mod e2e_guide;

#[test]
fn every_command_the_e2e_suite_runs_is_in_the_guide_verbatim() {
    let guide = read(&guide_path());
    let commands = [
        e2e_guide::INSTALL_HELM,
        e2e_guide::INSTALL_KUBECTL,
        e2e_guide::CHECK_PODS,
        e2e_guide::CHECK_CRDS,
        e2e_guide::DEPLOY,
        e2e_guide::STATUS,
        e2e_guide::ADD_PLUGIN,
        e2e_guide::PATCH_PLUGIN,
        e2e_guide::APPLY_EXAMPLES,
        e2e_guide::PATCH_POLICY,
        e2e_guide::SCALE,
        e2e_guide::OPERATOR_LOGS,
        e2e_guide::SERVER_LOGS,
        e2e_guide::PORT_FORWARD,
        e2e_guide::UPGRADE_HELM,
        e2e_guide::UPGRADE_KUBECTL,
        e2e_guide::UNINSTALL_HELM,
        e2e_guide::UNINSTALL_KUBECTL,
        e2e_guide::DELETE_CRDS,
        e2e_guide::TROUBLE_OPERATOR,
        e2e_guide::CAN_I,
        e2e_guide::EXPLAIN,
        e2e_guide::CANARY,
    ];
    for c in commands {
        assert!(guide.contains(c), "not in docs/operator-guide.ja.md verbatim:\n{c}");
    }
    // The English guide carries the same commands (comments may be translated).
    let en = read(&repo().join("docs/operator-guide.en.md"));
    for c in commands {
        for line in c.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()) {
            assert!(en.contains(line), "not in docs/operator-guide.en.md: {line}");
        }
    }
}

/// Conditions are a list keyed by `type` on every kind (server-side apply merges them per type,
/// and a duplicate type is refused), as on the built-in kinds.
#[rstest]
#[case("MCPServer")]
#[case("Plugin")]
#[case("SecurityPolicy")]
fn conditions_are_a_list_keyed_by_type(#[case] kind: &str) {
    let conditions = crd_schema(kind).pointer("/properties/status/properties/conditions").cloned().expect("conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}: {conditions}");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]), "{kind}");
    let item = &conditions["items"];
    for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
        assert!(item["properties"].get(field).is_some(), "{kind}: condition field {field}");
    }
    let required: BTreeSet<&str> = item["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(required.contains("type"), "{kind}: a map key must be required: {required:?}");
}

/// `kubectl get mcpservers` shows the tool count next to the phase.
#[test]
fn mcpserver_columns_include_tools() {
    let crd = crds().into_iter().find(|c| c.spec.names.kind == "MCPServer").unwrap();
    let columns = crd.spec.versions[0].additional_printer_columns.clone().unwrap_or_default();
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Phase", "Ready", "Transport", "Policy", "Tools", "URL", "Age"]);
    let tools = columns.iter().find(|c| c.name == "Tools").unwrap();
    assert_eq!((tools.type_.as_str(), tools.json_path.as_str()), ("integer", ".status.toolCount"));
}
