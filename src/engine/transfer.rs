//! Moving blobs (parallel, on the worker pool): skip what the sink has,
//! else stream source → verify → (transcode) → sink, retrying a blob after a
//! transient failure where the sink allows it.

use std::io::{self, BufWriter, Read};
use std::path::PathBuf;

use super::plan::{Job, JobOutput, JobResult};
use super::pool;
use super::stream::{DiffIdTee, HashReader, HashWriter, VerifyReader, decoder, encoder};
use super::{CopyOptions, CopyReport};
use crate::content::DigestHasher;
use crate::content::media_type::{self, Compression};
use crate::engine::progress::{BlobOutcome, Notice, Progress};
use crate::error::{Error, Result};
use crate::store::{ImageSink, ImageSource};

pub(super) fn run_jobs(
    jobs: &[Job],
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    opts: &CopyOptions,
    progress: &dyn Progress,
    report: &mut CopyReport,
) -> Result<Vec<Option<JobOutput>>> {
    let mut order: Vec<(usize, &Job)> = jobs.iter().enumerate().collect();
    order.sort_by_key(|(_, job)| std::cmp::Reverse(job.src.size));
    let workers = opts.jobs.max(1).min(jobs.len().max(1));
    let ordered = pool::run_until(
        &order,
        workers,
        |_, &(_, job)| {
            let mut attempt = 0;
            loop {
                let r = move_blob(job, source, sink, opts, progress);
                match &r {
                    Err(e)
                        if e.class().is_transient()
                            && attempt < opts.retry_times
                            && sink.caps().retry_blobs =>
                    {
                        attempt += 1;
                        progress.notice(&Notice::Retry {
                            what: &job.what,
                            attempt,
                            cause: e,
                        });
                        crate::store::registry::sleep_backoff(attempt - 1, None);
                    }
                    _ => break r,
                }
            }
        },
        |r| r.is_err() && !opts.keep_going,
    );
    let mut results: Vec<Option<JobResult>> = (0..jobs.len()).map(|_| None).collect();
    for (&(id, _), r) in order.iter().zip(ordered) {
        if let Some(slot) = results.get_mut(id) {
            *slot = r;
        }
    }
    let mut outputs = Vec::with_capacity(jobs.len());
    let mut first_error = None;
    for (job, r) in jobs.iter().zip(results) {
        match r {
            Some(Ok((out, outcome))) => {
                match outcome {
                    BlobOutcome::Copied => {
                        report.blobs_copied += 1;
                        report.bytes_copied += out.desc.size;
                    }
                    BlobOutcome::Skipped => report.blobs_skipped += 1,
                    BlobOutcome::Mounted => report.blobs_mounted += 1,
                    BlobOutcome::Absent => {}
                }
                progress.blob_done(&job.src.digest, out.desc.size, outcome);
                outputs.push(Some(out));
            }
            Some(Err(e)) => {
                outputs.push(None);
                if opts.keep_going {
                    report.errors.push(e);
                } else if first_error.is_none() {
                    first_error = Some(e);
                }
            }
            None => outputs.push(None),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outputs),
    }
}

