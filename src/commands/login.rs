//! `imgsync login` / `logout`: check credentials against a registry and
//! store them where docker keeps them.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::registry::credentials::{self, Credential};
use crate::store::registry::{ClientPool, RegistrySettings};

/// Checks `cred` against `host` and stores it; returns the file written.
pub fn login(host: &str, cred: Credential, settings: &RegistrySettings) -> Result<PathBuf> {
    let mut s = settings.clone();
    s.creds = Some(cred.clone());
    let pool = ClientPool::default();
    let client = pool.get(host, &s)?;
    client.check_login()?;
    credentials::store(host, &cred, settings.authfile.as_deref())
}

pub fn logout(host: &str, authfile: Option<&Path>) -> Result<()> {
    if credentials::remove(host, authfile)? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("not logged in to {host}")))
    }
}
