//! A hostile registry of our own: a small HTTP/1.1 server on 127.0.0.1
//! that plays an attacker (or a compromised registry). It sends upload
//! `Location`s that point at another listener, endless bodies, token
//! answers that would overflow a clock, and records what imgsync sent, so
//! the tests assert that credentials stay with the registry and that
//! every read is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::harness::*;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
}

/// What the server answers.
enum Body {
    Bytes(Vec<u8>),
    /// `len` bytes of `fill` (with that `Content-Length`), generated as
    /// they are sent; the server records whether all of them went out.
    Generated {
        fill: u8,
        len: u64,
    },
}

pub(super) struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

pub(super) fn answer(status: u16, headers: &[(&str, String)], body: &[u8]) -> Answer {
    Answer {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        body: Body::Bytes(body.to_vec()),
    }
}

type Handler = dyn Fn(&Seen) -> Answer + Send + Sync;

pub(super) struct Server {
    pub(super) port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// For each generated body: whether all of it was sent.
    generated: Mutex<mpsc::Receiver<bool>>,
}

impl Server {
    pub(super) fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let handler: Arc<Handler> = Arc::new(handler);
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (h, s, tx) = (handler.clone(), s.clone(), tx.clone());
                std::thread::spawn(move || serve(conn, &*h, &s, &tx));
            }
        });
        Server {
            port,
            seen,
            generated: Mutex::new(rx),
        }
    }

    /// Whether the first generated body went out whole: waits for the
    /// connection that carried it to finish or break.
    fn generated_body_sent_whole(&self) -> bool {
        self.generated
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(120))
            .expect("no generated body was sent")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves requests on one connection until the client closes it.
fn serve(conn: TcpStream, handler: &Handler, seen: &Mutex<Vec<Seen>>, whole: &mpsc::Sender<bool>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let (mut length, mut chunked, mut authorization) = (0u64, false, None);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
        if chunked {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = u64::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut skip = vec![0; n as usize + 2];
                if reader.read_exact(&mut skip).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
            }
        } else if std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink()).is_err() {
            return;
        }
        let request = Seen {
            method,
            target,
            authorization,
        };
        seen.lock().unwrap().push(request.clone());
        let a = handler(&request);
        let len = match &a.body {
            Body::Bytes(b) => b.len() as u64,
            Body::Generated { len, .. } => *len,
        };
        let mut head = format!("HTTP/1.1 {} X\r\nContent-Length: {len}\r\n", a.status);
        for (k, v) in &a.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if request.method == "HEAD" {
            continue;
        }
        match a.body {
            Body::Bytes(b) => {
                if out.write_all(&b).is_err() {
                    return;
                }
            }
            Body::Generated { fill, len } => {
                let chunk = vec![fill; 64 * 1024];
                let mut sent = 0;
                while sent < len {
                    let n = (len - sent).min(chunk.len() as u64) as usize;
                    if out.write_all(&chunk[..n]).is_err() {
                        let _ = whole.send(false);
                        return;
                    }
                    sent += n as u64;
                }
                let _ = whole.send(true);
            }
        }
    }
}

/// A one-layer docker archive to push.
fn small_archive(t: &TestDir) -> String {
    let layer = layer_tar("hello.txt", b"hello from a hostile test\n");
    legacy_archive(&t.path("img.tar"), "img:1", &[&layer]);
    format!("docker-archive:{}", t.p("img.tar"))
}