fn move_blob(
    job: &Job,
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<(JobOutput, BlobOutcome)> {
    let same = JobOutput {
        desc: job.src.clone(),
    };
    // A blob whose bytes the planner read is a config.
    if job.transcode.is_none()
        && match &job.inline {
            Some(_) => sink.has_config(&job.src)?,
            None => sink.has_blob(&job.src)?,
        }
    {
        return Ok((same, BlobOutcome::Skipped));
    }
    if job.transcode.is_none() && sink.mount_blob(&job.src, source.registry_repo().as_ref())? {
        return Ok((same, BlobOutcome::Mounted));
    }
    progress.blob_started(&job.src.digest, job.src.size);
    let reader: Box<dyn Read + Send> = match &job.inline {
        Some(bytes) => Box::new(io::Cursor::new(bytes.as_ref().clone())),
        None => match source
            .open_blob(&job.src)
            .inspect_err(|_| sink.blob_abandoned(&job.src))
        {
            Ok(r) => r,
            Err(e) if e.is_not_found() && job.foreign && !sink.caps().needs_layer_bytes => {
                return Ok((same, BlobOutcome::Absent));
            }
            Err(e) if e.is_not_found() && job.foreign => {
                return Err(Error::NotFound(format!(
                    "{e}: it is a foreign layer the source does not carry, and {} needs its bytes",
                    sink.describe()
                )));
            }
            Err(e) => return Err(e),
        },
    };
    let verified = VerifyReader::new(
        reader,
        &job.src.digest,
        job.src.size,
        job.what.clone(),
        progress,
    )?;
    match job.transcode {
        None => {
            // A compressed layer copied as it is: its digest proves the
            // bytes. Its DiffID is checked too (a second core decompresses a
            // copy) when it comes from an archive or layout into an archive
            // or layout, and always by `verify`. Between registries, or into
            // one, the bytes are the source's exactly and every client that
            // unpacks them checks the DiffID, so the CPU goes to moving bytes.
            let check_diff_id =
                opts.keep_going || (source.registry_repo().is_none() && !sink.caps().remote);
            match (&job.diff_id, job.compression) {
                (Some(diff_id), Some(c)) if c != Compression::None && check_diff_id => {
                    let mut tee = DiffIdTee::new(
                        verified,
                        c,
                        job.src.digest.clone(),
                        diff_id.clone(),
                        job.what.clone(),
                    );
                    sink.put_blob(&job.src, &mut tee)?;
                }
                _ => {
                    let mut v = verified;
                    sink.put_blob(&job.src, &mut v)?;
                }
            }
            Ok((same, BlobOutcome::Copied))
        }
        Some(target) => {
            // The planner transcodes layers of a known type only.
            let (Some(from), Some(lt)) =
                (job.compression, media_type::layer_type(&job.src.media_type))
            else {
                return Err(Error::Unsupported(format!(
                    "{}: {} is not a layer type imgsync can recompress",
                    job.what, job.src.media_type
                )));
            };
            // Decompress, check the DiffID, recompress: into whatever `out`
            // is (a spool file, or an upload in progress).
            let mut verified = Some(verified);
            let mut produce = |out: &mut dyn io::Write| -> Result<()> {
                let Some(verified) = verified.take() else {
                    return Err(Error::Integrity(format!(
                        "{}: the layer's bytes were asked for a second time",
                        job.what
                    )));
                };
                let dec = decoder(verified, from).map_err(|e| Error::io(job.what.clone(), e))?;
                let mut plain = HashReader {
                    inner: dec,
                    hasher: DigestHasher::sha256(),
                    enabled: from != Compression::None,
                };
                let mut enc = encoder(out, target, opts.compress_level)
                    .map_err(|e| Error::io(job.what.clone(), e))?;
                enc.copy_from(&mut plain)
                    .map_err(|e| match Error::io(job.what.clone(), e) {
                        Error::Io { what, source }
                            if source.kind() == io::ErrorKind::InvalidData
                                || source.kind() == io::ErrorKind::InvalidInput =>
                        {
                            Error::Blob {
                                digest: job.src.digest.clone(),
                                message: format!("{what}: cannot decompress layer: {source}"),
                            }
                        }
                        other => other,
                    })?;
                enc.finish_box()
                    .map_err(|e| Error::io(job.what.clone(), e))?;
                // An uncompressed source's digest is its DiffID, checked by
                // the verifying reader; no need to hash it twice.
                let got_diff = if from == Compression::None {
                    job.src.digest.clone()
                } else {
                    plain.hasher.finish()
                };
                if let Some(expected) = &job.diff_id
                    && &got_diff != expected
                {
                    return Err(Error::Blob {
                        digest: job.src.digest.clone(),
                        message: format!(
                            "{}: uncompressed content hashes to {got_diff}, but the config's DiffID is {expected}",
                            job.what
                        ),
                    });
                }
                Ok(())
            };
            let media_type =
                media_type::layer_media_type(target, lt.foreign, lt.docker).to_string();
            if sink.caps().streams_produced_blobs {
                // Straight into the destination as it is produced.
                let (digest, size) = sink.put_blob_produced(&job.what, &mut produce)?;
                let mut desc = job.src.clone();
                desc.digest = digest;
                desc.size = size;
                desc.media_type = media_type;
                return Ok((JobOutput { desc }, BlobOutcome::Copied));
            }
            let dir = sink
                .spool_dir()
                .map(PathBuf::from)
                .unwrap_or_else(|| opts.tmpdir.clone());
            // Locked while it lives: a later run reclaims it if this one
            // is killed before it can.
            let tmp = crate::store::atomic_file::locked_destination_tempfile(
                &dir,
                ".imgsync-transcoding-",
            )
            .map_err(|e| Error::path("create a temporary file in", &dir, e))?;
            crate::store::cleanup::register_cleanup(tmp.path());
            let result = (|| {
                let file = tmp
                    .reopen()
                    .map_err(|e| Error::path("write", tmp.path(), e))?;
                let mut out = HashWriter {
                    inner: BufWriter::with_capacity(256 * 1024, file),
                    hasher: DigestHasher::sha256(),
                    written: 0,
                };
                produce(&mut out)?;
                use std::io::Write;
                out.flush()
                    .map_err(|e| Error::path("write", tmp.path(), e))?;
                Ok((out.hasher.finish(), out.written))
            })();
            crate::store::cleanup::unregister_cleanup(tmp.path());
            let (digest, size) = result?;
            let mut desc = job.src.clone();
            desc.digest = digest;
            desc.size = size;
            desc.media_type = media_type;
            media_type::layer_media_type(target, lt.foreign, lt.docker).to_string();
            let out = JobOutput { desc: desc.clone() };
            if sink.has_blob(&desc)? {
                return Ok((out, BlobOutcome::Skipped));
            }
            if sink.mount_blob(&desc, None)? {
                return Ok((out, BlobOutcome::Mounted));
            }
            sink.put_blob_file(&desc, tmp)?;
            Ok((out, BlobOutcome::Copied))
        }
    }
}
