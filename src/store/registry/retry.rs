//! When a registry request is repeated, and how long to wait first.
//!
//! Connection failures, timeouts, 408, 429 and 5xx are transient: retried
//! with exponential backoff and jitter, waiting at least what `Retry-After`
//! says. Requests with a streamed body are never repeated by the client
//! (their body cannot be replayed); the engine retries the whole blob.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::transport::Response;

/// How a request may be repeated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient failures are retried.
    Yes,
    /// The body is a stream: never repeated here.
    No,
}

/// An answer worth asking again for: the registry is busy or failing for
/// now.
pub fn is_transient_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The wait a `Retry-After: <seconds>` header asks for, capped at two
/// minutes so that a registry cannot stall a run for hours.
pub(super) fn retry_after(r: &Response) -> Option<Duration> {
    let v = r.headers().get(RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(120)))
}

/// Waits before retry `attempt` (0-based): 250 ms doubling, ±25 % jitter;
/// or, when the registry said when to come back (`Retry-After`), that long
/// and no longer: it knows when its window ends, and a longer wait only
/// leaves quota unused.
pub fn sleep_backoff(attempt: u32, retry_after: Option<Duration>) {
    std::thread::sleep(backoff(attempt, retry_after));
}

fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = Duration::from_millis(250) * 2u32.saturating_pow(attempt.min(8));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = (h.finish() % 500) as f64 / 1000.0 - 0.25;
    let wait = base.mul_f64(1.0 + jitter);
    retry_after.map_or(wait, |ra| ra.max(RETRY_AFTER_FLOOR))
}

/// A `Retry-After: 0` still waits a little.
const RETRY_AFTER_FLOOR: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_honours_retry_after() {
        for attempt in 0..4 {
            let base = Duration::from_millis(250) * 2u32.pow(attempt);
            let wait = backoff(attempt, None);
            assert!(
                wait >= base.mul_f64(0.75) && wait <= base.mul_f64(1.25),
                "{wait:?}"
            );
        }
        let long = Duration::from_secs(30);
        assert_eq!(backoff(0, Some(long)), long);
        // What the registry asked for, however many tries came before.
        let one = Duration::from_secs(1);
        assert_eq!(backoff(6, Some(one)), one, "not 16 s of doubling");
        assert_eq!(backoff(0, Some(Duration::ZERO)), RETRY_AFTER_FLOOR);
    }

    #[test]
    fn only_busy_or_failing_answers_are_transient() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 501] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }
}
