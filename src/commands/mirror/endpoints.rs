//! Where a sync entry reads and writes: its `source`, and its `target` or
//! `targets` (fan-out), checked and resolved.

use std::path::Path;

use super::config::{Ctx, Source, SyncEntry, Target};
use crate::error::Result;
use crate::store::location::Location;

pub(super) fn parse_source(cx: &Ctx, s: &str) -> Result<Source> {
    if let Some(prefix) = s.strip_suffix('/') {
        let (host, path) = prefix
            .split_once('/')
            .ok_or_else(|| cx.err(s, format!("source {s:?}: a prefix source is host/path/")))?;
        return Ok(Source::Prefix {
            host: host.to_string(),
            prefix: path.to_string(),
        });
    }
    let r = match Location::parse(s).map_err(|e| cx.err(s, format!("source {s:?}: {e}")))? {
        Location::Registry(r) => r,
        _ => return Err(cx.err(s, format!("source {s:?} must be a registry repository"))),
    };
    if r.digest.is_some() {
        return Ok(Source::Digest(r));
    }
    if r.tag.is_some() {
        return Err(cx.err(
            s,
            format!("source {s:?}: give a repository (tags are chosen with `tags:`) or a digest"),
        ));
    }
    Ok(Source::Repository(r))
}

/// An entry's `target:` or `targets:` (exactly one of them; a list of
/// distinct targets).
pub(super) fn parse_targets(cx: &Ctx, e: &SyncEntry, source: &Source) -> Result<Vec<Target>> {
    let listed = match (&e.target, &e.targets) {
        (Some(t), None) => vec![t.clone()],
        (None, Some(ts)) if !ts.is_empty() => ts.clone(),
        (None, Some(_)) => {
            return Err(cx.err("targets", format!("{}: `targets` is empty", e.source)));
        }
        (Some(_), Some(_)) => {
            return Err(cx.err(
                "targets",
                format!("{}: give `target` or `targets`, not both", e.source),
            ));
        }
        (None, None) => {
            return Err(cx.err(
                &e.source,
                format!("{}: the entry has no `target`", e.source),
            ));
        }
    };
    let mut targets: Vec<Target> = Vec::new();
    for (k, t) in listed.iter().enumerate() {
        if listed.iter().take(k).any(|earlier| earlier == t) {
            return Err(cx.err(t, format!("target {t:?} is listed twice")));
        }
        targets.push(parse_target(cx, t, source)?);
    }
    Ok(targets)
}

fn parse_target(cx: &Ctx, s: &str, source: &Source) -> Result<Target> {
    if let Some(p) = s.strip_prefix("oci:") {
        return Ok(Target::Layout(
            cx.path.parent().unwrap_or(Path::new(".")).join(p),
        ));
    }
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    if matches!(source, Source::Prefix { .. }) != s.ends_with('/') {
        return Err(cx.err(s, format!("target {s:?}: a prefix source (ending in /) needs a prefix target (ending in /), and only then")));
    }
    let r = match Location::parse(trimmed).map_err(|e| cx.err(s, format!("target {s:?}: {e}")))? {
        Location::Registry(r) => r,
        _ => {
            return Err(cx.err(
                s,
                format!("target {s:?} must be a registry repository or oci:PATH"),
            ));
        }
    };
    if r.tag.is_some() || r.digest.is_some() {
        return Err(cx.err(
            s,
            format!("target {s:?}: give a repository, without a tag or digest"),
        ));
    }
    Ok(Target::Registry {
        host: r.domain,
        path: r.path,
    })
}
