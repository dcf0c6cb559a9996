//! What a sync run did: per image and in total, as a human summary, JSON
//! (`--report`) and node_exporter textfile metrics (`--metrics`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::commands::mirror::plan::Item;
use crate::engine::CopyReport;
use crate::error::{ErrorClass, Result};
use crate::store::registry::QuotaReading;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Copied,
    UpToDate,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub source: String,
    pub source_digest: Option<String>,
    pub target: String,
    pub action: Action,
    pub bytes: u64,
    pub blobs_copied: usize,
    pub blobs_mounted: usize,
    pub blobs_skipped: usize,
    pub retries: u32,
    pub seconds: f64,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    /// What the run noticed on the way (a retry, a tag that moved).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Referrers and digest-tagged manifests written with the image.
    pub referrers: Vec<ReferrerCopied>,
    /// Referrers the target held already.
    pub referrers_up_to_date: usize,
    /// Referrers left behind on purpose (a conversion rewrote their
    /// subject, the target cannot hold them).
    pub referrers_not_carried: usize,
    pub referrers_failed: usize,
    /// Why each failed referrer failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrer_errors: Vec<String>,
    /// This row stands for a repository (or a prefix) whose tag list (or
    /// catalog) could not be read: its images are unknown this run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub listing_failed: bool,
    /// Up to date on the word of the state file: its target was not asked.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub state_skipped: bool,
    /// The blobs the copy saw at the target (configs, layers): the state
    /// remembers them for the target repository.
    #[serde(skip)]
    pub blobs: Vec<String>,
}

/// A referrer copied with its subject.
#[derive(Debug, Clone, Serialize)]
pub struct ReferrerCopied {
    pub subject: String,
    pub digest: String,
    pub artifact_type: Option<String>,
    /// The digest tag it was found under (`sha256-<hex>.sig`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

pub fn up_to_date(item: &Item) -> ImageReport {
    ImageReport {
        source: item.source.to_string(),
        source_digest: item.source_digest.as_ref().map(|d| d.to_string()),
        target: item.target.to_string(),
        action: Action::UpToDate,
        bytes: 0,
        blobs_copied: 0,
        blobs_mounted: 0,
        blobs_skipped: 0,
        retries: 0,
        seconds: 0.0,
        error_class: None,
        error: None,
        notes: Vec::new(),
        referrers: Vec::new(),
        referrers_up_to_date: 0,
        referrers_not_carried: 0,
        referrers_failed: 0,
        referrer_errors: Vec::new(),
        listing_failed: false,
        state_skipped: item.state_skipped,
        blobs: Vec::new(),
    }
}

/// The row of a repository or prefix whose listing failed.
pub fn unlisted(item: &Item, error: &crate::error::Error) -> ImageReport {
    let mut rep = up_to_date(item);
    rep.action = Action::Failed;
    rep.error_class = Some(error.class());
    rep.error = Some(error.to_string());
    rep.listing_failed = true;
    rep
}

pub fn image_report(
    item: &Item,
    r: &Result<CopyReport>,
    retries: u32,
    took: Duration,
) -> ImageReport {
    let mut rep = up_to_date(item);
    // Copied after all (to carry what is attached): its target was asked.
    rep.state_skipped = false;
    rep.retries = retries;
    rep.seconds = took.as_secs_f64();
    match r {
        Ok(c) => {
            rep.referrers = c
                .referrers
                .iter()
                .filter(|r| !r.up_to_date)
                .map(|r| ReferrerCopied {
                    subject: r.subject.to_string(),
                    digest: r.digest.to_string(),
                    artifact_type: r.artifact_type.clone(),
                    tag: r.tag.clone(),
                })
                .collect();
            rep.referrers_up_to_date = c.referrers.len() - rep.referrers.len();
            rep.referrers_not_carried = c.referrers_not_carried.iter().map(|n| n.count).sum();
            rep.referrers_failed = c.referrers_failed.len();
            rep.referrer_errors = c.referrers_failed.iter().map(|f| f.error.clone()).collect();
            // An image the target had, with nothing new attached, is up to
            // date even though the copy ran to look.
            rep.action =
                if c.images_up_to_date > 0 && c.blobs_copied == 0 && rep.referrers.is_empty() {
                    Action::UpToDate
                } else {
                    Action::Copied
                };
            if let Some(img) = c.images.first() {
                rep.source_digest = Some(img.source_digest.to_string());
                rep.blobs = img.blobs.iter().map(ToString::to_string).collect();
            }
            rep.bytes = c.bytes_copied;
            rep.blobs_copied = c.blobs_copied;
            rep.blobs_mounted = c.blobs_mounted;
            rep.blobs_skipped = c.blobs_skipped;
        }
        Err(e) => {
            rep.action = Action::Failed;
            rep.error_class = Some(e.class());
            rep.error = Some(e.to_string());
        }
    }
    rep
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub images: Vec<ImageReport>,
    pub copied: usize,
    pub up_to_date: usize,
    /// Failed rows: images, and repositories or prefixes whose listing
    /// failed (counted again in `listings_failed`).
    pub failed: usize,
    pub listings_failed: usize,
    pub blobs_copied: usize,
    pub blobs_mounted: usize,
    pub blobs_skipped: usize,
    pub bytes: u64,
    /// Referrers and digest-tagged manifests written, and those that failed.
    pub referrers_copied: usize,
    pub referrers_failed: usize,
    pub requests: u64,
    pub seconds: f64,
    /// Images found up to date on the word of the state file, their target
    /// not asked.
    pub state_skipped: usize,
    /// Every target was asked (no state, `--verify-target`, or the last
    /// full check older than `state-verify-every`).
    pub full_check: bool,
    /// The request quota each registry announced last, by host: only
    /// registries that announce one.
    pub quota: BTreeMap<String, QuotaReport>,
}

/// What is left of a registry's request quota.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuotaReport {
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    pub window_seconds: Option<u64>,
}

