//! Real registries for the tests: the CNCF distribution registry (Debian's
//! `docker-registry`) on an ephemeral loopback port with its own storage,
//! in four variants: plain HTTP, TLS with a CA made here, htpasswd basic
//! auth over TLS, and token auth whose token endpoint runs here and signs
//! tokens the registry verifies (scopes enforced).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub const USER: &str = "pusher";
pub const PASSWORD: &str = "s3cret-pass";
/// A user the token endpoint grants pull only.
pub const READER: &str = "reader";

pub enum Kind {
    Plain,
    Tls,
    Basic,
    Token,
}

pub struct Registry {
    child: Child,
    pub host: String,
    pub dir: tempfile::TempDir,
    /// Directory with `ca.crt` for TLS variants (certs.d style).
    pub certs: Option<PathBuf>,
    token_server: Option<std::thread::JoinHandle<()>>,
    token_stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The request targets (path and query) the token endpoint received.
    token_log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Pki {
    ca_pem: String,
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "imgsync test CA");
    let ca_cert = params.self_signed(&ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        ca_key,
        ca_params: params,
    }
}

/// A server certificate for 127.0.0.1 and localhost signed by the CA.
fn server_cert(pki: &Pki) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let issuer = rcgen::Issuer::from_params(&pki.ca_params, &pki.ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Registry {
    pub fn start(kind: Kind) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("imgsync-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: imgsync-test\n",
            dir.path().join("data").display()
        );
        let mut certs = None;
        let mut token_server = None;
        let mut token_stop = None;
        let token_log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if !matches!(kind, Kind::Plain) {
            let pki = pki();
            let (cert, key) = server_cert(&pki);
            std::fs::write(dir.path().join("server.crt"), cert).unwrap();
            std::fs::write(dir.path().join("server.key"), key).unwrap();
            let cd = dir.path().join("certs.d");
            std::fs::create_dir_all(&cd).unwrap();
            std::fs::write(cd.join("ca.crt"), &pki.ca_pem).unwrap();
            certs = Some(cd);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
        }
        match kind {
            Kind::Basic => {
                let hash = bcrypt::hash(PASSWORD, 4).unwrap();
                std::fs::write(dir.path().join("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: imgsync-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                ));
            }
            Kind::Token => {
                let signer = TokenSigner::new(dir.path());
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let realm = format!("http://{}/token", listener.local_addr().unwrap());
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: imgsync-test-registry\n    issuer: imgsync-test-issuer\n    rootcertbundle: {}\n",
                    dir.path().join("token-root.crt").display()
                ));
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let stop2 = stop.clone();
                listener.set_nonblocking(true).unwrap();
                let log = token_log.clone();
                token_server = Some(std::thread::spawn(move || {
                    serve_tokens(listener, signer, stop2, log)
                }));
                token_stop = Some(stop);
            }
            _ => {}
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry is installed by the README's test command");
        let reg = Registry {
            child,
            host,
            dir,
            certs,
            token_server,
            token_stop,
            token_log,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.host).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("registry on {} did not start:\n{log}", self.host);
    }

    /// `--dest-cert-dir`-style flag value for TLS variants.
    /// The request targets the token endpoint received so far.
    pub fn token_requests(&self) -> Vec<String> {
        self.token_log.lock().unwrap().clone()
    }

    pub fn cert_dir(&self) -> String {
        self.certs
            .as_ref()
            .expect("a TLS registry")
            .display()
            .to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(s) = &self.token_stop {
            s.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(t) = self.token_server.take() {
            let _ = t.join();
        }
    }
}

/// Signs registry tokens (ES256 JWTs with an `x5c` chain the registry checks
/// against its `rootcertbundle`).
struct TokenSigner {
    key: aws_lc_rs::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl TokenSigner {
    fn new(dir: &Path) -> TokenSigner {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "imgsync token signer");
        let cert = params.self_signed(&kp).unwrap();
        std::fs::write(dir.join("token-root.crt"), cert.pem()).unwrap();
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &kp.serialize_der(),
        )
        .unwrap();
        TokenSigner {
            key,
            cert_der: cert.der().to_vec(),
        }
    }

    fn sign(&self, subject: &str, access: serde_json::Value) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)]});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "iss": "imgsync-test-issuer", "sub": subject, "aud": "imgsync-test-registry",
            "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("{now}-{subject}"),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = self.key.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

fn serve_tokens(
    listener: TcpListener,
    signer: TokenSigner,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                handle_token_request(stream, &signer, &log);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => return,
        }
    }
}

fn handle_token_request(
    mut stream: TcpStream,
    signer: &TokenSigner,
    log: &std::sync::Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut auth = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("authorization: basic ") {
            let raw = line[line.len() - v.len()..].trim();
            auth = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
        }
        if let Some(v) = lower.strip_prefix("content-length: ") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    log.lock().unwrap().push(target.to_string());
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .collect();
    let user = match auth.as_deref().and_then(|a| a.split_once(':')) {
        Some((u, p)) if u == USER && p == PASSWORD => Some(USER),
        Some((u, p)) if u == READER && p == PASSWORD => Some(READER),
        Some(_) => {
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        None => None,
    };
    // Grants: the pusher everything asked; the reader and anonymous pull only.
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| user == Some(USER) || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": t, "name": name, "actions": actions}))
        })
        .collect();
    let token = signer.sign(user.unwrap_or(""), serde_json::Value::Array(access));
    let json = serde_json::json!({"token": token, "expires_in": 600}).to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
