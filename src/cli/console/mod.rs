//! Everything the binary prints. stdout carries results (digests, JSON,
//! archive bytes); stderr carries progress and messages.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use imgsync::content::Digest;
use imgsync::engine::ReferrerFailure;
use imgsync::engine::progress::{BlobOutcome, Notice, Progress};

/// Writes one line to stderr through [`stderr_line`]: every line of text
/// the binary prints there goes through this, so that no text from outside
/// (a registry's message, a tag, a file name) reaches the terminal raw.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::console::stderr_line(&format!($($arg)*))
    };
}

mod summaries;
pub use summaries::*;

/// Control characters shown as escapes (`ESC` as `\x1b`): a registry's
/// message or a name it lists could otherwise move the cursor, clear the
/// screen or hide text on the user's terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The one printer of stderr lines.
pub(crate) fn stderr_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", escape_controls(line));
}

/// Renders engine events: bars per blob on a terminal, one line per image
/// otherwise, nothing with `-q`.
pub struct Reporter {
    quiet: bool,
    /// Lines per image and per conversion (a sync prints its own per image).
    image_lines: bool,
    verb: &'static str,
    bars: Option<MultiProgress>,
    active: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Reporter {
    /// `verb` says what happened to each image ("copied", "verified").
    pub fn new(quiet: bool, verb: &'static str) -> Reporter {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Reporter {
            quiet,
            image_lines: true,
            verb,
            bars,
            active: Mutex::new(HashMap::new()),
        }
    }

    /// A sync run's events: notices only (retries, moved tags), no bars;
    /// the run prints a line per image itself.
    pub fn for_sync(quiet: bool) -> Reporter {
        Reporter {
            quiet,
            image_lines: false,
            verb: "copied",
            bars: None,
            active: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(b) => b.suspend(|| say!("{msg}")),
            None => say!("{msg}"),
        }
    }

    pub fn finish(&self) {
        for (_, bar) in self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            bar.finish_and_clear();
        }
        if let Some(b) = &self.bars {
            let _ = b.clear();
        }
    }
}

impl Progress for Reporter {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let Some(multi) = &self.bars else { return };
        let bar = multi.add(ProgressBar::new(size));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:.dim} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(digest.short());
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.clone(), bar);
    }

    fn blob_bytes(&self, digest: &Digest, bytes: u64) {
        if self.bars.is_none() {
            return;
        }
        if let Some(b) = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            b.inc(bytes);
        }
    }

    fn blob_done(&self, digest: &Digest, _size: u64, _outcome: BlobOutcome) {
        if let Some(b) = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest)
        {
            b.finish_and_clear();
        }
    }

    fn image_done(&self, label: &str, digest: &Digest) {
        if self.image_lines {
            self.line(&format!("{} {label} {digest}", self.verb));
        }
    }

    fn converted(&self, what: &str, old: &Digest, new: &Digest, why: &str) {
        if self.image_lines {
            self.line(&format!("converted {what}: {old} -> {new} ({why})"));
        }
    }

    fn notice(&self, notice: &Notice) {
        self.line(&format!("imgsync: {notice}"));
    }

    fn referrer_failed(&self, failure: &ReferrerFailure) {
        // A failure: shown even with -q.
        let msg = format!("imgsync: error: {}", failure.error);
        match &self.bars {
            Some(b) => b.suspend(|| say!("{msg}")),
            None => say!("{msg}"),
        }
    }
}

/// Writes this crate's log records to stderr (`--debug`: each registry
/// request and its status). Records of other crates are left out.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("imgsync")
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            say!("imgsync: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

/// Sends the library's log records to stderr; with `debug`, each registry
/// request and its status.
pub fn start_log(debug: bool) {
    if log::set_logger(&StderrLog).is_ok() && debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// JSON bytes as one result on stdout.
pub fn json_line(json: &[u8]) {
    let mut out = json.to_vec();
    out.push(b'\n');
    write_stdout(&out);
}

/// A list of names on stdout, one a line, or as a JSON list.
pub fn names(names: &[String], json: bool) {
    if json {
        json_line(to_json(names).as_bytes());
    } else {
        let mut out = String::new();
        for n in names {
            out.push_str(n);
            out.push('\n');
        }
        write_text(&out);
    }
}

/// A message for the user on stderr (what a command did, a lock held).
pub fn message(msg: &str) {
    say!("{msg}");
}

/// A failure, as one line.
pub fn error(e: &imgsync::Error) {
    say!("imgsync: error: {e}");
}

/// Pretty JSON of a report. Serialising these values cannot fail: they
/// hold strings, numbers and maps with string keys only.
#[allow(
    clippy::expect_used,
    reason = "reports serialise to JSON whatever they hold"
)]
pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialise")
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_shown_as_escapes() {
        assert_eq!(escape_controls("plain: ok"), "plain: ok");
        assert_eq!(
            escape_controls("red \u{1b}[31mtext\nnext\u{9b}"),
            "red \\x1b[31mtext\\x0anext\\u{9b}"
        );
    }
}
