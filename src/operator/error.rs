//! Errors of a reconcile pass, classified so that `error_policy` can pick a requeue delay
//! and metrics can count them by a stable label.

use crate::client::ClientError;

/// Why a reconcile pass did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (status patch, finalizer patch, Secret read…).
    #[error("Kubernetes API: {what}: {source}")]
    Kube {
        /// What the operator was doing.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The engine refused an RPC or could not be reached; the Milvus code is in the text.
    #[error(transparent)]
    Engine(#[from] ClientError),
    /// The referenced `Coordinator` is missing or cannot be used.
    #[error("coordinator {namespace}/{name}: {message}")]
    Coordinator {
        /// Namespace of the reference.
        namespace: String,
        /// Name of the Coordinator.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The credentials Secret of a Coordinator is missing or incomplete.
    #[error("credentials Secret {namespace}/{name}: {message}")]
    Credentials {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is wrong (never the secret values).
        message: String,
    },
    /// The credentials Secret may not be used (not opted in, or a service-account token):
    /// nothing of it is sent anywhere.
    #[error("credentials Secret {namespace}/{name} refused: {message}")]
    CredentialsRefused {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is missing.
        message: String,
    },
    /// The engine endpoint is not on the operator's allow-list: no connection is made.
    #[error("endpoint {endpoint} refused: {message}")]
    EndpointRefused {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// Deletion cannot finish yet (e.g. `HasAliases`): the finalizer stays and the object
    /// is retried. Not a failure of the operator, so it is counted apart.
    #[error("deletion waits: {reason}: {message}")]
    Blocked {
        /// The `Ready=False` reason.
        reason: &'static str,
        /// Why.
        message: String,
    },
    /// The object lacks metadata every stored object has (namespace, name).
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
    /// The informer caches have not completed their first list in time.
    #[error("informer caches did not sync within {0:?}")]
    CachesNotSynced(std::time::Duration),
}

impl Error {
    /// Wraps a Kubernetes client error with what was being done.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source,
        }
    }

    /// Unwraps the finalizer helper's error: the reconcile's own error comes back as is,
    /// finalizer patch failures become [`Error::Kube`].
    pub fn from_finalizer(error: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match error {
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            F::AddFinalizer(source) => Error::kube("adding the finalizer", source),
            F::RemoveFinalizer(source) => Error::kube("removing the finalizer", source),
            F::UnnamedObject => Error::MissingMetadata("name"),
            F::InvalidFinalizer => Error::MissingMetadata("valid finalizer path"),
        }
    }

    /// Errors a retry will not fix until someone edits something (bad input, name clashes
    /// in the engine, missing credentials): retried at the resync interval, not hot.
    pub fn is_terminal(&self) -> bool {
        match self {
            Error::Engine(error) => error.is_terminal(),
            Error::Credentials { .. }
            | Error::CredentialsRefused { .. }
            | Error::EndpointRefused { .. } => true,
            _ => false,
        }
    }

    /// A stable, low-cardinality label for the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Engine(ClientError::Unreachable { .. }) => "engine_unreachable",
            Error::Engine(ClientError::Engine { .. }) => "engine",
            Error::Coordinator { .. } => "coordinator",
            Error::Credentials { .. } => "credentials",
            Error::CredentialsRefused { .. } => "credentials_refused",
            Error::EndpointRefused { .. } => "endpoint_refused",
            Error::Blocked { .. } => "blocked",
            Error::MissingMetadata(_) => "metadata",
            Error::CachesNotSynced(_) => "cache",
        }
    }
}
