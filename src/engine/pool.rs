//! The one worker pool every parallel step uses: at most `workers` scoped
//! threads take items in order from a shared cursor, and each result lands
//! at its item's index. The bound is the caller's (`--jobs`, images at
//! once); nested steps (a sync image copying its blobs) get their own
//! bounded workers, so no step waits on a thread another step holds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `work` on every item, at most `workers` at once; results are in
/// item order.
pub fn run_all<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<R> {
    run_until(items, workers, work, |_| false)
        .into_iter()
        .map(
            #[allow(
                clippy::expect_used,
                reason = "a `stop` that is never true leaves no item unstarted"
            )]
            |r| r.expect("every item runs when nothing stops the pool"),
        )
        .collect()
}

/// Like [`run_all`], but once a result makes `stop` true no further item is
/// started; items never started have no result.
pub fn run_until<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    work: impl Fn(usize, &T) -> R + Sync,
    stop: impl Fn(&R) -> bool + Sync,
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let stopped = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let workers = workers.max(1).min(items.len());
    let worker = || {
        loop {
            if stopped.load(Ordering::Relaxed) {
                break;
            }
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(k) else { break };
            let r = work(k, item);
            if stop(&r) {
                stopped.store(true, Ordering::Relaxed);
            }
            // `k` indexes `items`, as long as `results`.
            if let Some(slot) = results.lock().unwrap_or_else(|e| e.into_inner()).get_mut(k) {
                *slot = Some(r);
            }
        }
    };
    if workers <= 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(worker);
            }
        });
    }
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order() {
        let items: Vec<u64> = (0..100).collect();
        let out = run_all(&items, 4, |k, v| (k as u64) * 1000 + v * 2);
        assert_eq!(out, (0..100).map(|v| v * 1000 + v * 2).collect::<Vec<_>>());
    }

    #[test]
    fn never_more_workers_than_asked() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items = vec![(); 64];
        run_all(&items, 3, |_, _| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now();
            running.fetch_sub(1, Ordering::SeqCst);
        });
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn a_stopping_result_starts_nothing_more() {
        let items: Vec<usize> = (0..1000).collect();
        let out = run_until(&items, 1, |_, &v| v, |&v| v == 10);
        assert!(out[..=10].iter().all(Option::is_some));
        assert!(out[11..].iter().all(Option::is_none));
    }
}
