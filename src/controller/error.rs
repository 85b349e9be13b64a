//! Reconcile errors. The variant name is the stable label used for metrics.

/// Why a reconcile did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (transient: retried with backoff).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The API server refused a child object as invalid (or it cannot be stored); the
    /// condition and a Warning Event quote why. Retried with backoff.
    #[error("refused: {0}")]
    Refused(String),
    /// The object has no namespace (all kinds are namespaced).
    #[error("object has no namespace")]
    MissingNamespace,
}

impl Error {
    /// Stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "Kube",
            Self::Refused(_) => "Refused",
            Self::MissingNamespace => "MissingNamespace",
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;
