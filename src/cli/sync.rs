//! The `imgsync sync` command line: lock, plan, run, report, exit code,
//! and the run-forever mode.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use imgsync::Error;

use super::console;
use imgsync::commands::sync::{self, SyncOptions};
use imgsync::engine::CopyOptions;

/// Images a sync copies at once by default: enough to keep a registry
/// 50-150 ms away busy (each image's requests follow one another).
const SYNC_JOBS: usize = 16;
use imgsync::store::registry::{ClientPool, RegistrySettings};

/// Exit code when another run holds the lock: not a failure, but visible.
pub const EXIT_LOCKED: u8 = 75;

#[derive(Args)]
pub struct SyncCmd {
    /// The sync configuration (YAML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Print the plan (source -> target, digest, copy or up to date) and exit.
    #[arg(long)]
    dry_run: bool,
    /// Images copied at once. A mirror waits on round trips to registries,
    /// not on the CPU: the default does not depend on the cores.
    #[arg(long, value_name = "N", default_value_t = SYNC_JOBS)]
    jobs: usize,
    /// Take only shard I of N of the plan, split by source repository
    /// (e.g. `--shard $(JOB_COMPLETION_INDEX)/4` in a Kubernetes Indexed Job).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Take only the images an earlier run's report (`--report` or
    /// `--json`) lists as failed, and the sources whose listing failed.
    #[arg(long, value_name = "REPORT", conflicts_with_all = ["every", "schedule"])]
    retry_failed: Option<PathBuf>,
    /// Write the per-image report as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write node_exporter textfile metrics.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// Hold this file locked during the run; if another run holds it, exit
    /// 75 and change nothing.
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// Run forever, one run every DURATION (`90s`, `15m`, `6h`); a tick is
    /// skipped while a run is still going.
    #[arg(long, value_name = "DURATION", conflicts_with = "schedule")]
    every: Option<String>,
    /// Run forever on a cron schedule (5 fields, UTC: `*/15 * * * *`); a
    /// tick is skipped while a run is still going.
    #[arg(long, value_name = "CRON")]
    schedule: Option<String>,
    /// Print errors and the summary only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Credentials file for registries the config gives no credentials for.
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Retries of a request after a transient failure.
    #[arg(long, value_name = "N", default_value_t = 3)]
    retry_times: u32,
    #[arg(long, value_name = "DIR", env = "IMGSYNC_TMPDIR")]
    tmpdir: Option<PathBuf>,
    /// Remember what each run mirrored in FILE: the next run asks the
    /// source only, and not the target, for tags whose source digest is
    /// unchanged (overrides `state:` in the config).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Ask every target again, whatever the state file says, and refresh it.
    #[arg(long)]
    verify_target: bool,
    /// Make a run a full check of every target when the last one is older
    /// than DURATION (`0s`, `30m`, `24h`; overrides `state-verify-every:`).
    #[arg(long, value_name = "DURATION")]
    state_verify_every: Option<String>,
}

fn parse_shard(s: &str) -> Result<(usize, usize), Error> {
    let bad = || Error::Usage(format!("--shard {s:?}: expected I/N with 0 <= I < N"));
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::Usage(format!(
            "--every {s:?}: expected a duration such as 90s, 15m, 6h"
        ))
    };
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

