//! Operator settings from command-line flags, each with an environment variable fallback so the
//! Helm chart can set them either way.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// Command-line configuration of the operator.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "pki-operator",
    version,
    about = "Certificates from enterprise CAs, the Kubernetes way",
    // A flag given twice takes the last value, so wrappers can append overrides.
    args_override_self = true
)]
#[allow(clippy::struct_excessive_bools)] // independent on/off switches, not a state machine
pub struct Config {
    /// Kubeconfig file. Without it: `$KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account.
    #[arg(long, env = "PKI_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Only watch namespaced resources in this namespace (cluster-scoped kinds are always
    /// watched). Empty: all namespaces.
    #[arg(long, env = "PKI_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// Namespace in which Secrets referenced by ClusterIssuers are looked up. Defaults to the
    /// namespace the operator runs in (`POD_NAMESPACE`).
    #[arg(long, env = "PKI_OPERATOR_CLUSTER_RESOURCE_NAMESPACE")]
    pub cluster_resource_namespace: Option<String>,

    /// Log format.
    #[arg(long, env = "PKI_OPERATOR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` `EnvFilter` syntax, e.g. `info` or `info,pki_operator=debug`.
    #[arg(long, env = "PKI_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Address of the admin HTTP server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "PKI_OPERATOR_ADMIN_ADDRESS", default_value = "0.0.0.0:8080")]
    pub admin_address: SocketAddr,

    /// Run only while holding the leader Lease, so several replicas can run for availability.
    #[arg(long, env = "PKI_OPERATOR_LEADER_ELECTION", action = ArgAction::Set, default_value_t = false)]
    pub leader_election: bool,

    /// Namespace of the leader Lease. Defaults to `POD_NAMESPACE`, then `default`.
    #[arg(long, env = "PKI_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "PKI_OPERATOR_LEADER_ELECTION_LEASE",
        default_value = "pki-operator-leader"
    )]
    pub leader_election_lease: String,

    /// How long a leader's Lease stays valid without renewal; a standby takes over after that.
    #[arg(long, env = "PKI_OPERATOR_LEASE_DURATION", value_parser = parse_seconds, default_value = "15")]
    pub lease_duration: Duration,

    /// Reconciles each controller runs at once; more objects wait in its queue. Bounds memory
    /// and CA load when thousands of objects change together (start-up, a mass renewal).
    #[arg(
        long,
        env = "PKI_OPERATOR_MAX_CONCURRENT_RECONCILES",
        default_value_t = 16,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_concurrent_reconciles: u16,

    /// Identity written into the Lease. Defaults to `POD_NAME`, then the host name, plus the PID.
    #[arg(long, env = "PKI_OPERATOR_IDENTITY")]
    pub identity: Option<String>,

    /// The namespace the operator runs in (set by the Helm chart from the downward API).
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,

    /// The operator's pod name (set by the Helm chart from the downward API).
    #[arg(long, env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,
}

fn parse_seconds(value: &str) -> Result<Duration, String> {
    let seconds: u64 = value
        .parse()
        .map_err(|e| format!("{value:?} is not a number of seconds: {e}"))?;
    if seconds < 2 {
        return Err("must be at least 2 seconds".into());
    }
    Ok(Duration::from_secs(seconds))
}

impl Config {
    /// Namespace of the leader Lease.
    pub fn lease_namespace(&self) -> String {
        self.leader_election_namespace
            .clone()
            .or_else(|| self.pod_namespace.clone())
            .unwrap_or_else(|| "default".into())
    }

    /// Identity of this replica in the Lease: unique per process even on one host.
    pub fn lease_identity(&self) -> String {
        if let Some(identity) = &self.identity {
            return identity.clone();
        }
        let base = self
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "pki-operator".into());
        format!("{base}-{}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_single_replica_text_logs() {
        let config = Config::try_parse_from(["pki-operator"]).unwrap();
        assert!(!config.leader_election);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.max_concurrent_reconciles, 16);
        assert!(Config::try_parse_from(["pki-operator", "--max-concurrent-reconciles=0"]).is_err());
    }

    #[test]
    fn flags_parse() {
        let config = Config::try_parse_from([
            "pki-operator",
            "--leader-election=true",
            "--log-format=json",
            "--lease-duration=8",
            "--namespace=team-a",
            "--admin-address=127.0.0.1:9000",
        ])
        .unwrap();
        assert!(config.leader_election);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.lease_duration, Duration::from_secs(8));
        assert_eq!(config.namespace.as_deref(), Some("team-a"));
        assert_eq!(config.admin_address.port(), 9000);
    }

    #[test]
    fn too_short_lease_is_rejected_with_reason() {
        let err = Config::try_parse_from(["pki-operator", "--lease-duration=1"]).unwrap_err();
        assert!(err.to_string().contains("at least 2 seconds"), "{err}");
    }
}
