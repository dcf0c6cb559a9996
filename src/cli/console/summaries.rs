//! What each verb prints when it ends: summary lines on stderr, and the
//! `--json` summaries and listings on stdout.

use std::io::Write;
use std::time::Duration;

use imgsync::commands::inspect::ImageInfo;
use imgsync::engine::CopyReport;
use imgsync::store::location::Location;

use super::{escape_controls, to_json};

/// The referrer part of a summary line: what travelled, what was left
/// behind and why, what failed.
fn referrer_summary(report: &CopyReport) -> String {
    let mut parts = Vec::new();
    if !report.referrers.is_empty() {
        parts.push(format!("{} referrer(s) carried", report.referrers.len()));
    }
    for n in &report.referrers_not_carried {
        parts.push(format!("{} referrer(s) not carried: {}", n.count, n.why));
    }
    if !report.referrers_failed.is_empty() {
        parts.push(format!(
            "{} referrer(s) failed",
            report.referrers_failed.len()
        ));
    }
    parts.join("; ")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn copy_summary(report: &CopyReport, elapsed: Duration, quiet: bool, json: bool) {
    if json {
        let v = serde_json::json!({
            "images": report.images,
            "images_up_to_date": report.images_up_to_date,
            "blobs_copied": report.blobs_copied,
            "blobs_skipped": report.blobs_skipped,
            "blobs_mounted": report.blobs_mounted,
            "requests": report.requests,
            "bytes_copied": report.bytes_copied,
            "conversions": report.conversions,
            "referrers": report.referrers,
            "referrers_not_carried": report.referrers_not_carried,
            "referrers_failed": report.referrers_failed,
            "seconds": elapsed.as_secs_f64(),
        });
        println!("{}", to_json(&v));
    }
    let referrers = referrer_summary(report);
    if !quiet && !referrers.is_empty() {
        say!("{referrers}");
    }
    if !quiet {
        let mut line = format!(
            "{} image(s) ({} up to date): {} blob(s) copied ({}), {} skipped",
            report.images.len(),
            report.images_up_to_date,
            report.blobs_copied,
            mib(report.bytes_copied),
            report.blobs_skipped,
        );
        if report.blobs_mounted > 0 {
            line.push_str(&format!(", {} mounted", report.blobs_mounted));
        }
        if report.requests > 0 {
            line.push_str(&format!(", {} registry requests", report.requests));
        }
        say!("{line}, in {:.2}s", elapsed.as_secs_f64());
    }
}

pub fn verify_summary(
    loc: &Location,
    report: &CopyReport,
    elapsed: Duration,
    quiet: bool,
    json: bool,
) -> std::process::ExitCode {
    for e in &report.errors {
        say!("imgsync: error: {e}");
    }
    if json {
        let v = serde_json::json!({
            "location": loc.label(),
            "ok": report.errors.is_empty(),
            "images": report.images,
            "blobs_verified": report.blobs_copied,
            "bytes_verified": report.bytes_copied,
            "errors": report.errors.iter().map(|e| serde_json::json!({"class": e.class(), "message": e.to_string()})).collect::<Vec<_>>(),
            "seconds": elapsed.as_secs_f64(),
        });
        println!("{}", to_json(&v));
    }
    if report.errors.is_empty() {
        if !quiet {
            say!(
                "{}: {} image(s), {} blob(s) ({}) verified in {:.2}s",
                loc.label(),
                report.images.len(),
                report.blobs_copied,
                mib(report.bytes_copied),
                elapsed.as_secs_f64()
            );
        }
        std::process::ExitCode::SUCCESS
    } else {
        say!("{}: {} problem(s) found", loc.label(), report.errors.len());
        // Integrity problems say the content is bad; anything else (a
        // missing blob, an unreadable file) is reported by its own class.
        let code = report
            .errors
            .iter()
            .map(|e| e.class().exit_code())
            .find(|&c| c == imgsync::ErrorClass::Integrity.exit_code())
            .or_else(|| report.errors.first().map(|e| e.class().exit_code()))
            .unwrap_or(1);
        std::process::ExitCode::from(code)
    }
}

pub fn inspect(infos: &[ImageInfo], json: bool) {
    if json {
        println!("{}", to_json(infos));
        return;
    }
    let mut out = String::new();
    for (i, info) in infos.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let names = if info.names.is_empty() {
            "(untagged)".to_string()
        } else {
            info.names.join(", ")
        };
        out.push_str(&format!("Names:      {names}\n"));
        out.push_str(&format!("Digest:     {}\n", info.digest));
        out.push_str(&format!("MediaType:  {}\n", info.media_type));
        if let Some(t) = &info.artifact_type {
            out.push_str(&format!("ArtifactType: {t}\n"));
        }
        if let Some(s) = &info.subject {
            out.push_str(&format!("Subject:    {} ({})\n", s.digest, s.media_type));
        }
        if !info.annotations.is_empty() {
            out.push_str("Annotations:\n");
            for (k, v) in &info.annotations {
                out.push_str(&format!("  {k}={v}\n"));
            }
        }
        if !info.platforms.is_empty() {
            out.push_str("Platforms:\n");
            for p in &info.platforms {
                out.push_str(&format!("  {:<16} {}\n", p.platform, p.digest));
            }
            out.push_str(&format!("Manifest:   {}\n", info.manifest_digest));
        }
        if let Some(p) = &info.platform {
            out.push_str(&format!("Platform:   {p}\n"));
        }
        if let Some(c) = &info.config {
            out.push_str(&format!("Config:     {c}\n"));
        }
        out.push_str(&format!(
            "Layers:     {} ({} bytes)\n",
            info.layers.len(),
            info.size
        ));
        for l in &info.layers {
            out.push_str(&format!(
                "  {} {:>12}  {}\n",
                l.digest, l.size, l.media_type
            ));
        }
    }
    write_text(&out);
}

