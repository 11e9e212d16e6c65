//! `nexus-simulator`: runs the Nexus Certificate Manager REST API simulator until SIGTERM or
//! SIGINT, for demos and for tests that need it as a separate process.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};
use pki_operator_e2e::sim::{
    nexus::{NexusSigningMode, NexusSimulator, NexusSimulatorConfig},
    process::{self, StateFile},
};

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
    process::init_tracing();
    let args = Args::parse();
    let config = NexusSimulatorConfig {
        signing_mode: match args.signing_mode {
            SigningMode::Vro => NexusSigningMode::Vro,
            SigningMode::Caller => NexusSigningMode::Caller,
        },
        ..NexusSimulatorConfig::default()
    };
    let simulator = NexusSimulator::start_on(args.listen, config).await?;
    let base_url = simulator.base_url();
    if let Some(dir) = &args.state_dir {
        process::write_state(dir, state_files(&simulator), &base_url).await?;
    }
    println!("READY {base_url}");
    process::until_terminated().await?;
    simulator.shutdown().await;
    Ok(())
}

/// The trust anchors and the officer identity other processes need.
fn state_files(simulator: &NexusSimulator) -> Vec<StateFile> {
    let (officer_chain, officer_key) = simulator.officer_identity();
    let file = |name, contents, private| StateFile {
        name,
        contents,
        private,
    };
    vec![
        file("tls-ca.pem", simulator.tls_ca_pem(), false),
        file("issuing-root.pem", simulator.issuing_root_pem(), false),
        file("officer.crt", officer_chain, false),
        file("officer.key", officer_key, true),
    ]
}
