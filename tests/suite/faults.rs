//! Network faults between imgsync and a real registry: a small HTTP/1.1
//! proxy forwards to the registry and, by counted rules, answers 429 or
//! 503, drops connections, cuts request or response bodies, corrupts a
//! byte or throttles bodies. It records every request (method, path kind,
//! target, `Range`) so the tests can assert which retries and resumes
//! happened without measuring time.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::harness::*;
use super::registry_harness::{Kind, Registry};

/// What a request is about, from its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Ping,
    Blob,
    Upload,
    Manifest,
    Other,
}

impl Path {
    fn of(target: &str) -> Path {
        let path = target.split('?').next().unwrap_or("");
        if path == "/v2/" {
            Path::Ping
        } else if path.contains("/blobs/uploads/") {
            Path::Upload
        } else if path.contains("/blobs/") {
            Path::Blob
        } else if path.contains("/manifests/") {
            Path::Manifest
        } else {
            Path::Other
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answer this status (with `Retry-After: N` if given) instead of the
    /// registry.
    Status(u16, Option<u32>),
    /// Close the connection without answering.
    Drop,
    /// Forward this many bytes of the request body, then close.
    CutRequest(u64),
    /// Forward this many bytes of the response body, then close.
    CutResponse(u64),
    /// Flip every bit of the response body's byte at this offset.
    Corrupt(u64),
    /// Send response bodies at this many bytes a second.
    Throttle(u64),
}

struct Rule {
    method: &'static str,
    paths: &'static [Path],
    times: usize,
    fault: Fault,
    /// Targets of the requests the fault was applied to.
    hits: Vec<String>,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: Path,
    target: String,
    range: Option<String>,
}

struct State {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

impl State {
    /// Rules that may still apply to this request.
    fn matching(&self, method: &str, path: Path) -> Vec<usize> {
        let rules = self.rules.lock().unwrap();
        (0..rules.len())
            .filter(|&i| {
                let r = &rules[i];
                (r.method.is_empty() || r.method == method)
                    && r.paths.contains(&path)
                    && r.hits.len() < r.times
            })
            .collect()
    }

    /// Applies rule `i` once more if it has uses left.
    fn fire(&self, i: usize, target: &str) -> bool {
        let mut rules = self.rules.lock().unwrap();
        let r = &mut rules[i];
        let ok = r.hits.len() < r.times;
        if ok {
            r.hits.push(target.to_string());
        }
        ok
    }

    fn fault(&self, i: usize) -> Fault {
        self.rules.lock().unwrap()[i].fault
    }
}

pub struct Proxy {
    pub host: String,
    state: Arc<State>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || serve(conn, &s));
                }
            }
        });
        Proxy { host, state }
    }

    /// Applies `fault` to the first `times` requests with this method (""
    /// for any) and path kind that it can apply to; returns the rule's id.
    fn rule(
        &self,
        method: &'static str,
        paths: &'static [Path],
        times: usize,
        fault: Fault,
    ) -> usize {
        let mut rules = self.state.rules.lock().unwrap();
        rules.push(Rule {
            method,
            paths,
            times,
            fault,
            hits: Vec::new(),
        });
        rules.len() - 1
    }

    /// Targets of the requests rule `id` was applied to.
    fn hits(&self, id: usize) -> Vec<String> {
        self.state.rules.lock().unwrap()[id].hits.clone()
    }

    fn seen(&self, method: &str, path: Path) -> Vec<Seen> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.method == method && s.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

/// A request or response head: the first line and the header lines.
struct Head {
    line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(r: &mut impl BufRead) -> io::Result<Option<Head>> {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let line = line.trim_end().to_string();
        Ok(Some(Head { line, headers }))
    }

