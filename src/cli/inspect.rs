//! `imgsync inspect LOCATION`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use imgsync::Error;
use imgsync::commands;
use imgsync::engine::default_jobs;
use imgsync::store::location::Location;
use imgsync::store::registry::ClientPool;

use super::{RegistryArgs, console};

#[derive(Args)]
pub struct InspectCmd {
    location: String,
    /// Print the exact bytes of the manifest (or index).
    #[arg(long, conflicts_with = "config")]
    raw: bool,
    /// Print the exact bytes of the image config.
    #[arg(long)]
    config: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, value_name = "DIR", env = "IMGSYNC_TMPDIR")]
    tmpdir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(c: InspectCmd) -> Result<ExitCode, Error> {
    let loc = Location::parse(&c.location)?;
    let tmpdir = c.tmpdir.unwrap_or_else(std::env::temp_dir);
    let registry = c.registry.settings(default_jobs())?;
    let pool = ClientPool::default();
    let ctx = imgsync::store::open::Context {
        tmpdir: &tmpdir,
        pool: &pool,
        registry: &registry,
    };
    if c.raw || c.config {
        let bytes = commands::inspect::raw(&loc, &ctx, c.config)?;
        console::write_stdout(&bytes);
        return Ok(ExitCode::SUCCESS);
    }
    let infos = commands::inspect::run(&loc, &ctx)?;
    console::inspect(&infos, c.json);
    Ok(ExitCode::SUCCESS)
}
