//! `imgsync login` and `imgsync logout`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use imgsync::Error;
use imgsync::commands;
use imgsync::engine::default_jobs;
use imgsync::store::registry::Credential;

use super::{SharedRegistryArgs, TlsArgs, settings};

#[derive(Args)]
pub struct LoginCmd {
    /// Registry host (host[:port]).
    registry: String,
    #[arg(short, long)]
    username: String,
    /// Password (prefer --password-stdin: arguments are visible to others).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    shared: SharedRegistryArgs,
}

#[derive(Args)]
pub struct LogoutCmd {
    /// Registry host (host[:port]).
    registry: String,
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

pub fn login(c: LoginCmd) -> Result<ExitCode, Error> {
    let password = match (c.password, c.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut p = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut p)
                .map_err(|e| Error::io("read the password from standard input", e))?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            return Err(Error::Usage("give --password-stdin (or --password)".into()));
        }
    };
    let cred = Credential::Basic {
        username: c.username,
        password,
    };
    let s = settings(
        &None,
        c.tls.tls_verify,
        &c.tls.cert_dir,
        &c.shared,
        default_jobs(),
    )?;
    let file = commands::login::login(&c.registry, cred, &s)?;
    super::console::message(&format!(
        "Login succeeded; credentials stored in {}",
        file.display()
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn logout(c: LogoutCmd) -> Result<ExitCode, Error> {
    commands::login::logout(&c.registry, c.authfile.as_deref())?;
    super::console::message(&format!("Removed credentials for {}", c.registry));
    Ok(ExitCode::SUCCESS)
}
