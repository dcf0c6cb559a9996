//! Blob uploads (formats reference §6.3): one `POST` (sent ahead, while
//! the engine opens the source blob) and one streamed monolithic `PUT`; a
//! blob produced on the way (its digest unknown until the end) goes as one
//! streamed `PATCH` and a closing `PUT`. Nothing streamed is retried here:
//! a failed upload is redone whole by the engine.

use std::io::{self, Read};
use std::sync::Mutex;

use bytes::BytesMut;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};

use super::client::RegistryClient;
use super::retry::Retry;
use super::sink::RegistrySink;
use super::transport::{BodySender, body_channel};
use crate::content::{Descriptor, Digest};
use crate::error::{Error, Result};

/// Bytes of a streamed upload handed over at once: large enough that the
/// upload costs few system calls and wake-ups, small enough that a few in
/// flight per blob keep memory low.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Starts an upload session in `repo`, or mounts the blob from `from`:
/// `Ok(None)` when mounted, else the session's `Location`.
fn start_upload(
    client: &RegistryClient,
    repo: &str,
    digest: &Digest,
    from: Option<&str>,
) -> Result<Option<String>> {
    let repo = repo.to_string();
    let (query, what) = match from {
        Some(f) => (
            format!("?mount={}&from={f}", digest),
            format!("mount {} from {f} into {repo}", digest),
        ),
        None => (
            String::new(),
            format!("start upload of {} to {repo}", digest),
        ),
    };
    let r = client.send(&what, Retry::Yes, |http, base| {
        http.post(format!("{base}/v2/{repo}/blobs/uploads/{query}"))
            .header(CONTENT_LENGTH, "0")
    })?;
    match r.status() {
        StatusCode::CREATED if from.is_some() => Ok(None),
        StatusCode::ACCEPTED => {
            let loc = r
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Error::Format(format!(
                        "{what} on {}: no Location in the answer",
                        client.host()
                    ))
                })?;
            Ok(Some(loc.to_string()))
        }
        _ => Err(client.failure(&what, r)),
    }
}

impl RegistrySink {
    /// Starts an upload session, or mounts: `Ok(None)` when mounted.
    pub(super) fn start_upload(
        &self,
        desc: &Descriptor,
        from: Option<&str>,
    ) -> Result<Option<String>> {
        start_upload(&self.client, &self.repo, &desc.digest, from)
    }

