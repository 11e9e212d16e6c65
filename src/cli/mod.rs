//! `kubectl pki`, the kubectl plugin: its flags, the kubeconfig it connects with, its errors and
//! exit codes, and one module per command. `src/bin/kubectl-pki.rs` only calls [`main`].
//!
//! Exit codes, for scripts: [`EXIT_OK`] when everything asked about is Ready (or the action
//! succeeded), [`EXIT_NOT_READY`] when something is not, [`EXIT_ERROR`] when the question could
//! not be answered (not found, API error, bad usage; clap's own usage errors also exit 2).

pub mod check;
pub mod decode;
pub mod inspect;
pub mod list;
pub mod render;
pub mod renew;
pub mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::Serialize;

use render::{Format, Report};

/// Everything asked about is Ready, or the action succeeded.
pub const EXIT_OK: u8 = 0;
/// Something asked about is not Ready (or a Secret's key does not match its certificate).
pub const EXIT_NOT_READY: u8 = 1;
/// The question could not be answered: not found, API error, bad usage.
pub const EXIT_ERROR: u8 = 2;

/// `kubectl pki`: inspect and operate pki-operator resources.
#[derive(Debug, Parser)]
#[command(name = "kubectl-pki", bin_name = "kubectl pki", version)]
pub struct Cli {
    /// Path to the kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t)]
    pub output: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The plugin's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A Certificate's conditions, order, issuer, decoded Secret and recent Events.
    Status {
        /// The Certificate's name.
        certificate: String,
    },
    /// Ask the operator to renew Certificates now (sets `pki-operator.io/renew`).
    Renew {
        /// Certificates to renew.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        certificates: Vec<String>,
        /// Renew every Certificate in the namespace (narrowed by `-l`).
        #[arg(long)]
        all: bool,
        /// Label selector for `--all`, e.g. `team=payments`.
        #[arg(short = 'l', long, conflicts_with = "certificates")]
        selector: Option<String>,
    },
    /// Decode an object's certificates.
    Inspect {
        /// What to inspect.
        #[command(subcommand)]
        what: InspectTarget,
    },
    /// Every pki-operator resource with its readiness (and a Certificate's expiry).
    List {
        /// Namespaced kinds from every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Sort rows by this key (default: kind, namespace, name).
        #[arg(long, value_enum)]
        sort: Option<list::SortKey>,
    },
    /// Check that an object can work.
    Check {
        /// What to check.
        #[command(subcommand)]
        what: CheckTarget,
    },
    /// The troubleshooting text for a condition reason (the README's).
    ExplainReason {
        /// A condition reason, e.g. `IssuerNotReady`.
        reason: String,
    },
}

/// `inspect` targets.
#[derive(Debug, Subcommand)]
pub enum InspectTarget {
    /// A TLS Secret: its certificate chain and whether `tls.key` matches the leaf.
    Secret {
        /// The Secret's name.
        name: String,
    },
}

/// `check` targets.
#[derive(Debug, Subcommand)]
pub enum CheckTarget {
    /// An Issuer (or with `--cluster` a ClusterIssuer): Ready, and its referenced Secrets.
    Issuer {
        /// The issuer's name.
        name: String,
        /// A ClusterIssuer; its Secrets are looked up in `-n` (the operator's
        /// `--cluster-resource-namespace`).
        #[arg(long)]
        cluster: bool,
    },
}

/// Why a command could not answer (exit code [`EXIT_ERROR`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot load the Kubernetes configuration: {0}")]
    Config(String),
    /// An object the command needs does not exist.
    #[error("{kind} {name} not found{}", namespace.as_deref().map(|n| format!(" in namespace {n}")).unwrap_or_default())]
    NotFound {
        /// Its kind.
        kind: &'static str,
        /// Its namespace, for namespaced kinds.
        namespace: Option<String>,
        /// Its name.
        name: String,
    },
    /// An apiserver call failed.
    #[error("cannot {action}: {source}")]
    Api {
        /// What was being done, e.g. `get Certificate web in namespace a`.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// `explain-reason` got a reason the table does not know.
    #[error("unknown reason {0:?}; known reasons: {known}", known = crate::reasons::REASONS.iter().map(|(r, _)| *r).collect::<Vec<_>>().join(", "))]
    UnknownReason(String),
    /// A Secret could not be decoded.
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
    /// The result could not be printed.
    #[error(transparent)]
    Render(#[from] render::RenderError),
}

/// What a command found: its report and whether everything in it is Ready.
pub struct Outcome<R> {
    /// What to print.
    pub report: R,
    /// Everything Ready / the action succeeded.
    pub ok: bool,
}

/// The connection and defaults every command works with.
pub struct Context {
    /// The apiserver client.
    pub client: Client,
    /// `-n`, else the kubeconfig context's namespace.
    pub namespace: String,
}

/// One condition as printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// When the status last changed, RFC 3339.
    pub last_transition_time: String,
}

