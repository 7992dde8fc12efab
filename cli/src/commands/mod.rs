//! One module per command group; [`run`] dispatches the parsed command line.

pub mod agents;
pub mod dlq;
pub mod enqueue;
pub mod jobs;
pub mod queue;
pub mod runs;
pub mod schedules;

use crate::cli::{AgentsCmd, Cli, Command, JobsCmd, SchedulesCmd};
use crate::client::{self, Client};
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
    let mut ctx = Ctx {
        client: client::connect(&cli.controller, cli.token.as_deref())?,
        format: cli.output,
    };
    match cli.command {
        Command::Jobs(cmd) => jobs::run(&mut ctx, cmd).await,
        Command::List => jobs::run(&mut ctx, JobsCmd::List).await,
        Command::Job(args) => jobs::run(&mut ctx, JobsCmd::Run(args)).await,
        Command::Enqueue(args) => enqueue::run(&mut ctx, args, enqueue::Trigger::Api).await,
        Command::Runs(cmd) => runs::run(&mut ctx, cmd).await,
        Command::Queue(cmd) => queue::run(&mut ctx, cmd).await,
        Command::Dlq(cmd) => dlq::run(&mut ctx, cmd).await,
        Command::Agents(AgentsCmd::List) => agents::list(&mut ctx).await,
        Command::Schedules {
            command: None | Some(SchedulesCmd::List),
        } => schedules::list(&mut ctx).await,
    }
}