    fn get(&self, name: &str) -> Option<&str> {
        let h = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name));
        h.map(|(_, v)| v.as_str())
    }

    fn word(&self, n: usize) -> &str {
        self.line.split(' ').nth(n).unwrap_or("")
    }

    fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut out = format!("{}\r\n", self.line);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        w.write_all(out.as_bytes())
    }

    /// How the body after this head is delimited; `request_method` is set
    /// for a response.
    fn framing(&self, request_method: Option<&str>) -> Framing {
        if let Some(method) = request_method {
            let status: u16 = self.word(1).parse().unwrap_or(0);
            if method == "HEAD" || status / 100 == 1 || status == 204 || status == 304 {
                return Framing::Length(0);
            }
        }
        let te = self.get("transfer-encoding").unwrap_or("");
        match self.get("content-length") {
            _ if te.to_ascii_lowercase().contains("chunked") => Framing::Chunked,
            Some(n) => Framing::Length(n.parse().unwrap_or(0)),
            None if request_method.is_some() => Framing::UntilClose,
            None => Framing::Length(0),
        }
    }

    fn closes(&self) -> bool {
        self.get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Sees each piece of a body (offset in the body, bytes) before it is
/// forwarded; may change the bytes, or return how many of them to send
/// before the connection is cut.
type Hook<'a> = dyn FnMut(u64, &mut [u8]) -> Option<usize> + 'a;

/// Forwards `n` bytes (all until end of stream if `None`). False: cut.
fn copy_n(
    src: &mut impl Read,
    dst: &mut impl Write,
    n: Option<u64>,
    off: &mut u64,
    hook: &mut Hook,
) -> io::Result<bool> {
    let mut buf = [0u8; 16 * 1024];
    let mut left = n.unwrap_or(u64::MAX);
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = src.read(&mut buf[..want])?;
        if got == 0 && n.is_some() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        } else if got == 0 {
            break;
        }
        let cut = hook(*off, &mut buf[..got]);
        let send = cut.unwrap_or(got);
        dst.write_all(&buf[..send])?;
        *off += send as u64;
        if cut.is_some() {
            dst.flush()?;
            return Ok(false);
        }
        left -= got as u64;
    }
    Ok(true)
}

/// Forwards one body in its framing (chunked bodies re-chunked, hook
/// offsets counted in decoded bytes). False: cut.
fn pump(
    src: &mut impl BufRead,
    dst: &mut impl Write,
    framing: Framing,
    hook: &mut Hook,
) -> io::Result<bool> {
    let mut off = 0;
    match framing {
        Framing::Length(n) => copy_n(src, dst, Some(n), &mut off, hook),
        Framing::UntilClose => copy_n(src, dst, None, &mut off, hook),
        Framing::Chunked => loop {
            let mut line = String::new();
            src.read_line(&mut line)?;
            let hex = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(hex, 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                while src.read_line(&mut line)? > 0 && !matches!(line.as_str(), "\r\n" | "\n") {
                    line.clear();
                }
                dst.write_all(b"0\r\n\r\n")?;
                return Ok(true);
            }
            write!(dst, "{size:x}\r\n")?;
            if !copy_n(src, dst, Some(size), &mut off, hook)? {
                return Ok(false);
            }
            src.read_line(&mut line)?;
            dst.write_all(b"\r\n")?;
        },
    }
}

fn answer(w: &mut impl Write, code: u16, retry_after: Option<u32>, method: &str) -> io::Result<()> {
    let body = format!(r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected {code}"}}]}}"#);
    let retry = retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
    write!(
        w,
        "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        w.write_all(body.as_bytes())?;
    }
    w.flush()
}

/// One client connection, forwarded over one registry connection.
fn serve(client: TcpStream, state: &State) -> io::Result<()> {
    let mut first = [0u8; 1];
    // imgsync tries HTTPS first: a TLS ClientHello starts with 0x16.
    if client.peek(&mut first)? == 0 || first[0] == 0x16 {
        return Ok(());
    }
    let upstream = TcpStream::connect(&state.upstream)?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut from_upstream = BufReader::new(upstream.try_clone()?);
    let (mut to_client, mut to_upstream) = (client, upstream);
    let cut = |a: &TcpStream, b: &TcpStream| {
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
        Ok(())
    };
    'requests: while let Some(req) = Head::read(&mut from_client)? {
        let method = req.word(0).to_string();
        let target = req.word(1).to_string();
        let path = Path::of(&target);
        state.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path,
            target: target.clone(),
            range: req.get("range").map(str::to_string),
        });
        let rules = state.matching(&method, path);
        for &i in &rules {
            match state.fault(i) {
                Fault::Drop if state.fire(i, &target) => return cut(&to_client, &to_upstream),
                Fault::Status(code, retry_after) if state.fire(i, &target) => {
                    pump(
                        &mut from_client,
                        &mut io::sink(),
                        req.framing(None),
                        &mut |_, _| None,
                    )?;
                    answer(&mut to_client, code, retry_after, &method)?;
                    continue 'requests;
                }
                _ => {}
            }
        }
        req.write(&mut to_upstream)?;
        let mut on_request = |off: u64, bytes: &mut [u8]| {
            rules.iter().find_map(|&i| match state.fault(i) {
                Fault::CutRequest(n) if off + bytes.len() as u64 > n && state.fire(i, &target) => {
                    Some((n - off) as usize)
                }
                _ => None,
            })
        };
        if !pump(
            &mut from_client,
            &mut to_upstream,
            req.framing(None),
            &mut on_request,
        )? {
            return cut(&to_client, &to_upstream);
        }
        let Some(resp) = Head::read(&mut from_upstream)? else {
            return Ok(());
        };
        resp.write(&mut to_client)?;
        let framing = resp.framing(Some(&method));
        let start = Instant::now();
        let mut on_response = |off: u64, bytes: &mut [u8]| {
            let end = off + bytes.len() as u64;
            rules.iter().find_map(|&i| match state.fault(i) {
                Fault::CutResponse(n) if end > n && state.fire(i, &target) => {
                    Some((n - off) as usize)
                }
                Fault::Corrupt(at) if (off..end).contains(&at) && state.fire(i, &target) => {
                    bytes[(at - off) as usize] ^= 0xff;
                    None
                }
                Fault::Throttle(rate) => {
                    if off == 0 {
                        state.fire(i, &target);
                    }
                    let due = Duration::from_secs_f64(end as f64 / rate as f64);
                    std::thread::sleep(due.saturating_sub(start.elapsed()));
                    None
                }
                _ => None,
            })
        };
        if !pump(
            &mut from_upstream,
            &mut to_client,
            framing,
            &mut on_response,
        )? {
            return cut(&to_client, &to_upstream);
        }
        if framing == Framing::UntilClose || req.closes() || resp.closes() {
            return cut(&to_client, &to_upstream);
        }
    }
    Ok(())
}

