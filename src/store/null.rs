//! A sink that keeps nothing: the engine still reads and verifies every
//! byte, which is what `imgsync verify` needs.

use std::io::Read;

use super::{ImageName, ImageSink, SinkCaps};
use crate::content::{Descriptor, RawManifest};
use crate::error::{Error, Result};

pub struct NullSink;

impl ImageSink for NullSink {
    fn describe(&self) -> String {
        "verification".into()
    }
    fn caps(&self) -> SinkCaps {
        SinkCaps {
            holds_referrers: false,
            ..SinkCaps::ANY
        }
    }
    fn has_blob(&self, _desc: &Descriptor) -> Result<bool> {
        Ok(false)
    }
    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        std::io::copy(reader, &mut std::io::sink())
            .map_err(|e| Error::io(format!("read blob {}", desc.digest), e))?;
        Ok(())
    }
    fn put_manifest(&self, _manifest: &RawManifest) -> Result<()> {
        Ok(())
    }
    fn add_image(&self, _root: &Descriptor, _names: &[ImageName]) -> Result<()> {
        Ok(())
    }
    fn commit(&self) -> Result<()> {
        Ok(())
    }
}
