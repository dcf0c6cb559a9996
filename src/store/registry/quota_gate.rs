//! Requests held to what a registry's announced quota has left.
//!
//! Each answer that announces a count (`ratelimit-remaining` and kin) says
//! how many requests the registry would still take when it counted that
//! answer's request; every other counted request in flight then may still
//! be counted against it. So the gate keeps a budget: the announced count,
//! less the reserve, less the other counted requests in flight, less one
//! for each counted request sent since. A request goes while the budget
//! is above zero. At zero, one request at a time goes (the registry's 429
//! and its `Retry-After` then pause every request), not a burst that is
//! refused whole. When the count's window (or reset) ends, a new window
//! holds the whole limit.
//!
//! Only short windows are waited for: a count that does not say when it
//! ends would hold requests with nothing to end the wait, and a quota that
//! returns in hours (Docker Hub's six) is the `rate-limit-reserve`'s
//! business, which fails such requests at once rather than holding a run
//! for hours.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::quota::Quota;

/// A window ending later than this is not waited for.
const LONGEST_WAIT: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct QuotaGate {
    state: Mutex<GateState>,
    moved: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Counted requests in flight.
    in_flight: usize,
    /// Requests that may still go; `None`: nothing known limits them.
    budget: Option<i64>,
    /// When the announced window ends, and the limit the next one holds.
    renews: Option<Renewal>,
    /// How long the registry's windows last, as its latest count said.
    period: Option<Duration>,
    reserve: u64,
}

#[derive(Clone, Copy)]
struct Renewal {
    at: Instant,
    limit: Option<u64>,
}

/// A counted request's place at the gate; freed when dropped.
pub struct Pass<'a> {
    gate: &'a QuotaGate,
}

