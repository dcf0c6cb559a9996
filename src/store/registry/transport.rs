//! The HTTP machinery under the registry client: `reqwest`'s asynchronous
//! client driven by one small process-wide tokio runtime. The calling
//! thread blocks on each request (and on each chunk of a response body)
//! while the runtime's workers do the socket I/O. Streamed request bodies
//! are fed from a bounded channel of large chunks ([`body_channel`]), so an
//! upload costs a few system calls per 256 KiB rather than per 8 KiB.

use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};

use super::failure::error_chain;
/// The runtime that drives every registry connection of the process.
pub(super) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    #[allow(
        clippy::expect_used,
        reason = "only the OS refusing threads at start-up fails this, not anything read"
    )]
    RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 4);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("imgsync-http")
            .enable_all()
            .build()
            .expect("cannot start the HTTP runtime")
    })
}

/// Runs a future of the HTTP client to completion on the calling thread.
pub(super) fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// A registry's answer: status and headers at once, the body read
/// synchronously (as `Read`, or whole).
pub struct Response {
    inner: reqwest::Response,
    /// What the last chunk had left over after the last `read`.
    pending: Bytes,
}

impl Response {
    pub(super) fn new(inner: reqwest::Response) -> Response {
        Response {
            inner,
            pending: Bytes::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The body's length, when the registry said it.
    pub fn content_length(&self) -> Option<u64> {
        self.inner.content_length()
    }

    /// The rest of the body, if at most [`MAX_LISTING_BYTES`]: a page of
    /// tags or of the catalog.
    pub fn bytes(self) -> Result<Bytes, BodyError> {
        self.read_capped(MAX_LISTING_BYTES).map(Bytes::from)
    }

    /// The rest of the body, read whole if at most `cap` bytes; past that,
    /// the read stops there (and the connection is dropped), whatever
    /// the registry meant to send.
    pub fn read_capped(self, cap: u64) -> Result<Vec<u8>, BodyError> {
        if self.content_length().is_some_and(|n| n > cap) {
            return Err(BodyError::TooLarge(cap));
        }
        let mut buf = Vec::new();
        self.take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(BodyError::Read)?;
        if buf.len() as u64 > cap {
            return Err(BodyError::TooLarge(cap));
        }
        Ok(buf)
    }

    /// At most the first `cap` bytes of the rest of the body as text
    /// (invalid UTF-8 replaced); a failed read ends it. For error
    /// answers, whose first line or error list is all a message needs.
    pub fn text_prefix(self, cap: u64) -> String {
        let mut buf = Vec::new();
        let _ = self.take(cap).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// The largest page of a tag list or catalog read: a thousand names take
/// tens of KiB; a registry that ignores `n` and lists 100 000 tags at once
/// still fits.
pub const MAX_LISTING_BYTES: u64 = 8 << 20;

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    /// The body is over this many bytes.
    TooLarge(u64),
    Read(io::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge(cap) => write!(f, "the answer is over the {cap}-byte limit"),
            BodyError::Read(e) => f.write_str(&error_chain(e)),
        }
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pending.is_empty() {
            match block_on(self.inner.chunk()) {
                Ok(Some(b)) => self.pending = b,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let mut pending: &[u8] = &self.pending;
        let n = pending.read(buf)?;
        self.pending.advance(n);
        Ok(n)
    }
}

/// Chunks of a streamed request body, in flight at once per upload.
const BODY_CHUNKS_IN_FLIGHT: usize = 4;

/// A request body streamed from another thread: the [`BodySender`] end
/// hands over chunks (best ≥ 256 KiB each), the body sends them as they
/// come. `size`, when known, is the exact length (sent as
/// `Content-Length`; otherwise the body is chunked).
pub fn body_channel(size: Option<u64>) -> (BodySender, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(BODY_CHUNKS_IN_FLIGHT);
    (
        BodySender { tx: Some(tx) },
        reqwest::Body::wrap(ChannelBody { rx, size }),
    )
}

/// The feeding end of [`body_channel`].
pub struct BodySender {
    tx: Option<tokio::sync::mpsc::Sender<io::Result<Bytes>>>,
}

impl BodySender {
    /// Hands over one chunk; blocks while the request is behind. Fails
    /// when the request has stopped (its error is in its response).
    pub fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        match &self.tx {
            Some(tx) => tx
                .blocking_send(Ok(chunk))
                .map_err(|_| io::Error::other("the upload stopped")),
            None => Err(io::Error::other("the upload stopped")),
        }
    }

    /// Makes the request fail rather than complete with what was sent.
    pub fn fail(&mut self, why: String) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.blocking_send(Err(io::Error::other(why)));
        }
    }
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    size: Option<u64>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.size {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

/// Sends one request and waits for the head of its answer. Each exchange
/// is logged at debug level (`--debug`): method, URL with secrets left out
/// ([`redact_url`]), then status and HTTP version, or the failure. Headers,
/// and with them every credential and token, are never logged.
pub(super) fn execute(http: &Client, req: reqwest::Request) -> reqwest::Result<Response> {
    let line = log::log_enabled!(log::Level::Debug)
        .then(|| format!("{} {}", req.method(), redact_url(req.url())));
    let result = block_on(http.execute(req)).map(Response::new);
    if let Some(line) = line {
        match &result {
            Ok(r) => log::debug!("{line} -> {} ({:?})", r.status(), r.inner.version()),
            Err(e) => log::debug!("{line} -> {}", error_chain(e)),
        }
    }
    result
}

/// A URL for the debug log: user info and query values that carry upload
/// state are left out.
fn redact_url(u: &reqwest::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "digest" || k == "mount" || k == "from" || k == "n" || k == "last" {
                    v.into_owned()
                } else {
                    "…".to_string()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_urls_keep_no_user_info_nor_upload_state() {
        let u = reqwest::Url::parse(
            "https://user:secret@r.example/v2/a/blobs/uploads/x?_state=tok&digest=sha256%3A00&n=5",
        )
        .unwrap();
        let shown = redact_url(&u);
        assert!(
            !shown.contains("secret") && !shown.contains("user"),
            "{shown}"
        );
        assert!(!shown.contains("tok"), "{shown}");
        assert!(
            shown.contains("digest=sha256%3A00") && shown.contains("n=5"),
            "{shown}"
        );
    }
}
