//! `scm-simulator`: runs the Sectigo/InCommon SCM API simulator until SIGTERM or SIGINT, for
//! demos and for tests that need it as a separate process.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use pki_operator_e2e::sim::{
    ScmFlavor, ScmSimulator, ScmSimulatorConfig, SimDomain,
    process::{self, StateFile},
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Flavor {
    Sectigo,
    Incommon,
}

/// Simulates the Sectigo Certificate Manager SSL, DCV, Domain and network discovery REST APIs
/// (or the InCommon flavour) over HTTPS.
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
    /// A domain registered in the account (repeatable). With any, enroll needs a validated
    /// domain and the DCV API decides validation.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Like `--domain`, but already validated.
    #[arg(long = "validated-domain")]
    validated_domains: Vec<String>,
    /// Where DCV HTTP checks connect (the domain is sent as `Host`).
    #[arg(long)]
    dcv_http_address: Option<SocketAddr>,
    /// Where DCV HTTPS checks connect (the certificate is not verified).
    #[arg(long)]
    dcv_https_address: Option<SocketAddr>,
    /// The DNS server DCV CNAME and TXT checks ask.
    #[arg(long)]
    dcv_dns_server: Option<SocketAddr>,
    /// How long a domain validation lasts, seconds.
    #[arg(long)]
    dcv_validity_secs: Option<u64>,
    /// A network discovery agent name net tasks may name (repeatable; default `Cloud`).
    #[arg(long = "discovery-agent")]
    discovery_agents: Vec<String>,
    /// Let discovery scans connect to addresses other than loopback.
    #[arg(long)]
    discovery_scan_any_address: bool,
    /// Directory for `tls-ca.pem`, `issuing-root.pem` and `ready` (the base URL, written last).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    process::init_tracing();
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
        domains: args
            .domains
            .iter()
            .map(|name| SimDomain::new(name))
            .chain(args.validated_domains.iter().map(|name| SimDomain {
                validated: true,
                ..SimDomain::new(name)
            }))
            .collect(),
        dcv_http_address: args.dcv_http_address,
        dcv_https_address: args.dcv_https_address,
        dcv_dns_server: args.dcv_dns_server,
        dcv_validity: args
            .dcv_validity_secs
            .map_or(defaults.dcv_validity, Duration::from_secs),
        discovery_agents: if args.discovery_agents.is_empty() {
            defaults.discovery_agents
        } else {
            args.discovery_agents
        },
        discovery_scan_any_address: args.discovery_scan_any_address,
        ..ScmSimulatorConfig::default()
    };
    let simulator = ScmSimulator::start_on(args.listen, config).await?;
    let base_url = simulator.base_url();
    if let Some(dir) = &args.state_dir {
        process::write_state(dir, state_files(&simulator), &base_url).await?;
    }
    println!("READY {base_url}");
    process::until_terminated().await?;
    simulator.shutdown().await;
    Ok(())
}

/// The trust anchors other processes need.
fn state_files(simulator: &ScmSimulator) -> Vec<StateFile> {
    vec![
        StateFile {
            name: "tls-ca.pem",
            contents: simulator.tls_ca_pem(),
            private: false,
        },
        StateFile {
            name: "issuing-root.pem",
            contents: simulator.issuing_root_pem(),
            private: false,
        },
    ]
}
