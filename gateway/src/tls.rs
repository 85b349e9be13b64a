//! TLS termination: minimum version from the policy, certificate and key from files that are
//! re-read when they change (a rotated Secret), optional client certificates for mtls.

use crate::auth::mtls::ClientCa;
use crate::config::{TlsMinVersion, TlsSettings};
use anyhow::Context;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// PEM certificates of a file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// Accepts any client certificate whose holder proves possession of its key; the chain itself
/// is checked by the mtls method ([`crate::auth::mtls`]), which answers 401 when it fails.
#[derive(Debug)]
struct ProveKeyOnly {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ProveKeyOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A verifier for client certificates chaining to the CA bundle in `ca_file`.
pub fn client_verifier(ca_file: &Path) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca_file)? {
        roots.add(c).with_context(|| format!("CA certificate in {}", ca_file.display()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::crypto_provider())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")
}

/// Build the server configuration.
pub fn server_config(
    tls: &TlsSettings,
    client_ca: Option<&Arc<dyn ClientCertVerifier>>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = load_certs(&tls.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("reading the private key {}", tls.key_file.display()))?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsMinVersion::V1_3 => &[&rustls::version::TLS13],
        TlsMinVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(crate::crypto_provider())
        .with_protocol_versions(versions)
        .context("TLS versions")?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(Arc::new(ProveKeyOnly { inner: ca.clone() })),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration in force, swapped when the files change.
#[derive(Clone)]
pub struct TlsState {
    /// Server configuration for new connections.
    pub config: Arc<RwLock<Arc<ServerConfig>>>,
    /// The client CA (mtls), shared with the authenticator.
    pub client_ca: Option<ClientCa>,
    tls: TlsSettings,
    ca_file: Option<PathBuf>,
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &[&Path]) -> Stamp {
    paths.iter().map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

impl TlsState {
    /// Load the files now (failing when they are unusable).
    pub fn load(tls: &TlsSettings, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let ca = ca_file.map(client_verifier).transpose()?;
        let config = server_config(tls, ca.as_ref())?;
        Ok(Self {
            config: Arc::new(RwLock::new(config)),
            client_ca: ca.map(|c| Arc::new(RwLock::new(c))),
            tls: tls.clone(),
            ca_file: ca_file.map(Path::to_path_buf),
        })
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reload(&self) -> anyhow::Result<()> {
        let ca = self.ca_file.as_deref().map(client_verifier).transpose()?;
        let config = server_config(&self.tls, ca.as_ref())?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        if let (Some(slot), Some(ca)) = (&self.client_ca, ca) {
            *slot.write().unwrap_or_else(|e| e.into_inner()) = ca;
        }
        Ok(())
    }

    /// Poll the files' modification times and sizes; reload on change, keep the old
    /// configuration when the new files are unusable (half-written, mismatched).
    pub fn spawn_watcher(&self, every: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let paths: Vec<PathBuf> =
                [Some(this.tls.cert_file.clone()), Some(this.tls.key_file.clone()), this.ca_file.clone()]
                    .into_iter()
                    .flatten()
                    .collect();
            let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            let mut last = stamp(&refs);
            loop {
                tokio::time::sleep(every).await;
                let now = stamp(&refs);
                if now == last {
                    continue;
                }
                match this.reload() {
                    Ok(()) => {
                        tracing::info!("TLS certificate reloaded");
                        last = now;
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "TLS files changed but are not usable yet"),
                }
            }
        });
    }
}
