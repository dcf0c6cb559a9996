//! TLS for registry connections: what a registry's connections trust (the
//! system's store, loaded on first use, plus a `certs.d`-style directory)
//! and which client certificate they present.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::Client;

use super::client::RegistrySettings;
use super::transport::runtime;
use crate::error::{Error, Result};

/// What a registry's TLS connections trust and present: the files of its
/// certificate directory, read once. Equal setups share one HTTP client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct TlsSetup {
    verify: bool,
    /// PEM bundles of extra CAs (`*.crt`), each with its file name.
    cas: Vec<(PathBuf, Vec<u8>)>,
    /// Client certificates and keys (`*.cert` + `*.key`, concatenated).
    identities: Vec<(PathBuf, Vec<u8>)>,
}

impl TlsSetup {
    pub(super) fn load(host: &str, settings: &RegistrySettings) -> Result<TlsSetup> {
        let mut setup = TlsSetup {
            verify: settings.tls_verify.unwrap_or(true),
            cas: Vec::new(),
            identities: Vec::new(),
        };
        let bare = host.split(':').next().unwrap_or(host);
        match &settings.cert_dir {
            Some(d) => setup.read_dir(d)?,
            None => {
                for root in ["/etc/containers/certs.d", "/etc/docker/certs.d"] {
                    setup.read_dir(&Path::new(root).join(host))?;
                    if bare != host {
                        setup.read_dir(&Path::new(root).join(bare))?;
                    }
                }
            }
        }
        Ok(setup)
    }

    fn read_dir(&mut self, dir: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::path("read certificate directory", dir, e)),
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in &files {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".crt") {
                let pem = std::fs::read(f).map_err(|e| Error::path("read", f, e))?;
                self.cas.push((f.clone(), pem));
            } else if let Some(stem) = name.strip_suffix(".cert") {
                let key = dir.join(format!("{stem}.key"));
                let mut pem = std::fs::read(f).map_err(|e| Error::path("read", f, e))?;
                pem.extend(
                    std::fs::read(&key).map_err(|e| Error::path("read client key", &key, e))?,
                );
                self.identities.push((f.clone(), pem));
            }
        }
        Ok(())
    }

    pub(super) fn build(&self, host: &str) -> Result<Client> {
        let mut b = Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            // Over HTTP/2 (offered by TLS registries through ALPN), flow
            // control windows follow the measured bandwidth-delay product:
            // the fixed 64 KiB default would cap a download at 64 KiB per
            // round trip.
            .http2_adaptive_window(true)
            .user_agent(concat!("imgsync/", env!("CARGO_PKG_VERSION")));
        if !self.verify {
            b = b.tls_danger_accept_invalid_certs(true);
        } else if self.identities.is_empty() {
            // The system's trust store is read when a certificate is first
            // checked, not before: a registry that speaks plain HTTP (tried
            // over HTTPS first) never needs it.
            let tls = lazy_tls_config(&self.cas)?;
            b = b.tls_backend_preconfigured(tls);
            let _guard = runtime().enter();
            return b
                .build()
                .map_err(|e| Error::Usage(format!("{host}: cannot set up the HTTP client: {e}")));
        }
        let mut cas = Vec::new();
        for (f, pem) in &self.cas {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::Usage(format!("{}: not a PEM certificate: {e}", f.display()))
            })?;
            cas.extend(certs);
        }
        for (f, pem) in &self.identities {
            let id = reqwest::Identity::from_pem(pem).map_err(|e| {
                Error::Usage(format!(
                    "{}: not a PEM certificate and key: {e}",
                    f.display()
                ))
            })?;
            b = b.identity(id);
        }
        if !cas.is_empty() {
            b = b.tls_certs_merge(cas);
        }
        // Built in the context of the runtime that will drive it.
        let _guard = runtime().enter();
        b.build()
            .map_err(|e| Error::Usage(format!("{host}: cannot set up the HTTP client: {e}")))
    }
}

/// A TLS client setup that verifies servers against the system's trust
/// store plus `cas`, loading the store on the first certificate to check.
fn lazy_tls_config(cas: &[(PathBuf, Vec<u8>)]) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut extra = Vec::new();
    for (f, pem) in cas {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Usage(format!("{}: not a PEM certificate: {e}", f.display())))?;
        if certs.is_empty() {
            return Err(Error::Usage(format!(
                "{}: not a PEM certificate: no certificate in it",
                f.display()
            )));
        }
        extra.extend(certs);
    }
    let verifier = Arc::new(LazyVerifier {
        extra,
        provider: provider.clone(),
        inner: OnceLock::new(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Usage(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The platform verifier, built (trust store read) on first use.
#[derive(Debug)]
struct LazyVerifier {
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    inner: OnceLock<std::result::Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

impl LazyVerifier {
    fn get(&self) -> std::result::Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.inner
            .get_or_init(|| {
                rustls_platform_verifier::Verifier::new_with_extra_roots(
                    self.extra.iter().cloned(),
                    self.provider.clone(),
                )
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl rustls::client::danger::ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.get()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Makes ring the process's TLS crypto provider, unless one was chosen
/// already: it seeds its random numbers from the kernel, so the first
/// handshake (every registry is tried over HTTPS first) starts at once.
pub(super) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
