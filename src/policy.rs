//! SecurityPolicy validation (which Secrets and settings it needs) and rendering into the
//! effective policy document the gateway reads from `/etc/mcp/policy.json`.

use crate::api::{AuditLevel, AuthMethod, SecurityPolicy, SecurityPolicySpec, TlsVersion};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use mcp_gateway_contract::policy::{
    unbound_jwks, ApiKeySettings, AuditLevel as GatewayAuditLevel, AuditSettings, Authentication, Authorization,
    AuthorizationMode, Cors, JwtSettings, Method, MtlsSettings, OAuth2Settings, PolicyDocument, RateLimit,
    TlsMinVersion, TlsSettings, UNBOUND_JWKS,
};
pub use mcp_gateway_contract::SECRETS_DIR;
use mcp_gateway_contract::TLS_DIR;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A Secret the policy references, with the keys it must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretNeed {
    /// Secret name (same namespace as the policy).
    pub name: String,
    /// Keys that must exist; empty means "at least one key".
    pub keys: Vec<String>,
    /// The spec field that names the Secret, for messages.
    pub field: &'static str,
}

/// Every Secret the policy references, in spec order.
pub fn required_secrets(spec: &SecurityPolicySpec) -> Vec<SecretNeed> {
    let mut needs = vec![];
    let need = |name: &str, keys: &[&str], field| SecretNeed {
        name: name.to_string(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        field,
    };
    if let Some(enc) = spec.encryption.as_ref().filter(|e| e.tls_enabled) {
        if let Some(name) = enc.cert_secret_name.as_deref() {
            needs.push(need(name, &["tls.crt", "tls.key"], "spec.encryption.certSecretName"));
        }
    }
    if let Some(auth) = &spec.authentication {
        let uses = |m| auth.methods.contains(&m);
        if let (true, Some(r)) = (uses(AuthMethod::Jwt), auth.jwt.as_ref().and_then(|j| j.secret_ref.as_ref())) {
            needs.push(need(&r.name, &[r.key.as_str()], "spec.authentication.jwt.secretRef"));
        }
        if let (true, Some(r)) =
            (uses(AuthMethod::Oauth2), auth.oauth2.as_ref().and_then(|o| o.client_secret_ref.as_ref()))
        {
            needs.push(need(&r.name, &["client-id", "client-secret"], "spec.authentication.oauth2.clientSecretRef"));
        }
        if let (true, Some(a)) = (uses(AuthMethod::Apikey), auth.api_keys.as_ref()) {
            needs.push(need(&a.secret_ref.name, &[], "spec.authentication.apiKeys.secretRef"));
        }
        if let (true, Some(m)) = (uses(AuthMethod::Mtls), auth.mtls.as_ref()) {
            needs.push(need(&m.ca_secret_ref.name, &["ca.crt"], "spec.authentication.mtls.caSecretRef"));
        }
    }
    needs
}

/// What the schema cannot check: each method has its settings, each referenced Secret exists
/// and holds its keys. Every message names the field. `secrets` holds the Secrets that exist.
pub fn validate_policy(spec: &SecurityPolicySpec, secrets: &BTreeMap<String, Secret>) -> Vec<String> {
    let mut problems = vec![];
    if let Some(auth) = &spec.authentication {
        for method in &auth.methods {
            let (present, field) = match method {
                AuthMethod::Jwt => (auth.jwt.is_some(), "jwt"),
                AuthMethod::Oauth2 => (auth.oauth2.is_some(), "oauth2"),
                AuthMethod::Apikey => (auth.api_keys.is_some(), "apiKeys"),
                AuthMethod::Mtls => (auth.mtls.is_some(), "mtls"),
            };
            if !present {
                problems.push(format!(
                    "spec.authentication.{field} is required when spec.authentication.methods includes {}",
                    method.as_str()
                ));
            }
        }
    }
    let jwt = spec.authentication.as_ref().and_then(|a| a.jwt.as_ref());
    if jwt.is_some_and(|j| unbound_jwks(j.jwks_uri.is_some(), j.issuer.is_some(), &j.audiences)) {
        problems.push(format!("spec.authentication.{UNBOUND_JWKS}"));
    }
    for (i, cidr) in spec.network.iter().flat_map(|n| n.allowed_cidrs.iter()).enumerate() {
        if let Err(why) = canonical_cidr(cidr) {
            problems.push(format!("spec.network.allowedCIDRs[{i}]: {cidr:?} {why}"));
        }
    }
    for need in required_secrets(spec) {
        let Some(secret) = secrets.get(&need.name) else {
            problems.push(format!("{}: Secret {:?} not found", need.field, need.name));
            continue;
        };
        let has = |k: &str| {
            secret.data.as_ref().is_some_and(|d| d.contains_key(k))
                || secret.string_data.as_ref().is_some_and(|d| d.contains_key(k))
        };
        let missing: Vec<_> = need.keys.iter().filter(|k| !has(k)).cloned().collect();
        if !missing.is_empty() {
            problems.push(format!("{}: Secret {:?} has no key {}", need.field, need.name, missing.join(", ")));
        } else if need.keys.is_empty() && secret.data.as_ref().is_none_or(|d| d.is_empty()) {
            problems.push(format!("{}: Secret {:?} holds no keys", need.field, need.name));
        }
    }
    problems
}

/// `cidr` as a NetworkPolicy's `ipBlock.cidr` takes it on every supported Kubernetes: the
/// range's own address (bits beyond the prefix cleared: `192.168.1.10/24` is `192.168.1.0/24`)
/// and an IPv4-mapped IPv6 range as IPv4 (`::ffff:10.0.0.0/104` is `10.0.0.0/8`). API servers
/// through 1.35 take either form and mean that range; 1.36's (StrictIPCIDRValidation) refuse the
/// others. An error when it is no range at all: the CRD's pattern checks IPv4 ranges fully but
/// IPv6 ones only by their characters (Kubernetes 1.25's CEL has no IP library), so
/// `fd00::1::/64` passes it and would be refused with the server's NetworkPolicy.
pub fn canonical_cidr(cidr: &str) -> Result<String, &'static str> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let (addr, prefix) = cidr.split_once('/').ok_or("has no /prefix")?;
    let addr: IpAddr = addr.parse().map_err(|_| "is not an IP address followed by /prefix")?;
    let prefix: u8 = prefix.parse().map_err(|_| "has no number after the /")?;
    let (value, width) = match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8),
        IpAddr::V6(a) => (u128::from(a), 128u8),
    };
    if prefix > width {
        return Err(if width == 32 { "has a prefix longer than 32" } else { "has a prefix longer than 128" });
    }
    let host_bits = u32::from(width - prefix);
    let network = value & !(u128::MAX.checked_shr(128 - host_bits).unwrap_or(0));
    Ok(match addr {
        IpAddr::V4(_) => format!("{}/{prefix}", Ipv4Addr::from(network as u32)),
        IpAddr::V6(_) => match Ipv6Addr::from(network).to_ipv4_mapped() {
            // Mapped after masking: the prefix covers the whole ::ffff:0:0/96.
            Some(v4) if prefix >= 96 => format!("{v4}/{}", prefix - 96),
            _ => format!("{}/{prefix}", Ipv6Addr::from(network)),
        },
    })
}

