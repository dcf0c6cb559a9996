//! `imgsync tags REPOSITORY`: every tag of a registry repository.

use crate::content::Reference;
use crate::error::{Error, Result};
use crate::store::registry::tags::{ListedNames, list_tags};
use crate::store::registry::{ClientPool, RegistrySettings};

/// The repository's tags; names that are not valid tags are set apart.
pub fn run(repo: &Reference, settings: &RegistrySettings) -> Result<ListedNames> {
    if repo.tag.is_some() || repo.digest.is_some() {
        return Err(Error::Usage(format!(
            "{repo}: give a repository without a tag or digest"
        )));
    }
    let pool = ClientPool::default();
    let client = pool.get(&repo.domain, settings)?;
    list_tags(&client, &repo.path)
}
