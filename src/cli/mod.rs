//! The command line: clap definitions (one file per verb) and the one
//! console printer ([`console`]). Flags become the library's options here;
//! nothing below this layer prints.

pub mod console;
mod copy;
mod inspect;
mod load;
mod login;
mod save;
pub mod signals;
mod sync;
mod tags;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use imgsync::Error;
use imgsync::content::Reference;
use imgsync::engine::{CopyOptions, ReferrerOptions, default_jobs};
use imgsync::store::location::Location;
use imgsync::store::registry::{Credential, RegistrySettings};

const AFTER_HELP: &str = "Locations:
  docker-archive:PATH[:REF|:@N]   a `docker save` tar (PATH `-` = stdin/stdout)
  oci:DIR[:NAME]                  an OCI image layout directory
  oci-archive:PATH[:NAME]         a tar of an OCI image layout
  docker://REF, REF               a registry repository (host/repo:tag, host/repo@digest;
                                  busybox = docker.io/library/busybox:latest)";

#[derive(Parser)]
#[command(name = "imgsync", version, about = "Move container images between docker archives, OCI layouts and registries", after_help = AFTER_HELP)]
pub struct Cli {
    /// Print every registry request and its status on stderr (never
    /// headers, credentials or tokens).
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy one image, a multi-platform index, or every image of an archive.
    #[command(after_help = "Examples:
  imgsync copy docker-archive:app.tar oci:layout:app
  imgsync copy docker-archive:all.tar oci-archive:all.oci.tar
  imgsync copy oci:layout:app docker-archive:app.tar:app:1.0
  docker save a b | imgsync copy docker-archive:- oci:layout
  imgsync copy oci:layout:app docker-archive:- | docker load
  imgsync copy --dest-compress zstd --format oci docker-archive:app.tar oci:layout:app")]
    Copy(copy::CopyCmd),
    /// Show an image's digest, media type, platforms, layers and names.
    #[command(after_help = "Examples:
  imgsync inspect docker-archive:app.tar
  imgsync inspect --raw oci:layout:app | jq .
  imgsync inspect --json oci-archive:all.oci.tar")]
    Inspect(inspect::InspectCmd),
    /// Mirror repositories and tags between registries from a config file.
    #[command(after_help = "Examples:
  imgsync sync --config mirror.yaml
  imgsync sync --config mirror.yaml --dry-run
  imgsync sync --config mirror.yaml --lock /run/imgsync.lock --report report.json --metrics /var/lib/node_exporter/imgsync.prom
  imgsync sync --config mirror.yaml --every 15m")]
    Sync(sync::SyncCmd),
    /// List the tags of a registry repository.
    #[command(after_help = "Examples:
  imgsync tags localhost:5000/team/app
  imgsync tags --json registry.example/app")]
    Tags(tags::TagsCmd),
    /// Check credentials against a registry and store them where docker does.
    #[command(after_help = "Examples:
  echo \"$PASSWORD\" | imgsync login localhost:5000 -u ci --password-stdin")]
    Login(login::LoginCmd),
    /// Remove stored credentials for a registry.
    Logout(login::LogoutCmd),
    /// Re-hash every manifest, config and layer; exit non-zero on any mismatch.
    #[command(after_help = "Examples:
  imgsync verify oci:layout
  imgsync verify docker-archive:app.tar
  imgsync verify week49.tar.*            # a bundle, or its volumes in any order")]
    Verify(verify::VerifyCmd),
    /// Save many images into one deduplicated bundle (an OCI layout and a
    /// docker archive at once), for air-gapped transfer.
    #[command(after_help = "Examples:
  imgsync save -o week48.tar localhost:5000/team/app:1.4 localhost:5000/library/redis:7
  imgsync save -o week48.tar --config mirror.yaml --manifest-out week48.json
  imgsync save -o week49.tar --config mirror.yaml --since week48.tar
  imgsync save -o week49.tar --config mirror.yaml --split 4GiB
  docker load -i week48.tar")]
    Save(save::SaveCmd),
    /// Load every image of a bundle into a registry (below a prefix) or a
    /// local layout; blobs stream from the bundle, nothing is extracted.
    #[command(after_help = "Examples:
  imgsync load week48.tar --to registry.internal:5000/mirror
  imgsync load week49.tar.* --to registry.internal:5000/mirror
  imgsync load week48.tar --to oci:/srv/layout")]
    Load(load::LoadCmd),
}

#[derive(Args)]
pub struct Common {
    /// Where compressed archives and standard input are spooled, and
    /// recompressed layers are staged [default: the system temp dir].
    #[arg(long, value_name = "DIR", env = "IMGSYNC_TMPDIR")]
    tmpdir: Option<PathBuf>,
    /// Print errors only.
    #[arg(short, long)]
    quiet: bool,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
    /// Blobs moved at once.
    #[arg(long, value_name = "N", default_value_t = default_jobs())]
    jobs: usize,
}

/// Settings for one registry (`--creds`, `--tls-verify`, ...).
#[derive(Args, Clone, Default)]
pub struct RegistryArgs {
    /// Credentials as USER:PASSWORD (else from the auth files).
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    shared: SharedRegistryArgs,
}