    /// Opens the upload session of a blob this sink is about to upload, on
    /// another thread: one round trip less on the way of each blob.
    pub(super) fn open_session_ahead(&self, digest: &Digest) {
        let client = self.client.clone();
        let repo = self.repo.clone();
        let d = digest.clone();
        let session = std::thread::spawn(move || start_upload(&client, &repo, &d, None));
        // A session opened earlier for the same blob and not used (its
        // source could not be read) lapses on the registry.
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.clone(), session);
    }

    /// The upload session for a blob: the one opened ahead, or a new one.
    fn upload_session(&self, desc: &Descriptor) -> Result<String> {
        let ahead = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&desc.digest);
        let location = match ahead {
            Some(session) => session.join().map_err(|_| {
                Error::Network(format!(
                    "{}: the thread opening an upload session panicked",
                    self.label()
                ))
            })??,
            None => self.start_upload(desc, None)?,
        };
        location
            .ok_or_else(|| Error::Format(format!("{}: upload session not opened", self.label())))
    }

    /// Resolves an upload `Location` (maybe relative) and adds the digest
    /// to its query, keeping the parameters already there.
    fn finish_url(&self, location: &str, digest: &Digest) -> Result<String> {
        let base = self.client.base()?;
        let abs = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{base}{location}")
        };
        let sep = if abs.contains('?') { '&' } else { '?' };
        Ok(format!(
            "{abs}{sep}digest={}",
            digest.as_str().replace(':', "%3A")
        ))
    }

    /// One `POST` and one streamed monolithic `PUT`.
    pub(super) fn upload(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        let location = self.upload_session(desc)?;
        let url = self.finish_url(&location, &desc.digest)?;
        let what = format!("upload {} to {}", desc.digest, self.repo);
        let size = desc.size;
        let (mut tx, body) = body_channel(Some(size));
        let body = Mutex::new(Some(body));
        std::thread::scope(|s| {
            // The request runs on its own thread; this one reads (and
            // verifies) the source and feeds it in large chunks.
            let upload = s.spawn(|| {
                self.client.send(&what, Retry::No, |http, _| {
                    let req = http
                        .put(url.as_str())
                        .header(CONTENT_TYPE, "application/octet-stream");
                    match body.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        Some(b) => req.header(CONTENT_LENGTH, size).body(b),
                        None => req.body(Vec::new()),
                    }
                })
            });
            let mut failed = None;
            let mut done = false;
            while !done {
                let mut buf = BytesMut::zeroed(UPLOAD_CHUNK);
                let mut filled = 0;
                // Fill the chunk: a network source returns what one packet
                // or frame held.
                while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
                    match reader.read(rest) {
                        Ok(0) => {
                            done = true;
                            break;
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tx.fail("the source stream failed".to_string());
                            failed = Some(e);
                            done = true;
                            break;
                        }
                    }
                }
                if failed.is_some() {
                    break;
                }
                if filled > 0 {
                    buf.truncate(filled);
                    if tx.send(buf.freeze()).is_err() {
                        break;
                    }
                }
            }
            drop(tx);
            let response = upload
                .join()
                .map_err(|_| Error::Network(format!("{what}: upload thread panicked")))?;
            if let Some(e) = failed {
                return Err(Error::io(what.clone(), e));
            }
            let r = response?;
            if r.status() != StatusCode::CREATED && !r.status().is_success() {
                return Err(self.client.failure(&what, r));
            }
            self.mounts
                .note(self.client.host(), &desc.digest, &self.repo);
            Ok(())
        })
    }

    /// A blob whose bytes are produced while it is sent: its digest and
    /// size are known at the end.
    pub(super) fn upload_produced(
        &self,
        what: &str,
        produce: &mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>,
    ) -> Result<(Digest, u64)> {
        // POST, one streamed PATCH (chunked: the size is not known yet),
        // then PUT with the digest computed on the way.
        let location = self
            .start_upload(&Descriptor::new("", Digest::sha256_of(b""), 0), None)?
            .ok_or_else(|| Error::Format(format!("{}: upload session not opened", self.label())))?;
        let base = self.client.base()?;
        let patch_url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{base}{location}")
        };
        let what = format!("{what}: upload to {}", self.repo);
        let (tx, body) = body_channel(None);
        let body = Mutex::new(Some(body));
        let (digest, size, next) = std::thread::scope(|s| {
            let upload = s.spawn(|| {
                self.client.send(&what, Retry::No, |http, _| {
                    let req = http
                        .patch(patch_url.as_str())
                        .header(CONTENT_TYPE, "application/octet-stream");
                    match body.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        Some(b) => req.body(b),
                        None => req.body(Vec::new()),
                    }
                })
            });
            let mut w = ChannelWriter {
                tx,
                buf: BytesMut::with_capacity(UPLOAD_CHUNK),
                hasher: crate::content::DigestHasher::sha256(),
                written: 0,
                stopped: false,
            };
            let produced = produce(&mut w).and_then(|()| {
                use std::io::Write;
                w.flush().map_err(|e| Error::io(what.clone(), e))
            });
            if let Err(e) = &produced {
                w.fail(e.to_string());
            }
            let (hasher, written, stopped) = (w.hasher.clone(), w.written, w.stopped);
            drop(w);
            let response = upload
                .join()
                .map_err(|_| Error::Network(format!("{what}: upload thread panicked")))?;
            // When the request ended before the body did (connection lost,
            // the registry refused it), its outcome is the cause, not the
            // write that found it gone.
            if stopped {
                match response {
                    Err(e) => return Err(e),
                    Ok(r) if !r.status().is_success() => {
                        return Err(self.client.failure(&what, r));
                    }
                    Ok(_) => {}
                }
                produced?;
                return Err(Error::Network(format!(
                    "{what}: the registry ended the upload early"
                )));
            }
            produced?;
            let r = response?;
            if !r.status().is_success() {
                return Err(self.client.failure(&what, r));
            }
            let next = r
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| patch_url.clone());
            Ok((hasher.finish(), written, next))
        })?;
        // Not retried here: a failed upload is redone whole by the engine.
        let url = self.finish_url(&next, &digest)?;
        let r = self.client.send(&what, Retry::No, |http, _| {
            http.put(url.as_str()).header(CONTENT_LENGTH, "0")
        })?;
        if !r.status().is_success() {
            return Err(self.client.failure(&what, r));
        }
        self.mounts.note(self.client.host(), &digest, &self.repo);
        Ok((digest, size))
    }
}

/// The writing end of a streamed upload: hashes, counts, and hands full
/// chunks to the request.
struct ChannelWriter {
    tx: BodySender,
    buf: BytesMut,
    hasher: crate::content::DigestHasher,
    written: u64,
    /// The request ended before the body was complete.
    stopped: bool,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(UPLOAD_CHUNK));
        let sent = self.tx.send(chunk.freeze());
        self.stopped |= sent.is_err();
        sent
    }

    /// Makes the request fail rather than complete with what was sent.
    fn fail(&mut self, why: String) {
        self.tx.fail(why);
    }
}

impl io::Write for ChannelWriter {
    /// Takes at most what fills the current chunk: a large write (a whole
    /// compressed piece) goes out in chunks, never as one buffer.
    #[allow(clippy::indexing_slicing, reason = "n is at most data.len()")]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (UPLOAD_CHUNK - self.buf.len()).min(data.len());
        let data = &data[..n];
        self.hasher.update(data);
        self.written += n as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= UPLOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
