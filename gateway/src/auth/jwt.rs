//! JWT: HS* with a shared secret, RS/PS/ES/EdDSA with keys from a JWKS (cached, refreshed when
//! stale and when a token names an unknown `kid`). `alg: none` never parses, and the algorithm
//! family must match where the key came from (no HMAC with a public key).

use super::{AuthError, Identity};
use crate::authz::roles_from_claims;
use crate::config::JwtSettings;
use crate::httpclient::{fetch, HttpsClient};
use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Keys older than this are fetched again on the next use.
const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Clock skew accepted on exp and nbf.
const LEEWAY_SECS: u64 = 30;

fn invalid(detail: impl Into<String>) -> AuthError {
    AuthError::new("invalid_token", detail)
}

#[derive(Default)]
struct JwksState {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
}

/// A cached JWKS.
pub struct Jwks {
    uri: String,
    client: HttpsClient,
    state: RwLock<JwksState>,
    refresh: tokio::sync::Mutex<()>,
    min_refresh: Duration,
}

impl Jwks {
    fn new(uri: &str, client: HttpsClient, min_refresh: Duration) -> Self {
        Self {
            uri: uri.to_string(),
            client,
            state: RwLock::default(),
            refresh: tokio::sync::Mutex::new(()),
            min_refresh,
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let usable = |k: &&Jwk| key_fits(k, alg);
        match kid {
            Some(kid) => state.keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)).cloned(),
            None => {
                let mut fitting = state.keys.iter().filter(usable);
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    fn age(&self) -> Option<Duration> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).fetched.map(|t| t.elapsed())
    }

    /// Fetch again, at most once per `min_refresh` (unless `force_stale` and the keys are old).
    async fn refresh(&self, why: &str) -> Result<(), AuthError> {
        let _one_at_a_time = self.refresh.lock().await;
        if self.age().is_some_and(|a| a < self.min_refresh) {
            return Ok(());
        }
        let req = http::Request::get(&self.uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| invalid(format!("JWKS URI: {e}")))?;
        let result = fetch(&self.client, req).await;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Even a failed fetch counts, so that a down IdP is not hammered.
        state.fetched = Some(Instant::now());
        match result {
            Ok((status, body)) if status.is_success() => {
                let doc: Value =
                    serde_json::from_slice(&body).map_err(|e| invalid(format!("JWKS is not JSON: {e}")))?;
                // One key we cannot read (an encryption key, an unknown alg) must not hide the rest.
                let keys: Vec<Jwk> = doc
                    .get("keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                    .collect();
                tracing::info!(uri = %self.uri, keys = keys.len(), why, "JWKS fetched");
                state.keys = keys;
                Ok(())
            }
            Ok((status, _)) => Err(invalid(format!("JWKS fetch answered {status}"))),
            Err(e) => Err(invalid(format!("JWKS fetch failed: {e}"))),
        }
    }

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, AuthError> {
        if self.age().is_none_or(|a| a > JWKS_MAX_AGE) {
            let _ = self.refresh("stale").await;
        }
        if let Some(k) = self.find(kid, alg) {
            return Ok(k);
        }
        self.refresh("unknown kid").await?;
        self.find(kid, alg).ok_or_else(|| match kid {
            Some(kid) => invalid(format!("unknown kid {kid:?}")),
            None => invalid("token has no kid and the JWKS has no single key for its algorithm"),
        })
    }
}

/// The key type a JWK must have for an algorithm, and no contradicting `alg` or `use`.
fn key_fits(k: &Jwk, alg: Algorithm) -> bool {
    let family_ok = matches!(
        (&k.algorithm, alg),
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
            | (AlgorithmParameters::RSA(_), Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
            | (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
            | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
    );
    let alg_ok = k.common.key_algorithm.as_ref().is_none_or(|ka| {
        serde_json::to_value(ka).ok().zip(serde_json::to_value(alg).ok()).is_some_and(|(a, b)| a == b)
    });
    let use_ok = !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption));
    family_ok && alg_ok && use_ok
}

/// The registered claims with exactly the types RFC 7519 gives them, checked on top of the
/// library's validation (which accepts, for instance, an `iss` array holding the issuer, and
/// treats a claim of the wrong type like a missing one): `iss` a single string equal to the
/// configured issuer, `exp`/`nbf`/`iat` numbers, `aud` a string or an array of strings, `sub`
/// a string.
fn check_claim_types(claims: &Value, issuer: Option<&str>) -> Result<(), AuthError> {
    let Some(obj) = claims.as_object() else { return Err(invalid("claims are not an object")) };
    if let Some(want) = issuer {
        match obj.get("iss") {
            Some(Value::String(iss)) if iss == want => {}
            Some(Value::String(_)) => return Err(invalid("wrong issuer")),
            Some(_) => return Err(invalid("iss must be a single string")),
            None => return Err(invalid("missing claim iss")),
        }
    } else if obj.get("iss").is_some_and(|v| !v.is_string()) {
        return Err(invalid("iss must be a single string"));
    }
    for c in ["exp", "nbf", "iat"] {
        if obj.get(c).is_some_and(|v| !v.is_number()) {
            return Err(invalid(format!("{c} must be a number")));
        }
    }
    match obj.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {}
        Some(_) => return Err(invalid("aud must be a string or an array of strings")),
    }
    if obj.get("sub").is_some_and(|v| !v.is_string()) {
        return Err(invalid("sub must be a string"));
    }
    Ok(())
}

