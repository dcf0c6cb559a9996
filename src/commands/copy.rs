//! `imgsync copy SRC DST`: every image a source location selects, into the
//! destination location (see [`crate::store::open`] for how images are
//! named there).

use std::sync::Arc;

use crate::engine::progress::Progress;
use crate::engine::{CopyOptions, CopyReport, copy_location};
use crate::error::Result;
use crate::store::location::Location;
use crate::store::open::{Context, DestinationOptions, DockerFormat};
use crate::store::registry::{ClientPool, MountIndex, RegistrySettings};

#[derive(Debug, Clone)]
pub struct CopyArgs {
    pub source: Location,
    pub dest: Location,
    pub options: CopyOptions,
    pub docker_format: DockerFormat,
    pub src_registry: RegistrySettings,
    pub dest_registry: RegistrySettings,
}

pub fn run(args: &CopyArgs, progress: &dyn Progress) -> Result<CopyReport> {
    let pool = ClientPool::default();
    let mut report = run_with_pool(args, progress, &pool);
    if let Ok(r) = &mut report {
        r.requests = pool.requests();
    }
    report
}

fn run_with_pool(
    args: &CopyArgs,
    progress: &dyn Progress,
    pool: &ClientPool,
) -> Result<CopyReport> {
    let ctx = Context {
        tmpdir: &args.options.tmpdir,
        pool,
        registry: &args.src_registry,
    };
    let dest = DestinationOptions {
        docker_format: args.docker_format,
        platform: match args.options.platforms.as_slice() {
            [p] => Some(p.clone()),
            _ => None,
        },
        registry: &args.dest_registry,
        source_is_registry: matches!(args.source, Location::Registry(_)),
        mounts: Arc::new(MountIndex::default()),
    };
    copy_location(
        &args.source,
        &args.dest,
        &ctx,
        &dest,
        &args.options,
        progress,
    )
}
