//! Operator settings from command-line flags, each with an environment variable fallback so the
//! Helm chart can set them either way.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

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
    #[arg(long, env = "PKI_OPERATOR_NAMESPACE", conflicts_with = "watch_namespaces")]
    pub namespace: Option<String>,

    /// Namespace-scoped mode: serve only these namespaces (comma-separated), each with its own
    /// watches, and no cluster-scoped kind (ClusterIssuer, DomainValidation, AlertConfig), so
    /// Roles in these namespaces are all the permissions needed. Empty: not in this mode.
    #[arg(
        long,
        env = "PKI_OPERATOR_WATCH_NAMESPACES",
        value_delimiter = ',',
        value_parser = parse_namespace
    )]
    pub watch_namespaces: Vec<String>,

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

    /// Address of the HTTP domain validation solver (`/.well-known/pki-validation/<file>`),
    /// served on every replica.
    #[arg(long, env = "PKI_OPERATOR_SOLVER_ADDRESS", default_value = "0.0.0.0:8089")]
    pub solver_address: SocketAddr,

    /// The Service in front of the HTTP solver, in the operator's namespace (`POD_NAMESPACE`):
    /// the Ingress a DomainValidation's `solver.http.ingress` asks for routes to it. The Helm
    /// chart sets it to its `<release>-solver` Service.
    #[arg(long, env = "PKI_OPERATOR_SOLVER_SERVICE")]
    pub solver_service: Option<String>,

    /// Where the HTTP(S) self-check of a domain validation connects instead of the domain's own
    /// address: for networks where the operator cannot reach the domain's public address (e.g.
    /// the Ingress controller's Service), and for tests.
    #[arg(long, env = "PKI_OPERATOR_DCV_HTTP_SELF_CHECK_ADDRESS")]
    pub dcv_http_self_check_address: Option<SocketAddr>,

    /// The DNS server the self-check of a manually published CNAME or TXT record asks (an
    /// authoritative server of the zone). Default: the first `nameserver` of /etc/resolv.conf.
    /// RFC 2136 solvers are checked at their own server.
    #[arg(long, env = "PKI_OPERATOR_DCV_DNS_SELF_CHECK_SERVER")]
    pub dcv_dns_self_check_server: Option<SocketAddr>,

    /// The longest a validated domain goes without its DCV state being read from the CA again
    /// (so a validation deleted or expired early in the CA's console is noticed).
    #[arg(long, env = "PKI_OPERATOR_DCV_RECHECK_INTERVAL", value_parser = parse_seconds, default_value = "21600")]
    pub dcv_recheck_interval: Duration,

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

    /// Only let Issuers and ClusterIssuers use Secrets carrying this label (`key` with any
    /// value, or `key=value`). Without it, whoever may create an Issuer in a namespace may use
    /// any Secret there as the issuer's credentials or CA key; with it, only Secrets someone
    /// allowed to label them has marked for that purpose.
    #[arg(long, env = "PKI_OPERATOR_ISSUER_SECRET_LABEL", value_name = "KEY[=VALUE]")]
    pub issuer_secret_label: Option<LabelRequirement>,

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

/// A label a Secret must carry: `key` (any value) or `key=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    /// Label key, e.g. `pki-operator.io/issuer-secret`.
    pub key: String,
    /// Required value; `None` accepts any value.
    pub value: Option<String>,
}

impl LabelRequirement {
    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
        labels
            .and_then(|labels| labels.get(&self.key))
            .is_some_and(|value| self.value.as_ref().is_none_or(|required| required == value))
    }

    /// The `key=value` argument for `kubectl label` that satisfies the requirement.
    pub fn kubectl_argument(&self) -> String {
        format!("{}={}", self.key, self.value.as_deref().unwrap_or("true"))
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value}", self.key),
            None => write!(f, "{} (any value)", self.key),
        }
    }
}

