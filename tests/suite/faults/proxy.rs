//! The fault-injecting proxy of the network fault tests: a small HTTP/1.1
//! proxy that forwards to a real registry and, by counted rules, answers
//! 429 or 503, drops connections, cuts request or response bodies,
//! corrupts a byte, ignores `Range` or throttles bodies. It can also play
//! a rate-limited registry: announce a quota that counts down per pull
//! (`ratelimit-limit` / `ratelimit-remaining`, as Docker Hub does), or
//! refuse pulls over a budget per second with 429 and `Retry-After: 1`.
//! It records every request (method, path kind, target, `Range`, when),
//! so the tests assert which retries and resumes happened without
//! measuring time.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a request is about, from its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Path {
    Blob,
    Upload,
    Manifest,
    Other,
}

impl Path {
    fn of(target: &str) -> Path {
        let path = target.split('?').next().unwrap_or("");
        match () {
            _ if path.contains("/blobs/uploads/") => Path::Upload,
            _ if path.contains("/blobs/") => Path::Blob,
            _ if path.contains("/manifests/") => Path::Manifest,
            _ => Path::Other,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Fault {
    /// Answer this status (with `Retry-After: N` if given) in place of the
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
    /// Forward a request without its `Range` header, as a registry that
    /// ignores ranges would see it.
    IgnoreRange,
    /// Send response bodies at this many bytes a second.
    Throttle(u64),
    /// Ask the registry for pages of at most this many names (`n=`), as a
    /// registry that caps its pages (ACR, Quay: 100) answers.
    CapPage(u32),
}

struct Rule {
    method: &'static str,
    paths: &'static [Path],
    times: usize,
    fault: Fault,
    /// Targets of the requests the fault was applied to.
    hits: Vec<String>,
}

/// One request as the proxy received it.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub(super) method: String,
    pub(super) path: Path,
    pub(super) target: String,
    pub(super) range: Option<String>,
    /// When the proxy read the request's head.
    pub(super) at: Instant,
}

/// A quota announced on every answer, one less per pull forwarded.
struct Announced {
    limit: u64,
    remaining: u64,
    window: u64,
}

/// Pulls allowed per second; the rest are refused with 429.
struct Budget {
    per_second: usize,
    started: Option<Instant>,
    /// (second since start, pulls let through in it)
    used: (u64, usize),
    /// Refused pulls: target and when.
    refused: Vec<(String, Instant)>,
}

/// Does the request pull (count against a Docker Hub-style quota)?
fn is_pull(method: &str, path: Path) -> bool {
    method == "GET" && matches!(path, Path::Manifest | Path::Blob)
}

/// Requests held back until another request has been seen.
struct Gate {
    /// Requests whose target contains this wait...
    held: &'static str,
    /// ...until a request whose target contains this arrives...
    until: &'static str,
    /// ...or this long has passed (then `timed_out`).
    at_most: Duration,
    open: bool,
    timed_out: bool,
}

pub(super) struct State {
    upstream: String,
    gate: Mutex<Option<Gate>>,
    gate_moved: std::sync::Condvar,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    announced: Mutex<Option<Announced>>,
    budget: Mutex<Option<Budget>>,
    /// Connections that opened with a TLS ClientHello.
    pub(super) tls_hellos: std::sync::atomic::AtomicUsize,
    stop: AtomicBool,
}

impl State {
    /// Opens the gate if `target` is what it waits for; holds `target` at
    /// the gate while it is closed.
    fn pass_gate(&self, target: &str) {
        let mut gate = self.gate.lock().unwrap();
        let Some(g) = gate.as_mut() else { return };
        if target.contains(g.until) {
            g.open = true;
            self.gate_moved.notify_all();
            return;
        }
        if !target.contains(g.held) {
            return;
        }
        let deadline = Instant::now() + g.at_most;
        while gate.as_ref().is_some_and(|g| !g.open) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if let Some(g) = gate.as_mut() {
                    g.timed_out = true;
                    g.open = true;
                }
                break;
            }
            gate = self.gate_moved.wait_timeout(gate, left).unwrap().0;
        }
    }

    /// Rules with uses left for this request: (id, fault).
    fn matching(&self, method: &str, path: Path) -> Vec<(usize, Fault)> {
        let rules = self.rules.lock().unwrap();
        let applies = |r: &Rule| {
            (r.method.is_empty() || r.method == method)
                && r.paths.contains(&path)
                && r.hits.len() < r.times
        };
        let ids = (0..rules.len()).filter(|&i| applies(&rules[i]));
        ids.map(|i| (i, rules[i].fault)).collect()
    }

