//! `walq`: the command line of the walq job queue. See docs/cli.md.

// Helpers of the commands still to come.
#![allow(dead_code)]

mod args;
mod cmd;
mod fail;
mod progress;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match cmd::run(cli.cmd) {
        Ok(code) => ExitCode::from(code),
        Err(fail) => {
            eprintln!("walq: {}", fail.message);
            ExitCode::from(fail.code)
        }
    }
}
