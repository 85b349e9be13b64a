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
    /// A reconcile (or its wait for the leader fence and the caches) took longer than its bound:
    /// dropped and retried with backoff, so that nothing that hangs holds a worker for good.
    #[error("{0} took longer than {1:?}")]
    TimedOut(&'static str, std::time::Duration),
    /// The leader fence closed while the reconcile ran (this replica may no longer lead): the
    /// reconcile was dropped at once, so that a deposed leader stops writing before another
    /// replica can take over.
    #[error("the leader fence closed during the reconcile")]
    Fenced,
}

impl Error {
    /// Stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "Kube",
            Self::Refused(_) => "Refused",
            Self::MissingNamespace => "MissingNamespace",
            Self::TimedOut(..) => "TimedOut",
            Self::Fenced => "Fenced",
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;
