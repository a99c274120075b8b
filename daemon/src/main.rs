//! `meshcrypt`: the node agent and its subcommands. `agent` is the per-node daemon (its reconcile
//! pass: gather, decide, execute; see ARCHITECTURE.md), `config` the ConfigMap's settings and
//! their strict parser, `keys_cmd` and `device_cmd` the `keys` and `device` subcommands, `status`
//! `meshcrypt status` (the agent's status socket, the cluster view), `audit` `meshcrypt audit` (the
//! assessors' report), `remote_cluster` and
//! `mesh_node` meshcrypt's resources, `registry` the cross-cluster registry, `events` the Event
//! recorder, `cli` the flags, `logging` the live log filter, `error` the one error type.

mod agent;
mod audit;
mod aws;
mod check_aws;
mod cli;
mod config;
mod device_cmd;
mod error;
mod events;
mod flows;
mod keys_cmd;
mod logging;
mod mesh_node;
mod mesh_peer;
mod process_metrics;
mod registry;
mod remote_cluster;
mod status;
#[cfg(test)]
mod test_support;

use clap::Parser as _;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version to stdout, exit 0; a usage error to stderr, exit 1, like any other
        // failure to run (not clap's 2: `meshcrypt audit` exits 2 for "not compliant").
        Err(e) => {
            let _ = e.print();
            return Ok(std::process::ExitCode::from(u8::from(e.use_stderr())));
        }
    };
    let log = logging::init(&cli.log)?;
    match cli.command {
        cli::Command::Agent(args) => {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(agent::run(*args, log))?;
        }
        cli::Command::Keys(keys) => keys_cmd::run(keys)?,
        cli::Command::Config(cli::ConfigCommand::Check(args)) => config::check(&args)?,
        cli::Command::Device(args) => device_cmd::run(&args)?,
        cli::Command::Status(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(status::run(args))?;
        }
        cli::Command::Audit(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if runtime.block_on(audit::run(args))? == audit::Verdict::NotCompliant {
                // 1 is anyhow's (could not audit); 2 says the audit ran and found violations.
                return Ok(std::process::ExitCode::from(2));
            }
        }
        cli::Command::Check(cli::CheckCommand::Aws(args)) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if !runtime.block_on(check_aws::run(args))? {
                // 1 is anyhow's (could not check); 2 says the check ran and found blocked pairs.
                return Ok(std::process::ExitCode::from(2));
            }
        }
        cli::Command::Crd => print!("{}", remote_cluster::crd_yaml()?),
        cli::Command::SigningKey { out } => registry::signing_key::create(&out)?,
        cli::Command::Registry(args) => {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(registry::run(*args))?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