    /// Uses rule `id` once more, if it has uses left.
    fn fire(&self, id: usize, target: &str) -> bool {
        let rule = &mut self.rules.lock().unwrap()[id];
        let left = rule.hits.len() < rule.times;
        if left {
            rule.hits.push(target.to_string());
        }
        left
    }

    /// Is this pull over the budget of its second? Counts it if not.
    fn over_budget(&self, method: &str, path: Path, target: &str) -> bool {
        let mut budget = self.budget.lock().unwrap();
        let Some(b) = budget.as_mut().filter(|_| is_pull(method, path)) else {
            return false;
        };
        let now = Instant::now();
        let second = (now - *b.started.get_or_insert(now)).as_secs();
        if b.used.0 != second {
            b.used = (second, 0);
        }
        if b.used.1 < b.per_second {
            b.used.1 += 1;
            return false;
        }
        b.refused.push((target.to_string(), now));
        true
    }

    /// The quota headers for an answer, counting the pull it answers.
    fn quota_headers(&self, method: &str, path: Path) -> Vec<String> {
        let mut announced = self.announced.lock().unwrap();
        let Some(a) = announced.as_mut() else {
            return Vec::new();
        };
        if is_pull(method, path) {
            a.remaining = a.remaining.saturating_sub(1);
        }
        vec![
            format!("RateLimit-Limit: {};w={}", a.limit, a.window),
            format!("RateLimit-Remaining: {};w={}", a.remaining, a.window),
        ]
    }
}

pub(super) struct Proxy {
    pub(super) host: String,
    pub(super) state: Arc<State>,
}

impl Proxy {
    pub(super) fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            gate: Mutex::new(None),
            gate_moved: std::sync::Condvar::new(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            announced: Mutex::new(None),
            budget: Mutex::new(None),
            tls_hellos: Default::default(),
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

    /// Applies `fault` to the first `times` requests with `method` (""
    /// for any) on `paths` it can apply to; returns the rule's id.
    pub(super) fn rule(
        &self,
        method: &'static str,
        paths: &'static [Path],
        times: usize,
        fault: Fault,
    ) -> usize {
        let mut rules = self.state.rules.lock().unwrap();
        let hits = Vec::new();
        rules.push(Rule {
            method,
            paths,
            times,
            fault,
            hits,
        });
        rules.len() - 1
    }

    /// Holds requests whose target contains `held` until one whose target
    /// contains `until` arrives; after `at_most` it lets them go anyway and
    /// says so in [`Proxy::gate_timed_out`].
    pub(super) fn hold_until(&self, held: &'static str, until: &'static str, at_most: Duration) {
        *self.state.gate.lock().unwrap() = Some(Gate {
            held,
            until,
            at_most,
            open: false,
            timed_out: false,
        });
    }

    /// Did the gate open only because its time ran out?
    pub(super) fn gate_timed_out(&self) -> bool {
        self.state
            .gate
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|g| g.timed_out)
    }

    /// Stops every fault (the registry recovers).
    pub(super) fn heal(&self) {
        for r in self.state.rules.lock().unwrap().iter_mut() {
            r.times = r.hits.len();
        }
    }

    /// Targets of the requests rule `id` was applied to.
    pub(super) fn hits(&self, id: usize) -> Vec<String> {
        self.state.rules.lock().unwrap()[id].hits.clone()
    }

    pub(super) fn seen(&self, method: &str, path: Path) -> Vec<Seen> {
        let seen = self.state.seen.lock().unwrap();
        let hits = seen.iter().filter(|s| s.method == method && s.path == path);
        hits.cloned().collect()
    }

    /// Every request so far.
    pub(super) fn all_seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Announces a quota of `limit` per `window` seconds with `remaining`
    /// left, one less per pull forwarded (as Docker Hub does).
    pub(super) fn announce_quota(&self, limit: u64, remaining: u64, window: u64) {
        *self.state.announced.lock().unwrap() = Some(Announced {
            limit,
            remaining,
            window,
        });
    }

    /// Lets `per_second` pulls through in each second from the first one;
    /// refuses the rest with 429 and `Retry-After: 1`.
    pub(super) fn budget_pulls(&self, per_second: usize) {
        *self.state.budget.lock().unwrap() = Some(Budget {
            per_second,
            started: None,
            used: (0, 0),
            refused: Vec::new(),
        });
    }

