//! Tag lists and the catalog of a registry, following `Link` pagination
//! (formats reference §6.4).

use reqwest::header::LINK;

use super::RegistryClient;
use super::retry::Retry;
use crate::content::reference::{valid_repository, valid_tag};
use crate::error::{Error, Result};

/// The names a registry listed, split by the distribution grammar. A
/// listed name goes into request paths and target names, so one with `..`,
/// `/` where it does not belong, or control characters is never used: it
/// is kept aside for the caller to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListedNames {
    /// Names that match the grammar, sorted, without duplicates.
    pub valid: Vec<String>,
    /// Names that do not, sorted, without duplicates.
    pub rejected: Vec<String>,
}

impl ListedNames {
    fn split(names: Vec<String>, is_valid: impl Fn(&str) -> bool) -> ListedNames {
        let (mut valid, mut rejected): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|n| is_valid(n));
        for list in [&mut valid, &mut rejected] {
            list.sort();
            list.dedup();
        }
        ListedNames { valid, rejected }
    }
}

/// The `next` target of a `Link` header, if any.
pub fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().trim_start_matches("rel=").trim_matches('"') == "next")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// Every tag of a repository, sorted; tags that are not valid tag names
/// are set apart.
pub fn list_tags(client: &RegistryClient, repo: &str) -> Result<ListedNames> {
    client.add_scope(format!("repository:{repo}:pull"));
    #[derive(serde::Deserialize)]
    struct TagList {
        tags: Option<Vec<String>>,
    }
    let tags: Vec<String> = paginate(
        client,
        &format!("/v2/{repo}/tags/list?n=1000"),
        &format!("list tags of {repo}"),
        |b| {
            serde_json::from_slice::<TagList>(b)
                .map(|t| t.tags.unwrap_or_default())
                .map_err(|e| format!("invalid tag list: {e}"))
        },
    )?;
    Ok(ListedNames::split(tags, valid_tag))
}

/// Every repository of a registry's catalog (`GET /v2/_catalog`), sorted;
/// names that are not valid repository names are set apart.
pub fn list_repositories(client: &RegistryClient) -> Result<ListedNames> {
    client.add_scope("registry:catalog:*".to_string());
    #[derive(serde::Deserialize)]
    struct Catalog {
        repositories: Option<Vec<String>>,
    }
    let repos = paginate(client, "/v2/_catalog?n=1000", "list repositories", |b| {
        serde_json::from_slice::<Catalog>(b)
            .map(|c| c.repositories.unwrap_or_default())
            .map_err(|e| format!("invalid catalog: {e}"))
    })?;
    Ok(ListedNames::split(repos, valid_repository))
}

/// Follows `Link: <...>; rel="next"` through every page.
fn paginate(
    client: &RegistryClient,
    first: &str,
    what: &str,
    parse: impl Fn(&[u8]) -> std::result::Result<Vec<String>, String>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut next = Some(first.to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        if pages > 100_000 {
            return Err(Error::Format(format!(
                "{what} on {}: pagination does not end",
                client.host()
            )));
        }
        let r = client.send(what, Retry::Yes, |http, base| {
            if path.starts_with("http://") || path.starts_with("https://") {
                http.get(path.as_str())
            } else {
                http.get(format!("{base}{path}"))
            }
        })?;
        if !r.status().is_success() {
            return Err(client.failure(what, r));
        }
        next = r
            .headers()
            .get(LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let body = r
            .bytes()
            .map_err(|e| Error::Network(format!("{what} on {}: {e}", client.host())))?;
        out.extend(
            parse(&body).map_err(|e| Error::Format(format!("{what} on {}: {e}", client.host())))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_relative_next_links() {
        assert_eq!(
            next_link(r#"</v2/foo/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/foo/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn listed_names_are_split_by_the_grammar() {
        let listed = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        let tags = ListedNames::split(
            listed(&["v2", "latest/../../z", "v1", "v2", "../../victim/app"]),
            valid_tag,
        );
        assert_eq!(tags.valid, ["v1", "v2"]);
        assert_eq!(tags.rejected, ["../../victim/app", "latest/../../z"]);
        let repos = ListedNames::split(listed(&["team/app", "x/../../y"]), valid_repository);
        assert_eq!(repos.valid, ["team/app"]);
        assert_eq!(repos.rejected, ["x/../../y"]);
    }
}
