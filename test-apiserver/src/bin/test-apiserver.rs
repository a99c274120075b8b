//! `test-apiserver`: the in-repo test Kubernetes API server as a standalone process, for people
//! (point kubectl at it) and for tests that drive real kubectl against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "test-apiserver", about = "meshcrypt's stateful test Kubernetes API server")]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write an admin kubeconfig for this server to this path.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The admin bearer token (random when absent).
    #[arg(long)]
    admin_token: Option<String>,
    /// A node token, `NODE=TOKEN` (repeatable).
    #[arg(long = "node-token", value_parser = parse_node_token)]
    node_tokens: Vec<(String, String)>,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 3.0)]
    bookmark_interval: f64,
    /// A YAML or JSON file of objects to create at start.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Serve plain http instead of https (kubectl will then not send bearer tokens).
    #[arg(long)]
    plain_http: bool,
}

fn parse_node_token(s: &str) -> Result<(String, String), String> {
    let (node, token) = s.split_once('=').ok_or_else(|| format!("expected NODE=TOKEN, got {s:?}"))?;
    if node.is_empty() || token.is_empty() {
        return Err(format!("expected NODE=TOKEN, got {s:?}"));
    }
    Ok((node.to_string(), token.to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let seed = match &args.seed {
        Some(path) => ApiServerConfig::load_seed(path)?,
        None => Vec::new(),
    };
    let config = ApiServerConfig {
        listen: args.listen,
        admin_token: args.admin_token.clone(),
        node_tokens: args.node_tokens.clone(),
        bookmark_interval: Duration::from_secs_f64(args.bookmark_interval.max(0.01)),
        seed,
        tls: !args.plain_http,
        ..ApiServerConfig::default()
    };
    let server = TestApiServer::start(config).await?;
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path, server.admin_token())?;
    }
    println!("listening on {}", server.url());
    if args.kubeconfig.is_none() && args.admin_token.is_none() {
        println!("admin token {}", server.admin_token());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
