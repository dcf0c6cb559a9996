//! A registry's request quota, as its answers announce it, and the reserve
//! a run keeps of it.
//!
//! Two header families say how much of a quota is left:
//! - Docker Hub's `ratelimit-limit: 100;w=21600` and
//!   `ratelimit-remaining: 76;w=21600`, which are also the older IETF
//!   draft's `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`
//!   (delta seconds) trio: header names are case-insensitive, so one
//!   reader serves both.
//! - The structured draft (`draft-ietf-httpapi-ratelimit-headers`):
//!   `RateLimit: "default";r=50;t=30` (remaining, seconds to reset) and
//!   `RateLimit-Policy: "default";q=100;w=60` (quota, window), each a
//!   list of policies; the most restrictive one is kept. Its earlier form
//!   `RateLimit: limit=100, remaining=50, reset=30` is read too.
//!
//! Registries are not trusted: values are parsed without panics or
//! overflow, numbers are bounded, and a value that does not parse is
//! ignored as if it were absent.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

use crate::error::Error;

/// The longest value considered: a real one is a few dozen bytes.
const MAX_VALUE_LEN: usize = 1024;
/// List items and parameters read in one value.
const MAX_ITEMS: usize = 16;
/// The longest window or reset believed: a month.
pub const MAX_WINDOW_SECS: u64 = 31 * 24 * 3600;
/// The largest count believed; anything larger is clamped to it.
const MAX_COUNT: u64 = 1 << 48;

/// What one answer said about the quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaReading {
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    /// The policy's window, in seconds.
    pub window: Option<u64>,
    /// Seconds until the quota is restored.
    pub reset: Option<u64>,
}

impl QuotaReading {
    /// Reads every rate-limit header of an answer; `None` when it has none
    /// that parse.
    pub fn from_headers(headers: &HeaderMap) -> Option<QuotaReading> {
        let value = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= MAX_VALUE_LEN)
        };
        let mut r = QuotaReading::default();
        if let Some((n, w)) = value("ratelimit-remaining").and_then(count_with_window) {
            r.remaining = Some(n);
            r.window = w;
        }
        if let Some((n, w)) = value("ratelimit-limit").and_then(count_with_window) {
            r.limit = Some(n);
            r.window = r.window.or(w);
        }
        r.reset = value("ratelimit-reset").and_then(|v| seconds(v.trim()));
        if let Some(s) = value("ratelimit").map(structured_remaining) {
            r.remaining = s.remaining.or(r.remaining);
            r.limit = s.limit.or(r.limit);
            r.reset = s.reset.or(r.reset);
        }
        if let Some(p) = value("ratelimit-policy").map(structured_policy) {
            r.limit = p.limit.or(r.limit);
            r.window = p.window.or(r.window);
        }
        (r != QuotaReading::default()).then_some(r)
    }
}

/// A decimal count of at most 20 digits (a `u64`), clamped to [`MAX_COUNT`].
fn count(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().map(|n| n.min(MAX_COUNT))
}

/// Seconds, clamped to [`MAX_WINDOW_SECS`].
fn seconds(s: &str) -> Option<u64> {
    count(s).map(|n| n.min(MAX_WINDOW_SECS))
}

/// `76;w=21600` or `100, 100;w=60, 1000;w=3600` (the older draft's
/// current count followed by its policies): the first item's count and
/// the first `w` parameter of the list.
fn count_with_window(v: &str) -> Option<(u64, Option<u64>)> {
    let mut list = v.split(',').take(MAX_ITEMS);
    let n = count(list.next()?.split(';').next()?)?;
    let w = v.split(',').take(MAX_ITEMS).find_map(|item| {
        item.split(';').skip(1).take(MAX_ITEMS).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("w").then(|| seconds(v))?
        })
    });
    Some((n, w))
}

/// The parameters of each item of a structured list
/// (`"a";r=1;t=2, "b";r=5`), or of a dictionary (`limit=1, remaining=2`)
/// as one item.
fn items(v: &str) -> Vec<Vec<(String, &str)>> {
    let mut out = Vec::new();
    let mut dictionary = Vec::new();
    for item in v.split(',').take(MAX_ITEMS) {
        let mut parts = item.split(';').take(MAX_ITEMS);
        let head = parts.next().unwrap_or("").trim();
        if let Some((k, v)) = head.split_once('=') {
            // A dictionary member: `remaining=50`.
            dictionary.push((k.trim().to_ascii_lowercase(), v));
            continue;
        }
        let params = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v))
            .collect();
        out.push(params);
    }
    if !dictionary.is_empty() {
        out.push(dictionary);
    }
    out
}

/// `RateLimit`: the smallest remaining count of its policies, with that
/// policy's reset.
fn structured_remaining(v: &str) -> QuotaReading {
    let mut best = QuotaReading::default();
    for params in items(v) {
        let get = |names: &[&str]| {
            params
                .iter()
                .find(|(k, _)| names.contains(&k.as_str()))
                .map(|(_, v)| *v)
        };
        let Some(remaining) = get(&["r", "remaining"]).and_then(count) else {
            continue;
        };
        if best.remaining.is_none_or(|b| remaining < b) {
            best = QuotaReading {
                remaining: Some(remaining),
                limit: get(&["limit"]).and_then(count),
                window: None,
                reset: get(&["t", "reset"]).and_then(seconds),
            };
        }
    }
    best
}

