//! `completions SHELL` and `man --dir DIR`: what a package or an operator
//! installs next to the binary, generated from the clap definitions so they
//! never disagree with `--help`. Neither talks to a controller.

use std::path::Path;

use clap::CommandFactory as _;

use crate::cli::Cli;
use crate::error::CliError;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "workerctl", &mut std::io::stdout());
    Ok(())
}

/// Writes `workerctl.1` and one page per subcommand (`workerctl-runs-list.1`)
/// into `dir`, creating it if needed, and prints the paths written.
pub fn man_pages(dir: &Path) -> anyhow::Result<()> {
    let unwritable =
        |e: std::io::Error| CliError::usage(format!("--dir: cannot write man pages into `{}`: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(unwritable)?;
    let mut written: Vec<String> = std::fs::read_dir(dir)
        .map_err(unwritable)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "1"))
        .map(|path| path.display().to_string())
        .collect();
    written.sort();
    for path in written {
        println!("{path}");
    }
    Ok(())
}
