//! `imgsync verify LOCATION`: re-read every manifest, config and layer of
//! every image and check sizes, digests and DiffIDs. Reports every problem,
//! not just the first.

use crate::engine::progress::Progress;
use crate::engine::{CopyOptions, CopyReport, ImagePlan, copy_images};
use crate::error::Result;
use crate::store::location::Location;
use crate::store::null::NullSink;
use crate::store::open::{Context, open_source};

pub fn run(
    loc: &Location,
    options: &CopyOptions,
    registry: &crate::store::registry::RegistrySettings,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let pool = crate::store::registry::ClientPool::default();
    let ctx = Context {
        tmpdir: &options.tmpdir,
        pool: &pool,
        registry,
    };
    let source = open_source(loc, &ctx)?;
    let (plans, opts) = plans_and_options(source.images()?, options);
    copy_images(source.as_ref(), &NullSink, &plans, &opts, progress)
}

/// Every image as it is, and options that read everything, convert
/// nothing and collect every problem.
pub(crate) fn plans_and_options(
    images: Vec<crate::store::SourceImage>,
    options: &CopyOptions,
) -> (Vec<ImagePlan>, CopyOptions) {
    let plans = images
        .into_iter()
        .map(|image| ImagePlan {
            names: image.names.clone(),
            image,
        })
        .collect();
    let mut opts = options.clone();
    opts.keep_going = true;
    opts.platforms.clear();
    opts.format = None;
    opts.compress = None;
    (plans, opts)
}
