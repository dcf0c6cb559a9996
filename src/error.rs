//! Errors and their classes.
//!
//! Every error names the thing at fault (a path, a digest, an archive entry,
//! a registry) in one line. Each error has a class; the binary maps classes
//! to exit codes in one table ([`ErrorClass::exit_code`]) so that scripts
//! and cron can act on them.
//!
//! Policy:
//! - Retryable (transient) is exactly the `Network` class
//!   ([`ErrorClass::is_transient`]): a registry that could not be reached,
//!   a connection that broke, or an answer 408, 429 or 5xx. The registry
//!   client retries these with backoff, and the engine retries a blob whose
//!   stream failed. Everything else is permanent and fails at once.
//! - [`Error::Quota`] is a request imgsync itself held back: the registry's
//!   quota is down to the configured `rate-limit-reserve`. Not transient
//!   within a run (the quota returns in hours); exit 6 like a network
//!   failure for `copy`, and a failed image (exit 1) for `sync`.
//! - [`Error::Registry`] is an error status from a registry; it carries the
//!   status and the distribution error code (`NAME_UNKNOWN`,
//!   `MANIFEST_UNKNOWN`, `DENIED`, ...) so that callers branch on them, not
//!   on text. Its class follows the status: 401/403 are `Auth`, 404
//!   `NotFound`, transient statuses `Network`, the rest `Format`.
//! - [`Error::Transport`] is a registry connection that failed before an
//!   answer, with what failed ([`TransportFailure`]): a certificate that
//!   does not verify is permanent (retrying cannot fix it, the message says
//!   what to pass), a broken connection is transient.
//! - [`Error::Blob`] is a blob whose bytes do not match its descriptor; it
//!   carries the digest, so a bundle can name the volume that holds it.
//! - Integrity errors are never downgraded to warnings.
//! - Messages never carry secrets (passwords, tokens, `Authorization`).

use std::io;
use std::path::Path;

use crate::content::Digest;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an error is, independent of where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// Bad command line, unknown transport, unparsable reference.
    Usage,
    /// Something named does not exist (file, image in an archive, blob).
    NotFound,
    /// The input is not in the format it claims (bad JSON, bad tar, ...).
    Format,
    /// Content does not match its digest, size or DiffID.
    Integrity,
    /// A capability imgsync does not have (yet) or a conversion it refuses.
    Unsupported,
    /// Reading or writing the file system failed.
    Io,
    /// Credentials missing or refused, or permission denied by a registry.
    Auth,
    /// A registry could not be reached or kept failing (after retries).
    Network,
    /// A registry's request quota is down to the reserve the
    /// configuration keeps: nothing more is asked of it until the quota
    /// returns (hours, on Docker Hub), so retrying within a run is useless.
    Quota,
    /// The user interrupted the run.
    Interrupted,
}

impl ErrorClass {
    /// The process exit code for a failure of this class.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Usage => 2,
            ErrorClass::Auth => 3,
            ErrorClass::NotFound => 4,
            ErrorClass::Integrity => 5,
            ErrorClass::Network | ErrorClass::Quota => 6,
            ErrorClass::Interrupted => 130,
            ErrorClass::Format | ErrorClass::Unsupported | ErrorClass::Io => 1,
        }
    }

    /// Could the same operation succeed if tried again?
    pub fn is_transient(self) -> bool {
        self == ErrorClass::Network
    }
}

