//! What a registry's failure says, typed: the distribution error code of
//! an error answer (formats reference §6.6), and what failed on a
//! connection that got no answer, found by walking the error's sources
//! down to the TLS or I/O error rather than by reading its text.

use std::error::Error as StdError;
use std::io;

use super::transport::Response;
use crate::error::TransportFailure;

/// The bytes of an error answer read.
const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;

/// A registry's error body as shown after the status.
pub(super) struct ErrorBody {
    /// The first distribution error's code (`NAME_UNKNOWN`, `DENIED`, ...).
    pub code: Option<String>,
    /// ` (CODE: message)`, or ` (first line)` of a body that is not such
    /// JSON, or nothing for an empty body.
    pub shown: String,
}

impl ErrorBody {
    /// Reads the start of an error answer: enough for any error list or
    /// first line, and no more, whatever the registry sends.
    pub fn read(r: Response) -> ErrorBody {
        ErrorBody::parse(&r.text_prefix(MAX_ERROR_BODY_BYTES))
    }

    fn parse(text: &str) -> ErrorBody {
        #[derive(serde::Deserialize)]
        struct Errs {
            errors: Vec<E>,
        }
        #[derive(serde::Deserialize)]
        struct E {
            code: Option<String>,
            message: Option<String>,
        }
        if let Ok(errs) = serde_json::from_str::<Errs>(text)
            && let Some(e) = errs.errors.into_iter().next()
        {
            let shown = format!(
                " ({}: {})",
                e.code.as_deref().unwrap_or("UNKNOWN"),
                e.message.as_deref().unwrap_or("")
            );
            return ErrorBody {
                code: e.code,
                shown,
            };
        }
        let line = text.lines().next().unwrap_or("").trim();
        // At most 200 bytes of an HTML page or a proxy's text, cut on a
        // character boundary.
        let end = (0..=line.len().min(200))
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        ErrorBody {
            code: None,
            shown: if line.is_empty() {
                String::new()
            } else {
                format!(" ({})", &line[..end])
            },
        }
    }
}

/// What failed on an HTTP exchange that got no answer.
pub(super) fn transport_failure(e: &reqwest::Error) -> TransportFailure {
    match tls_failure(e) {
        Some(f) => f,
        None if e.is_timeout() => TransportFailure::Timeout,
        None if e.is_connect() => TransportFailure::Connect,
        None => TransportFailure::Other,
    }
}

/// `Certificate` or `Tls` when a TLS error is among the sources of `e`.
/// The TLS library's error travels inside an `io::Error`, whose `source()`
/// skips it: such an error is opened with `get_ref` instead.
fn tls_failure(e: &(dyn StdError + 'static)) -> Option<TransportFailure> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(classify_tls(t));
        }
        cur = match c.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => c.source(),
        };
    }
    None
}

fn classify_tls(e: &rustls::Error) -> TransportFailure {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::NoCertificatesPresented => TransportFailure::Certificate,
        // The server refused the certificate we presented (or wanted one).
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::CertificateRequired,
        ) => TransportFailure::Certificate,
        _ => TransportFailure::Tls,
    }
}

/// The error and its sources on one line.
pub fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_distribution_error_code_and_message() {
        let b = ErrorBody::parse(
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{}}]}"#,
        );
        assert_eq!(b.code.as_deref(), Some("NAME_UNKNOWN"));
        assert_eq!(
            b.shown,
            " (NAME_UNKNOWN: repository name not known to registry)"
        );
    }

    #[test]
    fn a_body_that_is_not_an_error_list_shows_its_first_line_and_no_code() {
        let b = ErrorBody::parse("<html>Bad gateway</html>\nmore");
        assert_eq!(
            (b.code, b.shown.as_str()),
            (None, " (<html>Bad gateway</html>)")
        );
        assert_eq!(ErrorBody::parse("").shown, "");
        // A long line of multi-byte characters is cut, not split inside
        // one: after one ASCII byte, byte 200 falls inside an `é`.
        let long = format!("a{}", "é".repeat(150));
        let shown = ErrorBody::parse(&long).shown;
        assert_eq!(shown, format!(" (a{})", "é".repeat(99)));
    }

    /// An error that hides its cause behind `source()`, as HTTP clients do.
    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn finds_a_certificate_failure_inside_an_io_error() {
        let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = Wrapped(io::Error::new(io::ErrorKind::InvalidData, bad_cert));
        assert_eq!(tls_failure(&e), Some(TransportFailure::Certificate));
        let refused = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        let e = Wrapped(io::Error::new(io::ErrorKind::InvalidData, refused));
        assert_eq!(tls_failure(&e), Some(TransportFailure::Certificate));
    }

    #[test]
    fn other_tls_failures_and_plain_io_errors_are_told_apart() {
        let not_tls = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let e = Wrapped(io::Error::new(io::ErrorKind::InvalidData, not_tls));
        assert_eq!(tls_failure(&e), Some(TransportFailure::Tls));
        let reset = Wrapped(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(tls_failure(&reset), None);
        // Text alone does not make a certificate failure.
        let text = Wrapped(io::Error::other("certificate of deposit"));
        assert_eq!(tls_failure(&text), None);
    }
}
