//! `scm-simulator`: runs the Sectigo/InCommon SCM API simulator until SIGTERM or SIGINT, for
//! demos and for tests that need it as a separate process.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use pki_operator_e2e::sim::{ScmFlavor, ScmSimulator, ScmSimulatorConfig};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Flavor {
    Sectigo,
    Incommon,
}

/// Simulates the Sectigo Certificate Manager SSL REST API (or its InCommon flavour) over HTTPS.
// No `Debug`: the arguments hold the password.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Which product to simulate.
    #[arg(long, value_enum, default_value = "sectigo")]
    flavor: Flavor,
    /// Expected `login` header.
    #[arg(long)]
    login: Option<String>,
    /// Expected `password` header.
    #[arg(long, env = "SCM_SIMULATOR_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Expected `customerUri` header.
    #[arg(long)]
    customer_uri: Option<String>,
    /// The organization id orders must name.
    #[arg(long)]
    org_id: Option<i64>,
    /// Pending answers to collect before an order is issued.
    #[arg(long)]
    pending_collects: Option<u32>,
    /// Minimum time between order and issuance, milliseconds.
    #[arg(long)]
    processing_delay_ms: Option<u64>,
    /// Directory for `tls-ca.pem`, `issuing-root.pem` and `ready` (the base URL, written last).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let defaults = ScmSimulatorConfig::default();
    let config = ScmSimulatorConfig {
        flavor: match args.flavor {
            Flavor::Sectigo => ScmFlavor::Sectigo,
            Flavor::Incommon => ScmFlavor::InCommon,
        },
        login: args.login.unwrap_or(defaults.login),
        password: args.password.unwrap_or(defaults.password),
        customer_uri: args.customer_uri.unwrap_or(defaults.customer_uri),
        org_id: args.org_id.unwrap_or(defaults.org_id),
        pending_collects: args.pending_collects.unwrap_or(defaults.pending_collects),
        processing_delay: args
            .processing_delay_ms
            .map_or(defaults.processing_delay, Duration::from_millis),
        ..ScmSimulatorConfig::default()
    };
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let simulator = ScmSimulator::start_on(args.listen, config).await?;
    let base_url = simulator.base_url();
    if let Some(dir) = &args.state_dir {
        write_state(dir, &simulator, &base_url).await?;
    }
    println!("READY {base_url}");
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
    }
    tracing::info!("shutting down");
    simulator.shutdown().await;
    Ok(())
}

/// Writes the trust anchors, then `ready` last so a watcher never reads a half-written state.
async fn write_state(dir: &std::path::Path, simulator: &ScmSimulator, base_url: &str) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    for (name, contents) in [
        ("tls-ca.pem", simulator.tls_ca_pem()),
        ("issuing-root.pem", simulator.issuing_root_pem()),
        ("ready", base_url.to_owned()),
    ] {
        let path = dir.join(name);
        // Write-then-rename so readers never see a partial file.
        let partial = dir.join(format!(".{name}.partial"));
        tokio::fs::write(&partial, contents)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        tokio::fs::rename(&partial, &path)
            .await
            .with_context(|| format!("renaming to {}", path.display()))?;
    }
    Ok(())
}
