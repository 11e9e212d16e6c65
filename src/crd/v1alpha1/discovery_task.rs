//! `DiscoveryTask` (namespaced): finds certificates the operator does not manage, in the CA's
//! network discovery, in Nexus' certificate database and in the cluster itself (TLS Secrets and
//! live TLS endpoints), on a schedule. Status holds a summary and a bounded list of the worst
//! findings, never the full inventory.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_PATTERN, IssuerRef, conditions_schema, duration_schema};

/// A standard five-field cron expression (minute hour day-of-month month day-of-week, with `*`,
/// lists, ranges, steps and three-letter names) or one of the `@hourly`-style macros.
const CRON_FIELD: &str =
    r"(\\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*";

/// Desired state of a DiscoveryTask.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "pki-operator.io",
    version = "v1alpha1",
    kind = "DiscoveryTask",
    namespaced,
    status = "DiscoveryTaskStatus",
    shortname = "dt",
    shortname = "discovery",
    category = "pki",
    doc = "A DiscoveryTask periodically finds certificates in the CA, the cluster and on the network, and summarises their health.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Found", type_ = "integer", json_path = ".status.summary.total"),
    printcolumn(
        name = "Expiring",
        type_ = "integer",
        json_path = ".status.summary.expiringWithin30Days"
    ),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRunTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new("has(self.scm) || has(self.nexus) || has(self.cluster)")
    .message("at least one source (scm, nexus or cluster) must be set"))]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryTaskSpec {
    /// When the task runs.
    pub schedule: DiscoverySchedule,
    /// Pause scheduling (a running SCM scan is stopped).
    #[serde(default)]
    pub suspend: bool,
    /// SCM network discovery: an SCM scan task (`net_task`) run by an SCM network agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm: Option<ScmDiscoverySource>,
    /// Nexus certificate search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexus: Option<NexusDiscoverySource>,
    /// Discovery done by the operator itself inside the cluster network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterDiscoverySource>,
    /// Report findings to a CertMgmt service as an agent host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<DiscoveryReport>,
}

/// Exactly one of `cron` or `interval`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.cron) != has(self.interval)")
    .message("exactly one of cron or interval must be set"))]
pub struct DiscoverySchedule {
    /// Five-field cron expression in UTC (e.g. `0 3 * * *`) or a macro such as `@daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(format!(
        "self.matches('^(@(yearly|annually|monthly|weekly|daily|hourly)|({CRON_FIELD}\\\\s+){{4}}{CRON_FIELD})$')"
    )).message("cron must have five fields (minute hour day-of-month month day-of-week), e.g. '0 3 * * *', or be a macro such as @daily"))]
    #[schemars(length(min = 1, max = 128))]
    pub cron: Option<String>,
    /// Run every interval (at least `1m`), e.g. `6h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(format!(
        "self.matches('{DURATION_PATTERN}') && duration(self) >= duration('1m')"
    )).message("interval must be a duration of at least 1m, such as 30m or 6h"))]
    #[schemars(length(min = 2, max = 32))]
    pub interval: Option<String>,
}

/// SCM network discovery source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScmDiscoverySource {
    /// The SCM Issuer/ClusterIssuer whose account runs the scan.
    pub issuer_ref: IssuerRef,
    /// Name of the SCM network agent that scans (e.g. `Cloud` for SCM-hosted scanning).
    #[schemars(length(min = 1, max = 256))]
    pub agent: String,
    /// Address ranges and ports to scan.
    #[schemars(length(min = 1, max = 64))]
    pub ranges: Vec<ScanRange>,
    /// Certificate bucket id (UUID) results are assigned to.
    #[schemars(length(min = 1, max = 64))]
    pub bucket_id: String,
    /// Task name at SCM (1-256 characters); defaults to `<namespace>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub display_name: Option<String>,
}

/// A CIDR and the TCP ports to probe in it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanRange {
    /// IPv4 or IPv6 network in CIDR notation, e.g. `10.0.0.0/24`.
    #[x_kube(validation = kube::core::Rule::new("isCIDR(self)").message("cidr must be a CIDR such as 10.0.0.0/24"))]
    #[schemars(length(min = 3, max = 64))]
    pub cidr: String,
    /// TCP ports (1-65535).
    #[schemars(length(min = 1, max = 32), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

/// Nexus certificate search source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NexusDiscoverySource {
    /// The Nexus Issuer/ClusterIssuer to search.
    pub issuer_ref: IssuerRef,
    /// Only certificates whose subject contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub subject_contains: Option<String>,
    /// Only certificates issued by this CA (issuer DN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
}

