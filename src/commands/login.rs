//! `imgsync login` / `logout`: check credentials against a registry and
//! store them where docker keeps them.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::registry::client::Retry;
use crate::store::registry::credentials::{self, Credential};
use crate::store::registry::{ClientPool, RegistrySettings};

/// Checks `cred` against `host` and stores it; returns the file written.
pub fn login(host: &str, cred: Credential, settings: &RegistrySettings) -> Result<PathBuf> {
    let mut s = settings.clone();
    s.creds = Some(cred.clone());
    let pool = ClientPool::default();
    let client = pool.get(host, &s)?;
    // `GET /v2/` with the credentials (a token for no scope, on token
    // registries) proves them.
    let r = client.send("log in", Retry::Yes, |http, base| {
        http.get(format!("{base}/v2/"))
    })?;
    if !r.status().is_success() {
        return Err(client.failure("log in", r));
    }
    credentials::store(host, &cred, settings.authfile.as_deref())
}

pub fn logout(host: &str, authfile: Option<&Path>) -> Result<()> {
    if credentials::remove(host, authfile)? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("not logged in to {host}")))
    }
}
