//! How many requests one registry gets at once: an additive-increase,
//! multiplicative-decrease (AIMD) limit under a fixed ceiling
//! (`max-requests`, 16 unless set).
//!
//! The limit starts moderate and, until the registry first says it is
//! overloaded, grows by one per fast successful answer: it doubles every
//! round trip (TCP's slow start), so a registry 50 ms away has dozens of
//! requests in flight after a few round trips, not after dozens. From the
//! first overload on, it grows by about one per limit's worth of fast
//! answers, and halves when the registry says it is overloaded (429 or
//! 503), at most once per round of requests: a request
//! sent before the last halving cannot cause another, since it saw the old
//! limit. An answer much slower than usual (four times the running average
//! of answer times, and over a quarter of a second) holds the limit where
//! it is rather than halving it: a slow blob redirect is not an overload,
//! but it is no reason to add load either.
//!
//! An upload whose body is a stream holds its slot until the whole body is
//! sent, and that body is fed from another request's answer (the source
//! blob), which may need a slot of its own on the same registry (a resumed
//! download). So streamed uploads are bounded by the ceiling only, as
//! before, and do not count against the adaptive limit: were the limit
//! down to one and held by an upload, the download feeding it would wait
//! for it forever.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Requests in flight at the start, when the ceiling allows.
const START: f64 = 4.0;
/// An answer slower than this many times the average holds the limit...
const SLOW_FACTOR: f64 = 4.0;
/// ...if it is also slower than this.
const SLOW_FLOOR: Duration = Duration::from_millis(250);

/// What an answer says about the registry's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered (any status but an overload): the registry coped.
    Answered(Duration),
    /// 429 or 503: too much.
    Overloaded,
}

impl Signal {
    pub fn of(status: u16, latency: Duration) -> Option<Signal> {
        match status {
            429 | 503 => Some(Signal::Overloaded),
            // Other failures say nothing about load.
            500..=599 => None,
            _ => Some(Signal::Answered(latency)),
        }
    }
}

/// The AIMD limit, as a pure state machine.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    ceiling: f64,
    /// Halvings so far: a request remembers the round it was sent in.
    round: u64,
    /// Running average of answer times (seconds), once there is one.
    average: Option<f64>,
    /// No overload yet: grow by one per answer.
    slow_start: bool,
}

impl Aimd {
    pub fn new(ceiling: usize) -> Aimd {
        let ceiling = ceiling.max(1) as f64;
        Aimd {
            limit: START.min(ceiling),
            ceiling,
            round: 0,
            average: None,
            slow_start: true,
        }
    }

    /// Requests allowed in flight now: between 1 and the ceiling.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).max(1)
    }

    /// The round a request sent now belongs to.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Takes in the answer to a request sent in round `sent_in`.
    pub fn observe(&mut self, signal: Signal, sent_in: u64) {
        match signal {
            Signal::Overloaded => {
                if sent_in == self.round {
                    self.limit = (self.limit / 2.0).max(1.0);
                    self.round += 1;
                    self.slow_start = false;
                }
            }
            Signal::Answered(latency) => {
                let secs = latency.as_secs_f64();
                let slow = self
                    .average
                    .is_some_and(|avg| secs > avg * SLOW_FACTOR && latency > SLOW_FLOOR);
                self.average = Some(match self.average {
                    Some(avg) => avg + (secs - avg) / 8.0,
                    None => secs,
                });
                if !slow {
                    let step = if self.slow_start {
                        1.0
                    } else {
                        1.0 / self.limit
                    };
                    self.limit = (self.limit + step).min(self.ceiling);
                }
            }
        }
    }
}

/// Requests in flight to one registry: at most the ceiling in all, and at
/// most the AIMD limit of those that are not streamed uploads.
pub struct Slots {
    state: Mutex<InFlight>,
    cv: Condvar,
    ceiling: usize,
}

struct InFlight {
    all: usize,
    /// Those counted against the adaptive limit.
    adaptive: usize,
    aimd: Aimd,
}

impl Slots {
    pub fn new(ceiling: usize) -> Slots {
        Slots {
            state: Mutex::new(InFlight {
                all: 0,
                adaptive: 0,
                aimd: Aimd::new(ceiling),
            }),
            cv: Condvar::new(),
            ceiling: ceiling.max(1),
        }
    }

    /// Waits for a free slot; `streamed` for an upload whose body is a
    /// stream (bounded by the ceiling only).
    pub fn acquire(&self, streamed: bool) -> Slot<'_> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.all >= self.ceiling || (!streamed && s.adaptive >= s.aimd.limit()) {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.all += 1;
        if !streamed {
            s.adaptive += 1;
        }
        Slot {
            slots: self,
            round: s.aimd.round(),
            adaptive: !streamed,
        }
    }

    /// The adaptive limit now.
    pub fn limit(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.aimd.limit()
    }
}

/// One request's place in flight; freed when dropped.
pub struct Slot<'a> {
    slots: &'a Slots,
    round: u64,
    adaptive: bool,
}

