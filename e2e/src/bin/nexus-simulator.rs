//! `nexus-simulator`: runs the Nexus Certificate Manager REST API simulator until SIGTERM or
//! SIGINT, for demos and for tests that need it as a separate process.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use pki_operator_e2e::sim::nexus::{NexusSigningMode, NexusSimulator, NexusSimulatorConfig};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SigningMode {
    Vro,
    Caller,
}

/// Simulates the Nexus CM REST API (Protocol Gateway) over mutual TLS.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Who signs write requests: the gateway (VRO) or the caller (Nexus' default).
    #[arg(long, value_enum, default_value = "caller")]
    signing_mode: SigningMode,
    /// Directory for `tls-ca.pem`, `issuing-root.pem`, `officer.crt`, `officer.key` and `ready`
    /// (the base URL, written last).
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
    let config = NexusSimulatorConfig {
        signing_mode: match args.signing_mode {
            SigningMode::Vro => NexusSigningMode::Vro,
            SigningMode::Caller => NexusSigningMode::Caller,
        },
        ..NexusSimulatorConfig::default()
    };
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let simulator = NexusSimulator::start_on(args.listen, config).await?;
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

/// Writes the trust anchors and the officer identity, then `ready` last so a watcher never reads
/// a half-written state.
async fn write_state(
    dir: &std::path::Path,
    simulator: &NexusSimulator,
    base_url: &str,
) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let (officer_chain, officer_key) = simulator.officer_identity();
    for (name, contents) in [
        ("tls-ca.pem", simulator.tls_ca_pem()),
        ("issuing-root.pem", simulator.issuing_root_pem()),
        ("officer.crt", officer_chain),
        ("officer.key", officer_key),
        ("ready", base_url.to_owned()),
    ] {
        let path = dir.join(name);
        // Write-then-rename so readers never see a partial file.
        let partial = dir.join(format!(".{name}.partial"));
        tokio::fs::write(&partial, contents)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        if name == "officer.key" {
            // The officer key is a credential: readable by the owner only.
            use std::os::unix::fs::PermissionsExt as _;
            tokio::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
                .await
                .with_context(|| format!("restricting {}", partial.display()))?;
        }
        tokio::fs::rename(&partial, &path)
            .await
            .with_context(|| format!("renaming to {}", path.display()))?;
    }
    Ok(())
}