/// Verifies bearer JWTs.
pub struct JwtVerifier {
    secret: Option<Vec<u8>>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audiences: Vec<String>,
    roles_claim: String,
}

impl JwtVerifier {
    /// From the policy; reads the secret file now.
    pub fn new(p: &JwtSettings, roles_claim: &str, client: HttpsClient, min_refresh: Duration) -> anyhow::Result<Self> {
        let secret = match &p.secret_file {
            Some(f) => {
                let s = std::fs::read(f).map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))?;
                anyhow::ensure!(!s.is_empty(), "{} is empty", f.display());
                Some(s)
            }
            None => None,
        };
        Ok(Self {
            secret,
            jwks: p.jwks_uri.as_deref().map(|u| Jwks::new(u, client, min_refresh)),
            issuer: p.issuer.clone(),
            audiences: p.audiences.clone(),
            roles_claim: roles_claim.to_string(),
        })
    }

    /// Required issuer.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Verify a token and read the identity from its claims.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = decode_header(token).map_err(|e| invalid(format!("malformed token or algorithm: {e}")))?;
        let alg = header.alg;
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => match &self.secret {
                Some(s) => DecodingKey::from_secret(s).map_err(|e| invalid(format!("unusable secret: {e}")))?,
                None => return Err(invalid(format!("algorithm {alg:?} not accepted (no shared secret)"))),
            },
            _ => {
                let Some(jwks) = &self.jwks else {
                    return Err(invalid(format!("algorithm {alg:?} not accepted (no JWKS)")));
                };
                let jwk = jwks.key_for(header.kid.as_deref(), alg).await?;
                if !key_fits(&jwk, alg) {
                    return Err(invalid(format!("key {:?} does not fit algorithm {alg:?}", header.kid)));
                }
                DecodingKey::from_jwk(&jwk).map_err(|e| invalid(format!("unusable JWK: {e}")))?
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        if self.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audiences);
            v.required_spec_claims.insert("aud".into());
        }
        let data = decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid(match e.kind() {
                K::ExpiredSignature => "token expired".to_string(),
                K::ImmatureSignature => "token not yet valid (nbf)".to_string(),
                K::InvalidIssuer => "wrong issuer".to_string(),
                K::InvalidAudience => "wrong audience".to_string(),
                K::InvalidSignature => "bad signature".to_string(),
                K::InvalidAlgorithm => "algorithm does not match the key".to_string(),
                K::MissingRequiredClaim(c) => format!("missing claim {c}"),
                K::InvalidClaimFormat(c) => format!("claim {c} has the wrong type"),
                K::Json(e) => format!("claims are malformed: {e}"),
                other => format!("{other:?}"),
            })
        })?;
        let claims = data.claims;
        check_claim_types(&claims, self.issuer.as_deref())?;
        // A token that names no subject is refused: all of them would be one caller ("unknown"),
        // sharing sessions and a rate limit.
        let (claim, subject) = ["sub", "client_id", "azp"]
            .into_iter()
            .find_map(|c| claims.get(c).and_then(Value::as_str).map(|s| (c, s.to_string())))
            .ok_or_else(|| invalid("the token names no subject (sub, client_id or azp)"))?;
        // Accepted until exp plus the clock skew allowance, as above.
        let until = super::numeric_date(claims.get("exp")).map(|exp| exp.saturating_add(LEEWAY_SECS));
        Ok(Identity::new(&subject, "jwt", roles_from_claims(&claims, &self.roles_claim)).until(until).from_claim(claim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn verifier(secret: &[u8]) -> JwtVerifier {
        JwtVerifier {
            secret: Some(secret.to_vec()),
            jwks: None,
            issuer: Some("https://issuer".into()),
            audiences: vec!["mcp".into()],
            roles_claim: "roles".into(),
        }
    }

    fn hs(claims: Value, secret: &[u8]) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    fn good() -> Value {
        json!({"sub": "alice", "iss": "https://issuer", "aud": "mcp", "exp": now() + 600, "roles": ["developer"]})
    }

    #[tokio::test]
    async fn hs256_accepted_with_roles() {
        let id = verifier(b"k").verify(&hs(good(), b"k")).await.unwrap();
        assert_eq!(id.subject, "alice");
        assert_eq!(id.roles, vec!["developer"]);
    }

    #[tokio::test]
    async fn the_subject_claim_keys_the_caller_and_a_token_without_one_is_refused() {
        let v = verifier(b"k");
        let user = v.verify(&hs(good(), b"k")).await.unwrap();
        let mut client = good();
        client.as_object_mut().unwrap().remove("sub");
        client["client_id"] = json!("alice");
        let client = v.verify(&hs(client, b"k")).await.unwrap();
        assert_eq!((user.subject.as_str(), client.subject.as_str()), ("alice", "alice"));
        assert_ne!(user.session_owner(), client.session_owner(), "a client id never passes for a user's subject");
        assert_ne!(user.rate_key(), client.rate_key());
        let mut nobody = good();
        nobody.as_object_mut().unwrap().remove("sub");
        let e = v.verify(&hs(nobody, b"k")).await.unwrap_err();
        assert!(e.detail.contains("no subject"), "{}", e.detail);
        // A float exp still bounds the streams the token opens.
        let mut float = good();
        float["exp"] = json!(now() as f64 + 600.5);
        assert!(v.verify(&hs(float, b"k")).await.unwrap().expires_at.is_some());
    }

    #[tokio::test]
    async fn claim_checks() {
        let v = verifier(b"k");
        let with = |k: &str, val: Value| {
            let mut c = good();
            c[k] = val;
            hs(c, b"k")
        };
        let cases = [
            (with("exp", json!(now() - 3600)), "token expired"),
            (with("nbf", json!(now() + 3600)), "token not yet valid (nbf)"),
            (with("iss", json!("https://evil")), "wrong issuer"),
            (with("aud", json!("other")), "wrong audience"),
            (hs(good(), b"other-key"), "bad signature"),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(&token).await.unwrap_err().detail, want);
        }
        let strict = [
            // The library or our own check refuses each; the message names the claim.
            (with("iss", json!(["https://issuer"])), "iss"),
            (with("iss", json!(["https://evil", "https://issuer"])), "iss"),
            (with("nbf", json!(format!("{}", now() + 3600))), "nbf"),
            (with("exp", json!("99999999999")), "exp"),
            (with("aud", json!(["mcp", 7])), "aud"),
            (with("sub", json!({"a": 1})), "malformed"),
        ];
        for (token, want) in strict {
            let e = v.verify(&token).await.unwrap_err();
            assert!(e.detail.contains(want), "{} for {want}", e.detail);
        }
        let mut no_iss = good();
        no_iss.as_object_mut().unwrap().remove("iss");
        assert!(v.verify(&hs(no_iss, b"k")).await.unwrap_err().detail.contains("iss"));
        let mut no_exp = good();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(v.verify(&hs(no_exp, b"k")).await.unwrap_err().detail.contains("exp"));
    }

    #[tokio::test]
    async fn alg_none_and_asymmetric_without_jwks_are_rejected() {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(good()));
        assert_eq!(verifier(b"k").verify(&none).await.unwrap_err().reason, "invalid_token");
        let rs = format!("{}.{}.c2ln", b64(json!({"alg": "RS256", "kid": "a"})), b64(good()));
        assert!(verifier(b"k").verify(&rs).await.unwrap_err().detail.contains("no JWKS"));
    }

    #[test]
    fn key_family_must_fit() {
        let rsa: Jwk = serde_json::from_value(json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"})).unwrap();
        assert!(key_fits(&rsa, Algorithm::RS256));
        assert!(!key_fits(&rsa, Algorithm::HS256));
        assert!(!key_fits(&rsa, Algorithm::ES256));
        let rsa_512: Jwk =
            serde_json::from_value(json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RS512"})).unwrap();
        assert!(!key_fits(&rsa_512, Algorithm::RS256), "alg of the key must match");
        let oct: Jwk = serde_json::from_value(json!({"kty": "oct", "k": "c2VjcmV0"})).unwrap();
        assert!(!key_fits(&oct, Algorithm::HS256), "no symmetric keys from a JWKS");
    }
}