/// In-cluster discovery.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDiscoverySource {
    /// Inspect `kubernetes.io/tls` Secrets (in this namespace unless `namespaces` is set).
    #[serde(default)]
    pub secrets: bool,
    /// Namespaces to inspect; empty means the DiscoveryTask's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,
    /// Live TLS endpoints to connect to (real handshakes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<EndpointTargets>,
}

/// Live TLS endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTargets {
    /// Probe every Service in the inspected namespaces on `ports`.
    #[serde(default)]
    pub services: bool,
    /// Host names or IP addresses to probe on `ports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub hosts: Vec<String>,
    /// Network ranges to sweep on `ports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ranges: Vec<ScanRange>,
    /// Ports probed on `services` and `hosts` (default 443).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
    /// Per-connection timeout: connect plus handshake (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub timeout: Option<String>,
    /// Connections open at once (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<i32>,
    /// Time budget of the whole sweep (default `5m`); targets not reached by then are listed as
    /// unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub budget: Option<String>,
    /// Server name (SNI) sent to every target; by default a host name is sent as itself and
    /// addresses send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
}

/// Reporting to a CertMgmt service as an agent host (`scm-discovery-alerts.md` §6.2, §6.7): the
/// operator onboards once as a host, keeps the host's id and secret key in the Secret
/// `<task>-certmgmt-host` (owned by the task), and after every run sends what it found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryReport {
    /// CertMgmt service base URL, e.g. `https://cc.example.com:8445`.
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('https://')").message("url must start with https://"))]
    #[schemars(length(min = 9, max = 2048))]
    pub url: String,
    /// A Secret in the task's namespace with the service's Basic credentials under the keys
    /// `username` and `password`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret_name: String,
    /// Host name the operator registers as (default: `<namespace>-<name>` of the task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub hostname: Option<String>,
    /// PEM bundle of CAs trusted for the service, in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
    /// Report at least this often, even between runs, so the service does not raise a
    /// host-unavailability alert (its `max_days_checkin_delay`; default `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub check_in_interval: Option<String>,
}

/// Observed state of a DiscoveryTask.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryTaskStatus {
    /// `Ready` is True when the last run completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// When the next run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// SCM task id of the scan task the operator created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm_task_id: Option<i64>,
    /// The issuer (`Kind namespace/name`) through which `scmTaskId` was created or adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm_task_issuer: Option<String>,
    /// When the SCM scan in flight was started (cleared once its results are in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm_scan_started_time: Option<Time>,
    /// SCM operation id of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// Counts over everything the last run found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<DiscoverySummary>,
    /// The worst findings (at most 20), most urgent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub findings: Vec<DiscoveryFinding>,
    /// How long the last run took, e.g. `2.4s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_duration: Option<String>,
    /// The `metadata.generation` the last run used: a spec change runs the task at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_generation: Option<i64>,
    /// When the last report reached the CertMgmt service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,
    /// The CertMgmt host id the operator reports as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_mgmt_host_id: Option<String>,
    /// Targets the last run could not read (at most 20; `summary.unreachable` counts all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub unreachable_targets: Vec<UnreachableTarget>,
}

/// A target a run could not read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnreachableTarget {
    /// `host:port`, `namespace/secret` or the CA's id.
    pub target: String,
    /// Why: refused, timed out, not TLS, over the time budget, unreadable certificate.
    pub reason: String,
    /// The first run of an unbroken series of runs that could not read it (AlertConfig's
    /// host-unavailability alerts count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Summary counts of one run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverySummary {
    /// Certificates found.
    pub total: i64,
    /// Expiring within 30 days (not yet expired).
    pub expiring_within_30_days: i64,
    /// Already expired.
    pub expired: i64,
    /// Self-signed.
    pub self_signed: i64,
    /// With weak keys (RSA below 2048 bits, or SHA-1 signatures).
    pub weak_keys: i64,
    /// Certificates of Certificates this operator manages (recognised by their Secret).
    #[serde(default)]
    pub managed: i64,
    /// Targets that could not be read.
    #[serde(default)]
    pub unreachable: i64,
    /// Counts per issuer (the 10 largest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub by_issuer: Vec<IssuerCount>,
}

/// Number of certificates from one issuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerCount {
    /// Issuer distinguished name.
    pub issuer: String,
    /// Certificates issued by it.
    pub count: i64,
}

/// One notable certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryFinding {
    /// Where it was found: `scm`, `nexus`, `secret` or `endpoint`.
    pub source: String,
    /// Location: `host:port`, `namespace/secret` or the CA's id.
    pub location: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial_number: String,
    /// End of validity.
    pub not_after: Time,
    /// Why it is listed, e.g. `Expired`, `ExpiringSoon`, `SelfSigned`, `WeakKey`.
    pub problem: String,
}
