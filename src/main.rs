//! The `imgsync` command line: parses flags into the library's options,
//! renders progress, prints results, maps errors to exit codes.

mod output;
mod sync_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};

use imgsync::Error;
use imgsync::commands::{self, DockerFormat};
use imgsync::content::Platform;
use imgsync::content::Reference;
use imgsync::content::media_type::Compression;
use imgsync::copy::{CopyOptions, Format, default_jobs};
use imgsync::location::Location;
use imgsync::registry::{ClientPool, Credential, RegistrySettings};

const AFTER_HELP: &str = "Locations:
  docker-archive:PATH[:REF|:@N]   a `docker save` tar (PATH `-` = stdin/stdout)
  oci:DIR[:NAME]                  an OCI image layout directory
  oci-archive:PATH[:NAME]         a tar of an OCI image layout
  docker://REF, REF               a registry repository (host/repo:tag, host/repo@digest;
                                  busybox = docker.io/library/busybox:latest)";

#[derive(Parser)]
#[command(name = "imgsync", version, about = "Move container images between docker archives, OCI layouts and registries", after_help = AFTER_HELP)]
struct Cli {
    /// Print every registry request and its status on stderr (never
    /// headers, credentials or tokens).
    #[arg(long, global = true)]
    debug: bool,
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
    Copy(CopyCmd),
    /// Show an image's digest, media type, platforms, layers and names.
    #[command(after_help = "Examples:
  imgsync inspect docker-archive:app.tar
  imgsync inspect --raw oci:layout:app | jq .
  imgsync inspect --json oci-archive:all.oci.tar")]
    Inspect(InspectCmd),
    /// Mirror repositories and tags between registries from a config file.
    #[command(after_help = "Examples:
  imgsync sync --config mirror.yaml
  imgsync sync --config mirror.yaml --dry-run
  imgsync sync --config mirror.yaml --lock /run/imgsync.lock --report report.json --metrics /var/lib/node_exporter/imgsync.prom
  imgsync sync --config mirror.yaml --every 15m")]
    Sync(sync_cmd::SyncCmd),
    /// List the tags of a registry repository.
    #[command(after_help = "Examples:
  imgsync tags localhost:5000/team/app
  imgsync tags --json registry.example/app")]
    Tags(TagsCmd),
    /// Check credentials against a registry and store them where docker does.
    #[command(after_help = "Examples:
  echo \"$PASSWORD\" | imgsync login localhost:5000 -u ci --password-stdin")]
    Login(LoginCmd),
    /// Remove stored credentials for a registry.
    Logout(LogoutCmd),
    /// Re-hash every manifest, config and layer; exit non-zero on any mismatch.
    #[command(after_help = "Examples:
  imgsync verify oci:layout
  imgsync verify docker-archive:app.tar
  imgsync verify week49.tar.*            # a bundle, or its volumes in any order")]
    Verify(VerifyCmd),
    /// Save many images into one deduplicated bundle (an OCI layout and a
    /// docker archive at once), for air-gapped transfer.
    #[command(after_help = "Examples:
  imgsync save -o week48.tar localhost:5000/team/app:1.4 localhost:5000/library/redis:7
  imgsync save -o week48.tar --config mirror.yaml --manifest-out week48.json
  imgsync save -o week49.tar --config mirror.yaml --since week48.tar
  imgsync save -o week49.tar --config mirror.yaml --split 4GiB
  docker load -i week48.tar")]
    Save(SaveCmd),
    /// Load every image of a bundle into a registry (below a prefix) or a
    /// local layout; blobs stream from the bundle, nothing is extracted.
    #[command(after_help = "Examples:
  imgsync load week48.tar --to registry.internal:5000/mirror
  imgsync load week49.tar.* --to registry.internal:5000/mirror
  imgsync load week48.tar --to oci:/srv/layout")]
    Load(LoadCmd),
}

