//! `walq`: the command line of the walq job queue. See docs/cli.md.

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
            if !fail.message.is_empty() {
                eprintln!("walq: {}", fail.message);
            }
            ExitCode::from(fail.code)
        }
    }
}