impl RunReport {
    pub fn new(images: Vec<ImageReport>, took: Duration, requests: u64) -> RunReport {
        let count = |a: Action| images.iter().filter(|i| i.action == a).count();
        RunReport {
            copied: count(Action::Copied),
            up_to_date: count(Action::UpToDate),
            failed: count(Action::Failed),
            listings_failed: images.iter().filter(|i| i.listing_failed).count(),
            blobs_copied: images.iter().map(|i| i.blobs_copied).sum(),
            blobs_mounted: images.iter().map(|i| i.blobs_mounted).sum(),
            blobs_skipped: images.iter().map(|i| i.blobs_skipped).sum(),
            bytes: images.iter().map(|i| i.bytes).sum(),
            referrers_copied: images.iter().map(|i| i.referrers.len()).sum(),
            referrers_failed: images.iter().map(|i| i.referrers_failed).sum(),
            requests,
            seconds: took.as_secs_f64(),
            state_skipped: images
                .iter()
                .filter(|i| i.state_skipped && i.action == Action::UpToDate)
                .count(),
            full_check: true,
            images,
            quota: BTreeMap::new(),
        }
    }

    /// The report with the registries' last announced quotas.
    pub fn with_quota(mut self, quotas: BTreeMap<String, QuotaReading>) -> RunReport {
        self.quota = quotas
            .into_iter()
            .map(|(host, q)| {
                let report = QuotaReport {
                    remaining: q.remaining,
                    limit: q.limit,
                    window_seconds: q.window,
                };
                (host, report)
            })
            .collect();
        self
    }

    /// 0 all done, 1 some image or referrer failed (retry later), 2 an
    /// image failure retrying will not fix (authentication, usage).
    pub fn exit_code(&self) -> u8 {
        let failed = self.images.iter().filter(|i| i.action == Action::Failed);
        exit_code_of(failed.map(|i| i.error_class), self.referrers_failed)
    }