const HELLO: &str = "imgsync-fixture/hello";
const MIB: u64 = 1 << 20;

fn hello(tag: &str) -> String {
    format!(
        "docker-archive:{}:{HELLO}:{tag}",
        fixture("hello.tar").display()
    )
}

/// A docker archive of one image with an incompressible layer of 2 MiB;
/// returns its location and the layer's digest.
fn big_image(t: &TestDir) -> (String, String) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..2 * MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let layer = layer_tar("random.bin", &data);
    legacy_archive(&t.path("big.tar"), "big/app:1", &[&layer]);
    let location = format!("docker-archive:{}", t.p("big.tar"));
    (location, format!("sha256:{}", sha256_hex(&layer)))
}

/// Copies `src` to `dst` and returns the digest of the (first) image.
fn push(t: &TestDir, src: &str, dst: &str) -> String {
    let out = t.imgsync(&["copy", "--json", src, dst]).ok().json();
    out["images"][0]["digest"].as_str().unwrap().to_string()
}

/// The digest a registry tag points to, asked without the proxy.
fn tag_digest(t: &TestDir, reference: &str) -> String {
    let info = t.imgsync(&["inspect", "--json", reference]).ok().json();
    info[0]["digest"].as_str().unwrap().to_string()
}

/// Asserts a network failure (exit 6) reported on one line naming `host`.
fn network_failure(run: Run, host: &str) -> String {
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{}", run.stderr);
    run.fails(EXIT_NETWORK, &[host])
}

/// The `digest` query parameter of an upload target, decoded.
fn upload_digest(target: &str) -> String {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let d = query.split('&').find_map(|kv| kv.strip_prefix("digest="));
    d.unwrap_or("").replace("%3A", ":").replace("%3a", ":")
}

#[test]
fn download_cut_mid_blob_resumes_with_range() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let (big, layer) = big_image(&t);
    let digest = push(&t, &big, &format!("{}/big/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let cut = proxy.rule("GET", &[Path::Blob], 1, Fault::CutResponse(MIB));
    let pulled = push(&t, &format!("{}/big/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert_eq!(
        layout_refs(&t.path("pulled")),
        [("app".to_string(), digest)]
    );
    let hits = proxy.hits(cut);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].ends_with(&layer), "{hits:?}");
    // The layer was asked for twice: whole, then from where it broke.
    let gets: Vec<Seen> = proxy
        .seen("GET", Path::Blob)
        .into_iter()
        .filter(|s| s.target.ends_with(&layer))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some(&*format!("bytes={MIB}-")));
}

#[test]
fn upload_cut_mid_put_is_retried() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let (big, layer) = big_image(&t);
    let proxy = Proxy::start(&reg.host);
    let cut = proxy.rule("PUT", &[Path::Upload], 1, Fault::CutRequest(MIB));
    let out = t
        .imgsync(&["copy", "--json", &big, &format!("{}/big/app:1", proxy.host)])
        .ok()
        .json();
    let digest = out["images"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(out["blobs_copied"], 2, "{out}");
    assert_eq!(proxy.hits(cut).len(), 1);
    // One more POST and PUT than blobs: the broken upload was redone.
    let puts = proxy.seen("PUT", Path::Upload);
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert_eq!(
        puts.iter()
            .filter(|s| upload_digest(&s.target) == layer)
            .count(),
        2
    );
    assert_eq!(proxy.seen("POST", Path::Upload).len(), 3);
    // The registry holds the image, byte for byte.
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/big/app:1", reg.host),
        ],
    );
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest);
    push(&t, &format!("{}/big/app:1", reg.host), "oci:back:app");
    t.imgsync(&["verify", "oci:back"]).ok();
}

