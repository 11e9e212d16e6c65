//! `certmgmt-simulator`: runs the Certificate Manager Service (CertMgmt) API simulator until
//! SIGTERM or SIGINT, for demos and for tests that need it as a separate process.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use pki_operator_e2e::sim::{
    certmgmt::{CertMgmtSimulator, CertMgmtSimulatorConfig},
    process::{self, StateFile},
};

/// Simulates the CertMgmt REST API (hosts, email lists, alert levels, generated alerts and the
/// agent certificate report) over HTTPS.
// No `Debug`: the arguments hold the password.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Expected HTTP Basic username.
    #[arg(long)]
    username: Option<String>,
    /// Expected HTTP Basic password.
    #[arg(long, env = "CERTMGMT_SIMULATOR_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Evaluate alerts every this many seconds (besides `POST /__simulator/alerts/evaluate`).
    #[arg(long)]
    evaluation_interval_secs: Option<u64>,
    /// Answer `GET /certmgmt/modules` with 200 and an empty zip instead of the documented 204.
    #[arg(long)]
    modules_body: bool,
    /// Directory for `tls-ca.pem` and `ready` (the base URL, written last).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    process::init_tracing();
    let args = Args::parse();
    let defaults = CertMgmtSimulatorConfig::default();
    let config = CertMgmtSimulatorConfig {
        username: args.username.unwrap_or(defaults.username.clone()),
        password: args.password.unwrap_or(defaults.password.clone()),
        evaluation_interval: args.evaluation_interval_secs.map(Duration::from_secs),
        modules_body: args.modules_body,
        ..defaults
    };
    let simulator = CertMgmtSimulator::start_on(args.listen, config).await?;
    let base_url = simulator.base_url();
    if let Some(dir) = &args.state_dir {
        let files = vec![StateFile {
            name: "tls-ca.pem",
            contents: simulator.tls_ca_pem(),
            private: false,
        }];
        process::write_state(dir, files, &base_url).await?;
    }
    println!("READY {base_url}");
    process::until_terminated().await?;
    simulator.shutdown().await;
    Ok(())
}
