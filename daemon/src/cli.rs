//! The command line: global logging flags and one subcommand per job.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Encrypts pod-to-pod traffic between Kubernetes nodes with a WireGuard mesh.
#[derive(Debug, Parser)]
#[command(name = "meshcrypt", version)]
pub struct Cli {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How the process logs (always to stderr).
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter in `tracing` syntax, e.g. `info` or `meshcrypt=debug`.
    #[arg(long, env = "MESHCRYPT_LOG", default_value = "info", global = true)]
    pub log_level: String,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage this node's WireGuard key.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `meshcrypt keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Load the node key, creating it if there is none, and print its public half.
    Init(StateDir),
    /// Print the public half and fingerprint of the existing node key.
    Show(StateDir),
}

/// Where the node's state (its private key) lives.
#[derive(Debug, Args)]
pub struct StateDir {
    /// State directory holding the 0600 key file.
    #[arg(long, env = "MESHCRYPT_STATE_DIR", default_value = "/var/lib/meshcrypt")]
    pub state_dir: PathBuf,
}
