//! `imgsync copy SRC DST`.

use std::path::PathBuf;

use super::{DockerFormat, open_sink, open_source};
use crate::content::Reference;
use crate::copy::{CopyOptions, CopyReport, ImagePlan, copy_images};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::progress::Progress;
use crate::store::ImageName;
use crate::store::layout::Selector;

#[derive(Debug, Clone)]
pub struct CopyArgs {
    pub source: Location,
    pub dest: Location,
    pub options: CopyOptions,
    pub docker_format: DockerFormat,
}

impl CopyArgs {
    pub fn tmpdir(&self) -> PathBuf {
        self.options.tmpdir.clone()
    }
}

/// The name a destination location gives the (single) image, if any.
fn dest_name(dest: &Location) -> Result<Option<ImageName>> {
    let sel = match dest {
        Location::DockerArchive { selector, .. }
        | Location::Oci { selector, .. }
        | Location::OciArchive { selector, .. } => selector,
        Location::Registry(_) => return Ok(None),
    };
    match sel {
        None => Ok(None),
        Some(Selector::Index(_)) => Err(Error::Usage(format!(
            "{}: a destination cannot select an image by index; give a name or nothing",
            dest.label()
        ))),
        Some(Selector::Name(n)) => match dest {
            Location::DockerArchive { .. } => {
                let r = Reference::parse(n)?.with_default_tag();
                Ok(Some(ImageName::Reference(r)))
            }
            _ => Ok(Some(ImageName::RefName(n.clone()))),
        },
    }
}

pub fn run(args: &CopyArgs, progress: &dyn Progress) -> Result<CopyReport> {
    let name = dest_name(&args.dest)?;
    let source = open_source(&args.source, &args.options.tmpdir)?;
    let images = source.images()?;
    if images.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no images",
            source.describe()
        )));
    }
    if name.is_some() && images.len() > 1 {
        return Err(Error::Usage(format!(
            "{} holds {} images but {} names one; select one with :NAME or :@N on the source",
            source.describe(),
            images.len(),
            args.dest.label()
        )));
    }
    let plans: Vec<ImagePlan> = images
        .into_iter()
        .map(|image| {
            let names = match &name {
                Some(n) => vec![n.clone()],
                None => image.names.clone(),
            };
            ImagePlan { image, names }
        })
        .collect();
    let single_platform = match args.options.platforms.as_slice() {
        [p] => Some(p.clone()),
        _ => None,
    };
    let sink = open_sink(&args.dest, args.docker_format, single_platform)?;
    match copy_images(
        source.as_ref(),
        sink.as_ref(),
        &plans,
        &args.options,
        progress,
    ) {
        Ok(report) => match sink.commit() {
            Ok(()) => Ok(report),
            Err(e) => {
                sink.abort();
                Err(e)
            }
        },
        Err(e) => {
            sink.abort();
            Err(e)
        }
    }
}
