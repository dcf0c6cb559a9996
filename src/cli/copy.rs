//! `imgsync copy SRC DST`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};

use imgsync::Error;
use imgsync::commands;
use imgsync::content::media_type::Compression;
use imgsync::engine::Format;
use imgsync::store::location::Location;
use imgsync::store::open::DockerFormat;

use super::{Common, ReferrerArgs, SharedRegistryArgs, console, options, settings};

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Oci,
    Docker,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressArg {
    Gzip,
    Zstd,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DockerFormatArg {
    /// OCI layout plus manifest.json (what Docker 25+ writes).
    Oci,
    /// `<id>/layer.tar` with uncompressed layers (Docker before 25).
    Legacy,
}

#[derive(Args)]
pub struct CopyCmd {
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
    referrers: ReferrerArgs,
    #[command(flatten)]
    registry: SharedRegistryArgs,
    #[command(flatten)]
    common: Common,
}

pub fn run(c: CopyCmd) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let mut opts = options(&c.common);
    opts.platforms = super::platforms(&c.platform)?;
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
    opts.referrers = c.referrers.options();
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
    let progress = console::Reporter::new(c.common.quiet, "copied");
    let report = commands::copy::run(&args, &progress)?;
    progress.finish();
    console::copy_summary(&report, started.elapsed(), c.common.quiet, c.common.json);
    Ok(super::referrer_exit(&report))
}