impl RegistryArgs {
    fn settings(&self, jobs: usize) -> Result<RegistrySettings, Error> {
        settings(
            &self.creds,
            self.tls.tls_verify,
            &self.tls.cert_dir,
            &self.shared,
            jobs,
        )
    }
}

/// How to trust one registry.
#[derive(Args, Clone, Default)]
pub struct TlsArgs {
    /// Verify the registry's TLS certificate (false also allows plain HTTP).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    tls_verify: Option<bool>,
    /// Directory with the registry's CA (*.crt) and client certificate
    /// (*.cert, *.key), as docker's certs.d.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
}

/// Registry settings shared by both sides of a copy.
#[derive(Args, Clone, Default)]
pub struct SharedRegistryArgs {
    /// Credentials file (docker config.json format) [default:
    /// $REGISTRY_AUTH_FILE, then $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Retries of a request after a transient failure.
    #[arg(long, value_name = "N", default_value_t = 3)]
    retry_times: u32,
}

fn settings(
    creds: &Option<String>,
    tls_verify: Option<bool>,
    cert_dir: &Option<PathBuf>,
    shared: &SharedRegistryArgs,
    jobs: usize,
) -> Result<RegistrySettings, Error> {
    Ok(RegistrySettings {
        creds: creds.as_deref().map(Credential::parse).transpose()?,
        authfile: shared.authfile.clone(),
        tls_verify,
        plain_http: None,
        cert_dir: cert_dir.clone(),
        retry_times: Some(shared.retry_times),
        max_requests: Some(jobs.max(1) * 2),
        // Set per registry in a sync config only.
        rate_limit_reserve: None,
        requests_per_second: None,
    })
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReferrersArg {
    /// Signatures, SBOMs, attestations and digest tags travel with images.
    All,
    /// Only the images travel.
    None,
}

/// What travels with the images (`--referrers`, `--referrers-type`,
/// `--no-digest-tags`).
#[derive(Args, Clone)]
pub struct ReferrerArgs {
    /// Carry the referrers (signatures, SBOMs, attestations: manifests
    /// whose subject is a copied manifest) and digest tags
    /// (sha256-<hex>.sig, .att, .sbom) of the copied images.
    #[arg(long, value_enum, default_value = "all")]
    referrers: ReferrersArg,
    /// Carry only referrers of this artifact type (or, for artifacts older
    /// than OCI 1.1, config media type); repeat for several.
    #[arg(long, value_name = "TYPE")]
    referrers_type: Vec<String>,
    /// Leave digest tags (sha256-<hex>.sig, .att, .sbom) behind.
    #[arg(long)]
    no_digest_tags: bool,
}

impl ReferrerArgs {
    pub fn options(&self) -> ReferrerOptions {
        if self.referrers == ReferrersArg::None {
            return ReferrerOptions::none();
        }
        ReferrerOptions {
            enabled: true,
            types: imgsync::content::referrers::TypeFilter {
                allow: self.referrers_type.clone(),
                deny: Vec::new(),
            },
            digest_tags: !self.no_digest_tags,
        }
    }
}

/// The exit code of a run whose images were all copied: non-zero when a
/// referrer failed.
pub fn referrer_exit(report: &imgsync::engine::CopyReport) -> ExitCode {
    match report.referrer_errors.first() {
        Some(e) => ExitCode::from(e.class().exit_code()),
        None => ExitCode::SUCCESS,
    }
}

fn options(common: &Common) -> CopyOptions {
    CopyOptions {
        jobs: common.jobs.max(1),
        tmpdir: common.tmpdir.clone().unwrap_or_else(std::env::temp_dir),
        ..CopyOptions::default()
    }
}

fn registry_ref(s: &str) -> Result<Reference, Error> {
    match Location::parse(s)? {
        Location::Registry(r) => Ok(r),
        other => Err(Error::Usage(format!(
            "{}: not a registry repository",
            other.label()
        ))),
    }
}

/// `--platform` values.
fn platforms(values: &[String]) -> Result<Vec<imgsync::content::Platform>, Error> {
    values
        .iter()
        .map(|p| imgsync::content::Platform::parse(p))
        .collect()
}

/// Runs the command the line asked for.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Copy(c) => copy::run(c),
        Command::Inspect(c) => inspect::run(c),
        Command::Sync(c) => {
            let progress = console::Reporter::for_sync(c.quiet);
            sync::run(c, &progress)
        }
        Command::Tags(c) => tags::run(c),
        Command::Login(c) => login::login(c),
        Command::Logout(c) => login::logout(c),
        Command::Verify(c) => verify::run(c),
        Command::Save(c) => save::run(c),
        Command::Load(c) => load::run(c),
    }
}

/// Undoes what an interrupted run half wrote.
pub fn cleanup_on_interrupt() {
    imgsync::store::cleanup::cleanup_all();
    console::message("imgsync: interrupted");
}

/// Prints a failure as one line.
pub fn print_error(e: &Error) {
    console::error(e);
}
