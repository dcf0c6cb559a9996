//! `imgsync tags REPOSITORY`: every tag of a registry repository, following
//! `Link` pagination (formats reference §6.4).

use reqwest::header::LINK;

use crate::content::Reference;
use crate::error::{Error, Result};
use crate::registry::client::Retry;
use crate::registry::{ClientPool, RegistrySettings};

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

/// The `next` target of a `Link` header, if any.
fn next_link(value: &str) -> Option<String> {
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

pub fn run(repo: &Reference, settings: &RegistrySettings) -> Result<Vec<String>> {
    if repo.tag.is_some() || repo.digest.is_some() {
        return Err(Error::Usage(format!(
            "{repo}: give a repository without a tag or digest"
        )));
    }
    let pool = ClientPool::default();
    let client = pool.get(&repo.domain, settings)?;
    client.add_scope(format!("repository:{}:pull", repo.path));
    let mut tags = Vec::new();
    let mut next = Some(format!("/v2/{}/tags/list?n=1000", repo.path));
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        if pages > 10_000 {
            return Err(Error::Format(format!(
                "{repo}: tag list pagination does not end"
            )));
        }
        let what = format!("list tags of {}", repo.path);
        let r = client.send(&what, Retry::Yes, |http, base| {
            if path.starts_with("http://") || path.starts_with("https://") {
                http.get(path.as_str())
            } else {
                http.get(format!("{base}{path}"))
            }
        })?;
        if !r.status().is_success() {
            return Err(client.failure(&what, r));
        }
        next = r
            .headers()
            .get(LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let body: TagList = r
            .json_body()
            .map_err(|e| Error::Format(format!("{what} on {}: {e}", repo.domain)))?;
        tags.extend(body.tags.unwrap_or_default());
    }
    tags.sort();
    tags.dedup();
    Ok(tags)
}

trait JsonBody {
    fn json_body<T: serde::de::DeserializeOwned>(self) -> std::result::Result<T, String>;
}

impl JsonBody for reqwest::blocking::Response {
    fn json_body<T: serde::de::DeserializeOwned>(self) -> std::result::Result<T, String> {
        let b = self.bytes().map_err(|e| e.to_string())?;
        serde_json::from_slice(&b).map_err(|e| format!("invalid tag list: {e}"))
    }
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
}