/// What failed on a registry connection that got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// The server's certificate did not verify, or it refused ours.
    Certificate,
    /// Another TLS failure (a server that does not speak TLS, say).
    Tls,
    /// No connection could be made (refused, no route, name unknown).
    Connect,
    /// The connection or the answer took too long.
    Timeout,
    /// The connection broke, or another failure of the HTTP exchange.
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Integrity(String),
    /// A blob's bytes do not match its descriptor: digest, size, or the
    /// DiffID of what it decompresses to.
    #[error("{message}")]
    Blob {
        /// The digest the blob was asked for by.
        digest: Digest,
        /// The whole line shown to the user.
        message: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Network(String),
    /// A registry answered with an error status.
    #[error("{message}")]
    Registry {
        /// The registry's host (`registry.example:5000`).
        registry: String,
        /// The HTTP status.
        status: u16,
        /// The first distribution error code of the body, if it had one.
        code: Option<String>,
        /// The whole line shown to the user: what was being done, where,
        /// the status, the registry's code and message, and a hint.
        message: String,
        class: ErrorClass,
    },
    /// A registry's connection failed before it answered.
    #[error("{message}")]
    Transport {
        /// The registry's host.
        registry: String,
        failure: TransportFailure,
        /// The whole line shown to the user.
        message: String,
    },
    /// A request held back to keep a registry's quota reserve.
    #[error("{message}")]
    Quota {
        /// The registry's host.
        registry: String,
        /// The whole line shown to the user: the registry, what is left of
        /// its quota and when it returns.
        message: String,
    },
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Usage(_) => ErrorClass::Usage,
            Error::NotFound(_) => ErrorClass::NotFound,
            Error::Format(_) => ErrorClass::Format,
            Error::Integrity(_) | Error::Blob { .. } => ErrorClass::Integrity,
            Error::Unsupported(_) => ErrorClass::Unsupported,
            Error::Io { .. } => ErrorClass::Io,
            Error::Auth(_) => ErrorClass::Auth,
            Error::Network(_) | Error::Transport { .. } => ErrorClass::Network,
            Error::Registry { class, .. } => *class,
            Error::Quota { .. } => ErrorClass::Quota,
            Error::Interrupted => ErrorClass::Interrupted,
        }
    }

    /// Something named does not exist: a missing file, or a registry's
    /// 404 (which is an [`Error::Registry`], so match on this, not on the
    /// `NotFound` variant).
    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }

    /// The distribution error code a registry answered with
    /// (`NAME_UNKNOWN`, ...), if this is such an answer.
    pub fn registry_code(&self) -> Option<&str> {
        match self {
            Error::Registry { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// A registry's certificate did not verify (or it refused ours).
    pub fn is_certificate_failure(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                failure: TransportFailure::Certificate,
                ..
            }
        )
    }

    /// The same error again, for the second caller of a cached failure.
    /// An I/O error keeps its kind and text (its source is not cloneable).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Usage(m) => Error::Usage(m.clone()),
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::Format(m) => Error::Format(m.clone()),
            Error::Integrity(m) => Error::Integrity(m.clone()),
            Error::Blob { digest, message } => Error::Blob {
                digest: digest.clone(),
                message: message.clone(),
            },
            Error::Unsupported(m) => Error::Unsupported(m.clone()),
            Error::Io { what, source } => Error::Io {
                what: what.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Auth(m) => Error::Auth(m.clone()),
            Error::Network(m) => Error::Network(m.clone()),
            Error::Registry {
                registry,
                status,
                code,
                message,
                class,
            } => Error::Registry {
                registry: registry.clone(),
                status: *status,
                code: code.clone(),
                message: message.clone(),
                class: *class,
            },
            Error::Transport {
                registry,
                failure,
                message,
            } => Error::Transport {
                registry: registry.clone(),
                failure: *failure,
                message: message.clone(),
            },
            Error::Quota { registry, message } => Error::Quota {
                registry: registry.clone(),
                message: message.clone(),
            },
            Error::Interrupted => Error::Interrupted,
        }
    }

    /// Wraps an I/O error with what was being done. If the I/O error carries
    /// one of our own errors (a verifying reader failing mid-stream), that
    /// error is returned instead, so an integrity failure stays one.
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        match unwrap_inner(source) {
            Ok(inner) => inner,
            Err(source) => {
                if source.kind() == io::ErrorKind::NotFound {
                    return Error::NotFound(format!("{}: no such file or directory", what.into()));
                }
                Error::Io {
                    what: what.into(),
                    source,
                }
            }
        }
    }

    /// An I/O error on a path.
    pub fn path(action: &str, path: &Path, source: io::Error) -> Error {
        Error::io(format!("{action} {}", path.display()), source)
    }

    /// Packs this error into an `io::Error` so it can cross a `Read`/`Write`
    /// boundary and be recovered by [`Error::io`].
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

fn unwrap_inner(e: io::Error) -> std::result::Result<Error, io::Error> {
    e.downcast::<Error>()
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        e.into_io()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: Option<&str>, class: ErrorClass) -> Error {
        Error::Registry {
            registry: "r.example".into(),
            status,
            code: code.map(str::to_string),
            message: format!("GET manifest a:1 on r.example: {status}"),
            class,
        }
    }

    #[test]
    fn a_registry_answer_exits_by_its_class_and_keeps_its_code() {
        let missing = answer(404, Some("MANIFEST_UNKNOWN"), ErrorClass::NotFound);
        assert_eq!(missing.class().exit_code(), 4);
        assert!(missing.is_not_found());
        assert_eq!(missing.registry_code(), Some("MANIFEST_UNKNOWN"));
        assert_eq!(missing.to_string(), "GET manifest a:1 on r.example: 404");
        let denied = answer(403, Some("DENIED"), ErrorClass::Auth);
        assert_eq!(denied.class().exit_code(), 3);
        assert!(!denied.class().is_transient());
        assert!(
            answer(503, None, ErrorClass::Network)
                .class()
                .is_transient()
        );
    }

    #[test]
    fn a_certificate_failure_is_a_network_failure_told_apart_by_type() {
        let e = Error::Transport {
            registry: "r.example".into(),
            failure: TransportFailure::Certificate,
            message: "r.example: TLS connection failed: invalid peer certificate".into(),
        };
        assert!(e.is_certificate_failure());
        assert_eq!(e.class().exit_code(), 6);
        let again = e.duplicate();
        assert!(again.is_certificate_failure());
        assert_eq!(again.to_string(), e.to_string());
        let reset = Error::Transport {
            registry: "r.example".into(),
            failure: TransportFailure::Other,
            message: "connection reset".into(),
        };
        assert!(!reset.is_certificate_failure());
    }
}
