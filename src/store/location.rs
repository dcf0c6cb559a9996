//! Locations: `transport:reference` strings as skopeo takes them
//! (containers-transports(5)): `docker-archive:PATH[:REF|:@N]`,
//! `oci:PATH[:REF]`, `oci-archive:PATH[:REF]`, `docker://REF`, or a bare
//! registry reference.

use crate::content::Reference;
use crate::error::{Error, Result};
use crate::store::layout::Selector;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    DockerArchive {
        path: String,
        selector: Option<Selector>,
    },
    Oci {
        path: String,
        selector: Option<Selector>,
    },
    OciArchive {
        path: String,
        selector: Option<Selector>,
    },
    Registry(Reference),
}

const TRANSPORTS: &str = "docker-archive:, oci:, oci-archive:, docker://";

/// The `N` of `@N` in `location`: digits that may still overflow a `usize`
/// (`@99999999999999999999`), which is a usage error, not a panic.
fn image_index(location: &str, n: &str) -> Result<usize> {
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Usage(format!(
            "{location}: @{n} is not an image index (expected @0, @1, ...)"
        )));
    }
    n.parse().map_err(|_| {
        Error::Usage(format!(
            "{location}: image index @{n} is too large (an archive holds far fewer images)"
        ))
    })
}

impl Location {
    pub fn parse(s: &str) -> Result<Location> {
        if let Some(rest) = s.strip_prefix("docker://") {
            return Ok(Location::Registry(Reference::parse(rest)?));
        }
        if let Some((transport, rest)) = s.split_once(':') {
            let split = |rest: &str| -> Result<(String, Option<Selector>)> {
                let (path, sel) = match rest.split_once(':') {
                    Some((p, sel)) => (p, Some(sel)),
                    None => (rest, None),
                };
                if path.is_empty() {
                    return Err(Error::Usage(format!("{s}: the path is empty")));
                }
                let selector = match sel {
                    None | Some("") => None,
                    Some(sel) => Some(match sel.strip_prefix('@') {
                        Some(n) => Selector::Index(image_index(s, n)?),
                        None => Selector::Name(sel.to_string()),
                    }),
                };
                Ok((path.to_string(), selector))
            };
            match transport {
                "docker-archive" => {
                    let (path, selector) = split(rest)?;
                    // `PATH@N` (no colon) selects by index too.
                    let (path, selector) = match (selector, path.rsplit_once('@')) {
                        (None, Some((p, n)))
                            if !p.is_empty()
                                && n.bytes().all(|b| b.is_ascii_digit())
                                && !n.is_empty()
                                && !std::path::Path::new(&path).exists() =>
                        {
                            (p.to_string(), Some(Selector::Index(image_index(s, n)?)))
                        }
                        (sel, _) => (path, sel),
                    };
                    if let Some(Selector::Name(n)) = &selector {
                        let r = Reference::parse(n)?;
                        if r.digest.is_some() {
                            return Err(Error::Usage(format!(
                                "{s}: a docker-archive reference cannot contain a digest"
                            )));
                        }
                    }
                    return Ok(Location::DockerArchive { path, selector });
                }
                "oci" => {
                    let (path, selector) = split(rest)?;
                    return Ok(Location::Oci { path, selector });
                }
                "oci-archive" => {
                    let (path, selector) = split(rest)?;
                    return Ok(Location::OciArchive { path, selector });
                }
                "docker" => {
                    return Err(Error::Usage(format!(
                        "{s}: the registry transport is written docker://REFERENCE"
                    )));
                }
                "dir" | "docker-daemon" | "containers-storage" | "ostree" | "sif" | "tarball" => {
                    return Err(Error::Usage(format!(
                        "transport {transport:?} in {s:?} is not supported; imgsync knows {TRANSPORTS} and bare registry references"
                    )));
                }
                _ => {}
            }
        }
        if let Ok(r) = Reference::parse(s) {
            return Ok(Location::Registry(r));
        }
        if let Some((t, _)) = s.split_once(':')
            && !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !t.contains('.')
        {
            return Err(Error::Usage(format!(
                "unknown transport {t:?} in {s:?}; imgsync knows {TRANSPORTS} and bare registry references"
            )));
        }
        Reference::parse(s).map(Location::Registry).map_err(|e| {
            Error::Usage(format!(
                "{e}; locations are {TRANSPORTS} or a registry reference"
            ))
        })
    }

    /// The location as the user wrote it, for messages.
    pub fn label(&self) -> String {
        fn sel(s: &Option<Selector>) -> String {
            match s {
                None => String::new(),
                Some(Selector::Name(n)) => format!(":{n}"),
                Some(Selector::Index(i)) => format!(":@{i}"),
            }
        }
        match self {
            Location::DockerArchive { path, selector } => {
                format!("docker-archive:{path}{}", sel(selector))
            }
            Location::Oci { path, selector } => format!("oci:{path}{}", sel(selector)),
            Location::OciArchive { path, selector } => {
                format!("oci-archive:{path}{}", sel(selector))
            }
            Location::Registry(r) => format!("docker://{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        assert_eq!(
            Location::parse("docker-archive:app.tar").unwrap(),
            Location::DockerArchive {
                path: "app.tar".into(),
                selector: None
            }
        );
        assert_eq!(
            Location::parse("docker-archive:app.tar:busybox:latest").unwrap(),
            Location::DockerArchive {
                path: "app.tar".into(),
                selector: Some(Selector::Name("busybox:latest".into()))
            }
        );
        assert_eq!(
            Location::parse("docker-archive:app.tar:@1").unwrap(),
            Location::DockerArchive {
                path: "app.tar".into(),
                selector: Some(Selector::Index(1))
            }
        );
        assert_eq!(
            Location::parse("docker-archive:app.tar@2").unwrap(),
            Location::DockerArchive {
                path: "app.tar".into(),
                selector: Some(Selector::Index(2))
            }
        );
        assert_eq!(
            Location::parse("oci:layout:app").unwrap(),
            Location::Oci {
                path: "layout".into(),
                selector: Some(Selector::Name("app".into()))
            }
        );
        assert_eq!(
            Location::parse("oci:dir:docker.io/library/x:1").unwrap(),
            Location::Oci {
                path: "dir".into(),
                selector: Some(Selector::Name("docker.io/library/x:1".into()))
            }
        );
        assert!(matches!(
            Location::parse("docker://busybox").unwrap(),
            Location::Registry(_)
        ));
        assert!(matches!(
            Location::parse("localhost:5000/team/app:1.2").unwrap(),
            Location::Registry(_)
        ));
        assert!(matches!(
            Location::parse("busybox").unwrap(),
            Location::Registry(_)
        ));
    }

    #[test]
    fn unknown_transport_is_named() {
        let e = Location::parse("ftp:/srv/x").unwrap_err().to_string();
        assert!(e.contains("unknown transport \"ftp\""), "{e}");
        let e = Location::parse("dir:/srv/x").unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(Location::parse("docker-archive:").is_err());
        assert!(Location::parse("oci:x:@z").is_err());
    }

    #[test]
    fn an_index_past_usize_is_a_usage_error() {
        let huge = "99999999999999999999999999";
        for loc in [
            format!("docker-archive:missing.tar@{huge}"),
            format!("docker-archive:missing.tar:@{huge}"),
            format!("oci:layout:@{huge}"),
        ] {
            let e = Location::parse(&loc).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{loc}: {e}");
            assert!(e.to_string().contains(huge), "{loc}: {e}");
        }
    }
}
