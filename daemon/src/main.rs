//! `meshcrypt`: the node agent and its subcommands.

mod agent;
mod cli;
mod error;
mod keys_cmd;
mod logging;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    logging::init(&cli.log)?;
    match cli.command {
        cli::Command::Agent(args) => {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(agent::run(*args))?;
        }
        cli::Command::Keys(keys) => keys_cmd::run(keys)?,
    }
    Ok(())
}
