//! `imgsync load BUNDLE... --to LOCATION`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use imgsync::Error;
use imgsync::commands;
use imgsync::store::location::Location;

use super::{Common, RegistryArgs, console, options};

#[derive(Args)]
pub struct LoadCmd {
    /// The bundle file, or its volumes in any order.
    #[arg(required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Where to load: a registry prefix (host/path), or oci:DIR.
    #[arg(long, value_name = "LOCATION")]
    to: String,
    /// Keep each image's source registry host as a path component
    /// (docker.io/library/redis:7 → PREFIX/docker.io/library/redis:7).
    #[arg(long)]
    keep_registry: bool,
    #[command(flatten)]
    referrers: super::ReferrerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    common: Common,
}

pub fn run(c: LoadCmd) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let mut opts = options(&c.common);
    opts.retry_times = c.registry.shared.retry_times;
    opts.referrers = c.referrers.options();
    let args = commands::load::LoadArgs {
        files: c.files,
        to: Location::parse(&c.to)?,
        keep_registry: c.keep_registry,
        registry: c.registry.settings(opts.jobs)?,
        options: opts,
    };
    let progress = console::Reporter::new(c.common.quiet, "loaded");
    let report = commands::load::load(&args, &progress)?;
    progress.finish();
    console::copy_summary(&report, started.elapsed(), c.common.quiet, c.common.json);
    Ok(super::referrer_exit(&report))
}
