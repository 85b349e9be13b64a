//! Client certificates. The TLS layer accepts any certificate whose holder proves its key; the
//! chain is verified here against the policy's CA, so that a wrong certificate gets a 401 and an
//! audit record instead of a bare handshake failure. The identity is the subject CN, the roles
//! the subject O values (as Kubernetes reads client certificates).

use super::{AuthError, Identity};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::sync::{Arc, RwLock};

/// The current client CA verifier, replaced when the CA file changes.
pub type ClientCa = Arc<RwLock<Arc<dyn ClientCertVerifier>>>;

/// Verifies client certificate chains.
pub struct MtlsVerifier {
    ca: ClientCa,
}

impl MtlsVerifier {
    /// Around the TLS layer's CA.
    pub fn new(ca: ClientCa) -> Self {
        Self { ca }
    }

    /// Verify the chain and read the identity.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<Identity, AuthError> {
        let (end, intermediates) =
            chain.split_first().ok_or_else(|| AuthError::new("invalid_client_certificate", "empty chain"))?;
        let verifier = self.ca.read().unwrap_or_else(|e| e.into_inner()).clone();
        verifier
            .verify_client_cert(end, intermediates, UnixTime::now())
            .map_err(|e| AuthError::new("invalid_client_certificate", e.to_string()))?;
        let (cn, orgs) = subject_of(end)?;
        Ok(Identity::new(&cn, "mtls", orgs))
    }
}

/// CN and O values of a certificate's subject.
pub fn subject_of(cert: &CertificateDer<'_>) -> Result<(String, Vec<String>), AuthError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| AuthError::new("invalid_client_certificate", e.to_string()))?;
    let subject = parsed.subject();
    let cn = subject.iter_common_name().find_map(|a| a.as_str().ok()).unwrap_or("unknown").to_string();
    let orgs = subject.iter_organization().filter_map(|a| a.as_str().ok()).map(str::to_string).collect();
    Ok((cn, orgs))
}
