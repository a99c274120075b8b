//! `meshcrypt`: the node agent and its subcommands.

mod cli;
mod keys_cmd;
mod logging;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    logging::init(&cli.log)?;
    match cli.command {
        cli::Command::Keys(keys) => keys_cmd::run(keys),
    }
}
