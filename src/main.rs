//! The `imgsync` binary: parse the command line, run it, map the error to
//! the exit code. Everything else is in [`cli`] and the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Writes this crate's log records to stderr (`--debug`: each registry
/// request and its status). Records of other crates are left out.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("imgsync")
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            eprintln!("imgsync: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    let _ = ctrlc::set_handler(|| {
        cli::cleanup_on_interrupt();
        std::process::exit(130);
    });
    let args = cli::Cli::parse();
    if log::set_logger(&StderrLog).is_ok() && args.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            cli::print_error(&e);
            ExitCode::from(e.class().exit_code())
        }
    }
}