fn secret_file(secret: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("{SECRETS_DIR}/{secret}/{key}"))
}

/// The effective policy as the gateway consumes it (the contract crate's document): every Secret
/// replaced by the path of its mounted file, defaults filled in, `enabled: false` when no policy
/// (or a disabled one) applies. Allowed origins are kept even when enforcement is off.
pub fn render_policy(policy: Option<&SecurityPolicy>) -> PolicyDocument {
    let cors = Cors {
        allowed_origins: policy
            .and_then(|p| p.spec.cors.as_ref())
            .map(|c| c.allowed_origins.clone())
            .unwrap_or_default(),
    };
    let Some(policy) = policy.filter(|p| p.spec.enabled) else {
        return PolicyDocument { enabled: false, policy: policy.map(|p| p.name_any()), cors, ..Default::default() };
    };
    let spec = &policy.spec;
    let tls = spec.encryption.as_ref().filter(|e| e.tls_enabled).map(|e| TlsSettings {
        min_version: match e.tls_version {
            TlsVersion::V1_2 => TlsMinVersion::V1_2,
            TlsVersion::V1_3 => TlsMinVersion::V1_3,
        },
        cert_file: PathBuf::from(format!("{TLS_DIR}/tls.crt")),
        key_file: PathBuf::from(format!("{TLS_DIR}/tls.key")),
    });
    let authentication = spec.authentication.as_ref().map(|a| {
        let mut methods: Vec<Method> = a.methods.iter().map(|m| gateway_method(*m)).collect();
        methods.dedup();
        Authentication {
            required: a.required,
            methods,
            jwt: a.jwt.as_ref().map(|j| JwtSettings {
                issuer: j.issuer.clone(),
                audiences: j.audiences.clone(),
                jwks_uri: j.jwks_uri.clone(),
                secret_file: j.secret_ref.as_ref().map(|r| secret_file(&r.name, &r.key)),
            }),
            oauth2: a.oauth2.as_ref().map(|o| OAuth2Settings {
                introspection_url: o.introspection_url.clone(),
                client_id_file: o.client_secret_ref.as_ref().map(|r| secret_file(&r.name, "client-id")),
                client_secret_file: o.client_secret_ref.as_ref().map(|r| secret_file(&r.name, "client-secret")),
            }),
            api_keys: a
                .api_keys
                .as_ref()
                .map(|k| ApiKeySettings { dir: PathBuf::from(format!("{SECRETS_DIR}/{}", k.secret_ref.name)) }),
            mtls: a.mtls.as_ref().map(|m| MtlsSettings { ca_file: secret_file(&m.ca_secret_ref.name, "ca.crt") }),
        }
    });
    let authorization = spec.authorization.as_ref().map(|z| Authorization {
        mode: AuthorizationMode::Rbac,
        allowed_roles: z.allowed_roles.clone(),
        roles_claim: z.roles_claim.clone(),
        tools: z.tools.iter().map(|t| (t.role.clone(), t.allow.clone())).collect::<BTreeMap<_, _>>(),
        anonymous_tools: z.anonymous_tools.clone(),
    });
    let rate_limiting = spec.rate_limiting.as_ref().filter(|r| r.enabled).map(|r| {
        let rpm = u32::try_from(r.requests_per_minute).unwrap_or(1).max(1);
        RateLimit {
            requests_per_minute: rpm,
            burst_size: Some(r.burst_size.and_then(|b| u32::try_from(b).ok()).unwrap_or(rpm).max(1)),
        }
    });
    let audit = spec.audit.as_ref().filter(|a| a.enabled).map(|a| AuditSettings {
        log_level: match a.log_level {
            AuditLevel::Info => GatewayAuditLevel::Info,
            AuditLevel::Warn => GatewayAuditLevel::Warn,
            AuditLevel::Error => GatewayAuditLevel::Error,
        },
        retention_days: u32::try_from(a.retention_days).unwrap_or(30),
    });
    PolicyDocument {
        enabled: true,
        policy: Some(policy.name_any()),
        generation: policy.metadata.generation,
        tls,
        authentication,
        authorization,
        rate_limiting,
        audit,
        cors,
    }
}

