//! What a mirror config selects: the config file (`sync --config`,
//! `save --config`) and its expansion into images, with the up-to-date
//! check against each target. Shared by `sync` and `save`; neither verb
//! calls the other.

pub mod check;
pub mod config;
#[cfg(test)]
mod config_tests;
mod endpoints;
pub mod plan;
pub mod retry;
#[cfg(test)]
mod tests;

use crate::engine::CopyOptions;
use crate::store::registry::RegistrySettings;
use config::Config;

/// How a sync run goes.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Images copied at once.
    pub jobs: usize,
    /// `(index, count)`: take only this shard of the plan.
    pub shard: Option<(usize, usize)>,
    pub copy: CopyOptions,
    /// Settings for registries the config does not list.
    pub registry: RegistrySettings,
    /// Only these (`--retry-failed`): what an earlier run's report lists
    /// as failed.
    pub only: Option<std::sync::Arc<retry::Failed>>,
}

/// The settings for a host: the config's entry, else the defaults.
pub fn settings_for(config: &Config, host: &str, defaults: &RegistrySettings) -> RegistrySettings {
    match config.registries.iter().find(|(h, _)| h == host) {
        Some((_, s)) => {
            let mut s = s.clone();
            if s.authfile.is_none() {
                s.authfile = defaults.authfile.clone();
            }
            if s.retry_times.is_none() {
                s.retry_times = defaults.retry_times;
            }
            if s.max_requests.is_none() {
                s.max_requests = defaults.max_requests;
            }
            s
        }
        None => defaults.clone(),
    }
}

/// A stable shard of a source repository (FNV-1a), so every pod of an
/// indexed job agrees on the split.
pub fn shard_of(repository: &str, count: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in repository.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % count as u64) as usize
}
