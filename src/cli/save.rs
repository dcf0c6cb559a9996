//! `imgsync save -o BUNDLE IMAGE...`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use imgsync::Error;
use imgsync::commands;
use imgsync::content::Platform;
use imgsync::store::location::Location;

use super::{Common, RegistryArgs, console, options};

#[derive(Args)]
pub struct SaveCmd {
    /// The bundle to write (volumes are named PATH.001, PATH.002, ...).
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,
    /// Images to save (any location; a bare REF is a registry image).
    images: Vec<String>,
    /// Also save every image this sync config selects.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Leave out the blobs an earlier bundle carried or relied on (give the
    /// bundle, its volumes' name, or its --manifest-out file).
    #[arg(long, value_name = "BUNDLE")]
    since: Option<PathBuf>,
    /// Split into volumes of at most this size (4GiB, 700MB, ...).
    #[arg(long, value_name = "SIZE")]
    split: Option<String>,
    /// Also write the bundle manifest to this file (enough for a later
    /// --since).
    #[arg(long, value_name = "FILE")]
    manifest_out: Option<PathBuf>,
    /// Keep only this platform of multi-platform images; repeat for several.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Vec<String>,
    /// The platform `docker load` takes from multi-platform images
    /// [default: this machine's].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    docker_platform: Option<String>,
    #[command(flatten)]
    referrers: super::ReferrerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    common: Common,
}

pub fn run(c: SaveCmd) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let mut opts = options(&c.common);
    opts.platforms = super::platforms(&c.platform)?;
    opts.retry_times = c.registry.shared.retry_times;
    opts.referrers = c.referrers.options();
    let args = commands::save::SaveArgs {
        out: c.output,
        sources: c
            .images
            .iter()
            .map(|s| Location::parse(s))
            .collect::<Result<_, _>>()?,
        config: c.config,
        since: c.since,
        split: c
            .split
            .as_deref()
            .map(commands::save::parse_size)
            .transpose()?,
        manifest_out: c.manifest_out,
        docker_platform: c
            .docker_platform
            .as_deref()
            .map(Platform::parse)
            .transpose()?,
        registry: c.registry.settings(opts.jobs)?,
        options: opts,
    };
    let progress = console::Reporter::new(c.common.quiet, "saved");
    let report = commands::save::save(&args, &progress)?;
    progress.finish();
    console::save_summary(&report, started.elapsed(), c.common.quiet, c.common.json);
    Ok(super::referrer_exit(&report.copy))
}
