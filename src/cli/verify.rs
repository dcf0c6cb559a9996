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
    let (Some(first), Some(first_file)) = (c.locations.first(), files.first()) else {
        return Err(Error::Usage("verify: give a location or a bundle".into()));
    };
    let bare_files = c.locations.len() > 1
        || (!first.contains("://")
            && !first.starts_with("docker-archive:")
            && !first.starts_with("oci:")
            && !first.starts_with("oci-archive:")
            && (first_file.is_file()
                || imgsync::store::bundle::manifest::volume_path(first_file, 1).is_file()));
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
    let loc = Location::parse(first)?;
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