#[derive(Args)]
struct Common {
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
struct RegistryArgs {
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
struct TlsArgs {
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
struct SharedRegistryArgs {
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
        cert_dir: cert_dir.clone(),
        retry_times: Some(shared.retry_times),
        max_requests: Some(jobs.max(1) * 2),
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Oci,
    Docker,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressArg {
    Gzip,
    Zstd,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum DockerFormatArg {
    /// OCI layout plus manifest.json (what Docker 25+ writes).
    Oci,
    /// `<id>/layer.tar` with uncompressed layers (Docker before 25).
    Legacy,
}

#[derive(Args)]
struct CopyCmd {
    /// Source location.
    source: String,
    /// Destination location.
    dest: String,
    /// Write manifests with these media types (changes manifest digests).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Recompress layers (changes layer and manifest digests, never DiffIDs).
    #[arg(long, value_enum)]
    dest_compress: Option<CompressArg>,
    /// Compression level for --dest-compress (gzip 1-12, default 2;
    /// zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    dest_compress_level: Option<i32>,
    /// Keep only this platform (os/arch[/variant]); repeat for several.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Vec<String>,
    /// Shape of a docker-archive destination.
    #[arg(long, value_enum, default_value = "oci")]
    docker_format: DockerFormatArg,
    /// Credentials for the source registry, as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD")]
    src_creds: Option<String>,
    /// Credentials for the destination registry, as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD")]
    dest_creds: Option<String>,
    /// Verify the source registry's TLS certificate (false also allows HTTP).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    src_tls_verify: Option<bool>,
    /// Verify the destination registry's TLS certificate.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    dest_tls_verify: Option<bool>,
    /// CA and client certificates for the source registry (certs.d style).
    #[arg(long, value_name = "DIR")]
    src_cert_dir: Option<PathBuf>,
    /// CA and client certificates for the destination registry.
    #[arg(long, value_name = "DIR")]
    dest_cert_dir: Option<PathBuf>,
    #[command(flatten)]
    registry: SharedRegistryArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct TagsCmd {
    /// A registry repository (host/repo), without a tag.
    repository: String,
    /// Print a JSON list.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct LoginCmd {
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
struct LogoutCmd {
    /// Registry host (host[:port]).
    registry: String,
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

#[derive(Args)]
struct InspectCmd {
    location: String,
    /// Print the exact bytes of the manifest (or index).
    #[arg(long, conflicts_with = "config")]
    raw: bool,
    /// Print the exact bytes of the image config.
    #[arg(long)]
    config: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, value_name = "DIR", env = "IMGSYNC_TMPDIR")]
    tmpdir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct VerifyCmd {
    /// A location, or the file or volumes of a bundle.
    #[arg(required = true, num_args = 1..)]
    locations: Vec<String>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct SaveCmd {
    /// The bundle to write (volumes are named PATH.001, PATH.002, ...).
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,
    /// Images to save (any location; a bare REF is a registry image).
    images: Vec<String>,
    /// Also save every image this sync config selects.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Leave out the blobs an earlier bundle carried or relied on (give the
    /// bundle, its volumes' name, or its --manifest-out file).
    #[arg(long, value_name = "BUNDLE")]
    since: Option<PathBuf>,
    /// Split into volumes of at most this size (4GiB, 700MB, ...).
    #[arg(long, value_name = "SIZE")]
    split: Option<String>,
    /// Also write the bundle manifest to this file (enough for a later
    /// --since).
    #[arg(long, value_name = "FILE")]
    manifest_out: Option<PathBuf>,
    /// Keep only this platform of multi-platform images; repeat for several.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Vec<String>,
    /// The platform `docker load` takes from multi-platform images
    /// [default: this machine's].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    docker_platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct LoadCmd {
    /// The bundle file, or its volumes in any order.
    #[arg(required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Where to load: a registry prefix (host/path), or oci:DIR.
    #[arg(long, value_name = "LOCATION")]
    to: String,
    /// Keep each image's source registry host as a path component
    /// (docker.io/library/redis:7 → PREFIX/docker.io/library/redis:7).
    #[arg(long)]
    keep_registry: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    common: Common,
}

fn options(common: &Common) -> CopyOptions {
    CopyOptions {
        jobs: common.jobs.max(1),
        tmpdir: common.tmpdir.clone().unwrap_or_else(std::env::temp_dir),
        ..CopyOptions::default()
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    imgsync::registry::client::set_debug(cli.debug);
    match cli.command {
        c @ (Command::Tags(_) | Command::Login(_) | Command::Logout(_)) => run_registry_commands(c),
        Command::Sync(c) => {
            let progress = output::Reporter::new(true, "copied");
            sync_cmd::run(c, &progress)
        }
        Command::Copy(c) => {
            let started = Instant::now();
            let mut opts = options(&c.common);
            opts.platforms = c
                .platform
                .iter()
                .map(|p| Platform::parse(p))
                .collect::<Result<_, _>>()?;
            opts.format = c.format.map(|f| match f {
                FormatArg::Oci => Format::Oci,
                FormatArg::Docker => Format::Docker,
            });
            opts.compress = c.dest_compress.map(|c| match c {
                CompressArg::Gzip => Compression::Gzip,
                CompressArg::Zstd => Compression::Zstd,
                CompressArg::None => Compression::None,
            });
            opts.compress_level = c.dest_compress_level;
            opts.retry_times = c.registry.retry_times;
            let jobs = opts.jobs;
            let args = commands::copy::CopyArgs {
                source: Location::parse(&c.source)?,
                dest: Location::parse(&c.dest)?,
                src_registry: settings(
                    &c.src_creds,
                    c.src_tls_verify,
                    &c.src_cert_dir,
                    &c.registry,
                    jobs,
                )?,
                dest_registry: settings(
                    &c.dest_creds,
                    c.dest_tls_verify,
                    &c.dest_cert_dir,
                    &c.registry,
                    jobs,
                )?,
                options: opts,
                docker_format: match c.docker_format {
                    DockerFormatArg::Oci => DockerFormat::Oci,
                    DockerFormatArg::Legacy => DockerFormat::Legacy,
                },
            };
            let to_stdout = matches!(&args.dest, Location::DockerArchive { path, .. } | Location::OciArchive { path, .. } if path == "-");
            if to_stdout && c.common.json {
                return Err(Error::Usage(
                    "--json prints on stdout, which the destination '-' already uses".into(),
                ));
            }
            let progress = output::Reporter::new(c.common.quiet, "copied");
            let report = commands::copy::run(&args, &progress)?;
            progress.finish();
            output::copy_summary(&report, started.elapsed(), c.common.quiet, c.common.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(c) => {
            let loc = Location::parse(&c.location)?;
            let tmpdir = c.tmpdir.unwrap_or_else(std::env::temp_dir);
            let registry = c.registry.settings(default_jobs())?;
            let pool = ClientPool::default();
            let ctx = commands::Context {
                tmpdir: &tmpdir,
                pool: &pool,
                registry: &registry,
            };
            if c.raw || c.config {
                let bytes = commands::inspect::raw(&loc, &ctx, c.config)?;
                output::write_stdout(&bytes);
                return Ok(ExitCode::SUCCESS);
            }
            let infos = commands::inspect::run(&loc, &ctx)?;
            output::inspect(&infos, c.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Save(c) => {
            let started = Instant::now();
            let mut opts = options(&c.common);
            opts.platforms = c
                .platform
                .iter()
                .map(|p| Platform::parse(p))
                .collect::<Result<_, _>>()?;
            opts.retry_times = c.registry.shared.retry_times;
            let args = commands::bundle::SaveArgs {
                out: c.output,
                sources: c
                    .images
                    .iter()
                    .map(|s| Location::parse(s))
                    .collect::<Result<_, _>>()?,
                config: c.config,
                since: c.since,
                split: c
                    .split
                    .as_deref()
                    .map(commands::bundle::parse_size)
                    .transpose()?,
                manifest_out: c.manifest_out,
                docker_platform: c
                    .docker_platform
                    .as_deref()
                    .map(Platform::parse)
                    .transpose()?,
                registry: c.registry.settings(opts.jobs)?,
                options: opts,
            };
            let progress = output::Reporter::new(c.common.quiet, "saved");
            let report = commands::bundle::save(&args, &progress)?;
            progress.finish();
            output::save_summary(&report, started.elapsed(), c.common.quiet, c.common.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Load(c) => {
            let started = Instant::now();
            let mut opts = options(&c.common);
            opts.retry_times = c.registry.shared.retry_times;
            let args = commands::bundle::LoadArgs {
                files: c.files,
                to: Location::parse(&c.to)?,
                keep_registry: c.keep_registry,
                registry: c.registry.settings(opts.jobs)?,
                options: opts,
            };
            let progress = output::Reporter::new(c.common.quiet, "loaded");
            let report = commands::bundle::load(&args, &progress)?;
            progress.finish();
            output::copy_summary(&report, started.elapsed(), c.common.quiet, c.common.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(c) => {
            let started = Instant::now();
            let opts = options(&c.common);
            // Files given by path (no transport) are a bundle or its volumes.
            let files: Vec<PathBuf> = c.locations.iter().map(PathBuf::from).collect();
            let bare_files = c.locations.len() > 1
                || (!c.locations[0].contains("://")
                    && !c.locations[0].starts_with("docker-archive:")
                    && !c.locations[0].starts_with("oci:")
                    && !c.locations[0].starts_with("oci-archive:")
                    && (files[0].is_file()
                        || imgsync::bundle::manifest::volume_path(&files[0], 1).is_file()));
            if bare_files {
                let progress = output::Reporter::new(c.common.quiet, "verified");
                let report = commands::bundle::verify(&files, &opts, &progress)?;
                progress.finish();
                return Ok(output::bundle_verify_summary(
                    &report,
                    started.elapsed(),
                    c.common.quiet,
                    c.common.json,
                ));
            }
            let loc = Location::parse(&c.locations[0])?;
            let progress = output::Reporter::new(c.common.quiet, "verified");
            let registry = c.registry.settings(c.common.jobs)?;
            let report = commands::verify::run(&loc, &opts, &registry, &progress)?;
            progress.finish();
            Ok(output::verify_summary(
                &loc,
                &report,
                started.elapsed(),
                c.common.quiet,
                c.common.json,
            ))
        }
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

fn run_registry_commands(cli: Command) -> Result<ExitCode, Error> {
    match cli {
        Command::Tags(c) => {
            let repo = registry_ref(&c.repository)?;
            let s = c.registry.settings(default_jobs())?;
            let tags = commands::tags::run(&repo, &s)?;
            if c.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&tags).expect("JSON values serialise")
                );
            } else {
                let mut out = String::new();
                for t in tags {
                    out.push_str(&t);
                    out.push('\n');
                }
                output::write_stdout(out.as_bytes());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(c) => {
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
            eprintln!("Login succeeded; credentials stored in {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Logout(c) => {
            commands::login::logout(&c.registry, c.authfile.as_deref())?;
            eprintln!("Removed credentials for {}", c.registry);
            Ok(ExitCode::SUCCESS)
        }
        _ => unreachable!("only registry commands come here"),
    }
}

fn main() -> ExitCode {
    let _ = ctrlc::set_handler(|| {
        imgsync::store::spool::cleanup_all();
        eprintln!("imgsync: interrupted");
        std::process::exit(130);
    });
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imgsync: error: {e}");
            ExitCode::from(e.class().exit_code())
        }
    }
}