    /// node_exporter textfile metrics.
    pub fn metrics(&self, config: &str, now_unix: u64) -> String {
        let cfg = config.replace('\\', "\\\\").replace('"', "\\\"");
        let mut m = String::new();
        m.push_str("# HELP imgsync_sync_last_run_timestamp_seconds When the last sync run ended.\n# TYPE imgsync_sync_last_run_timestamp_seconds gauge\n");
        m.push_str(&format!(
            "imgsync_sync_last_run_timestamp_seconds{{config=\"{cfg}\"}} {now_unix}\n"
        ));
        if self.failed == 0 && self.referrers_failed == 0 {
            m.push_str("# HELP imgsync_sync_last_success_timestamp_seconds When the last sync run without failures ended.\n# TYPE imgsync_sync_last_success_timestamp_seconds gauge\n");
            m.push_str(&format!(
                "imgsync_sync_last_success_timestamp_seconds{{config=\"{cfg}\"}} {now_unix}\n"
            ));
        }
        m.push_str("# HELP imgsync_sync_images Images of the last run by outcome.\n# TYPE imgsync_sync_images gauge\n");
        for (outcome, n) in [
            ("copied", self.copied),
            ("up_to_date", self.up_to_date),
            ("failed", self.failed),
        ] {
            m.push_str(&format!(
                "imgsync_sync_images{{config=\"{cfg}\",outcome=\"{outcome}\"}} {n}\n"
            ));
        }
        m.push_str("# HELP imgsync_sync_listings_failed Repositories and catalogs whose listing failed in the last run (their images unknown, counted once each in the failed images).\n# TYPE imgsync_sync_listings_failed gauge\n");
        m.push_str(&format!(
            "imgsync_sync_listings_failed{{config=\"{cfg}\"}} {}\n",
            self.listings_failed
        ));
        m.push_str("# HELP imgsync_sync_state_skipped Images of the last run found up to date from the state file, their target not asked.\n# TYPE imgsync_sync_state_skipped gauge\n");
        m.push_str(&format!(
            "imgsync_sync_state_skipped{{config=\"{cfg}\"}} {}\n",
            self.state_skipped
        ));
        m.push_str("# HELP imgsync_sync_referrers Referrers and digest-tagged manifests of the last run by outcome.\n# TYPE imgsync_sync_referrers gauge\n");
        for (outcome, n) in [
            ("copied", self.referrers_copied),
            ("failed", self.referrers_failed),
        ] {
            m.push_str(&format!(
                "imgsync_sync_referrers{{config=\"{cfg}\",outcome=\"{outcome}\"}} {n}\n"
            ));
        }
        m.push_str("# HELP imgsync_sync_bytes Bytes copied by the last run.\n# TYPE imgsync_sync_bytes gauge\n");
        m.push_str(&format!(
            "imgsync_sync_bytes{{config=\"{cfg}\"}} {}\n",
            self.bytes
        ));
        let known = self
            .quota
            .iter()
            .filter_map(|(h, q)| Some((h, q.remaining?)));
        for (i, (host, remaining)) in known.enumerate() {
            if i == 0 {
                m.push_str("# HELP imgsync_registry_quota_remaining Requests of its rate limit a registry said were left, at the end of the last run.\n# TYPE imgsync_registry_quota_remaining gauge\n");
            }
            let host = host.replace('\\', "\\\\").replace('"', "\\\"");
            m.push_str(&format!(
                "imgsync_registry_quota_remaining{{registry=\"{host}\",config=\"{cfg}\"}} {remaining}\n"
            ));
        }
        m.push_str("# HELP imgsync_sync_duration_seconds Length of the last run.\n# TYPE imgsync_sync_duration_seconds gauge\n");
        m.push_str(&format!(
            "imgsync_sync_duration_seconds{{config=\"{cfg}\"}} {:.3}\n",
            self.seconds
        ));
        m
    }
}

/// The exit code for failed items of these classes and `others` failures
/// of no class (referrers): 2 when one is an authentication or usage
/// failure, which retrying will not fix; 1 for any other; 0 for none.
pub fn exit_code_of(failures: impl Iterator<Item = Option<ErrorClass>>, others: usize) -> u8 {
    let mut code = u8::from(others > 0);
    for class in failures {
        if matches!(class, Some(ErrorClass::Auth | ErrorClass::Usage)) {
            return 2;
        }
        code = 1;
    }
    code
}

/// Writes a report or metrics file atomically.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    crate::store::atomic_file::write_file_atomic(path, bytes, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_retrying_cannot_fix_exit_2_others_1() {
        let none = std::iter::empty::<Option<ErrorClass>>;
        assert_eq!(exit_code_of(none(), 0), 0);
        assert_eq!(exit_code_of(none(), 1), 1, "a failed referrer");
        let network = [Some(ErrorClass::Network), Some(ErrorClass::NotFound)];
        assert_eq!(exit_code_of(network.into_iter(), 0), 1);
        let denied = [Some(ErrorClass::Network), Some(ErrorClass::Auth)];
        assert_eq!(exit_code_of(denied.into_iter(), 0), 2);
        let reserve = [Some(ErrorClass::Quota)];
        assert_eq!(exit_code_of(reserve.into_iter(), 0), 1, "a quota kept");
    }

    #[test]
    fn announced_quotas_reach_the_json_and_the_metrics() {
        let quotas = BTreeMap::from([
            (
                "docker.io".to_string(),
                QuotaReading {
                    remaining: Some(76),
                    limit: Some(100),
                    window: Some(21600),
                    reset: None,
                },
            ),
            (
                "policy.example".to_string(),
                QuotaReading {
                    limit: Some(5),
                    ..Default::default()
                },
            ),
        ]);
        let r = RunReport::new(Vec::new(), Duration::ZERO, 3).with_quota(quotas);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["quota"]["docker.io"],
            serde_json::json!({"remaining": 76, "limit": 100, "window_seconds": 21600})
        );
        let m = r.metrics("sync.yaml", 0);
        assert!(
            m.contains(
                "imgsync_registry_quota_remaining{registry=\"docker.io\",config=\"sync.yaml\"} 76\n"
            ),
            "{m}"
        );
        assert!(!m.contains("policy.example"), "no count, no gauge: {m}");
    }
}
