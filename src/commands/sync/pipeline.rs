//! A sync run as one pipeline: listing, checking and copying overlap.
//! Over a network every step is round trips, so no step waits for the one
//! before it to finish: a repository's images are checked as soon as its
//! tag list arrives, and an image is copied as soon as its check says so.
//! Three sets of workers pass groups (one source image, an item per
//! target) along channels:
//!
//! - the listers, reading tag lists and catalogs (entries in parallel, a
//!   prefix's repositories 32 at a time);
//! - the checkers, `HEAD` requests, many at once as they are tiny (the
//!   source's and the targets' of an image at the same time);
//! - the copiers, `--jobs` images at once.
//!
//! Every registry's own limit on requests in flight (see
//! [`crate::store::registry`]) keeps the sum of them within what it
//! sustains. Results come back in plan order whatever order they finish
//! in.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::commands::mirror::SyncOptions;
use crate::commands::mirror::check::{Checker, Known};
use crate::commands::mirror::config::Config;
use crate::commands::mirror::plan::{BatchKey, Group, Item, expand_streaming};
use crate::error::Result;
use crate::store::registry::ClientPool;

/// Where an item sits in the plan: its batch, its group, its place in the
/// group.
pub type Position = (BatchKey, usize, usize);

/// What the copy step does with a group that needs copying: one outcome
/// per item, in the group's order.
pub type CopyGroup<'a, O> = &'a (dyn Fn(&[Item]) -> Vec<O> + Sync);

/// One item of the plan as decided, with what became of it: `None` when
/// nothing was to be copied (or copying was not asked for).
pub struct Settled<O> {
    pub item: Item,
    pub outcome: Option<O>,
}

/// Plans (and with `copy`, copies) the config's images. The planned items
/// come back in plan order, each with its copy's outcome. A configuration
/// error found while listing ends the run: no copy starts after it, and
/// copies under way finish.
pub fn run<O: Send>(
    config: &Config,
    opts: &SyncOptions,
    pool: &ClientPool,
    known: &(dyn Fn(&Item) -> Option<Known> + Sync),
    copy: Option<CopyGroup<'_, O>>,
) -> Result<Vec<Settled<O>>> {
    let checker = Checker::new(config, opts, pool, known);
    let settled: Mutex<Vec<(Position, Settled<O>)>> = Mutex::new(Vec::new());
    // Items with their place in their group, and their outcomes if copied.
    let settle = |at: (BatchKey, usize), items: Vec<(usize, Item)>, outcomes: Option<Vec<O>>| {
        let mut outcomes = outcomes.map(Vec::into_iter);
        let mut out = settled.lock().unwrap_or_else(|e| e.into_inner());
        for (k, item) in items {
            let outcome = outcomes.as_mut().and_then(Iterator::next);
            out.push(((at.0, at.1, k), Settled { item, outcome }));
        }
    };
    let stop = AtomicBool::new(false);
    type Work = ((BatchKey, usize), Vec<(usize, Item)>);
    let (to_check, checks) = mpsc::channel::<((BatchKey, usize), Group)>();
    let (to_copy, copies) = mpsc::channel::<Work>();
    let (checks, copies) = (Mutex::new(checks), Mutex::new(copies));
    let listed = std::thread::scope(|s| {
        // HEAD requests are tiny and latency-bound: many at once, as many
        // as a registry takes by default (see `max-requests`).
        for _ in 0..(opts.jobs * 4).clamp(8, 64) {
            let to_copy = to_copy.clone();
            let (checker, settle, stop, checks) = (&checker, &settle, &stop, &checks);
            s.spawn(move || {
                while let Some((at, group)) = next(checks) {
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    let decided = checker.group(group).into_iter().enumerate();
                    let (work, done): (Vec<_>, Vec<_>) = match copy {
                        Some(_) => decided.partition(|(_, item)| needs_copy(item)),
                        None => (Vec::new(), decided.collect()),
                    };
                    settle(at, done, None);
                    if !work.is_empty() {
                        // The copiers live as long as this scope.
                        let _ = to_copy.send((at, work));
                    }
                }
            });
        }
        drop(to_copy);
        if let Some(copy) = copy {
            for _ in 0..opts.jobs.max(1) {
                let (settle, stop, copies) = (&settle, &stop, &copies);
                s.spawn(move || {
                    while let Some((at, work)) = next(copies) {
                        if stop.load(Ordering::Relaxed) {
                            continue;
                        }
                        let (places, items): (Vec<usize>, Vec<Item>) = work.into_iter().unzip();
                        let outcomes = copy(&items);
                        settle(at, places.into_iter().zip(items).collect(), Some(outcomes));
                    }
                });
            }
        }
        let listed = expand_streaming(config, opts, pool, &|key, groups| {
            for (g, group) in groups.into_iter().enumerate() {
                // The checkers live as long as this scope.
                let _ = to_check.send(((key, g), group));
            }
        });
        if listed.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(to_check);
        listed
    });
    listed?;
    let mut settled = settled.into_inner().unwrap_or_else(|e| e.into_inner());
    settled.sort_by_key(|(at, _)| *at);
    Ok(settled.into_iter().map(|(_, s)| s).collect())
}

/// Does this item go to the copiers? What is copyable and not up to date,
/// or up to date with something attached to carry.
fn needs_copy(item: &Item) -> bool {
    item.is_copyable() && (!item.up_to_date || item.attached)
}

/// The next message of a channel shared by workers; `None` once it is
/// closed and empty.
fn next<T>(rx: &Mutex<mpsc::Receiver<T>>) -> Option<T> {
    rx.lock().unwrap_or_else(|e| e.into_inner()).recv().ok()
}