impl From<&Condition> for ConditionView {
    fn from(c: &Condition) -> Self {
        Self {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: c.last_transition_time.0.to_string(),
        }
    }
}

/// The `Ready` condition among `conditions`.
pub fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// Whether `conditions` say `Ready=True`.
pub fn is_ready(conditions: &[Condition]) -> bool {
    ready_condition(conditions).is_some_and(|c| c.status == "True")
}

/// The current time, Unix seconds.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Maps a failed `get` to [`CliError`]: 404 is [`CliError::NotFound`], anything else an API error.
pub fn get_error(kind: &'static str, namespace: Option<&str>, name: &str, error: kube::Error) -> CliError {
    match error {
        kube::Error::Api(status) if status.code == 404 => CliError::NotFound {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        },
        source => CliError::Api {
            action: format!(
                "get {kind} {name}{}",
                namespace
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            ),
            source,
        },
    }
}

/// A client from `--kubeconfig`/`--context`, else the usual inference (`KUBECONFIG`,
/// `~/.kube/config`, in-cluster), and the namespace commands default to.
async fn connect(cli: &Cli) -> Result<Context, CliError> {
    let config_error = |e: &dyn std::fmt::Display| CliError::Config(e.to_string());
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| config_error(&e))?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| config_error(&e))?,
        None => Config::infer().await.map_err(|e| config_error(&e))?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| config_error(&e))?;
    Ok(Context { client, namespace })
}

/// The troubleshooting text of one reason.
#[derive(Debug, Serialize)]
pub struct ReasonReport {
    /// The reason.
    pub reason: String,
    /// What it means and what to do.
    pub explanation: String,
}

impl Report for ReasonReport {
    fn table(&self) -> String {
        format!("{}\n\n{}\n", self.reason, self.explanation)
    }
}

fn explain_reason(reason: &str) -> Result<Outcome<ReasonReport>, CliError> {
    let explanation =
        crate::reasons::explain(reason).ok_or_else(|| CliError::UnknownReason(reason.to_owned()))?;
    Ok(Outcome {
        report: ReasonReport {
            reason: reason.to_owned(),
            explanation: explanation.to_owned(),
        },
        ok: true,
    })
}

/// Prints `outcome` and returns its exit code.
fn finish<R: Report>(outcome: Result<Outcome<R>, CliError>, format: Format) -> Result<u8, CliError> {
    let outcome = outcome?;
    print!("{}", render::render(&outcome.report, format)?);
    Ok(if outcome.ok { EXIT_OK } else { EXIT_NOT_READY })
}

async fn dispatch(cli: &Cli) -> Result<u8, CliError> {
    let format = cli.output;
    // `explain-reason` needs no cluster: it works without a kubeconfig.
    if let Command::ExplainReason { reason } = &cli.command {
        return finish(explain_reason(reason), format);
    }
    let ctx = connect(cli).await?;
    match &cli.command {
        Command::Status { certificate } => finish(status::run(&ctx, certificate).await, format),
        Command::Renew {
            certificates,
            all,
            selector,
        } => finish(
            renew::run(&ctx, certificates, *all, selector.as_deref()).await,
            format,
        ),
        Command::Inspect {
            what: InspectTarget::Secret { name },
        } => finish(inspect::run(&ctx, name).await, format),
        Command::List { all_namespaces, sort } => {
            finish(list::run(&ctx, *all_namespaces, *sort).await, format)
        }
        Command::Check {
            what: CheckTarget::Issuer { name, cluster },
        } => finish(check::run(&ctx, name, *cluster).await, format),
        Command::ExplainReason { reason } => finish(explain_reason(reason), format),
    }
}

/// Runs the plugin with the process's arguments; the binary's whole `main`.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(&cli).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn renew_takes_names_or_all() {
        assert!(Cli::try_parse_from(["kubectl-pki", "renew", "a", "b"]).is_ok());
        assert!(Cli::try_parse_from(["kubectl-pki", "renew", "--all", "-l", "a=b"]).is_ok());
        assert!(Cli::try_parse_from(["kubectl-pki", "renew"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-pki", "renew", "a", "--all"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-pki", "renew", "a", "-l", "a=b"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-pki", "renew", "-l", "a=b"]).is_err());
    }

    #[test]
    fn explain_reason_knows_readme_reasons_only() {
        let outcome = explain_reason("IssuerNotReady").expect("known");
        assert!(outcome.ok);
        assert!(outcome.report.table().contains("issuer"));
        assert!(matches!(explain_reason("Nope"), Err(CliError::UnknownReason(_))));
    }
}