/// `RateLimit-Policy`: the smallest quota of its policies, with its window.
fn structured_policy(v: &str) -> QuotaReading {
    let mut best = QuotaReading::default();
    for params in items(v) {
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let Some(q) = get("q").and_then(count) else {
            continue;
        };
        if best.limit.is_none_or(|b| q < b) {
            best.limit = Some(q);
            best.window = get("w").and_then(seconds);
        }
    }
    best
}

/// The latest quota a registry announced, and when.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub reading: QuotaReading,
    pub seen: Instant,
}

impl Quota {
    /// How long after it was seen the announced count stops holding: the
    /// reset if given, else the window. `None`: the registry did not say.
    pub fn returns_after(&self) -> Option<Duration> {
        self.reading
            .reset
            .or(self.reading.window)
            .map(Duration::from_secs)
    }

    /// Is a counted request refused at `now` to keep `reserve` requests of
    /// the quota? Once the window (or reset) has passed since the count
    /// was seen, the count no longer holds and requests go again.
    pub fn holds_back(&self, reserve: u64, now: Instant) -> bool {
        let Some(remaining) = self.reading.remaining else {
            return false;
        };
        let current = match self.returns_after().and_then(|d| self.seen.checked_add(d)) {
            Some(until) => now < until,
            None => true,
        };
        remaining <= reserve && current
    }

    /// Merges a newer reading: what it does not say is kept from before.
    pub fn update(previous: Option<Quota>, reading: QuotaReading, now: Instant) -> Quota {
        let old = previous.map(|q| q.reading).unwrap_or_default();
        Quota {
            reading: QuotaReading {
                remaining: reading.remaining.or(old.remaining),
                limit: reading.limit.or(old.limit),
                window: reading.window.or(old.window),
                reset: reading.reset,
            },
            seen: now,
        }
    }
}

/// The error of a request held back by `reserve`: one line naming the
/// registry, what is left of the quota and when it returns (from `now`).
pub fn held_back(host: &str, what: &str, q: &Quota, reserve: u64, now: Instant) -> Error {
    let remaining = q.reading.remaining.unwrap_or(0);
    let of = q
        .reading
        .limit
        .map_or(String::new(), |l| format!(" of {l}"));
    let returns = match q.returns_after().and_then(|d| q.seen.checked_add(d)) {
        Some(at) => {
            let left = at.saturating_duration_since(now).as_secs();
            let wall = chrono::Utc::now()
                + chrono::TimeDelta::try_seconds(left as i64).unwrap_or_default();
            format!(
                "it returns in {left}s (about {})",
                wall.format("%Y-%m-%dT%H:%M:%SZ")
            )
        }
        None => "the registry did not say when it returns".to_string(),
    };
    Error::Quota {
        registry: host.to_string(),
        message: format!(
            "{what} on {host}: not sent: the registry's rate limit has {remaining}{of} requests left, at or below the rate-limit-reserve of {reserve}; {returns}"
        ),
    }
}