/// A namespace name (an RFC 1123 label), so a typo fails at start-up instead of watching a
/// namespace that cannot exist.
fn parse_namespace(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let valid = !text.is_empty()
        && text.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

/// A label name or value: at most 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn valid_label_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    part.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for LabelRequirement {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (text, None),
        };
        let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
        let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(valid_label_part));
        if !prefix_ok || !valid_label_part(name) {
            return Err(format!(
                "{key:?} is not a label key such as pki-operator.io/issuer-secret"
            ));
        }
        if let Some(value) = value
            && !value.is_empty()
            && !valid_label_part(value)
        {
            return Err(format!("{value:?} is not a label value"));
        }
        Ok(Self {
            key: key.to_owned(),
            value: value.map(str::to_owned),
        })
    }
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
    /// The namespaces served: `--watch-namespaces` (namespace-scoped mode), else `--namespace`
    /// (one namespace plus the cluster-scoped kinds), else everything.
    pub fn watch_scope(&self) -> crate::controller::WatchScope {
        use crate::controller::WatchScope;
        match &self.namespace {
            _ if !self.watch_namespaces.is_empty() => {
                WatchScope::only_namespaces(self.watch_namespaces.iter().cloned())
            }
            Some(namespace) if !namespace.is_empty() => WatchScope::namespace(namespace),
            _ => WatchScope::cluster(),
        }
    }

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
    fn watch_namespaces_select_namespace_scoped_mode() {
        let config = Config::try_parse_from(["pki-operator", "--watch-namespaces=team-a,team-b"]).unwrap();
        let scope = config.watch_scope();
        assert!(!scope.serves_cluster_scoped());
        assert_eq!(
            scope.namespaces(),
            Some(&["team-a".to_owned(), "team-b".to_owned()][..])
        );
        let one = Config::try_parse_from(["pki-operator", "--namespace=team-a"]).unwrap();
        assert!(one.watch_scope().serves_cluster_scoped());
        assert_eq!(
            Config::try_parse_from(["pki-operator"]).unwrap().watch_scope(),
            crate::controller::WatchScope::cluster()
        );
        let typo = Config::try_parse_from(["pki-operator", "--watch-namespaces=team-a,Team_B"])
            .unwrap_err()
            .to_string();
        assert!(typo.contains("\"Team_B\" is not a namespace name"), "{typo}");
        assert!(
            Config::try_parse_from(["pki-operator", "--namespace=a", "--watch-namespaces=b"]).is_err(),
            "the two modes exclude each other"
        );
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
    fn issuer_secret_label_parses_key_or_key_value() {
        let none = Config::try_parse_from(["pki-operator"]).unwrap();
        assert_eq!(none.issuer_secret_label, None);
        let key_only = Config::try_parse_from([
            "pki-operator",
            "--issuer-secret-label=pki-operator.io/issuer-secret",
        ])
        .unwrap()
        .issuer_secret_label
        .unwrap();
        assert_eq!(key_only.key, "pki-operator.io/issuer-secret");
        assert_eq!(key_only.value, None);
        assert_eq!(key_only.kubectl_argument(), "pki-operator.io/issuer-secret=true");
        let with_value: LabelRequirement = "team=platform".parse().unwrap();
        assert_eq!(with_value.value.as_deref(), Some("platform"));
        assert_eq!(with_value.to_string(), "team=platform");
        for bad in ["", "=x", "a b", "-a", "example.com/", "k=v v", "/name"] {
            let error = Config::try_parse_from(["pki-operator", &format!("--issuer-secret-label={bad}")]);
            assert!(error.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn label_requirement_matches_key_and_value() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let any: LabelRequirement = "issuer-secret".parse().unwrap();
        assert!(any.matches(Some(&labels(&[("issuer-secret", "")]))));
        assert!(any.matches(Some(&labels(&[("issuer-secret", "yes")]))));
        assert!(!any.matches(Some(&labels(&[("other", "yes")]))));
        assert!(!any.matches(None));
        let exact: LabelRequirement = "issuer-secret=yes".parse().unwrap();
        assert!(exact.matches(Some(&labels(&[("issuer-secret", "yes")]))));
        assert!(!exact.matches(Some(&labels(&[("issuer-secret", "no")]))));
        assert!(!exact.matches(Some(&labels(&[("issuer-secret", "")]))));
    }

    #[test]
    fn too_short_lease_is_rejected_with_reason() {
        let err = Config::try_parse_from(["pki-operator", "--lease-duration=1"]).unwrap_err();
        assert!(err.to_string().contains("at least 2 seconds"), "{err}");
    }
}