impl QuotaGate {
    /// A gate keeping `reserve` requests of the quota.
    pub fn new(reserve: u64) -> QuotaGate {
        QuotaGate {
            state: Mutex::new(GateState {
                reserve,
                ..GateState::default()
            }),
            moved: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in an answer's count; `holds_pass` when the answered request
    /// went through the gate (it is not one of the others in flight).
    pub fn observe(&self, q: &Quota, holds_pass: bool) {
        let Some(remaining) = q.reading.remaining else {
            return;
        };
        let mut s = self.lock();
        let others = s.in_flight.saturating_sub(usize::from(holds_pass));
        let left = i64::try_from(remaining.saturating_sub(s.reserve)).unwrap_or(i64::MAX);
        let budget = left.saturating_sub(i64::try_from(others).unwrap_or(i64::MAX));
        // Answers arrive in any order: within a window, one counted early
        // (a higher count) arriving late says nothing new.
        let same_window = s.renews.is_some_and(|r| q.seen < r.at);
        s.budget = match s.budget {
            Some(b) if same_window => Some(b.min(budget)),
            _ => Some(budget),
        };
        // The window ends when the first answer of it said, however many
        // answers follow.
        s.period = q.returns_after();
        if !same_window {
            s.renews = q.returns_after().and_then(|period| {
                Some(Renewal {
                    at: q.seen.checked_add(period)?,
                    limit: q.reading.limit,
                })
            });
        }
        drop(s);
        self.moved.notify_all();
    }

    /// Takes a place now if the budget allows; `None` to wait.
    pub fn try_enter(&self, now: Instant) -> Option<Pass<'_>> {
        let mut s = self.lock();
        if let Some(r) = s.renews
            && now >= r.at
        {
            // The next window's end is the one its first answer gives.
            s.renews = None;
            s.budget = r.limit.map(|l| {
                let fresh = i64::try_from(l.saturating_sub(s.reserve)).unwrap_or(i64::MAX);
                fresh.saturating_sub(i64::try_from(s.in_flight).unwrap_or(i64::MAX))
            });
        }
        // A count whose window is unknown, or hours long, is not waited
        // for.
        let far = s.period.is_none_or(|p| p > LONGEST_WAIT);
        let go = match s.budget {
            None => true,
            Some(_) if far => true,
            Some(b) if b > 0 => {
                s.budget = Some(b - 1);
                true
            }
            // Spent: one at a time finds out when it returns.
            Some(_) => s.in_flight == 0,
        };
        if !go {
            return None;
        }
        s.in_flight += 1;
        Some(Pass { gate: self })
    }

    /// Waits for a place; looked at again whenever a request ends, an
    /// answer brings a count, or a moment passes (a window may end with
    /// nothing in flight to say so).
    pub fn enter(&self) -> Pass<'_> {
        loop {
            if let Some(p) = self.try_enter(Instant::now()) {
                return p;
            }
            let s = self.lock();
            let _ = self.moved.wait_timeout(s, Duration::from_millis(100));
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        drop(s);
        self.gate.moved.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::registry::quota::QuotaReading;

    fn quota(remaining: u64, limit: u64, window: u64, seen: Instant) -> Quota {
        Quota {
            reading: QuotaReading {
                remaining: Some(remaining),
                limit: Some(limit),
                window: Some(window),
                reset: None,
            },
            seen,
        }
    }

    #[test]
    fn nothing_announced_nothing_held() {
        let gate = QuotaGate::new(0);
        let now = Instant::now();
        let passes: Vec<_> = (0..100).filter_map(|_| gate.try_enter(now)).collect();
        assert_eq!(passes.len(), 100);
    }

    #[test]
    fn the_count_less_what_is_in_flight_and_sent_since_may_go() {
        let gate = QuotaGate::new(0);
        let now = Instant::now();
        let a = gate.try_enter(now).unwrap();
        let b = gate.try_enter(now).unwrap();
        // `a`'s answer: 3 left when it was counted; `b` may be counted
        // still, so two more may go, not three.
        gate.observe(&quota(3, 50, 60, now), true);
        drop(a);
        let c = gate.try_enter(now).expect("first of two");
        let d = gate.try_enter(now).expect("second of two");
        assert!(gate.try_enter(now).is_none(), "the count is spent");
        drop((b, c, d));
        // Spent, nothing in flight: one request at a time.
        let probe = gate.try_enter(now).expect("a probe");
        assert!(gate.try_enter(now).is_none(), "only one probe");
        drop(probe);
    }

    #[test]
    fn a_late_answer_with_a_higher_count_does_not_raise_the_budget() {
        let gate = QuotaGate::new(0);
        let now = Instant::now();
        let sent: Vec<_> = (0..4).filter_map(|_| gate.try_enter(now)).collect();
        // The last one counted answers first (1 left, the three others
        // may still be counted), then the first one counted (4 left, as
        // it was then).
        gate.observe(&quota(1, 50, 60, now), true);
        gate.observe(&quota(4, 50, 60, now), true);
        drop(sent);
        // All four were counted: spent, so one at a time.
        let probe = gate.try_enter(now).expect("a probe");
        assert!(gate.try_enter(now).is_none(), "none was left, not three");
        drop(probe);
    }

    #[test]
    fn a_reserve_is_kept_and_a_new_window_holds_the_whole_limit() {
        let gate = QuotaGate::new(10);
        let now = Instant::now();
        let first = gate.try_enter(now).unwrap();
        gate.observe(&quota(11, 50, 2, now), true);
        drop(first);
        let one = gate.try_enter(now).expect("one above the reserve");
        assert!(gate.try_enter(now).is_none());
        drop(one);
        // The window ended: 50, less the reserve, may go.
        let later = now + Duration::from_secs(3);
        let passes: Vec<_> = (0..60).filter_map(|_| gate.try_enter(later)).collect();
        assert_eq!(passes.len(), 40);
    }

    #[test]
    fn a_count_without_a_window_is_not_waited_for() {
        let gate = QuotaGate::new(0);
        let now = Instant::now();
        let mut q = quota(0, 100, 60, now);
        q.reading.window = None;
        gate.observe(&q, false);
        let passes: Vec<_> = (0..10).filter_map(|_| gate.try_enter(now)).collect();
        assert_eq!(passes.len(), 10, "nothing says when to go again");
    }

    #[test]
    fn a_quota_returning_in_hours_is_not_waited_for() {
        let gate = QuotaGate::new(0);
        let now = Instant::now();
        gate.observe(&quota(0, 100, 21_600, now), false);
        let passes: Vec<_> = (0..10).filter_map(|_| gate.try_enter(now)).collect();
        assert_eq!(passes.len(), 10, "left to fail as the registry says");
    }
}
