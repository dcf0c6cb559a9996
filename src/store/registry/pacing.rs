//! When the next request to a registry may go: a token bucket for a
//! configured `requests-per-second`, and a hold after the registry asked
//! to be left alone (`Retry-After` on 429 or 503) so that the requests
//! waiting behind the refused one do not run into the same refusal.
//!
//! Pure state with the time passed in: the client takes the lock, asks how
//! long to wait, and sleeps that long without the lock (no polling).

use std::time::{Duration, Instant};

/// The fastest rate a configuration may ask for.
pub const MAX_REQUESTS_PER_SECOND: f64 = 10_000.0;

/// A token bucket that hands out reservations: each request takes a token
/// now and waits until the bucket would have held it, so concurrent
/// callers are spaced `1 / rate` apart without anyone polling. The bucket
/// holds one second's worth of requests (at least one): a burst after an
/// idle spell, never more.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens at `last`; negative while reservations are queued.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` requests a second (clamped to a sane
    /// range: a rate that is not a positive number is the slowest one).
    pub fn new(rate: f64, now: Instant) -> TokenBucket {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate.clamp(0.001, MAX_REQUESTS_PER_SECOND)
        } else {
            0.001
        };
        let burst = rate.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token; returns how long to wait before sending.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
    }
}

/// The pace of one registry's requests.
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    bucket: Option<TokenBucket>,
    /// No request before this: the registry asked for a pause.
    not_before: Option<Instant>,
}

impl Pacer {
    pub fn new(requests_per_second: Option<f64>, now: Instant) -> Pacer {
        Pacer {
            bucket: requests_per_second.map(|r| TokenBucket::new(r, now)),
            not_before: None,
        }
    }

    /// Reserves the next request; returns how long to wait before sending.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let hold = self
            .not_before
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let bucket = self
            .bucket
            .as_mut()
            .map_or(Duration::ZERO, |b| b.reserve(now));
        hold.max(bucket)
    }

    /// Sends nothing more for `pause` from `now`.
    pub fn hold(&mut self, now: Instant, pause: Duration) {
        if let Some(until) = now.checked_add(pause) {
            self.not_before = Some(self.not_before.map_or(until, |t| t.max(until)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_full_bucket_lets_one_second_through_then_spaces_requests() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(4.0, t0);
        let waits: Vec<Duration> = (0..8).map(|_| b.reserve(t0)).collect();
        // Four at once (the burst), then one every quarter second.
        assert_eq!(&waits[..4], &[Duration::ZERO; 4]);
        for (i, w) in waits[4..].iter().enumerate() {
            let want = 0.25 * (i + 1) as f64;
            assert!((w.as_secs_f64() - want).abs() < 1e-9, "{i}: {w:?}");
        }
    }

    #[test]
    fn requests_spread_over_time_never_beat_the_rate() {
        // Requests arrive every 10 ms for 10 s; each goes when the bucket
        // says. Count what is sent in every one-second window.
        let t0 = Instant::now();
        let rate = 5.0;
        let mut b = TokenBucket::new(rate, t0);
        let mut sent = Vec::new();
        for i in 0..1000 {
            let now = t0 + secs(i as f64 * 0.01);
            sent.push(now + b.reserve(now));
        }
        let last = *sent.last().unwrap();
        let mut start = t0;
        while start < last {
            let end = start + secs(1.0);
            let n = sent.iter().filter(|&&t| t >= start && t < end).count();
            // The burst plus one second of the rate, at most.
            assert!(n as f64 <= rate + rate, "{n} in a second");
            start += secs(0.1);
        }
        // Over the run the rate holds: 1000 requests need ~199 s.
        let span = (last - t0).as_secs_f64();
        assert!((span - (1000.0 - rate) / rate).abs() < 0.01, "{span}");
    }

    #[test]
    fn an_idle_bucket_refills_to_its_burst_only() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, t0);
        for _ in 0..2 {
            b.reserve(t0);
        }
        let later = t0 + secs(3600.0);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert!(b.reserve(later) > Duration::ZERO, "two saved, not 7200");
    }

    #[test]
    fn hostile_or_odd_rates_are_bounded() {
        let t0 = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            let mut b = TokenBucket::new(rate, t0);
            for _ in 0..100 {
                let _ = b.reserve(t0);
            }
        }
        // Below one a second, the burst is still one request.
        let mut slow = TokenBucket::new(0.5, t0);
        assert_eq!(slow.reserve(t0), Duration::ZERO);
        assert_eq!(slow.reserve(t0), secs(2.0));
    }

    #[test]
    fn a_pause_asked_for_holds_every_request_until_it_ends() {
        let t0 = Instant::now();
        let mut p = Pacer::new(None, t0);
        assert_eq!(p.reserve(t0), Duration::ZERO);
        p.hold(t0, secs(1.0));
        assert_eq!(p.reserve(t0 + secs(0.25)), secs(0.75));
        // A shorter pause asked for later does not shorten it.
        p.hold(t0 + secs(0.5), secs(0.1));
        assert_eq!(p.reserve(t0 + secs(0.5)), secs(0.5));
        assert_eq!(p.reserve(t0 + secs(1.0)), Duration::ZERO);
    }
}
