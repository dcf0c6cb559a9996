//! The `imgsync` command line: parses flags into the library's options,
//! renders progress, prints results, maps errors to exit codes.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};

use imgsync::Error;
use imgsync::commands::{self, DockerFormat};
use imgsync::content::Platform;
use imgsync::content::media_type::Compression;
use imgsync::copy::{CopyOptions, Format, default_jobs};
use imgsync::location::Location;

const AFTER_HELP: &str = "Locations:
  docker-archive:PATH[:REF|:@N]   a `docker save` tar (PATH `-` = stdin/stdout)
  oci:DIR[:NAME]                  an OCI image layout directory
  oci-archive:PATH[:NAME]         a tar of an OCI image layout
  docker://REF, REF               a registry (not supported yet)";

#[derive(Parser)]
#[command(name = "imgsync", version, about = "Move container images between docker archives, OCI layouts and registries", after_help = AFTER_HELP)]
struct Cli {
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
    /// Re-hash every manifest, config and layer; exit 1 on any mismatch.
    #[command(after_help = "Examples:
  imgsync verify oci:layout
  imgsync verify docker-archive:app.tar")]
    Verify(VerifyCmd),
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
    #[command(flatten)]
    common: Common,
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
}

#[derive(Args)]
struct VerifyCmd {
    location: String,
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
    match cli.command {
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
            let args = commands::copy::CopyArgs {
                source: Location::parse(&c.source)?,
                dest: Location::parse(&c.dest)?,
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
            if c.raw || c.config {
                let bytes = commands::inspect::raw(&loc, &tmpdir, c.config)?;
                output::write_stdout(&bytes);
                return Ok(ExitCode::SUCCESS);
            }
            let infos = commands::inspect::run(&loc, &tmpdir)?;
            output::inspect(&infos, c.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(c) => {
            let started = Instant::now();
            let loc = Location::parse(&c.location)?;
            let progress = output::Reporter::new(c.common.quiet, "verified");
            let report = commands::verify::run(&loc, &options(&c.common), &progress)?;
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