impl Slot<'_> {
    /// The request is (re)sent now: its answer speaks for this round.
    pub fn sending(&mut self) {
        let s = self.slots.state.lock().unwrap_or_else(|e| e.into_inner());
        self.round = s.aimd.round();
    }

    pub fn answered(&self, status: u16, latency: Duration) {
        if let Some(signal) = Signal::of(status, latency) {
            let mut s = self.slots.state.lock().unwrap_or_else(|e| e.into_inner());
            s.aimd.observe(signal, self.round);
        }
        // A grown limit may free more than one waiter.
        self.slots.cv.notify_all();
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.slots.state.lock().unwrap_or_else(|e| e.into_inner());
        s.all -= 1;
        if self.adaptive {
            s.adaptive -= 1;
        }
        drop(s);
        self.slots.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Signal = Signal::Answered(Duration::from_millis(20));

    /// Feeds `n` fast answers, each sent in the round current at the time.
    fn fast(a: &mut Aimd, n: usize) {
        for _ in 0..n {
            let r = a.round();
            a.observe(FAST, r);
        }
    }

    #[test]
    fn starts_moderate_doubles_each_round_then_grows_by_one_per_round() {
        let mut a = Aimd::new(64);
        assert_eq!(a.limit(), 4);
        // Before any overload, each answer adds one: a round of answers
        // doubles the limit.
        fast(&mut a, 4);
        assert_eq!(a.limit(), 8);
        fast(&mut a, 8);
        assert_eq!(a.limit(), 16);
        // The first overload halves it and ends the doubling: each answer
        // then adds 1/limit, a round of answers a little under one.
        a.observe(Signal::Overloaded, a.round());
        assert_eq!(a.limit(), 8);
        fast(&mut a, 8);
        assert_eq!(a.limit(), 8);
        fast(&mut a, 1);
        assert_eq!(a.limit(), 9);
        fast(&mut a, 10_000);
        assert_eq!(a.limit(), 64, "never above the ceiling");
    }

    #[test]
    fn an_overload_halves_once_per_round_and_never_below_one() {
        let mut a = Aimd::new(16);
        fast(&mut a, 1000);
        // Eight requests in flight, all refused: one halving.
        let sent = a.round();
        for _ in 0..8 {
            a.observe(Signal::Overloaded, sent);
        }
        assert_eq!(a.limit(), 8);
        // A request sent after it can halve again.
        a.observe(Signal::Overloaded, a.round());
        assert_eq!(a.limit(), 4);
        for _ in 0..10 {
            a.observe(Signal::Overloaded, a.round());
        }
        assert_eq!(a.limit(), 1);
        fast(&mut a, 1);
        assert_eq!(a.limit(), 2, "and grows back");
    }

    #[test]
    fn a_ceiling_below_the_start_is_the_start() {
        assert_eq!(Aimd::new(1).limit(), 1);
        assert_eq!(Aimd::new(0).limit(), 1);
        let mut two = Aimd::new(2);
        fast(&mut two, 100);
        assert_eq!(two.limit(), 2);
    }

    #[test]
    fn a_latency_rise_holds_the_limit_and_failures_say_nothing() {
        let mut a = Aimd::new(16);
        fast(&mut a, 5);
        assert_eq!(a.limit(), 9);
        let before = a.clone();
        a.observe(Signal::Answered(Duration::from_secs(2)), a.round());
        assert_eq!(a.limit, before.limit, "a slow answer adds nothing");
        // Slow but under the floor: a fast registry's jitter still grows.
        let mut quick = Aimd::new(16);
        fast(&mut quick, 4);
        let grown = quick.limit;
        quick.observe(Signal::Answered(Duration::from_millis(200)), 0);
        assert!(quick.limit > grown);
        assert_eq!(Signal::of(500, Duration::ZERO), None);
        assert_eq!(Signal::of(503, Duration::ZERO), Some(Signal::Overloaded));
        let not_found = Signal::of(404, Duration::ZERO);
        assert_eq!(not_found, Some(Signal::Answered(Duration::ZERO)));
    }

    fn in_flight(slots: &Slots) -> (usize, usize) {
        let s = slots.state.lock().unwrap();
        (s.all, s.adaptive)
    }

    #[test]
    fn slots_admit_up_to_the_limit_and_free_on_drop() {
        let slots = Slots::new(16);
        let held: Vec<Slot> = (0..4).map(|_| slots.acquire(false)).collect();
        assert_eq!(in_flight(&slots), (4, 4));
        for s in held.iter().cycle().take(5) {
            s.answered(200, Duration::from_millis(5));
        }
        // Grown (one per answer, before any overload): a fifth fits
        // without waiting.
        let fifth = slots.acquire(false);
        drop(held);
        drop(fifth);
        assert_eq!(in_flight(&slots), (0, 0));
        assert_eq!(slots.limit(), 9);
    }

    #[test]
    fn streamed_uploads_leave_the_adaptive_limit_to_the_requests_feeding_them() {
        let slots = Slots::new(3);
        let overloaded = slots.acquire(false);
        overloaded.answered(429, Duration::ZERO);
        overloaded.answered(503, Duration::ZERO);
        drop(overloaded);
        assert_eq!(slots.limit(), 1);
        // Two uploads in flight, and the download feeding one still goes.
        let uploads = [slots.acquire(true), slots.acquire(true)];
        let download = slots.acquire(false);
        assert_eq!(in_flight(&slots), (3, 1));
        drop(download);
        drop(uploads);
        assert_eq!(in_flight(&slots), (0, 0));
    }
}