fn basic_challenge() -> (&'static str, String) {
    ("WWW-Authenticate", r#"Basic realm="hostile""#.to_string())
}

/// Answers like a registry that takes pushes behind basic authentication,
/// except that uploads go wherever `upload_location` says.
fn push_target(upload_location: String) -> impl Fn(&Seen) -> Answer + Send + Sync {
    move |r: &Seen| {
        let path = r.target.split('?').next().unwrap_or("");
        if r.authorization.is_none() {
            return answer(401, &[basic_challenge()], b"");
        }
        match r.method.as_str() {
            "GET" if path == "/v2/" => answer(200, &[], b"{}"),
            "POST" if path.ends_with("/blobs/uploads/") => {
                answer(202, &[("Location", upload_location.clone())], b"")
            }
            "PUT" if path.contains("/manifests/") => answer(201, &[], b""),
            _ => answer(404, &[], b""),
        }
    }
}

/// An upload `Location` naming another host and port gets the upload,
/// but not the registry's credentials.
#[test]
fn credentials_stay_with_the_registry_when_an_upload_location_points_elsewhere() {
    let t = TestDir::new();
    let src = small_archive(&t);
    let elsewhere = Server::start(|r: &Seen| match r.method.as_str() {
        "PUT" => answer(201, &[], b""),
        _ => answer(202, &[], b""),
    });
    let registry = Server::start(push_target(format!(
        "http://127.0.0.1:{}/collect/upload-1?state=x",
        elsewhere.port
    )));
    t.imgsync(&[
        "copy",
        &src,
        &format!("docker://127.0.0.1:{}/team/app:1", registry.port),
        "--dest-creds",
        "alice:secret-password",
    ])
    .ok();
    let collected = elsewhere.seen();
    assert!(
        collected.iter().any(|r| r.method == "PUT"),
        "the upload went to the Location given: {collected:?}"
    );
    for r in &collected {
        assert_eq!(
            r.authorization, None,
            "credentials sent to another origin: {} {}",
            r.method, r.target
        );
    }
    // The registry itself still got them.
    assert!(registry.seen().iter().any(|r| r.authorization.is_some()));
}

/// Far more than any error message, tag page or token answer needs, and
/// more than socket buffers hold: a client that stops reading leaves most
/// of it unsent.
const HUGE: u64 = 64 << 20;

fn huge() -> Body {
    Body::Generated {
        fill: b'x',
        len: HUGE,
    }
}

/// A registry without authentication whose every other answer is `other`.
fn open_registry(other: impl Fn(&Seen) -> Option<Answer> + Send + Sync + 'static) -> Server {
    Server::start(move |r: &Seen| {
        if r.target == "/v2/" {
            return answer(200, &[], b"{}");
        }
        other(r).unwrap_or_else(|| answer(404, &[], b""))
    })
}

#[test]
fn a_huge_error_body_is_read_only_as_far_as_the_message_needs() {
    let t = TestDir::new();
    let registry = open_registry(|r| {
        r.target.contains("/manifests/").then(|| Answer {
            status: 404,
            headers: Vec::new(),
            body: huge(),
        })
    });
    let host = format!("127.0.0.1:{}", registry.port);
    let line = t
        .imgsync(&["inspect", &format!("docker://{host}/team/app:1")])
        .fails(4, &[&host, "404"]);
    assert!(line.len() < 1024, "one short line: {line}");
    assert!(
        !registry.generated_body_sent_whole(),
        "the whole error body was read"
    );
}

#[test]
fn a_huge_tag_list_fails_naming_the_registry_and_the_limit() {
    let t = TestDir::new();
    let registry = open_registry(|r| {
        r.target.contains("/tags/list").then(|| Answer {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: huge(),
        })
    });
    let host = format!("127.0.0.1:{}", registry.port);
    t.imgsync(&["tags", &format!("{host}/team/app")])
        .fails(6, &[&host, "list tags of team/app", "limit"]);
    assert!(
        !registry.generated_body_sent_whole(),
        "the whole tag list was read"
    );
}

/// A registry that wants bearer tokens from a realm of its own; `token`
/// answers the token request.
fn token_registry(token: impl Fn() -> Answer + Send + Sync + 'static) -> Server {
    let port = Arc::new(Mutex::new(0u16));
    let p = port.clone();
    let server = Server::start(move |r: &Seen| {
        if r.target.starts_with("/token") {
            return token();
        }
        if r.authorization.is_none() {
            let realm = format!("http://127.0.0.1:{}/token", *p.lock().unwrap());
            let challenge = format!(r#"Bearer realm="{realm}",service="hostile""#);
            return answer(401, &[("WWW-Authenticate", challenge)], b"");
        }
        answer(404, &[], b"")
    });
    *port.lock().unwrap() = server.port;
    server
}

#[test]
fn a_huge_token_answer_fails_naming_the_registry() {
    let t = TestDir::new();
    let registry = token_registry(|| Answer {
        status: 200,
        headers: Vec::new(),
        body: huge(),
    });
    let host = format!("127.0.0.1:{}", registry.port);
    t.imgsync(&["inspect", &format!("docker://{host}/team/app:1")])
        .fails(1, &[&host, "token endpoint", "bytes"]);
    assert!(
        !registry.generated_body_sent_whole(),
        "the whole token answer was read"
    );
}

/// A token that claims to live as long as the largest number says: the
/// run goes on (and reports what the registry answered) rather than crash.
#[test]
fn a_token_claiming_an_endless_lifetime_is_used_without_a_crash() {
    let t = TestDir::new();
    let registry = token_registry(|| {
        answer(
            200,
            &[],
            br#"{"token":"t0k3n","expires_in":18446744073709551615}"#,
        )
    });
    let host = format!("127.0.0.1:{}", registry.port);
    t.imgsync(&["inspect", &format!("docker://{host}/team/app:1")])
        .fails(4, &[&host, "404"]);
    assert!(
        registry
            .seen()
            .iter()
            .any(|r| r.authorization.as_deref() == Some("Bearer t0k3n")),
        "the token was used"
    );
}

/// An error body whose first line is long and multi-byte is shown cut on
/// a character boundary, not crash the run.
#[test]
fn a_long_multibyte_error_line_is_cut_on_a_character_boundary() {
    let t = TestDir::new();
    let line = format!("a{}", "é".repeat(150));
    let body = line.clone().into_bytes();
    let registry = open_registry(move |r| {
        r.target
            .contains("/manifests/")
            .then(|| answer(404, &[], &body))
    });
    let host = format!("127.0.0.1:{}", registry.port);
    let shown = format!("(a{})", "é".repeat(99));
    t.imgsync(&["inspect", &format!("docker://{host}/team/app:1")])
        .fails(4, &[&host, &shown]);
}

/// A tag list's `Link: rel=next` naming another host and port is followed
/// (it is the registry's answer), but without the registry's credentials.
#[test]
fn credentials_stay_with_the_registry_when_a_next_page_link_points_elsewhere() {
    let t = TestDir::new();
    let elsewhere = Server::start(|_: &Seen| {
        answer(
            200,
            &[("Content-Type", "application/json".to_string())],
            br#"{"name":"team/app","tags":["2"]}"#,
        )
    });
    let next = format!(
        "<http://127.0.0.1:{}/v2/team/app/tags/list?last=1>; rel=\"next\"",
        elsewhere.port
    );
    let registry = Server::start(move |r: &Seen| {
        if r.authorization.is_none() {
            return answer(401, &[basic_challenge()], b"");
        }
        match r.target.split('?').next().unwrap_or("") {
            "/v2/" => answer(200, &[], b"{}"),
            "/v2/team/app/tags/list" => answer(
                200,
                &[
                    ("Content-Type", "application/json".to_string()),
                    ("Link", next.clone()),
                ],
                br#"{"name":"team/app","tags":["1"]}"#,
            ),
            _ => answer(404, &[], b""),
        }
    });
    let run = t
        .imgsync(&[
            "tags",
            &format!("127.0.0.1:{}/team/app", registry.port),
            "--creds",
            "alice:secret-password",
        ])
        .ok();
    let asked = elsewhere.seen();
    assert!(!asked.is_empty(), "the next page was not asked for");
    for r in &asked {
        assert_eq!(
            r.authorization, None,
            "credentials sent to another origin: {} {}",
            r.method, r.target
        );
    }
    assert!(registry.seen().iter().any(|r| r.authorization.is_some()));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.lines().any(|l| l == "1"), "{stdout}");
}

/// A challenge naming a scope the run never asked about (push rights on
/// another repository, the whole catalog) does not widen the token the run
/// asks for: the token request carries only the run's own repository.
#[test]
fn a_challenge_cannot_widen_the_token_a_run_asks_for() {
    let t = TestDir::new();
    let port = Arc::new(Mutex::new(0u16));
    let p = port.clone();
    // Every answer to a request is a challenge naming the foreign scopes,
    // the first with a token too (an "insufficient scope" answer).
    let challenged = Arc::new(Mutex::new(0u32));
    let registry = Server::start(move |r: &Seen| {
        if r.target.starts_with("/token") {
            return answer(200, &[], br#"{"token":"t0k3n","expires_in":300}"#);
        }
        let mut n = challenged.lock().unwrap();
        if r.authorization.is_none() || *n < 2 {
            *n += 1;
            let realm = format!("http://127.0.0.1:{}/token", *p.lock().unwrap());
            let challenge = format!(
                r#"Bearer realm="{realm}",service="hostile",scope="repository:victim/app:push,pull repository:team/app:pull registry:catalog:*",error="insufficient_scope""#
            );
            return answer(401, &[("WWW-Authenticate", challenge)], b"");
        }
        answer(404, &[], b"")
    });
    *port.lock().unwrap() = registry.port;
    let host = format!("127.0.0.1:{}", registry.port);
    t.imgsync(&["inspect", &format!("docker://{host}/team/app:1")]);
    let token_requests: Vec<String> = registry
        .seen()
        .into_iter()
        .filter(|r| r.target.starts_with("/token"))
        .map(|r| r.target)
        .collect();
    assert!(!token_requests.is_empty(), "no token was asked for");
    for target in &token_requests {
        assert!(
            !target.contains("victim") && !target.contains("catalog"),
            "the token request took the challenge's scope: {target}"
        );
        assert!(
            target.contains("team%2Fapp") || target.contains("team/app"),
            "{target}"
        );
    }
}
