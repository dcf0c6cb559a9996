//! Integration tests: they drive the built `imgsync` binary against real
//! archives, real `docker load`/`docker save`, `skopeo`, `umoci` and
//! `oci-image-tool`. The README's test command installs and starts those.

mod suite;
