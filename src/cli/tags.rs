//! `imgsync tags REPOSITORY`.

use std::process::ExitCode;

use clap::Args;

use imgsync::Error;
use imgsync::commands;
use imgsync::engine::default_jobs;

use super::{RegistryArgs, console, registry_ref};

#[derive(Args)]
pub struct TagsCmd {
    /// A registry repository (host/repo), without a tag.
    repository: String,
    /// Print a JSON list.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(c: TagsCmd) -> Result<ExitCode, Error> {
    let repo = registry_ref(&c.repository)?;
    let s = c.registry.settings(default_jobs())?;
    let tags = commands::tags::run(&repo, &s)?;
    for bad in &tags.rejected {
        console::message(&format!(
            "imgsync: warning: {repo}: the registry lists tag {bad:?}, which is not a valid tag name; left out"
        ));
    }
    console::names(&tags.valid, c.json);
    Ok(ExitCode::SUCCESS)
}
