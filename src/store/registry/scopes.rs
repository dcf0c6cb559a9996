//! Which token scopes a request needs. A run registers a scope for every
//! repository it works on (`repository:team/app:pull` for a source,
//! `…:pull,push` for a target); a request carries a token for the
//! repositories its URL names (and the one a mount reads from), not for
//! every repository of the run: a mirror of hundreds of repositories would
//! otherwise ask for ever longer tokens, past the URL limits of common
//! token servers.

use std::collections::BTreeSet;

use reqwest::Url;

/// The scopes a request to `url` needs, out of those the run registered.
/// A repository the run registered nothing for (a target asked about
/// before it is written) gets `pull` for a read, `pull,push` otherwise. A
/// URL of an unusual shape (an upload `Location` elsewhere) gets every
/// registered scope, as a token for the run.
pub(super) fn request_scopes(
    method: &str,
    url: &Url,
    registered: &BTreeSet<String>,
) -> Vec<String> {
    let Some(named) = named_scopes(url) else {
        return registered.iter().cloned().collect();
    };
    let mut wanted = BTreeSet::new();
    for n in named {
        let name = match n {
            Named::Catalog => {
                wanted.insert("registry:catalog:*".to_string());
                continue;
            }
            Named::Repository(r) => r,
        };
        let mut known = registered
            .iter()
            .filter(|s| scope_repository(s) == Some(name.as_str()))
            .peekable();
        if known.peek().is_none() {
            let actions = if matches!(method, "GET" | "HEAD") {
                "pull"
            } else {
                "pull,push"
            };
            wanted.insert(format!("repository:{name}:{actions}"));
        }
        wanted.extend(known.cloned());
    }
    wanted.into_iter().collect()
}

enum Named {
    Catalog,
    Repository(String),
}

/// What a distribution API URL names: the repository of
/// `/v2/<name>/{manifests,blobs,tags,referrers}/…` (and of a mount's
/// `from`), the catalog, or nothing (`/v2/`). `None` for a URL of another
/// shape.
fn named_scopes(url: &Url) -> Option<Vec<Named>> {
    let rest = url.path().strip_prefix("/v2/")?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    if rest == "_catalog" {
        return Some(vec![Named::Catalog]);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let n = parts.len();
    // The endpoint is read from the end: a repository name may itself have
    // a component called `blobs` or `manifests`.
    let name_len = match parts.as_slice() {
        [.., "blobs", "uploads", _] => n.checked_sub(3)?,
        [.., "manifests" | "blobs" | "referrers", _] => n.checked_sub(2)?,
        [.., "tags", "list"] => n.checked_sub(2)?,
        _ => return None,
    };
    if name_len == 0 {
        return None;
    }
    let mut named = vec![Named::Repository(parts.get(..name_len)?.join("/"))];
    if let Some((_, from)) = url.query_pairs().find(|(k, _)| k == "from") {
        named.push(Named::Repository(from.into_owned()));
    }
    Some(named)
}

/// The repository of a `repository:<name>:<actions>` scope.
fn scope_repository(scope: &str) -> Option<&str> {
    scope
        .strip_prefix("repository:")?
        .rsplit_once(':')
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> BTreeSet<String> {
        [
            "repository:src/app:pull",
            "repository:mirror/app:pull,push",
            "repository:mirror/blobs/x:pull,push",
            "repository:other:pull",
            "registry:catalog:*",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn scopes(url: &str) -> Vec<String> {
        request_scopes("GET", &Url::parse(url).unwrap(), &registered())
    }

    #[test]
    fn a_request_carries_the_scopes_of_the_repositories_it_names() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let table: &[(&str, &[&str])] = &[
            ("http://r/v2/", &[]),
            ("http://r/v2/_catalog?n=1000", &["registry:catalog:*"]),
            (
                "http://r/v2/src/app/manifests/v1",
                &["repository:src/app:pull"],
            ),
            (
                "http://r/v2/src/app/tags/list?n=1000",
                &["repository:src/app:pull"],
            ),
            (
                &format!("http://r/v2/src/app/referrers/{d}"),
                &["repository:src/app:pull"],
            ),
            (
                &format!("http://r/v2/mirror/app/blobs/{d}"),
                &["repository:mirror/app:pull,push"],
            ),
            (
                "http://r/v2/mirror/app/blobs/uploads/",
                &["repository:mirror/app:pull,push"],
            ),
            (
                "http://r/v2/mirror/app/blobs/uploads/3f2a-11",
                &["repository:mirror/app:pull,push"],
            ),
            (
                &format!("http://r/v2/mirror/app/blobs/uploads/?mount={d}&from=src/app"),
                &["repository:mirror/app:pull,push", "repository:src/app:pull"],
            ),
            // A repository with a component named like an endpoint.
            (
                "http://r/v2/mirror/blobs/x/manifests/1",
                &["repository:mirror/blobs/x:pull,push"],
            ),
        ];
        for (url, want) in table {
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(scopes(url), want, "{url}");
        }
    }

    #[test]
    fn an_unusual_url_gets_every_scope_of_the_run() {
        let all: Vec<String> = registered().into_iter().collect();
        assert_eq!(scopes("http://r/upload/3f2a"), all);
    }

    #[test]
    fn a_repository_not_registered_gets_the_least_rights_for_the_method() {
        let url = Url::parse("http://r/v2/new/repo/manifests/1").unwrap();
        assert_eq!(
            request_scopes("HEAD", &url, &registered()),
            ["repository:new/repo:pull"]
        );
        assert_eq!(
            request_scopes("PUT", &url, &registered()),
            ["repository:new/repo:pull,push"]
        );
    }
}
