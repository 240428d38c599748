//! `ward`: the command line for a Ward collector's HTTP API. Tables by default,
//! `--json` for scripts; the URL and token come from flags, the environment or a
//! config file (see `config`).

mod client;
mod commands;
mod config;
mod hunt;
mod table;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ward: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ward: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
