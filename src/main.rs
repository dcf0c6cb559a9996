//! The `imgsync` binary: parse the command line, run it, map the error to
//! the exit code. Everything else is in [`cli`] and the library.

// No panic reachable from input, as in the library.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::signals::install();
    let args = cli::Cli::parse();
    cli::console::start_log(args.debug);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            cli::print_error(&e);
            ExitCode::from(e.class().exit_code())
        }
    }
}
