//! `imgsync verify LOCATION` and `imgsync verify BUNDLE...`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use imgsync::Error;
use imgsync::commands;
use imgsync::store::location::Location;

use super::{Common, RegistryArgs, console, options};

#[derive(Args)]
pub struct VerifyCmd {
    /// A location, or the file or volumes of a bundle.
    #[arg(required = true, num_args = 1..)]
    locations: Vec<String>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(c: VerifyCmd) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let opts = options(&c.common);
    // Files given by path (no transport) are a bundle or its volumes.
    let files: Vec<PathBuf> = c.locations.iter().map(PathBuf::from).collect();
    let bare_files = c.locations.len() > 1
        || (!c.locations[0].contains("://")
            && !c.locations[0].starts_with("docker-archive:")
            && !c.locations[0].starts_with("oci:")
            && !c.locations[0].starts_with("oci-archive:")
            && (files[0].is_file()
                || imgsync::store::bundle::manifest::volume_path(&files[0], 1).is_file()));
    if bare_files {
        let progress = console::Reporter::new(c.common.quiet, "verified");
        let report = commands::verify::bundle(&files, &opts, &progress)?;
        progress.finish();
        return Ok(console::bundle_verify_summary(
            &report,
            started.elapsed(),
            c.common.quiet,
            c.common.json,
        ));
    }
    let loc = Location::parse(&c.locations[0])?;
    let progress = console::Reporter::new(c.common.quiet, "verified");
    let registry = c.registry.settings(c.common.jobs)?;
    let report = commands::verify::run(&loc, &opts, &registry, &progress)?;
    progress.finish();
    Ok(console::verify_summary(
        &loc,
        &report,
        started.elapsed(),
        c.common.quiet,
        c.common.json,
    ))
}
