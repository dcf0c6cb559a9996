//! Errors and their classes.
//!
//! Every error names the thing at fault (a path, a digest, an archive entry)
//! in one line. Each error has a class; the binary maps classes to exit codes
//! (see [`ErrorClass::exit_code`]) so that scripts and cron can act on them.
//! Integrity errors are never downgraded to warnings.

use std::io;
use std::path::Path;

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
            ErrorClass::Network => 6,
            ErrorClass::Interrupted => 130,
            ErrorClass::Format | ErrorClass::Unsupported | ErrorClass::Io => 1,
        }
    }

    /// Could the same operation succeed if tried again?
    pub fn is_transient(self) -> bool {
        self == ErrorClass::Network
    }
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
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Usage(_) => ErrorClass::Usage,
            Error::NotFound(_) => ErrorClass::NotFound,
            Error::Format(_) => ErrorClass::Format,
            Error::Integrity(_) => ErrorClass::Integrity,
            Error::Unsupported(_) => ErrorClass::Unsupported,
            Error::Io { .. } => ErrorClass::Io,
            Error::Auth(_) => ErrorClass::Auth,
            Error::Network(_) => ErrorClass::Network,
            Error::Interrupted => ErrorClass::Interrupted,
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
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        let inner = e.into_inner().expect("checked above");
        return Ok(*inner.downcast::<Error>().expect("checked above"));
    }
    Err(e)
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        e.into_io()
    }
}
