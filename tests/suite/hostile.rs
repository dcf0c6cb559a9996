//! A hostile registry of our own, playing an attacker in front of a real
//! registry: it answers chosen paths (the catalog, a tag list, a manifest)
//! with what an attacker would send, and forwards every other request to
//! the real registry, so the images it names can really be copied.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::harness::*;
use super::registry_harness::{Kind, Registry};

/// An answer of the attacker's: status and JSON body, for a request path
/// (without its query).
pub(super) struct Canned {
    pub(super) path: String,
    pub(super) status: u16,
    pub(super) body: String,
}

pub(super) struct Hostile {
    pub(super) host: String,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    pub(super) fn start(upstream: &str, answers: Vec<Canned>) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, answers, halt) = (upstream.to_string(), Arc::new(answers), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    let (upstream, answers) = (upstream.clone(), answers.clone());
                    std::thread::spawn(move || serve(conn, &upstream, &answers));
                }
            }
        });
        Hostile { host, stop }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

/// One request per connection (answered with `Connection: close`): a
/// canned answer, or the real registry's.
fn serve(client: TcpStream, upstream: &str, answers: &[Canned]) -> io::Result<()> {
    let mut first = [0u8; 1];
    // HTTPS is tried first on loopback: a TLS ClientHello starts with 0x16.
    if client.peek(&mut first)? == 0 || first[0] == 0x16 {
        return Ok(());
    }
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if from_client.read_line(&mut line)? == 0 {
            return Ok(());
        }
        match line.trim_end() {
            "" => break,
            l => head.push(l.to_string()),
        }
    }
    let mut words = head[0].split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let mut to_client = client;
    if let Some(c) = answers.iter().find(|c| c.path == path) {
        write!(
            to_client,
            "HTTP/1.1 {} Hostile\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            c.status,
            c.body.len()
        )?;
        if method != "HEAD" {
            to_client.write_all(c.body.as_bytes())?;
        }
        to_client.flush()?;
        return to_client.shutdown(Shutdown::Both);
    }
    let body_len: u64 = head[1..]
        .iter()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut to_upstream = TcpStream::connect(upstream)?;
    head.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    head.push("Connection: close".into());
    to_upstream.write_all(format!("{}\r\n\r\n", head.join("\r\n")).as_bytes())?;
    io::copy(&mut (&mut from_client).take(body_len), &mut to_upstream)?;
    io::copy(&mut to_upstream, &mut to_client)?;
    to_client.shutdown(Shutdown::Both)
}

fn hello(tag: &str) -> String {
    format!(
        "docker-archive:{}:imgsync-fixture/hello:{tag}",
        fixture("hello.tar").display()
    )
}

/// The repositories a registry's catalog lists, asked directly.
fn catalog(host: &str) -> Vec<String> {
    let mut s = TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /v2/_catalog?n=1000 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let mut names: Vec<String> = v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn tags_of(t: &TestDir, repo: &str) -> Vec<String> {
    let v = t.imgsync(&["tags", "--json", repo]).ok().json();
    let mut tags: Vec<String> = serde_json::from_value(v).unwrap();
    tags.sort();
    tags
}

/// Names with `..` from a source's catalog and tag lists never reach a
/// request path: nothing is written outside the target prefix, the good
/// tags are mirrored, each bad name is reported (escaped) as a failed
/// item, and the run exits 1.
#[test]
fn listed_names_with_traversal_are_skipped_and_reported() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    t.imgsync(&["copy", &hello("1.0"), &format!("{}/team/app:1", src.host)])
        .ok();
    let tags =
        r#"{"name":"team/app","tags":["1","latest/../../z","../../victim/app","esc\u001b[31m"]}"#;
    let hostile = Hostile::start(
        &src.host,
        vec![
            Canned {
                path: "/v2/_catalog".into(),
                status: 200,
                body: r#"{"repositories":["team/app","team/../../victim2/app","team/x/../../y"]}"#
                    .into(),
            },
            Canned {
                path: "/v2/team/app/tags/list".into(),
                status: 200,
                body: tags.into(),
            },
        ],
    );
    let cfg = t.path("mirror.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nsync:\n  - source: {h}/team/\n    target: {d}/mirror/\n  - source: {h}/team/app\n    target: {d}/single/app\n",
            h = hostile.host,
            d = dst.host
        ),
    )
    .unwrap();
    let report = t.path("report.json");
    let run = t.imgsync(&[
        "sync",
        "--config",
        cfg.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(catalog(&dst.host), ["mirror/app", "single/app"]);
    assert_eq!(tags_of(&t, &format!("{}/mirror/app", dst.host)), ["1"]);
    assert_eq!(tags_of(&t, &format!("{}/single/app", dst.host)), ["1"]);
    for bad in [
        r#""latest/../../z""#,
        r#""../../victim/app""#,
        r#""esc\u{1b}[31m""#,
        r#""team/../../victim2/app""#,
        r#""team/x/../../y""#,
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with("failed") && l.contains(bad))
            .unwrap_or_else(|| panic!("{bad} not reported:\n{}", run.stderr));
        assert!(line.contains("not a valid"), "{line}");
    }
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    // Two entries list the tags: each bad tag is reported for each, and
    // each bad repository once.
    assert_eq!(report["failed"], 3 * 2 + 2, "{report}");
    assert_eq!(report["copied"], 2, "{report}");
}

/// A registry's error message with terminal escapes (clear the screen,
/// colours) reaches stderr with its control characters shown as escapes.
#[test]
fn registry_messages_reach_the_terminal_escaped() {
    let src = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let hostile = Hostile::start(
        &src.host,
        vec![Canned {
            path: "/v2/team/app/manifests/1".into(),
            status: 404,
            body: r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"gone\u001b[2J\u001b[31m here"}]}"#
                .into(),
        }],
    );
    let run = t.imgsync(&["inspect", &format!("{}/team/app:1", hostile.host)]);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    run.fails(EXIT_NOT_FOUND, &[r"gone\x1b[2J\x1b[31m here"]);
}
