//! Image references and their normalisation (distribution/reference grammar
//! and `ParseNormalizedNamed`; formats reference §8).

use std::fmt;

use super::digest::Digest;
use crate::error::Error;

pub const DOCKER_HUB: &str = "docker.io";

/// A normalised reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference the way docker does: `busybox` is
    /// `docker.io/library/busybox`; a missing tag is *not* filled in here
    /// (see [`Reference::with_default_tag`]).
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let bad = |why: &str| Error::Usage(format!("invalid image reference {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| bad("invalid digest"))?),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad("invalid tag"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" || domain == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            domain
        };
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !valid_domain(&domain) {
            return Err(bad("invalid registry host"));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(bad("invalid repository name"));
        }
        if domain.len() + 1 + path.len() > 255 {
            return Err(bad("name longer than 255 characters"));
        }
        if domain == DOCKER_HUB
            && path.len() == 64 + 8
            && path[8..].bytes().all(|b| b.is_ascii_hexdigit())
            && digest.is_none()
            && tag.is_none()
        {
            return Err(bad("a 64-hex string is an image ID, not a name"));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The same reference with `latest` as tag when it has neither a tag nor
    /// a digest.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".into());
        }
        self
    }

    /// `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short form docker prints and `RepoTags` use: `docker.io/` and
    /// `library/` stripped.
    pub fn familiar_name(&self) -> String {
        if self.domain == DOCKER_HUB {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.name()
        }
    }

    /// `familiar_name:tag`, when tagged.
    pub fn familiar_tagged(&self) -> Option<String> {
        Some(format!("{}:{}", self.familiar_name(), self.tag.as_ref()?))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() <= 128
        && b.first()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A repository name (the path after the registry host): components of
/// the distribution grammar joined by `/`, at most 255 characters. A name
/// a registry lists is checked with this before it goes into a URL, so
/// that `..` or an empty component can never reach a request path.
pub fn valid_repository(path: &str) -> bool {
    !path.is_empty() && path.len() <= 255 && path.split('/').all(valid_path_component)
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.strip_prefix('[').and_then(|r| r.find(']')) {
        // An IPv6 literal keeps its colons: a port follows the bracket.
        Some(i) => {
            let (h, rest) = d.split_at(i + 2);
            match rest.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if rest.is_empty() => (h, None),
                None => return false,
            }
        }
        None => match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        },
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') {
        return host.ends_with(']');
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

fn valid_path_component(c: &str) -> bool {
    // alpha-numeric (separator alpha-numeric)*, separator = [_.] | __ | -+
    let b = c.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphanumeric)
        || !b.last().is_some_and(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let mut i = 0;
    while let Some(&at) = b.get(i) {
        if at.is_ascii_lowercase() || at.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while b.get(i).is_some_and(|x| matches!(x, b'_' | b'.' | b'-')) {
            i += 1;
        }
        let sep = c.get(start..i).unwrap_or_default();
        let ok = sep == "_"
            || sep == "."
            || sep == "__"
            || (!sep.is_empty() && sep.bytes().all(|x| x == b'-'));
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = Reference::parse("busybox").unwrap().with_default_tag();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_tagged().unwrap(), "busybox:latest");
        let r = Reference::parse("index.docker.io/library/busybox:1").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
        let r = Reference::parse("localhost:5000/team/app:1.2").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("localhost:5000", "team/app", Some("1.2"))
        );
        assert_eq!(r.familiar_name(), "localhost:5000/team/app");
        let r = Reference::parse("bazel/v1/tarball:test_image_1").unwrap();
        assert_eq!(r.to_string(), "docker.io/bazel/v1/tarball:test_image_1");
        let r = Reference::parse("localhost:5000").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/localhost:5000");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse(&format!("registry.example/app:1@{d}")).unwrap();
        assert_eq!(r.digest.unwrap().as_str(), d);
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "Busybox:1",
            "a//b",
            "a:b c",
            "-a",
            "a__-b",
            "x:",
            "a/b:-t",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listed_names_with_traversal_are_not_names() {
        for good in ["app", "team/app", "a.b/c_d/e__f/g-h--i"] {
            assert!(valid_repository(good), "{good}");
        }
        for bad in [
            "",
            "../../victim/app",
            "x/../../y",
            "team/./app",
            "team//app",
            "/app",
            "app/",
            "Team/app",
            "app\u{1b}[31m",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
        for bad in ["latest/../../z", "..", ".hidden", "a b", "x\u{1b}"] {
            assert!(!valid_tag(bad), "{bad}");
        }
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(valid_tag(&"a".repeat(128)));
    }
}