#[test]
fn too_many_requests_are_retried_after_waiting() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = push(&t, &hello("1.0"), &format!("{}/hello/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let busy = Fault::Status(429, Some(1));
    let manifests = proxy.rule("GET", &[Path::Manifest], 1, busy);
    let blobs = proxy.rule("GET", &[Path::Blob], 2, busy);
    let pulled = push(&t, &format!("{}/hello/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert_eq!(proxy.hits(manifests).len(), 1);
    assert_eq!(proxy.hits(blobs).len(), 2);
    // Each refused request was made again.
    assert_eq!(proxy.seen("GET", Path::Manifest).len(), 2);
    let gets = proxy.seen("GET", Path::Blob);
    for refused in proxy.hits(blobs) {
        assert!(
            gets.iter().filter(|s| s.target == refused).count() >= 2,
            "{gets:?}"
        );
    }
}

#[test]
fn dropped_connections_are_retried() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = push(&t, &hello("1.0"), &format!("{}/hello/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let manifests = proxy.rule("GET", &[Path::Manifest], 1, Fault::Drop);
    let blobs = proxy.rule("GET", &[Path::Blob], 2, Fault::Drop);
    let pulled = push(&t, &format!("{}/hello/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert_eq!(proxy.hits(manifests).len(), 1);
    assert_eq!(proxy.hits(blobs).len(), 2);
    assert_eq!(proxy.seen("GET", Path::Manifest).len(), 2);
}

#[test]
fn a_burst_of_server_errors_is_retried() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let dest = format!("{}/keep/app:1", reg.host);
    let old = push(&t, &hello("1.0"), &dest);
    let proxy = Proxy::start(&reg.host);
    let paths = &[Path::Blob, Path::Upload, Path::Manifest];
    let burst = proxy.rule("", paths, 3, Fault::Status(503, None));
    let new = push(&t, &hello("2.0"), &format!("{}/keep/app:1", proxy.host));
    assert_ne!(new, old);
    assert_eq!(proxy.hits(burst).len(), 3);
    assert_eq!(tag_digest(&t, &dest), new);
}

#[test]
fn server_errors_that_last_fail_as_network_errors_and_move_no_tag() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let dest = format!("{}/keep/app:1", reg.host);
    let old = push(&t, &hello("1.0"), &dest);

    // Every upload refused: each attempt of a blob is a POST and a PUT;
    // a blob is tried once and retried three times.
    let proxy = Proxy::start(&reg.host);
    let refuse = proxy.rule("PUT", &[Path::Upload], usize::MAX, Fault::Status(503, None));
    let via = format!("{}/keep/app:1", proxy.host);
    let line = network_failure(t.imgsync(&["copy", &hello("2.0"), &via]), &proxy.host);
    assert!(line.contains("503"), "{line}");
    let hits = proxy.hits(refuse);
    let most = hits
        .iter()
        .map(|h| {
            hits.iter()
                .filter(|o| upload_digest(o) == upload_digest(h))
                .count()
        })
        .max();
    assert_eq!(most, Some(4), "{hits:?}");
    assert_eq!(tag_digest(&t, &dest), old);
    assert!(proxy.seen("PUT", Path::Manifest).is_empty());

    // With --retry-times 0, one 503 on the manifest fails the copy at once.
    let proxy = Proxy::start(&reg.host);
    let once = proxy.rule("PUT", &[Path::Manifest], 1, Fault::Status(503, None));
    let via = format!("{}/keep/app:1", proxy.host);
    let run = t.imgsync(&["copy", "--retry-times", "0", &hello("2.0"), &via]);
    network_failure(run, &proxy.host);
    assert_eq!(proxy.hits(once).len(), 1);
    assert_eq!(proxy.seen("PUT", Path::Manifest).len(), 1);
    assert_eq!(tag_digest(&t, &dest), old);
}

#[test]
fn corrupt_download_fails_integrity_and_writes_nothing() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let (big, layer) = big_image(&t);
    push(&t, &big, &format!("{}/big/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let corrupt = proxy.rule("GET", &[Path::Blob], 1, Fault::Corrupt(MIB + 7));
    t.imgsync(&["copy", &format!("{}/big/app:1", proxy.host), "oci:out:app"])
        .fails(EXIT_INTEGRITY, &[&layer]);
    assert_eq!(proxy.hits(corrupt).len(), 1);
    assert!(!t.path("out").exists());
}

#[test]
fn slow_link_still_copies_exactly() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let (big, layer) = big_image(&t);
    let digest = push(&t, &big, &format!("{}/big/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let slow = proxy.rule(
        "GET",
        &[Path::Blob],
        usize::MAX,
        Fault::Throttle(768 * 1024),
    );
    let pulled = push(&t, &format!("{}/big/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert!(proxy.hits(slow).iter().any(|h| h.ends_with(&layer)));
}
