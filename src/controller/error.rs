//! Reconcile errors. The variant name is the stable label used for metrics.

/// Why a reconcile did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (transient: retried with backoff).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer, or the wrapped reconcile, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Deletion waits until the workload's pods are gone.
    #[error("waiting for {0} pod(s) to terminate")]
    PodsTerminating(usize),
    /// The object has no namespace (all kinds are namespaced).
    #[error("object has no namespace")]
    MissingNamespace,
}

impl Error {
    /// Stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "Kube",
            Self::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.metric_label(),
                _ => "Finalizer",
            },
            Self::PodsTerminating(_) => "PodsTerminating",
            Self::MissingNamespace => "MissingNamespace",
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;
