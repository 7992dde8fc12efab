//! One module per command group; [`run`] dispatches the parsed command line.

pub mod agents;
pub mod alerts;
pub mod apply;
pub mod backup;
pub mod batch;
pub mod catalog;
pub mod create_job;
pub mod dlq;
pub mod enqueue;
pub mod jobs;
pub mod logs;
pub mod packaging;
pub mod queue;
pub mod runs;
pub mod schedules;
pub mod status;
pub mod tokens;

use std::io::Read as _;

use crate::cli::{AgentsCmd, Cli, Command, JobsCmd, SchedulesCmd};
use crate::client::{self, Client};
use crate::error::CliError;
use crate::output::Format;

/// What every command needs: the controller client and the output format.
pub struct Ctx {
    /// The (lazily connected) controller client.
    pub client: Client,
    /// The `-o` choice.
    pub format: Format,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench { command } => {
            return crate::bench::run(command, &cli.controller, cli.token, cli.output).await;
        }
        Command::Completions { shell } => return packaging::completions(shell),
        Command::Man { dir } => return packaging::man_pages(&dir),
        Command::Catalog(cmd) => {
            return catalog::run(cmd, &cli.controller, cli.token.as_deref(), &cli.tls, cli.output).await;
        }
        Command::Backup(cmd) => return backup::run(cmd, cli.output).await,
        Command::CreateJob(args) => return create_job::run(args, cli.output),
        _ => {}
    }
    let mut ctx = Ctx {
        client: client::connect_tls(&cli.controller, cli.token.as_deref(), &cli.tls)?,
        format: cli.output,
    };
    match cli.command {
        Command::Jobs(cmd) => jobs::run(&mut ctx, cmd).await,
        Command::List => jobs::run(&mut ctx, JobsCmd::List).await,
        Command::Job(args) => jobs::run(&mut ctx, JobsCmd::Run(args)).await,
        Command::Enqueue(args) => enqueue::run(&mut ctx, args).await,
        Command::Runs(cmd) => runs::run(&mut ctx, cmd).await,
        Command::Queue(cmd) => queue::run(&mut ctx, cmd).await,
        Command::Dlq(cmd) => dlq::run(&mut ctx, cmd).await,
        Command::Agents(AgentsCmd::List) => agents::list(&mut ctx).await,
        Command::Agents(AgentsCmd::Drain { id }) => agents::drain(&mut ctx, id).await,
        Command::Alerts(cmd) => alerts::run(&mut ctx, cmd).await,
        Command::Tokens(cmd) => tokens::run(&mut ctx, cmd).await,
        Command::Schedules { command } => schedules::run(&mut ctx, command.unwrap_or(SchedulesCmd::List)).await,
        Command::Apply { file } => apply::apply(&mut ctx, &file).await,
        Command::Export => apply::export(&mut ctx).await,
        Command::Status => status::run(&mut ctx).await,
        Command::Bench { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Catalog(_)
        | Command::Backup(_)
        | Command::CreateJob(_) => {
            unreachable!("handled above")
        }
    }
}

/// The text of a file argument (`-` = stdin) and the name to show for it (the
/// path, or `<stdin>`). `flag` names the option in error messages.
pub fn read_input(path: &str, flag: &str) -> Result<(String, String), CliError> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("{flag}: cannot read stdin: {e}")))?;
        Ok((text, "<stdin>".to_string()))
    } else {
        let text =
            std::fs::read_to_string(path).map_err(|e| CliError::usage(format!("{flag}: cannot read `{path}`: {e}")))?;
        Ok((text, path.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_input_names_the_file() {
        let path = std::env::temp_dir().join(format!("workerctl-input-{}.yaml", std::process::id()));
        std::fs::write(&path, "jobs: {}\n").unwrap();
        let shown = path.display().to_string();
        assert_eq!(
            read_input(&shown, "-f").unwrap(),
            ("jobs: {}\n".to_string(), shown.clone())
        );
        std::fs::remove_file(&path).unwrap();
        let err = read_input(&shown, "-f").unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.message.starts_with("-f: cannot read"), "{}", err.message);
    }
}
