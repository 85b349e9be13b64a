//! Secrets the operator issues when a SecurityPolicy asks for them, so that a policy works on a
//! fresh cluster without a CA or an identity provider: a self-signed TLS certificate
//! (`spec.encryption.selfSigned`) and a random HS256 key (`spec.authentication.jwt.generateSecret`).
//!
//! Only a missing Secret is created; a Secret is renewed only when the operator issued it (its
//! annotation says so). Issued Secrets are owned by the policy that asked, so they go with it.
//! Everything here is pure: the controller reads and writes.

use crate::api::{AuthMethod, SecurityPolicy, SecurityPolicySpec};
use crate::consts::{LABEL_MANAGED_BY, MANAGED_BY};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Annotation on an issued Secret: what it holds (`self-signed-tls` or `jwt-hs256-key`).
pub const ANNOTATION_ISSUED: &str = "mcp.n-takatsu.dev/issued";
/// Annotation on an issued certificate Secret: when the certificate expires (RFC 3339).
pub const ANNOTATION_NOT_AFTER: &str = "mcp.n-takatsu.dev/not-after";
/// Validity of an issued certificate.
pub const CERT_VALIDITY: jiff::SignedDuration = jiff::SignedDuration::from_hours(365 * 24);
/// An issued certificate is renewed when it expires within this.
pub const RENEW_BEFORE: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

const KIND_TLS: &str = "self-signed-tls";
const KIND_JWT: &str = "jwt-hs256-key";

/// A Secret a policy asks the operator to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Issue {
    /// A self-signed certificate in a kubernetes.io/tls Secret.
    SelfSignedTls {
        /// Secret name (`spec.encryption.certSecretName`).
        secret: String,
    },
    /// A random HS256 key.
    JwtKey {
        /// Secret name (`spec.authentication.jwt.secretRef.name`).
        secret: String,
        /// Key in the Secret (`spec.authentication.jwt.secretRef.key`).
        key: String,
    },
}

impl Issue {
    /// Name of the Secret.
    pub fn secret(&self) -> &str {
        match self {
            Self::SelfSignedTls { secret } | Self::JwtKey { secret, .. } => secret,
        }
    }

    /// The field that asked for it, for messages.
    pub fn field(&self) -> &'static str {
        match self {
            Self::SelfSignedTls { .. } => "spec.encryption.selfSigned",
            Self::JwtKey { .. } => "spec.authentication.jwt.generateSecret",
        }
    }
}

/// What `spec` asks the operator to issue (only what the policy actually uses).
pub fn secrets_to_issue(spec: &SecurityPolicySpec) -> Vec<Issue> {
    let mut out = vec![];
    if let Some(enc) = spec.encryption.as_ref().filter(|e| e.tls_enabled && e.self_signed) {
        if let Some(secret) = enc.cert_secret_name.clone().filter(|s| !s.is_empty()) {
            out.push(Issue::SelfSignedTls { secret });
        }
    }
    if let Some(auth) = &spec.authentication {
        let jwt = auth.jwt.as_ref().filter(|j| j.generate_secret && auth.methods.contains(&AuthMethod::Jwt));
        if let Some(r) = jwt.and_then(|j| j.secret_ref.as_ref()) {
            out.push(Issue::JwtKey { secret: r.name.clone(), key: r.key.clone() });
        }
    }
    out
}

/// Whether `secret` was issued by the operator and its certificate is due for renewal at `now`.
pub fn due_for_renewal(secret: &Secret, now: jiff::Timestamp) -> bool {
    let annotations = secret.annotations();
    if annotations.get(ANNOTATION_ISSUED).map(String::as_str) != Some(KIND_TLS) {
        return false;
    }
    match annotations.get(ANNOTATION_NOT_AFTER).and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(not_after) => not_after.duration_since(now) < RENEW_BEFORE,
        // Ours, but unreadable: issue a fresh one.
        None => true,
    }
}