fn gateway_method(m: AuthMethod) -> Method {
    match m {
        AuthMethod::Jwt => Method::Jwt,
        AuthMethod::Oauth2 => Method::Oauth2,
        AuthMethod::Apikey => Method::Apikey,
        AuthMethod::Mtls => Method::Mtls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn guide_policy() -> SecurityPolicy {
        serde_norway::from_str(
            r#"
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: default-policy, namespace: default, generation: 2}
spec:
  enabled: true
  authentication:
    required: true
    methods: [jwt, oauth2]
    jwt: {issuer: "https://auth.example.com", audiences: [mcp], jwksUri: "https://auth.example.com/jwks.json"}
    oauth2: {introspectionUrl: "https://auth.example.com/introspect", clientSecretRef: {name: oauth2-client}}
  authorization: {mode: rbac, allowedRoles: [admin, developer], tools: [{role: developer, allow: ["search*"]}]}
  rateLimiting: {enabled: true, requestsPerMinute: 100, burstSize: 200}
  encryption: {tlsEnabled: true, tlsVersion: "1.3", certSecretName: tls-cert-secret}
  audit: {enabled: true, logLevel: info, retentionDays: 30}
"#,
        )
        .unwrap()
    }

    fn secret(name: &str, keys: &[&str]) -> (String, Secret) {
        let data = keys.iter().map(|k| (k.to_string(), ByteString(b"x".to_vec()))).collect();
        (name.to_string(), Secret { data: Some(data), ..Default::default() })
    }

    #[test]
    fn lists_every_referenced_secret_with_its_keys() {
        let needs = required_secrets(&guide_policy().spec);
        let names: Vec<_> = needs.iter().map(|n| (n.name.as_str(), n.keys.len())).collect();
        assert_eq!(names, vec![("tls-cert-secret", 2), ("oauth2-client", 2)]);
    }

    #[test]
    fn valid_when_secrets_hold_their_keys() {
        let secrets = BTreeMap::from([
            secret("tls-cert-secret", &["tls.crt", "tls.key"]),
            secret("oauth2-client", &["client-id", "client-secret"]),
        ]);
        assert_eq!(validate_policy(&guide_policy().spec, &secrets), Vec::<String>::new());
    }

    #[test]
    fn missing_secret_and_key_name_the_field() {
        let secrets = BTreeMap::from([secret("tls-cert-secret", &["tls.crt"])]);
        assert_eq!(
            validate_policy(&guide_policy().spec, &secrets),
            vec![
                r#"spec.encryption.certSecretName: Secret "tls-cert-secret" has no key tls.key"#.to_string(),
                r#"spec.authentication.oauth2.clientSecretRef: Secret "oauth2-client" not found"#.to_string(),
            ]
        );
    }

    #[test]
    fn an_address_range_the_schema_lets_through_but_a_network_policy_refuses_names_its_index() {
        let secrets = BTreeMap::from([
            secret("tls-cert-secret", &["tls.crt", "tls.key"]),
            secret("oauth2-client", &["client-id", "client-secret"]),
        ]);
        let mut p = guide_policy();
        let good = ["10.0.0.0/8", "0.0.0.0/0", "fd00::/64", "2001:db8::1/128", "::/0", "192.168.1.10/24"];
        p.spec.network = Some(crate::api::Network {
            allowed_cidrs: good.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        });
        assert_eq!(validate_policy(&p.spec, &secrets), Vec::<String>::new());
        // Each passes the CRD's pattern (its IPv6 branch checks characters only).
        let bad = ["fd00::1::/64", ":/0", "1.2.3.4:/8"];
        p.spec.network.as_mut().unwrap().allowed_cidrs = good.iter().chain(&bad).map(|c| c.to_string()).collect();
        assert_eq!(
            validate_policy(&p.spec, &secrets),
            vec![
                r#"spec.network.allowedCIDRs[6]: "fd00::1::/64" is not an IP address followed by /prefix"#,
                r#"spec.network.allowedCIDRs[7]: ":/0" is not an IP address followed by /prefix"#,
                r#"spec.network.allowedCIDRs[8]: "1.2.3.4:/8" is not an IP address followed by /prefix"#,
            ]
        );
    }

    #[test]
    fn a_range_is_written_as_every_api_server_takes_it() {
        for (cidr, canonical) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.168.1.10/24", "192.168.1.0/24"),
            ("192.168.1.10/32", "192.168.1.10/32"),
            ("10.1.2.3/0", "0.0.0.0/0"),
            ("fd00::1/64", "fd00::/64"),
            ("FD00:0001::/64", "fd00:1::/64"),
            ("2001:db8::1/128", "2001:db8::1/128"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:10.1.2.3/128", "10.1.2.3/32"),
            ("::ffff:10.0.0.0/80", "::/80"),
        ] {
            assert_eq!(canonical_cidr(cidr).as_deref(), Ok(canonical), "{cidr}");
        }
        assert_eq!(canonical_cidr("10.0.0.0/33"), Err("has a prefix longer than 32"));
    }

    #[test]
    fn method_without_settings_names_the_field() {
        let mut p = guide_policy();
        let auth = p.spec.authentication.as_mut().unwrap();
        auth.jwt = None;
        auth.oauth2 = None;
        auth.methods.push(AuthMethod::Apikey);
        let problems = validate_policy(&p.spec, &BTreeMap::from([secret("tls-cert-secret", &["tls.crt", "tls.key"])]));
        assert_eq!(
            problems,
            vec![
                "spec.authentication.jwt is required when spec.authentication.methods includes jwt",
                "spec.authentication.oauth2 is required when spec.authentication.methods includes oauth2",
                "spec.authentication.apiKeys is required when spec.authentication.methods includes apikey",
            ]
        );
    }

    #[test]
    fn keys_from_a_jwks_need_an_issuer_and_an_audience() {
        let secrets = BTreeMap::from([
            secret("tls-cert-secret", &["tls.crt", "tls.key"]),
            secret("oauth2-client", &["client-id", "client-secret"]),
        ]);
        let mut p = guide_policy();
        let jwt = p.spec.authentication.as_mut().unwrap().jwt.as_mut().unwrap();
        assert!(jwt.jwks_uri.is_some());
        jwt.audiences.clear();
        let problems = validate_policy(&p.spec, &secrets);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("spec.authentication.jwt.jwksUri needs issuer and audiences"), "{problems:?}");
        // The CRD's CEL rule (a literal) says the same, word for word.
        let crd = serde_json::to_string(&<SecurityPolicy as kube::CustomResourceExt>::crd()).unwrap();
        assert!(crd.contains(&format!("\"message\":\"{}\"", problems[0])), "the CEL rule's message: {}", problems[0]);
        let jwt = p.spec.authentication.as_mut().unwrap().jwt.as_mut().unwrap();
        jwt.audiences = vec!["mcp".into()];
        jwt.issuer = None;
        assert_eq!(validate_policy(&p.spec, &secrets).len(), 1);
        let jwt = p.spec.authentication.as_mut().unwrap().jwt.as_mut().unwrap();
        jwt.jwks_uri = None;
        jwt.secret_ref = Some(crate::api::SecretKeyRef { name: "jwt".into(), key: "secret".into() });
        let secrets = BTreeMap::from([
            secret("tls-cert-secret", &["tls.crt", "tls.key"]),
            secret("oauth2-client", &["client-id", "client-secret"]),
            secret("jwt", &["secret"]),
        ]);
        assert_eq!(validate_policy(&p.spec, &secrets), Vec::<String>::new(), "a shared secret is the issuer's own");
    }

    use serde_json::json;

    #[test]
    fn renders_files_not_secrets() {
        let rendered = render_policy(Some(&guide_policy()));
        rendered.validate().unwrap();
        let doc = serde_json::to_value(&rendered).unwrap();
        assert_eq!(doc["enabled"], true);
        assert_eq!(doc["policy"], "default-policy");
        assert_eq!(doc["tls"]["minVersion"], "1.3");
        assert_eq!(doc["tls"]["certFile"], "/etc/mcp/tls/tls.crt");
        assert_eq!(doc["authentication"]["methods"], json!(["jwt", "oauth2"]));
        assert_eq!(
            doc["authentication"]["oauth2"]["clientSecretFile"],
            "/var/run/secrets/mcp/oauth2-client/client-secret"
        );
        assert_eq!(doc["authorization"]["rolesClaim"], "roles");
        assert_eq!(doc["authorization"]["tools"]["developer"], json!(["search*"]));
        assert_eq!(doc["rateLimiting"], json!({"requestsPerMinute": 100, "burstSize": 200}));
        assert_eq!(doc["audit"], json!({"logLevel": "info", "retentionDays": 30}));
    }

    #[test]
    fn disabled_or_absent_policy_renders_no_enforcement() {
        let none = render_policy(None);
        assert!(!none.enabled && none.policy.is_none() && none.authn().is_none());
        assert!(none.cors.allowed_origins.is_empty());
        let mut p = guide_policy();
        p.spec.enabled = false;
        p.spec.cors = Some(crate::api::Cors { allowed_origins: vec!["https://app.example.com".into()] });
        let off = render_policy(Some(&p));
        assert!(!off.enabled && off.authn().is_none() && off.tls_in_force().is_none());
        assert_eq!(off.policy.as_deref(), Some("default-policy"));
        assert!(off.cors.allows("https://app.example.com"), "origins are not enforcement: kept");
    }

    #[test]
    fn the_gateway_reads_what_the_operator_writes() {
        let mut p = guide_policy();
        p.spec.authorization.as_mut().unwrap().anonymous_tools = vec!["echo".into()];
        let text = serde_json::to_string(&render_policy(Some(&p))).unwrap();
        let back = PolicyDocument::from_json(&text).unwrap();
        assert_eq!(back.authz().unwrap().anonymous_tools, vec!["echo"]);
        assert_eq!(back, render_policy(Some(&p)));
    }

    #[test]
    fn burst_defaults_to_rate() {
        let mut p = guide_policy();
        p.spec.rate_limiting.as_mut().unwrap().burst_size = None;
        assert_eq!(render_policy(Some(&p)).rate_limiting.unwrap().burst_size, Some(100));
    }
}
