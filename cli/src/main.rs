//! `workerctl`: the command-line client of the Worker controller.
//!
//! `main` only parses the command line, runs the command, and maps a failure to
//! `error: <message>` on stderr and an exit code (see [`error`]).

mod bench;
mod cli;
mod client;
mod commands;
mod error;
mod leader;
mod model;
mod output;
mod tls;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let controller = client::describe_controllers(&cli.controller);
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let (code, message) = error::describe(&err, &controller);
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