/// Lines of text for a person on stdout, control characters within a line
/// escaped as on stderr (names and media types come from outside).
pub fn write_text(text: &str) {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        out.push_str(&escape_controls(body));
        out.push_str(end);
    }
    write_stdout(out.as_bytes());
}

pub fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

pub fn save_summary(
    report: &imgsync::commands::save::SaveReport,
    elapsed: Duration,
    quiet: bool,
    json: bool,
) {
    let Some(m) = &report.bundle else { return };
    let carried: u64 = m.blobs.iter().map(|b| b.size).sum();
    let relied: u64 = m.required.iter().map(|b| b.size).sum();
    if json {
        let v = serde_json::json!({
            "bundle": m.id,
            "files": report.files,
            "bundle_bytes": report.bundle_bytes,
            "images": m.images,
            "blobs_carried": m.blobs.len(),
            "bytes_carried": carried,
            "blobs_required": m.required.len(),
            "bytes_required": relied,
            "volumes": m.volumes.len(),
            "referrers": report.copy.referrers,
            "referrers_not_carried": report.copy.referrers_not_carried,
            "referrers_failed": report.copy.referrers_failed,
            "requests": report.copy.requests,
            "seconds": elapsed.as_secs_f64(),
        });
        println!("{}", to_json(&v));
    }
    let referrers = referrer_summary(&report.copy);
    if !quiet && !referrers.is_empty() {
        say!("{referrers}");
    }
    if !quiet {
        let mut line = format!(
            "saved {} image(s) into {}: {} blob(s) ({}) carried",
            m.images.len(),
            report
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            m.blobs.len(),
            mib(carried),
        );
        if !m.required.is_empty() {
            line.push_str(&format!(
                ", {} ({}) left to earlier bundles",
                m.required.len(),
                mib(relied)
            ));
        }
        say!(
            "{line}; {} in {} file(s), in {:.2}s",
            mib(report.bundle_bytes),
            report.files.len(),
            elapsed.as_secs_f64()
        );
    }
}

