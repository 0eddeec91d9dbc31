//! `mesh`: the agent, the proxy and the operator CLI in one binary.
//!
//! Flags are written as Consul writes them (`-config-dir`, `-dev`); the
//! double-dash form works too. Each command lives in its own module under
//! `command/`.

mod client;
mod command;
mod flags;

use clap::Parser;
use std::process::ExitCode;

/// Exit status for bad usage or configuration (`EX_USAGE`).
pub const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = flags::consul_style(std::env::args_os());
    let cli = match command::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EX_USAGE),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(command::run(cli))
}