pub fn run(
    c: SyncCmd,
    progress: &dyn imgsync::engine::progress::Progress,
) -> Result<ExitCode, Error> {
    let _lock = match &c.lock {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| {
                    Error::Usage(format!("cannot open lock file {}: {e}", path.display()))
                })?;
            match f.try_lock() {
                Ok(()) => Some(f),
                Err(std::fs::TryLockError::WouldBlock) => {
                    console::message(&format!(
                        "imgsync: another sync run holds the lock {}; nothing done",
                        path.display()
                    ));
                    return Ok(ExitCode::from(EXIT_LOCKED));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::Usage(format!("cannot lock {}: {e}", path.display())));
                }
            }
        }
        None => None,
    };
    let config = sync::load(&c.config)?;
    if let Some(s) = &c.state_verify_every
        && imgsync::commands::mirror::config::parse_period(s).is_none()
    {
        return Err(Error::Usage(format!(
            "--state-verify-every {s:?}: expected a duration such as 0s, 30m, 24h"
        )));
    }
    let only = match &c.retry_failed {
        Some(path) => {
            let failed = imgsync::commands::mirror::retry::Failed::read(path)?;
            if failed.is_empty() {
                if !c.quiet {
                    console::message(&format!(
                        "imgsync: {}: no failed image to retry",
                        path.display()
                    ));
                }
                return Ok(ExitCode::SUCCESS);
            }
            Some(std::sync::Arc::new(failed))
        }
        None => None,
    };
    let jobs = c.jobs.max(1);
    let opts = SyncOptions {
        only,
        jobs,
        shard: c.shard.as_deref().map(parse_shard).transpose()?,
        copy: CopyOptions {
            jobs: 4,
            tmpdir: c.tmpdir.clone().unwrap_or_else(std::env::temp_dir),
            retry_times: c.retry_times,
            ..CopyOptions::default()
        },
        registry: RegistrySettings {
            authfile: c.authfile.clone(),
            retry_times: Some(c.retry_times),
            max_requests: Some((jobs * 4).max(32)),
            ..Default::default()
        },
    };
    let every = c.every.as_deref().map(parse_duration).transpose()?;
    let cron = c
        .schedule
        .as_deref()
        .map(|s| {
            s.parse::<croner::Cron>()
                .map_err(|e| Error::Usage(format!("--schedule {s:?}: {e}")))
        })
        .transpose()?;
    loop {
        let started = Instant::now();
        let code = once(&c, &config, &opts, progress)?;
        // Ticks that fell while the run went on are skipped.
        let wait = match (&every, &cron) {
            (Some(period), _) => {
                let elapsed = started.elapsed();
                period.saturating_sub(Duration::from_nanos(
                    (elapsed.as_nanos() % period.as_nanos()) as u64,
                ))
            }
            (None, Some(cron)) => {
                let now = chrono::Utc::now().naive_utc();
                let next = cron
                    .find_next_occurrence(&now, false)
                    .map_err(|e| Error::Usage(format!("--schedule: {e}")))?;
                (next - now).to_std().unwrap_or(Duration::from_secs(1))
            }
            (None, None) => return Ok(ExitCode::from(code)),
        };
        super::signals::between_runs(true);
        if !c.quiet {
            console::message(&format!(
                "imgsync: next run in {}s",
                wait.as_secs_f64().ceil()
            ));
        }
        std::thread::sleep(wait);
        super::signals::between_runs(false);
    }
}

fn once(
    c: &SyncCmd,
    config: &sync::Config,
    opts: &SyncOptions,
    progress: &dyn imgsync::engine::progress::Progress,
) -> Result<u8, Error> {
    let started = Instant::now();
    let pool = ClientPool::default();
    let now = unix_now();
    // The state is read after the lock is taken and written before it is
    // released: runs holding the lock see each other's state.
    let state_path = c.state.as_ref().or(config.state.as_ref());
    let previous = state_path.and_then(|p| {
        let loaded = sync::state::load(p, &config.identity);
        if let Some(w) = &loaded.warning {
            console::message(&format!("imgsync: warning: {w}"));
        }
        loaded.state
    });
    let verify_every = c
        .state_verify_every
        .as_deref()
        .and_then(imgsync::commands::mirror::config::parse_period)
        .or(config.state_verify_every);
    let full_check =
        sync::state::full_check_due(previous.as_ref(), verify_every, c.verify_target, now);
    let trusted = previous.as_ref().filter(|_| !full_check);
    let ended = |e: Error| {
        console::error(&e);
        match e.class() {
            imgsync::ErrorClass::Auth | imgsync::ErrorClass::Usage => 2,
            _ => 1,
        }
    };
    if c.dry_run {
        let items = match sync::plan_with_state(config, opts, &pool, trusted) {
            Ok(i) => i,
            Err(e) => return Ok(ended(e)),
        };
        console::sync_plan(&items);
        // A source that could not be listed leaves the plan incomplete.
        return Ok(sync::plan_exit_code(&items));
    }
    let (planned, mut report) = match sync::run(config, opts, &pool, trusted, progress, started) {
        Ok(r) => r,
        Err(e) => return Ok(ended(e)),
    };
    report.full_check = full_check;
    let mut state_failed = false;
    if let Some(path) = state_path {
        let state = sync::state::updated(
            previous,
            &config.identity,
            &planned,
            &report,
            sync::state::Coverage {
                shard: opts.shard,
                full_check: full_check && opts.only.is_none(),
                partial: opts.only.is_some(),
            },
            unix_now(),
        );
        if let Err(e) = sync::state::save(path, &state) {
            console::error(&e);
            state_failed = true;
        }
    }
    console::sync_summary(&config.path, &report, c.quiet);
    let json = console::to_json(&report).into_bytes();
    if let Some(p) = &c.report {
        sync::report::write_atomic(p, &json)?;
    }
    if let Some(p) = &c.metrics {
        let now = unix_now();
        sync::report::write_atomic(
            p,
            report
                .metrics(&config.path.display().to_string(), now)
                .as_bytes(),
        )?;
    }
    if c.json {
        console::json_line(&json);
    }
    // A state that could not be written costs the next run requests only,
    // but the run says so in its exit code.
    Ok(report.exit_code().max(u8::from(state_failed)))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