pub fn bundle_verify_summary(
    report: &imgsync::commands::verify::BundleVerifyReport,
    elapsed: Duration,
    quiet: bool,
    json: bool,
) -> std::process::ExitCode {
    for p in &report.problems {
        say!("imgsync: error: {}: {p}", report.label);
    }
    for e in &report.copy.errors {
        say!("imgsync: error: {e}");
    }
    if json {
        let v = serde_json::json!({
            "bundle": report.label,
            "ok": report.ok(),
            "volumes": report.volumes,
            "images": report.copy.images,
            "referrers": report.referrers,
            "blobs_verified": report.copy.blobs_copied,
            "bytes_verified": report.copy.bytes_copied,
            "relies_on": report.relies_on.iter().map(|(f, (n, b))| serde_json::json!({"bundle": f, "blobs": n, "bytes": b})).collect::<Vec<_>>(),
            "problems": report.problems.iter().cloned().chain(report.copy.errors.iter().map(|e| e.to_string())).collect::<Vec<_>>(),
            "seconds": elapsed.as_secs_f64(),
        });
        println!("{}", to_json(&v));
    }
    if !quiet {
        for (file, (n, bytes)) in &report.relies_on {
            say!(
                "{}: relies on {n} blob(s) ({}) from earlier bundle {file}",
                report.label,
                mib(*bytes)
            );
        }
    }
    if report.ok() {
        if !quiet {
            let referrers = match report.referrers {
                0 => String::new(),
                n => format!(", {n} referrer(s)"),
            };
            say!(
                "{}: {} image(s){referrers}, {} blob(s) ({}) in {} volume(s) verified in {:.2}s",
                report.label,
                report.copy.images.len(),
                report.copy.blobs_copied,
                mib(report.copy.bytes_copied),
                report.volumes,
                elapsed.as_secs_f64()
            );
        }
        std::process::ExitCode::SUCCESS
    } else {
        say!(
            "{}: {} problem(s) found",
            report.label,
            report.problems.len() + report.copy.errors.len()
        );
        std::process::ExitCode::from(1)
    }
}

/// `sync --dry-run`: one line per planned image on stdout.
pub fn sync_plan(items: &[imgsync::commands::sync::Item]) {
    let mut out = String::new();
    for it in items {
        if let Some(why) = &it.rejected {
            out.push_str(&format!(
                "{} -> {} - rejected: {why}\n",
                it.source, it.target
            ));
            continue;
        }
        if let Some(failed) = &it.failed {
            out.push_str(&format!(
                "{} -> {} - failed: {}\n",
                it.source, it.target, failed.error
            ));
            continue;
        }
        out.push_str(&format!(
            "{} -> {} {} {}\n",
            it.source,
            it.target,
            it.source_digest.as_ref().map(|d| d.as_str()).unwrap_or("-"),
            if it.up_to_date { "up-to-date" } else { "copy" }
        ));
    }
    write_text(&out);
}

/// A sync run's lines on stderr: each failure, each copy (unless quiet),
/// and the summary.
pub fn sync_summary(
    config: &std::path::Path,
    report: &imgsync::commands::sync::RunReport,
    quiet: bool,
) {
    use imgsync::commands::sync::Action;
    for img in &report.images {
        match img.action {
            Action::Failed => say!(
                "failed {} -> {}: {}",
                img.source,
                img.target,
                img.error.as_deref().unwrap_or("")
            ),
            Action::Copied if !quiet => say!(
                "copied {} -> {} {} ({} bytes, {} blobs, {} mounted)",
                img.source,
                img.target,
                img.source_digest.as_deref().unwrap_or(""),
                img.bytes,
                img.blobs_copied,
                img.blobs_mounted
            ),
            _ => {}
        }
    }
    // What each registry's rate limit has left, where it said.
    let quota: Vec<String> = report
        .quota
        .iter()
        .filter_map(|(host, q)| {
            let left = q.remaining?;
            Some(match q.limit {
                Some(limit) => format!("{host} {left}/{limit}"),
                None => format!("{host} {left}"),
            })
        })
        .collect();
    let quota = match quota.is_empty() {
        true => String::new(),
        false => format!("; quota left: {}", quota.join(", ")),
    };
    say!(
        "sync {}: {} copied, {} up to date, {} failed; blobs {} uploaded, {} mounted, {} skipped; {} bytes; {} requests; {:.2}s{quota}",
        config.display(),
        report.copied,
        report.up_to_date,
        report.failed,
        report.blobs_copied,
        report.blobs_mounted,
        report.blobs_skipped,
        report.bytes,
        report.requests,
        report.seconds
    );
    if report.state_skipped > 0 || !report.full_check {
        say!(
            "sync {}: {} up to date by the state file (targets not asked); {}",
            config.display(),
            report.state_skipped,
            if report.full_check {
                "a full check"
            } else {
                "not a full check (--verify-target for one)"
            }
        );
    }
    if report.referrers_copied > 0 || report.referrers_failed > 0 {
        say!(
            "sync {}: {} referrer(s) copied, {} failed",
            config.display(),
            report.referrers_copied,
            report.referrers_failed
        );
    }
}