/// An issued Secret that `policy` also uses, with `policy` added to its owners (not as
/// controller): the garbage collector removes it only when every policy using it is gone. None
/// when it was not issued by the operator or `policy` already owns it.
pub fn co_owned(secret: &Secret, policy: &SecurityPolicy) -> Option<Secret> {
    if !secret.annotations().contains_key(ANNOTATION_ISSUED) {
        return None;
    }
    let uid = policy.uid()?;
    if secret.owner_references().iter().any(|o| o.uid == uid) {
        return None;
    }
    let mut owner = policy.controller_owner_ref(&())?;
    owner.controller = None;
    owner.block_owner_deletion = None;
    let mut out = secret.clone();
    out.metadata.owner_references.get_or_insert_with(Vec::new).push(owner);
    Some(out)
}

/// The Secret for `issue`, owned by `policy`. `now` dates a certificate.
pub fn issued_secret(policy: &SecurityPolicy, issue: &Issue, now: jiff::Timestamp) -> anyhow::Result<Secret> {
    let ns = policy.namespace().unwrap_or_default();
    let mut annotations = BTreeMap::new();
    let (type_, data) = match issue {
        Issue::SelfSignedTls { .. } => {
            let not_after = now + CERT_VALIDITY;
            let (cert, key) = self_signed_certificate(&ns, now, not_after)?;
            annotations.insert(ANNOTATION_ISSUED.to_string(), KIND_TLS.to_string());
            annotations.insert(ANNOTATION_NOT_AFTER.to_string(), not_after.to_string());
            let data = BTreeMap::from([
                ("tls.crt".to_string(), ByteString(cert.into_bytes())),
                ("tls.key".to_string(), ByteString(key.into_bytes())),
            ]);
            ("kubernetes.io/tls", data)
        }
        Issue::JwtKey { key, .. } => {
            annotations.insert(ANNOTATION_ISSUED.to_string(), KIND_JWT.to_string());
            ("Opaque", BTreeMap::from([(key.clone(), ByteString(random_hex_key()?.into_bytes()))]))
        }
    };
    let mut owner = policy.controller_owner_ref(&()).ok_or_else(|| anyhow::anyhow!("policy has no uid"))?;
    owner.block_owner_deletion = None;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(issue.secret().to_string()),
            namespace: Some(ns),
            labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())])),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some(type_.to_string()),
        data: Some(data),
        ..Default::default()
    })
}