/// Does a request count against a Docker Hub-style pull quota? GETs of
/// manifests and blobs do; `HEAD`s, tag lists, uploads and the `/v2/`
/// check do not.
pub fn counts_against_quota(method: &str, path: &str) -> bool {
    method == "GET"
        && (path.contains("/manifests/")
            || (path.contains("/blobs/") && !path.contains("/blobs/uploads/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    /// Headers of an answer, and what they should read as.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<QuotaReading>);

    fn read(headers: &[(&str, &str)]) -> Option<QuotaReading> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        QuotaReading::from_headers(&map)
    }

    fn reading(
        remaining: Option<u64>,
        limit: Option<u64>,
        window: Option<u64>,
        reset: Option<u64>,
    ) -> Option<QuotaReading> {
        Some(QuotaReading {
            remaining,
            limit,
            window,
            reset,
        })
    }

    #[test]
    fn every_header_family_reads_as_remaining_limit_window_and_reset() {
        let table: &[Case] = &[
            (
                &[
                    ("ratelimit-limit", "100;w=21600"),
                    ("ratelimit-remaining", "76;w=21600"),
                ],
                reading(Some(76), Some(100), Some(21600), None),
            ),
            (
                &[
                    ("RateLimit-Limit", "100, 100;w=60, 1000;w=3600"),
                    ("RateLimit-Remaining", "50"),
                    ("RateLimit-Reset", "30"),
                ],
                reading(Some(50), Some(100), Some(60), Some(30)),
            ),
            (
                &[
                    ("RateLimit", "\"default\";r=50;t=30"),
                    ("RateLimit-Policy", "\"default\";q=100;w=60"),
                ],
                reading(Some(50), Some(100), Some(60), Some(30)),
            ),
            (
                &[("RateLimit", "\"burst\";r=9;t=1, \"daily\";r=3;t=600")],
                reading(Some(3), None, None, Some(600)),
            ),
            (
                &[("RateLimit", "limit=10, remaining=2, reset=7")],
                reading(Some(2), Some(10), None, Some(7)),
            ),
            (
                &[(
                    "RateLimit-Policy",
                    "\"hour\";q=1000;w=3600, \"minute\";q=60;w=60",
                )],
                reading(None, Some(60), Some(60), None),
            ),
            (&[("content-type", "text/plain")], None),
        ];
        for (headers, want) in table {
            assert_eq!(read(headers), *want, "{headers:?}");
        }
    }

    #[test]
    fn hostile_values_are_ignored_or_bounded_never_a_panic() {
        let huge = "9".repeat(40);
        let long = format!("1;w={}", "9".repeat(2000));
        let nested = ";".repeat(5000);
        let table: &[Case] = &[
            (&[("ratelimit-remaining", "-1")], None),
            (&[("ratelimit-remaining", "")], None),
            (&[("ratelimit-remaining", "1e9")], None),
            (&[("ratelimit-remaining", "0x10")], None),
            (&[("ratelimit-remaining", &huge)], None),
            (
                &[(
                    "ratelimit-remaining",
                    "18446744073709551615;w=18446744073709551615",
                )],
                reading(Some(MAX_COUNT), None, Some(MAX_WINDOW_SECS), None),
            ),
            (
                &[("ratelimit-remaining", "3;w=-5;w=;=;;")],
                reading(Some(3), None, None, None),
            ),
            (&[("ratelimit-remaining", &long)], None),
            (&[("RateLimit", &nested)], None),
            (&[("RateLimit", "\"x\";r;t=;r=abc")], None),
            (&[("RateLimit", "=,=,=;=")], None),
            (&[("RateLimit-Reset", "99999999999")], {
                reading(None, None, None, Some(MAX_WINDOW_SECS))
            }),
            (&[("RateLimit-Policy", "\"p\";q=;w=1")], None),
        ];
        for (headers, want) in table {
            assert_eq!(read(headers), *want, "{headers:?}");
        }
    }

    #[test]
    fn the_reserve_holds_back_until_the_window_has_passed() {
        let t0 = Instant::now();
        let quota = |remaining, window, reset| Quota {
            reading: QuotaReading {
                remaining: Some(remaining),
                limit: Some(100),
                window,
                reset,
            },
            seen: t0,
        };
        let hub = quota(10, Some(21600), None);
        assert!(hub.holds_back(10, t0), "at the reserve");
        assert!(!hub.holds_back(9, t0), "above the reserve");
        assert!(hub.holds_back(10, t0 + Duration::from_secs(21599)));
        assert!(!hub.holds_back(10, t0 + Duration::from_secs(21600)));
        // A reset, when given, is when the count stops holding.
        let reset = quota(0, Some(3600), Some(30));
        assert!(!reset.holds_back(0, t0 + Duration::from_secs(30)));
        // Not said when: held back for the run.
        assert!(quota(0, None, None).holds_back(0, t0 + Duration::from_secs(1 << 30)));
        // A later answer without a count keeps the known one.
        let merged = Quota::update(
            Some(hub),
            QuotaReading {
                limit: Some(200),
                ..Default::default()
            },
            t0,
        );
        assert_eq!(merged.reading.remaining, Some(10));
        assert_eq!(merged.reading.limit, Some(200));
    }

    #[test]
    fn a_held_back_request_names_the_registry_the_quota_and_its_return() {
        let seen = Instant::now();
        let q = |reading| Quota { reading, seen };
        let hub = q(QuotaReading {
            remaining: Some(4),
            limit: Some(100),
            window: Some(21600),
            reset: None,
        });
        let e = held_back("docker.io", "GET manifest library/alpine:3", &hub, 5, seen);
        assert_eq!(e.class(), crate::error::ErrorClass::Quota);
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        for needle in [
            "GET manifest library/alpine:3 on docker.io: not sent",
            "4 of 100 requests left",
            "rate-limit-reserve of 5",
            "it returns in 21600s (about 20",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
        }
        let silent = q(QuotaReading {
            remaining: Some(0),
            ..Default::default()
        });
        let msg = held_back("r.example", "GET blob", &silent, 0, seen).to_string();
        assert!(
            msg.contains("0 requests left") && msg.contains("did not say when"),
            "{msg}"
        );
    }

    #[test]
    fn only_manifest_and_blob_gets_count() {
        let v2 = "/v2/library/alpine";
        assert!(counts_against_quota("GET", &format!("{v2}/manifests/3")));
        assert!(counts_against_quota(
            "GET",
            &format!("{v2}/blobs/sha256:ab")
        ));
        assert!(!counts_against_quota("HEAD", &format!("{v2}/manifests/3")));
        assert!(!counts_against_quota("GET", &format!("{v2}/tags/list")));
        assert!(!counts_against_quota(
            "GET",
            &format!("{v2}/blobs/uploads/x")
        ));
        assert!(!counts_against_quota("GET", "/v2/"));
    }
}