    /// The pulls refused for the budget: target and when.
    pub(super) fn refused(&self) -> Vec<(String, Instant)> {
        let budget = self.state.budget.lock().unwrap();
        budget.as_ref().map_or(Vec::new(), |b| b.refused.clone())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

/// A request or response head: the start line, then `Name: value` lines.
struct Head(Vec<String>);

impl Head {
    fn read(r: &mut impl BufRead) -> io::Result<Option<Head>> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 && lines.is_empty() {
                return Ok(None);
            } else if line.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            match line.trim_end() {
                "" => return Ok(Some(Head(lines))),
                l => lines.push(l.to_string()),
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0[1..].iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn word(&self, n: usize) -> &str {
        self.0[0].split(' ').nth(n).unwrap_or("")
    }

    fn write(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(format!("{}\r\n\r\n", self.0.join("\r\n")).as_bytes())
    }

    /// How the body after this head ends; `request_method` is given for a
    /// response.
    fn framing(&self, request_method: Option<&str>) -> Framing {
        let status: u16 = self.word(1).parse().unwrap_or(0);
        let te = self.get("transfer-encoding").unwrap_or("");
        match (request_method, self.get("content-length")) {
            (Some(m), _) if m == "HEAD" || [204, 304].contains(&status) => Framing::Length(0),
            _ if te.to_ascii_lowercase().contains("chunked") => Framing::Chunked,
            (_, Some(n)) => Framing::Length(n.parse().unwrap_or(0)),
            (Some(_), None) => Framing::UntilClose,
            (None, None) => Framing::Length(0),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Sees each piece of a body (its offset in the body, its bytes) before it
/// is forwarded; may change the bytes, or return how many of them to send
/// before the connection is cut.
type Hook<'a> = dyn FnMut(u64, &mut [u8]) -> Option<usize> + 'a;

/// Forwards `n` bytes, or all until the end of the stream. False: cut.
fn copy_n(
    src: &mut impl Read,
    dst: &mut impl Write,
    n: Option<u64>,
    off: &mut u64,
    hook: &mut Hook,
) -> io::Result<bool> {
    const PIECE: u64 = 16 * 1024;
    let mut buf = [0u8; PIECE as usize];
    let mut left = n.unwrap_or(u64::MAX);
    while left > 0 {
        let got = src.read(&mut buf[..left.min(PIECE) as usize])?;
        if got == 0 && n.is_some() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        } else if got == 0 {
            break;
        }
        let cut = hook(*off, &mut buf[..got]);
        dst.write_all(&buf[..cut.unwrap_or(got)])?;
        if cut.is_some() {
            dst.flush()?;
            return Ok(false);
        }
        *off += got as u64;
        left -= got as u64;
    }
    Ok(true)
}

/// Forwards one body in its framing; chunked bodies are re-chunked (trailer
/// fields dropped) and the hook sees their decoded bytes. False: cut.
pub(super) fn pump(
    src: &mut impl BufRead,
    dst: &mut impl Write,
    framing: Framing,
    hook: &mut Hook,
) -> io::Result<bool> {
    let mut off = 0;
    match framing {
        Framing::Length(n) => return copy_n(src, dst, Some(n), &mut off, hook),
        Framing::UntilClose => return copy_n(src, dst, None, &mut off, hook),
        Framing::Chunked => {}
    }
    let mut line = String::new();
    loop {
        line.clear();
        src.read_line(&mut line)?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(hex, 16)
            .map_err(|_| io::Error::other(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer fields are dropped, up to the empty line that ends
            // the body.
            while src.read_line(&mut line)? > 0 && !line.ends_with("\n\r\n") {}
            dst.write_all(b"0\r\n\r\n")?;
            return Ok(true);
        }
        write!(dst, "{size:x}\r\n")?;
        if !copy_n(src, dst, Some(size), &mut off, hook)? {
            return Ok(false);
        }
        src.read_line(&mut line)?;
        dst.write_all(b"\r\n")?;
    }
}

fn answer(w: &mut impl Write, code: u16, retry_after: Option<u32>, method: &str) -> io::Result<()> {
    let body = format!(r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected {code}"}}]}}"#);
    let retry = retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
    let len = body.len();
    write!(
        w,
        "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n{retry}\r\n"
    )?;
    if method != "HEAD" {
        w.write_all(body.as_bytes())?;
    }
    w.flush()
}

/// A listing's target asking for at most `cap` names: its `n=` lowered
/// (or added).
fn cap_page(target: &str, cap: u32) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("n="))
        .map(str::to_string)
        .collect();
    let asked = query
        .split('&')
        .find_map(|p| p.strip_prefix("n="))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(u32::MAX);
    params.push(format!("n={}", asked.min(cap)));
    format!("{path}?{}", params.join("&"))
}

/// One client connection, forwarded over one registry connection.
fn serve(client: TcpStream, state: &State) -> io::Result<()> {
    let mut first = [0u8; 1];
    // HTTPS is tried first on loopback: a TLS ClientHello starts with 0x16.
    if client.peek(&mut first)? == 0 || first[0] == 0x16 {
        if first[0] == 0x16 {
            state.tls_hellos.fetch_add(1, Ordering::SeqCst);
        }
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
    'requests: while let Some(mut req) = Head::read(&mut from_client)? {
        let (method, target) = (req.word(0).to_string(), req.word(1).to_string());
        let path = Path::of(&target);
        let range = req.get("range").map(str::to_string);
        let seen = Seen {
            method: method.clone(),
            path,
            target: target.clone(),
            range,
            at: Instant::now(),
        };
        state.seen.lock().unwrap().push(seen);
        state.pass_gate(&target);
        if state.over_budget(&method, path, &target) {
            pump(
                &mut from_client,
                &mut io::sink(),
                req.framing(None),
                &mut |_, _| None,
            )?;
            answer(&mut to_client, 429, Some(1), &method)?;
            continue 'requests;
        }
        let rules = state.matching(&method, path);
        for &(id, fault) in &rules {
            match fault {
                Fault::Drop if state.fire(id, &target) => return cut(&to_client, &to_upstream),
                Fault::Status(code, retry_after) if state.fire(id, &target) => {
                    let framing = req.framing(None);
                    pump(&mut from_client, &mut io::sink(), framing, &mut |_, _| None)?;
                    answer(&mut to_client, code, retry_after, &method)?;
                    continue 'requests;
                }
                Fault::CapPage(cap) if state.fire(id, &target) => {
                    let capped = cap_page(&target, cap);
                    let line = format!("{method} {capped} {}", req.word(2));
                    if let Some(first) = req.0.first_mut() {
                        *first = line;
                    }
                }
                Fault::IgnoreRange if req.get("range").is_some() && state.fire(id, &target) => {
                    req.0
                        .retain(|l| !l.to_ascii_lowercase().starts_with("range:"));
                }
                _ => {}
            }
        }
        req.write(&mut to_upstream)?;
        let mut on_request = |off: u64, bytes: &mut [u8]| {
            let end = off + bytes.len() as u64;
            rules.iter().find_map(|&(id, fault)| match fault {
                Fault::CutRequest(n) if end > n && state.fire(id, &target) => {
                    Some((n - off) as usize)
                }
                _ => None,
            })
        };
        let framing = req.framing(None);
        if !pump(&mut from_client, &mut to_upstream, framing, &mut on_request)? {
            return cut(&to_client, &to_upstream);
        }
        let Some(mut resp) = Head::read(&mut from_upstream)? else {
            return Ok(());
        };
        resp.0.extend(state.quota_headers(&method, path));
        resp.write(&mut to_client)?;
        let framing = resp.framing(Some(&method));
        let start = Instant::now();
        let mut on_response = |off: u64, bytes: &mut [u8]| {
            let end = off + bytes.len() as u64;
            rules.iter().find_map(|&(id, fault)| match fault {
                Fault::CutResponse(n) if end > n && state.fire(id, &target) => {
                    Some((n - off) as usize)
                }
                Fault::Corrupt(at) if (off..end).contains(&at) && state.fire(id, &target) => {
                    bytes[(at - off) as usize] ^= 0xff;
                    None
                }
                Fault::Throttle(rate) => {
                    if off == 0 {
                        state.fire(id, &target);
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
        )? || framing == Framing::UntilClose
        {
            return cut(&to_client, &to_upstream);
        }
    }
    Ok(())
}

#[test]
fn proxy_rechunks_chunked_bodies_and_stops_at_their_end() {
    let input = b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\nNEXT";
    let mut src = io::Cursor::new(&input[..]);
    let (mut out, mut offsets) = (Vec::new(), Vec::new());
    let mut hook = |off: u64, bytes: &mut [u8]| {
        offsets.push(off);
        bytes[0] = bytes[0].to_ascii_uppercase();
        None
    };
    assert!(pump(&mut src, &mut out, Framing::Chunked, &mut hook).unwrap());
    assert_eq!(out, b"5\r\nHello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_eq!(offsets, [0, 5]);
    assert_eq!(src.position() as usize, input.len() - 4);
}