/// A self-signed certificate (PEM) and its ECDSA P-256 key (PKCS#8 PEM) for the Services of `ns`.
fn self_signed_certificate(
    ns: &str,
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
) -> anyhow::Result<(String, String)> {
    let names = vec![format!("*.{ns}.svc"), format!("*.{ns}.svc.cluster.local"), "localhost".to_string()];
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("mcp-operator self-signed ({ns})"));
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before.as_second())?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after.as_second())?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// 256 random bits as 64 lower-case hex characters (printable, so it can be used from a shell).
fn random_hex_key() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(crate::build::hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::policy;

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn owned(mut p: SecurityPolicy) -> SecurityPolicy {
        p.metadata.uid = Some("uid-policy".into());
        p
    }

    #[test]
    fn only_what_the_policy_uses_and_asks_for_is_issued() {
        let both = policy(
            "{encryption: {tlsEnabled: true, certSecretName: tls, selfSigned: true}, authentication: {required: true, methods: [jwt], jwt: {secretRef: {name: k, key: hs256}, generateSecret: true}}}",
        );
        assert_eq!(
            secrets_to_issue(&both.spec),
            vec![
                Issue::SelfSignedTls { secret: "tls".into() },
                Issue::JwtKey { secret: "k".into(), key: "hs256".into() }
            ]
        );
        let not_asked = policy("{encryption: {tlsEnabled: true, certSecretName: tls}}");
        assert_eq!(secrets_to_issue(&not_asked.spec), vec![]);
        let tls_off = policy("{encryption: {tlsEnabled: false, certSecretName: tls, selfSigned: true}}");
        assert_eq!(secrets_to_issue(&tls_off.spec), vec![], "TLS off: no certificate needed");
        let jwt_unused = policy(
            "{authentication: {methods: [apikey], apiKeys: {secretRef: {name: a}}, jwt: {secretRef: {name: k, key: x}, generateSecret: true}}}",
        );
        assert_eq!(secrets_to_issue(&jwt_unused.spec), vec![], "jwt not among the methods");
    }

    #[test]
    fn a_certificate_is_for_the_namespace_services_and_dated() {
        let p = owned(policy("{encryption: {tlsEnabled: true, certSecretName: tls, selfSigned: true}}"));
        let issue = Issue::SelfSignedTls { secret: "tls".into() };
        let s = issued_secret(&p, &issue, now()).unwrap();
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(s.metadata.name.as_deref(), Some("tls"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("default"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("SecurityPolicy", "default-policy"));
        let data = s.data.as_ref().unwrap();
        let crt = String::from_utf8(data["tls.crt"].0.clone()).unwrap();
        let key = String::from_utf8(data["tls.key"].0.clone()).unwrap();
        assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"), "{crt}");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        // The certificate really names the namespace's Services (DER holds the SAN strings).
        let der = pem_der(&crt);
        for san in ["*.default.svc", "*.default.svc.cluster.local", "localhost"] {
            assert!(der.windows(san.len()).any(|w| w == san.as_bytes()), "SAN {san}");
        }
        assert_eq!(s.annotations()[ANNOTATION_NOT_AFTER], "2027-01-01T00:00:00Z");
        assert!(!due_for_renewal(&s, now()));
        assert!(!due_for_renewal(&s, "2026-12-01T00:00:00Z".parse().unwrap()), "31 days left");
        assert!(due_for_renewal(&s, "2026-12-03T00:00:00Z".parse().unwrap()), "29 days left");
    }

    #[test]
    fn a_shared_issued_secret_gets_every_user_as_owner_once() {
        let first = owned(policy("{}"));
        let mut second = policy("{}");
        second.metadata.name = Some("production-policy".into());
        second.metadata.uid = Some("uid-second".into());
        let issued = issued_secret(&first, &Issue::JwtKey { secret: "k".into(), key: "x".into() }, now()).unwrap();
        assert_eq!(co_owned(&issued, &first), None, "already owned");
        let shared = co_owned(&issued, &second).expect("second owner added");
        let owners = shared.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["default-policy", "production-policy"]);
        assert_eq!(owners.iter().filter(|o| o.controller == Some(true)).count(), 1, "one controller at most");
        assert_eq!(co_owned(&shared, &second), None, "added once");
        assert_eq!(co_owned(&Secret::default(), &second), None, "a Secret it did not issue is left alone");
    }

    #[test]
    fn a_secret_the_operator_did_not_issue_is_never_renewed() {
        let foreign = Secret::default();
        assert!(!due_for_renewal(&foreign, now()));
        let mut jwt = Secret::default();
        jwt.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_ISSUED.to_string(), KIND_JWT.to_string())]));
        assert!(!due_for_renewal(&jwt, now()), "keys do not expire");
    }

    #[test]
    fn a_jwt_key_is_random_hex_under_the_named_key() {
        let p = owned(policy("{}"));
        let issue = Issue::JwtKey { secret: "k".into(), key: "hs256".into() };
        let a = issued_secret(&p, &issue, now()).unwrap();
        let b = issued_secret(&p, &issue, now()).unwrap();
        let key = |s: &Secret| String::from_utf8(s.data.as_ref().unwrap()["hs256"].0.clone()).unwrap();
        assert_eq!(key(&a).len(), 64);
        assert!(key(&a).chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(key(&a), key(&b), "random");
        assert_eq!(a.type_.as_deref(), Some("Opaque"));
    }

    /// The DER bytes of the first PEM block.
    fn pem_der(pem: &str) -> Vec<u8> {
        let body: String =
            pem.lines().take_while(|l| !l.starts_with("-----END")).filter(|l| !l.starts_with("-----")).collect();
        // ByteString is base64 on the wire: the PEM body decodes as one.
        serde_json::from_value::<ByteString>(serde_json::Value::String(body)).unwrap().0
    }
}
