//! SCM network discovery (`scm-discovery-alerts.md` §2.1, §2.3, §2.4, §2.9, §8.1-§8.3): the
//! [`Capability::Discovery`](crate::backend::Capability) of the SCM backend.
//!
//! The version matrix is followed exactly (§2.1): `net_task` create, update and get are v4; list,
//! start and delete are v3 (there is no v4 list, start or delete); operations list, stop and
//! result are v1 under `/{taskType}/{taskId}/operation`. Create and start are sent once (a
//! lost create is resolved by [`ScmBackend::discovery_find_task`], a lost start by the
//! operations list); every other call is idempotent and retried.
//!
//! Choices the spec leaves open, and what we do:
//! - **The operator owns the schedule** (§8.2 option b): every task is written with `frequency:
//!   "Manual"`, the only attested time zone label, 00:00, and `month`, `dayOfMonth`,
//!   `dayOfWeek` all `1` so that v4's range checks pass (§2.2).
//! - **Ports** are sent one per `ranges[]` entry, as the single-number string every example
//!   uses (`"443"`): lists such as `"443,8443"` are unattested (§2.4). Reading accepts lists and
//!   `a-b` spans too, and groups the entries of one address back into one [`NetRange`].
//! - **Statuses** are read as enum names or display strings (§2.3, §8.1); an operation is
//!   finished when it is `completed` or `failed` (the attested values) or reads as cancelled.
//! - **Totals** are the larger of `X-Total-Count` and the deprecated body `total` (§2.9: the
//!   example sends `X-Total-Count: 0` next to `"total":4`).

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::IpAddr,
};

use jiff::Timestamp;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    KIND, ScmBackend, classify,
    client::{ApiFamily, CallError, Reply},
    parse_json,
};
use crate::backend::{BackendError, http, retry::Idempotency};

/// The `timeZone` written with every task. Inferred (spec §2.2): `timeZone` is a display label
/// whose list is unknown; we chose the only label the docs attest. The schedule is `Manual`, so
/// the zone never decides anything.
pub const DISCOVERY_TIME_ZONE: &str = "UTC+00:00 - GMT, UCT, UTC, WET, EGST";

/// The most discovered certificates [`ScmBackend::discovery_results`] reads for one operation.
///
/// Inferred (spec §8.3): the docs give no limit on a result set. We chose 10,000 because a
/// summary (expired, expiring, weak keys) needs every certificate of a normal scan while one
/// result is about 1.3 KB of JSON, so the cap bounds the memory a single operation can take
/// (about 13 MB). Results past the cap are not read; a warning is logged.
pub const MAX_DISCOVERY_RESULTS: usize = 10_000;

/// Tasks asked for per page of the list. Inferred (spec §2.4): the docs give no maximum page
/// size; 200 is the largest any other SCM list documents.
const TASK_PAGE: usize = 200;
/// How many listed tasks a search reads at most before giving up. Inferred (spec §8.2): the
/// name filter narrows the list, so more means the filter is ignored; giving up is an error,
/// never a "not found" that would let the caller create a duplicate.
const MAX_TASKS_SCANNED: usize = 5_000;
/// Operations asked for per page. Inferred (spec §2.9): the operations list documents no query
/// parameters; `position`/`size` are sent as every other list takes them, and a server that
/// ignores them is detected (a page without new ids ends the walk).
const OPERATION_PAGE: usize = 100;
/// Operations read at most for one task (our bound; the docs give none).
const MAX_OPERATIONS: usize = 10_000;
/// Results asked for per page. Inferred (spec §2.9): no maximum `size` is documented; the
/// example uses 50, and 100 results are about 130 KB of JSON, far under the response cap.
const RESULT_PAGE: usize = 100;
/// The most ports one [`NetRange`] read back from SCM may expand to (a `1-65535` span).
const MAX_PORTS_PER_RANGE: usize = 65_535;

/// A network range to scan: a CIDR and its TCP ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRange {
    /// IPv4 or IPv6 network in CIDR notation (`10.0.0.0/24`, `192.0.2.7/32`).
    pub address: String,
    /// TCP ports, 1-65535.
    pub ports: Vec<u16>,
}

/// What an SCM network scan task (`net_task`) should be (§2.4, §8.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetTaskSpec {
    /// Task name, 1-256 characters; the key a lost create is recovered by.
    pub name: String,
    /// Name of the SCM network agent that scans (e.g. `Cloud`).
    pub agent: String,
    /// Ranges to scan; at least one.
    pub ranges: Vec<NetRange>,
    /// Certificate bucket (UUID) the results go to (`certBucketId`).
    pub bucket_id: String,
}

/// A task's status (§2.3): the enum names of the `status` query parameter and the display
/// strings of JSON responses both read to the same value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// `IN_PROCESS`, "Scan in process".
    InProcess,
    /// `FAILED`, "Scan FAILED".
    Failed,
    /// `CANCELED`, "Scan CANCELED by user".
    Canceled,
    /// `SUCCESSFUL`, "Scan completed (Successful)".
    Successful,
    /// `PARTIAL_SUCCESSFUL`, "Scan completed (Partial SUCCESSFUL)".
    PartialSuccessful,
    /// `PROCESSING_RESULT`, "Scan completed (Processing Result)": the scan is done but its
    /// results are not final yet (§8.3).
    ProcessingResult,
    /// `null`: the task never ran.
    Never,
    /// A value this client does not know, kept as sent.
    Unknown(String),
}

/// The enum names and display strings of §2.3, in enum order.
const STATUS_SPELLINGS: [(&str, &str); 6] = [
    ("IN_PROCESS", "Scan in process"),
    ("FAILED", "Scan FAILED"),
    ("CANCELED", "Scan CANCELED by user"),
    ("SUCCESSFUL", "Scan completed (Successful)"),
    ("PARTIAL_SUCCESSFUL", "Scan completed (Partial SUCCESSFUL)"),
    ("PROCESSING_RESULT", "Scan completed (Processing Result)"),
];

impl TaskStatus {
    /// Reads a `status` value: an enum name or a display string, in any case; `None` (JSON
    /// `null`), an empty string and `"null"` are [`TaskStatus::Never`].
    /// Inferred (spec §2.3): `null` means "never run", and unknown values are kept.
    pub fn parse(value: Option<&str>) -> Self {
        let Some(text) = value
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("null"))
        else {
            return Self::Never;
        };
        let index = STATUS_SPELLINGS.iter().position(|(name, display)| {
            text.eq_ignore_ascii_case(name) || text.eq_ignore_ascii_case(display)
        });
        match index {
            Some(0) => Self::InProcess,
            Some(1) => Self::Failed,
            Some(2) => Self::Canceled,
            Some(3) => Self::Successful,
            Some(4) => Self::PartialSuccessful,
            Some(5) => Self::ProcessingResult,
            _ => Self::Unknown(text.to_owned()),
        }
    }

    fn spelling(&self) -> Option<(&'static str, &'static str)> {
        let index = match self {
            Self::InProcess => 0,
            Self::Failed => 1,
            Self::Canceled => 2,
            Self::Successful => 3,
            Self::PartialSuccessful => 4,
            Self::ProcessingResult => 5,
            Self::Never | Self::Unknown(_) => return None,
        };
        Some(STATUS_SPELLINGS[index])
    }

    /// The enum name (`IN_PROCESS`, ...), as the list's `status` filter takes it; the unknown
    /// value as sent; `None` for [`TaskStatus::Never`].
    pub fn enum_name(&self) -> Option<&str> {
        match self {
            Self::Unknown(text) => Some(text),
            other => other.spelling().map(|(name, _)| name),
        }
    }

    /// The display string SCM's JSON carries ("Scan in process", ...); the unknown value as
    /// sent; `None` for [`TaskStatus::Never`].
    pub fn display(&self) -> Option<&str> {
        match self {
            Self::Unknown(text) => Some(text),
            other => other.spelling().map(|(_, display)| display),
        }
    }

    /// Whether a scan is under way (in process, or its results are still being processed).
    pub fn is_running(&self) -> bool {
        matches!(self, Self::InProcess | Self::ProcessingResult)
    }

    /// Whether the last scan ended: failed, cancelled or completed with final results.
    /// Inferred (spec §2.3): `PROCESSING_RESULT` is not terminal; an unknown value is not
    /// either, so a caller keeps polling rather than reading a result set too early.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Canceled | Self::Successful | Self::PartialSuccessful
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display().unwrap_or("never run"))
    }
}

/// An SCM network scan task as `GET v4/net_task/{id}` describes it (§2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetTask {
    /// Task id (may be negative, §2.5).
    pub id: i64,
    /// Task name.
    pub name: String,
    /// Agent name.
    pub agent: String,
    /// Ranges, one entry per address with its ports.
    pub ranges: Vec<NetRange>,
    /// The bucket (`certificateBucket.id` on read, `certBucketId` on write).
    pub bucket_id: String,
    /// Status of the task's last scan.
    pub status: TaskStatus,
    /// `frequency` as SCM reports it (`Manual` for tasks this client wrote).
    pub frequency: Option<String>,
}

impl NetTask {
    /// Whether the task is what `spec` asks for, comparing the fields that were sent (§8.2):
    /// name, agent, bucket (case-insensitive, a UUID), the set of address × port pairs, and a
    /// `Manual` frequency when SCM reports one.
    pub fn matches(&self, spec: &NetTaskSpec) -> bool {
        self.name == spec.name
            && self.agent == spec.agent
            && self.bucket_id.eq_ignore_ascii_case(&spec.bucket_id)
            && pairs(&self.ranges) == pairs(&spec.ranges)
            && self
                .frequency
                .as_deref()
                .is_none_or(|frequency| frequency.eq_ignore_ascii_case("Manual"))
    }
}

/// Every (address, port) pair of `ranges`, ordered and without duplicates.
fn pairs(ranges: &[NetRange]) -> Vec<(String, u16)> {
    let mut pairs: Vec<(String, u16)> = ranges
        .iter()
        .flat_map(|range| {
            range
                .ports
                .iter()
                .map(|port| (range.address.trim().to_ascii_lowercase(), *port))
        })
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// One execution (scan run) of a task (§2.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Operation id, 32 hex characters.
    pub id: String,
    /// `completed` and `failed` are attested; running and stopped values are not (§2.9).
    pub status: String,
    /// When the scan started.
    pub created: Option<Timestamp>,
    /// Last change.
    pub modified: Option<Timestamp>,
    /// The bucket the results go to.
    pub bucket_id: Option<String>,
    /// The failure's description (failed operations only).
    pub error: Option<String>,
}

impl Operation {
    /// `completed`.
    pub fn is_completed(&self) -> bool {
        self.status.trim().eq_ignore_ascii_case("completed")
    }

    /// `failed`.
    pub fn is_failed(&self) -> bool {
        self.status.trim().eq_ignore_ascii_case("failed")
    }

    /// Whether the operation ended: `completed`, `failed`, or a cancellation.
    /// Inferred (spec §2.9): only `completed` and `failed` are attested; a stopped operation's
    /// value is undocumented, so `canceled`/`cancelled`/`stopped` (any case, `_` or space) are
    /// read as finished too. Any other value is a running one; cross-check the task status.
    pub fn is_terminal(&self) -> bool {
        let status = self.status.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        self.is_completed()
            || self.is_failed()
            || matches!(
                status.as_str(),
                "canceled" | "cancelled" | "stopped" | "canceled_by_user" | "cancelled_by_user"
            )
    }
}

/// A certificate found on a network endpoint by an operation (§2.9 result, §2.8 `Details`).
/// The result carries no certificate bytes, only these parsed fields; every field an expiry,
/// weak-key or self-signed analysis needs is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveredCertificate {
    /// `location.details.ip`.
    pub ip: String,
    /// `location.details.port` (0 when absent).
    pub port: u16,
    /// `location.details.address`, the scanned host name.
    pub hostname: Option<String>,
    /// `certificate.hash` (the SHA-1 fingerprint in the examples): the certificate's key.
    pub hash: String,
    /// `certificate.metadata.managedId`, e.g. `ssl:130`: set for certificates SCM issued.
    pub managed_id: Option<String>,
    /// `certificate.metadata.discoveryTime`.
    pub discovered_at: Option<Timestamp>,
    /// `details.cn`.
    pub common_name: Option<String>,
    /// `details.sn`, the serial number in hex.
    pub serial: Option<String>,
    /// `details.issuer`. Inferred (spec §2.8): its structure is not shown (`{}`); read as an
    /// attribute → value map, non-string values rendered as JSON.
    pub issuer: BTreeMap<String, String>,
    /// `details.subject`, read like `issuer`.
    pub subject: BTreeMap<String, String>,
    /// `details.san`.
    pub sans: Vec<String>,
    /// `details.validFrom`.
    pub valid_from: Option<Timestamp>,
    /// `details.validTo`: the expiry.
    pub valid_to: Option<Timestamp>,
    /// `details.keyAlgorithm`, e.g. `RSA`, `EC`.
    pub key_algorithm: Option<String>,
    /// `details.keySize` in bits.
    pub key_size: Option<u32>,
    /// `details.signatureAlgorithm`, e.g. `SHA256withRSA`.
    pub signature_algorithm: Option<String>,
    /// `details.sha1Hash`.
    pub sha1_hash: Option<String>,
    /// `details.md5Hash`.
    pub md5_hash: Option<String>,
    /// `details.ku`.
    pub key_usage: Vec<String>,
    /// `details.eku`.
    pub extended_key_usage: Vec<String>,
    /// `details.precert`.
    pub precert: Option<bool>,
    /// `status.tlsVersion`, as sent (its encoding is undocumented).
    pub tls_version: Option<String>,
    /// `status.cipherSuite`.
    pub cipher_suite: Option<String>,
    /// `operation.id`.
    pub operation_id: Option<String>,
}

impl DiscoveredCertificate {
    /// Whether the certificate is self-signed, judged by issuer = subject.
    /// Inferred (spec §2.8): the result has no self-signed field; `None` when either name is
    /// empty (as in the docs' examples), since nothing can be concluded then.
    pub fn self_signed(&self) -> Option<bool> {
        (!self.issuer.is_empty() && !self.subject.is_empty()).then(|| self.issuer == self.subject)
    }

    /// Whether the certificate has expired at `now`; `None` without `validTo`.
    pub fn is_expired_at(&self, now: Timestamp) -> Option<bool> {
        self.valid_to.map(|valid_to| valid_to < now)
    }

    /// Whether SCM manages the certificate (a `managedId` is present).
    pub fn is_managed(&self) -> bool {
        self.managed_id.as_deref().is_some_and(|id| !id.trim().is_empty())
    }
}

/// Why a discovery call failed, in the terms a DiscoveryTask acts on (§8.2 "Errors become
/// conditions"). Documented codes (§1.1) get their own kind; everything else is the SCM
/// backend's usual classification. Every message says what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// -615, or a task without ranges refused before any call.
    #[error(
        "the discovery task has no range to scan{code}: give it at least one CIDR range with at least \
         one port",
        code = code.map(|c| format!(" (code {c})")).unwrap_or_default()
    )]
    NoRanges {
        /// SCM's code, when SCM refused the task.
        code: Option<i64>,
    },
    /// -304 (bad CIDR) or -3301 (invalid scan range), or a range refused before any call.
    #[error(
        "a scan range is invalid: {message}: write each range as an IPv4 or IPv6 CIDR such as \
         10.0.0.0/24 or 192.0.2.7/32, with ports 1-65535"
    )]
    InvalidRange {
        /// SCM's message with its code, or what the client found wrong.
        message: String,
    },
    /// -303 or -305: more address × port pairs than SCM scans in one task.
    #[error(
        "the scan ranges are too wide: {message}: narrow the ranges or the ports, or split them over \
         several DiscoveryTasks{limits}",
        limits = match (public_limit, private_limit) {
            (Some(public), Some(private)) => format!(
                " (SCM allows at most {public} public and {private} private ip-port pairs per scan)"
            ),
            _ => String::new(),
        }
    )]
    RangeTooWide {
        /// SCM's message with its code.
        message: String,
        /// The public pair limit, when SCM named it (-303).
        public_limit: Option<u64>,
        /// The private pair limit, when SCM named it (-303).
        private_limit: Option<u64>,
    },
    /// -607 (private ranges) or -637 (public ranges): the agent cannot scan the ranges.
    #[error(
        "{message}: name an SCM network agent that is connected and configured for these {which} \
         ranges (SCM: Discovery, Network Agents), or configure the agent for them; retried slowly",
        which = if *private { "private" } else { "public" }
    )]
    AgentNotConfigured {
        /// Whether SCM refused private ranges (-607) rather than public ones (-637).
        private: bool,
        /// SCM's message with its code.
        message: String,
    },
    /// -618: a scan of the task is running.
    #[error(
        "a discovery scan of task {task_id} is running (code -618): wait until it completes or stop \
         its operation; retried later"
    )]
    ScanRunning {
        /// The task.
        task_id: i64,
    },
    /// -5001, -5002, -5003: SCM refused because of the assignment rules of a bucket (§1.1, §2.7).
    #[error("{message}: {hint}", hint = bucket_hint(*code))]
    BucketRules {
        /// -5001, -5002 or -5003.
        code: i64,
        /// SCM's message with its code.
        message: String,
    },
    /// -7 or -1601 on a task, or a task refused before any call (empty name, agent or bucket;
    /// a name over 256 characters).
    #[error(
        "SCM cannot accept the discovery task: {message}: give it a name of 1-256 characters, an agent \
         name and the id of an existing certificate bucket"
    )]
    InvalidTask {
        /// SCM's message with its code, or what the client found wrong.
        message: String,
    },
    /// The task does not exist (404).
    #[error(
        "discovery task {task_id} does not exist in SCM (deleted there?): forget the recorded task id \
         so that the task is created again"
    )]
    TaskNotFound {
        /// The task.
        task_id: i64,
    },
    /// The operation (or its task) does not exist (404).
    #[error(
        "discovery operation {operation_id} of task {task_id} does not exist in SCM: list the task's \
         operations again"
    )]
    OperationNotFound {
        /// The task.
        task_id: i64,
        /// The operation.
        operation_id: String,
    },
    /// Credentials refused or a privilege missing (-16, -970, 401; -3, -25, -37, 403).
    #[error(
        "SCM refused the discovery call: {message}: check the SCM credentials Secret (login, password or \
         client certificate, customerUri) and that this admin may manage discovery tasks"
    )]
    Unauthorized {
        /// SCM's message with its code.
        message: String,
    },
    /// Anything else, classified like every SCM call.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What a user does about a -500x code (§1.1).
fn bucket_hint(code: i64) -> &'static str {
    match code {
        -5001 => {
            "the API admin has no access to the organization of an assignment rule: grant the admin \
             that organization, or use a bucket whose rules name an organization the admin manages"
        }
        -5002 => "a bucket's assignment rules cannot be empty: add at least one assignment rule in SCM",
        -5003 => {
            "the assignment rule is still used by network discovery tasks: delete or re-point those \
             tasks first"
        }
        _ => "check the certificate bucket and its assignment rules in SCM",
    }
}

impl DiscoveryError {
    /// A PascalCase reason for conditions and metrics. `InvalidRange`, `RangeTooWide`,
    /// `AgentNotConfigured` and `ScanRunning` are §8.2's names. Inferred (spec §8.2): the other
    /// names are ours; credentials are `Unauthorized` (§8.2 says `AuthFailed`), the reason the
    /// rest of the SCM backend and [`super::dcv::DcvError`] report for the same failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoRanges { .. } => "NoRanges",
            Self::InvalidRange { .. } => "InvalidRange",
            Self::RangeTooWide { .. } => "RangeTooWide",
            Self::AgentNotConfigured { .. } => "AgentNotConfigured",
            Self::ScanRunning { .. } => "ScanRunning",
            Self::BucketRules { .. } => "BucketRulesRejected",
            Self::InvalidTask { .. } => "InvalidTask",
            Self::TaskNotFound { .. } => "TaskNotFound",
            Self::OperationNotFound { .. } => "OperationNotFound",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::Backend(error) => error.category(),
        }
    }

    /// How long the CA asked us to wait, when it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Backend(error) => error.retry_after(),
            _ => None,
        }
    }

    /// Whether trying again later may help: a running scan (-618) ends, and an agent
    /// (-607/-637) can be configured or reconnect without the task changing (§8.1 calls these
    /// environment errors, to retry slowly).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ScanRunning { .. } | Self::AgentNotConfigured { .. } => true,
            Self::Backend(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// What a failed call was about, for its 404 and -618.
#[derive(Clone, Copy)]
enum Subject<'a> {
    /// No task yet (create, list).
    None,
    /// A task.
    Task(i64),
    /// An operation of a task.
    Operation(i64, &'a str),
}

/// Maps a failed discovery call: the documented codes first, then [`classify`].
/// Inferred (spec §1.1): the table names the endpoints raising each code only as a guess, so a
/// code means the same on every discovery call; -7 and -1601 (a field missing or invalid) are
/// the task's fault; 404 names the task or operation called (§1: 404 for unknown ids).
fn discovery_error(error: CallError, operation: &'static str, subject: Subject<'_>) -> DiscoveryError {
    if let CallError::Api {
        status,
        code,
        description,
    } = &error
    {
        let message = if description.is_empty() {
            format!("{operation} failed with HTTP {} (code {code})", status.as_u16())
        } else {
            format!("{description} (code {code})")
        };
        let task_id = match subject {
            Subject::Task(id) | Subject::Operation(id, _) => Some(id),
            Subject::None => None,
        };
        match code {
            -615 => return DiscoveryError::NoRanges { code: Some(*code) },
            -304 | -3301 => return DiscoveryError::InvalidRange { message },
            -303 | -305 => {
                let (public_limit, private_limit) = pair_limits(description);
                return DiscoveryError::RangeTooWide {
                    message,
                    public_limit,
                    private_limit,
                };
            }
            -607 | -637 => {
                return DiscoveryError::AgentNotConfigured {
                    private: *code == -607,
                    message,
                };
            }
            -618 => {
                return DiscoveryError::ScanRunning {
                    task_id: task_id.unwrap_or_default(),
                };
            }
            -5003..=-5001 => return DiscoveryError::BucketRules { code: *code, message },
            -7 | -1601 => return DiscoveryError::InvalidTask { message },
            _ => {}
        }
        if *status == StatusCode::NOT_FOUND {
            match subject {
                Subject::Task(task_id) => return DiscoveryError::TaskNotFound { task_id },
                Subject::Operation(task_id, operation_id) => {
                    return DiscoveryError::OperationNotFound {
                        task_id,
                        operation_id: operation_id.to_owned(),
                    };
                }
                Subject::None => {}
            }
        }
    }
    match classify(error, operation) {
        BackendError::Unauthorized { message, .. } => DiscoveryError::Unauthorized { message },
        other => DiscoveryError::Backend(other),
    }
}

/// The two limits of -303's "Maximum of {0} public ip-port pairs and {1} private ip-port pairs".
fn pair_limits(description: &str) -> (Option<u64>, Option<u64>) {
    let number_before = |word: &str| {
        let at = description.find(word)?;
        description[..at]
            .split_whitespace()
            .last()?
            .replace([',', '.'], "")
            .parse::<u64>()
            .ok()
    };
    (
        number_before(" public ip-port"),
        number_before(" private ip-port"),
    )
}

/// Checks a CIDR the way SCM's -304 would: an IP address, `/`, a prefix length within the
/// family's bits. Inferred (spec §8.2): a bare address without a prefix is refused, since every
/// example writes one and -304 says "format CIDR".
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.trim().split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= bits).then_some((address, prefix))
}

impl NetTaskSpec {
    /// Refuses, before any call, what SCM would refuse (§8.2: v4 constraints, at least one range
    /// (-615), CIDR syntax (-304)).
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        let invalid = |message: String| Err(DiscoveryError::InvalidTask { message });
        let name_length = self.name.chars().count();
        if self.name.trim().is_empty() || name_length > 256 {
            return invalid(format!("the name has {name_length} characters"));
        }
        if self.agent.trim().is_empty() {
            return invalid("the agent name is empty".into());
        }
        if self.bucket_id.trim().is_empty() {
            return invalid("the certificate bucket id is empty".into());
        }
        if self.ranges.is_empty() {
            return Err(DiscoveryError::NoRanges { code: None });
        }
        for range in &self.ranges {
            if parse_cidr(&range.address).is_none() {
                return Err(DiscoveryError::InvalidRange {
                    message: format!("{:?} is not a CIDR", range.address),
                });
            }
            if range.ports.is_empty() || range.ports.contains(&0) {
                return Err(DiscoveryError::InvalidRange {
                    message: format!("{} needs ports between 1 and 65535", range.address),
                });
            }
        }
        Ok(())
    }

    /// The v4 create/update body (§2.4): the whole task, schedule included (§8.2 option b).
    fn body(&self) -> NetTaskBody<'_> {
        NetTaskBody {
            name: &self.name,
            agent: &self.agent,
            // Inferred (spec §2.4): the `ports` format beyond one number is unattested, so each
            // port gets its own entry with the attested single-number string.
            ranges: self
                .ranges
                .iter()
                .flat_map(|range| {
                    range.ports.iter().map(|port| RangeBody {
                        address: range.address.trim(),
                        ports: port.to_string(),
                    })
                })
                .collect(),
            cert_bucket_id: &self.bucket_id,
            // Inferred (spec §8.2): one owner of the schedule; the operator starts scans itself.
            frequency: "Manual",
            time_zone: DISCOVERY_TIME_ZONE,
            time: TimeBody { hours: 0, minutes: 0 },
            // Inferred (spec §2.2): v4 range-checks these even for frequencies that ignore
            // them, so every task carries valid values (1 = January, the 1st, Monday).
            month: 1,
            day_of_month: 1,
            day_of_week: 1,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NetTaskBody<'a> {
    name: &'a str,
    agent: &'a str,
    ranges: Vec<RangeBody<'a>>,
    cert_bucket_id: &'a str,
    frequency: &'static str,
    time_zone: &'static str,
    time: TimeBody,
    month: u8,
    day_of_month: u8,
    day_of_week: u8,
}

#[derive(Debug, Serialize)]
struct RangeBody<'a> {
    address: &'a str,
    ports: String,
}

#[derive(Debug, Serialize)]
struct TimeBody {
    hours: u8,
    minutes: u8,
}

/// `GET v4/net_task/{id}` (§2.4): every field optional, as SCM omits unset ones.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetTaskDto {
    name: Option<String>,
    agent: Option<String>,
    certificate_bucket: Option<BucketRef>,
    /// The write-side spelling, accepted on read too.
    cert_bucket_id: Option<String>,
    #[serde(default)]
    ranges: Vec<RangeDto>,
    status: Option<String>,
    frequency: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct BucketRef {
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RangeDto {
    #[serde(default)]
    address: String,
    #[serde(default)]
    ports: Value,
}

/// `GET v3/net_task` items (§2.4).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskListItem {
    task_id: i64,
    #[serde(default)]
    name: String,
}

/// `{"total": n, "data": [...]}` of the operations and result endpoints (§2.9); a bare array is
/// read too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Envelope<T> {
    Wrapped {
        #[serde(default)]
        total: Option<u64>,
        #[serde(default = "Vec::new")]
        data: Vec<T>,
    },
    Bare(Vec<T>),
}

impl<T> Envelope<T> {
    fn into_parts(self) -> (Vec<T>, Option<u64>) {
        match self {
            Self::Wrapped { total, data } => (data, total),
            Self::Bare(data) => (data, None),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationDto {
    id: String,
    #[serde(default)]
    status: Option<String>,
    created: Option<String>,
    modified: Option<String>,
    bucket_id: Option<Value>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResultDto {
    certificate: CertificateDto,
    location: LocationDto,
    status: TlsStatusDto,
    operation: OperationRef,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CertificateDto {
    hash: Option<String>,
    metadata: MetadataDto,
    details: DetailsDto,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MetadataDto {
    managed_id: Option<Value>,
    discovery_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DetailsDto {
    cn: Option<String>,
    valid_from: Option<String>,
    valid_to: Option<String>,
    issuer: Option<Value>,
    subject: Option<Value>,
    san: Option<Vec<Value>>,
    key_algorithm: Option<String>,
    key_size: Option<Value>,
    signature_algorithm: Option<String>,
    sn: Option<String>,
    md5_hash: Option<String>,
    sha1_hash: Option<String>,
    ku: Option<Vec<Value>>,
    eku: Option<Vec<Value>>,
    precert: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LocationDto {
    details: LocationDetailsDto,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LocationDetailsDto {
    ip: Option<String>,
    port: Option<Value>,
    address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct TlsStatusDto {
    tls_version: Option<Value>,
    cipher_suite: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OperationRef {
    id: Option<String>,
}

fn malformed(operation: &'static str, message: impl Into<String>) -> BackendError {
    BackendError::MalformedResponse {
        backend: KIND,
        operation,
        message: message.into(),
    }
}

/// An ISO-8601 date-time with any number of fraction digits (§2.9); without a zone, or a date
/// alone, read as UTC. Inferred (spec §1): the `dateFormat` parameter is never sent, so other
/// formats are not expected; they are a malformed response.
fn parse_time(
    value: Option<&str>,
    field: &'static str,
    operation: &'static str,
) -> Result<Option<Timestamp>, BackendError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let utc = |civil: jiff::civil::DateTime| {
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|zoned| zoned.timestamp())
    };
    value
        .parse::<Timestamp>()
        .or_else(|_| {
            value
                .replacen(' ', "T", 1)
                .parse::<jiff::civil::DateTime>()
                .and_then(utc)
        })
        .or_else(|_| {
            value
                .parse::<jiff::civil::Date>()
                .and_then(|date| utc(date.to_datetime(jiff::civil::Time::midnight())))
        })
        .map(Some)
        .map_err(|_| malformed(operation, format!("{field} is not a date-time")))
}

/// A JSON scalar as text (`null` as `None`).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// An issuer or subject object as attribute → value (a string is kept under `""`).
fn name_map(value: Option<&Value>) -> BTreeMap<String, String> {
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(key, value)| text_of(value).map(|text| (key.clone(), text)))
            .collect(),
        Some(Value::String(text)) if !text.trim().is_empty() => {
            BTreeMap::from([(String::new(), text.clone())])
        }
        _ => BTreeMap::new(),
    }
}

fn texts(values: Option<&Vec<Value>>) -> Vec<String> {
    values
        .map(|values| values.iter().filter_map(text_of).collect())
        .unwrap_or_default()
}

/// `ranges[].ports` as read: a number, or a string of numbers and `a-b` spans separated by
/// commas (or whitespace). Inferred (spec §2.4): only single numbers are attested.
fn parse_ports(value: &Value) -> Option<Vec<u16>> {
    let text = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.clone(),
        _ => return None,
    };
    let mut ports = Vec::new();
    for token in text
        .split([',', ' ', ';'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let (low, high) = if let Some((low, high)) = token.split_once('-') {
            (low.trim().parse::<u16>().ok()?, high.trim().parse::<u16>().ok()?)
        } else {
            let port = token.parse::<u16>().ok()?;
            (port, port)
        };
        if low == 0 || high < low || ports.len() + usize::from(high - low) >= MAX_PORTS_PER_RANGE {
            return None;
        }
        ports.extend(low..=high);
    }
    (!ports.is_empty()).then_some(ports)
}

/// The ranges of a GET, one [`NetRange`] per address in order of first appearance.
fn group_ranges(ranges: &[RangeDto]) -> Result<Vec<NetRange>, BackendError> {
    let mut grouped: Vec<NetRange> = Vec::new();
    for range in ranges {
        let ports = parse_ports(&range.ports)
            .ok_or_else(|| malformed("get net_task", "ranges[].ports is not a list of ports"))?;
        let address = range.address.trim();
        match grouped.iter_mut().find(|known| known.address == address) {
            Some(known) => {
                for port in ports {
                    if !known.ports.contains(&port) {
                        known.ports.push(port);
                    }
                }
            }
            None => grouped.push(NetRange {
                address: address.to_owned(),
                ports,
            }),
        }
    }
    Ok(grouped)
}

fn net_task(id: i64, dto: NetTaskDto) -> Result<NetTask, BackendError> {
    Ok(NetTask {
        id,
        name: dto.name.unwrap_or_default(),
        agent: dto.agent.unwrap_or_default(),
        ranges: group_ranges(&dto.ranges)?,
        bucket_id: dto
            .certificate_bucket
            .and_then(|bucket| bucket.id)
            .or(dto.cert_bucket_id)
            .unwrap_or_default(),
        status: TaskStatus::parse(dto.status.as_deref()),
        frequency: dto.frequency,
    })
}

fn operation(dto: OperationDto) -> Result<Operation, BackendError> {
    const OP: &str = "discovery operations";
    Ok(Operation {
        created: parse_time(dto.created.as_deref(), "created", OP)?,
        modified: parse_time(dto.modified.as_deref(), "modified", OP)?,
        id: dto.id,
        status: dto.status.unwrap_or_default(),
        bucket_id: dto.bucket_id.as_ref().and_then(text_of),
        error: dto.error.filter(|error| !error.trim().is_empty()),
    })
}

fn discovered(dto: ResultDto) -> Result<DiscoveredCertificate, BackendError> {
    const OP: &str = "discovery results";
    let details = dto.certificate.details;
    let port = dto
        .location
        .details
        .port
        .as_ref()
        .and_then(text_of)
        .map(|port| {
            port.trim()
                .parse::<u16>()
                .map_err(|_| malformed(OP, "location.details.port is not a port"))
        })
        .transpose()?
        .unwrap_or_default();
    let key_size = details
        .key_size
        .as_ref()
        .and_then(text_of)
        .map(|size| {
            size.trim()
                .parse::<u32>()
                .map_err(|_| malformed(OP, "details.keySize is not a number"))
        })
        .transpose()?;
    Ok(DiscoveredCertificate {
        ip: dto.location.details.ip.unwrap_or_default(),
        port,
        hostname: dto.location.details.address.filter(|a| !a.trim().is_empty()),
        hash: dto
            .certificate
            .hash
            .or_else(|| details.sha1_hash.clone())
            .unwrap_or_default(),
        managed_id: dto.certificate.metadata.managed_id.as_ref().and_then(text_of),
        discovered_at: parse_time(
            dto.certificate.metadata.discovery_time.as_deref(),
            "metadata.discoveryTime",
            OP,
        )?,
        common_name: details.cn,
        serial: details.sn,
        issuer: name_map(details.issuer.as_ref()),
        subject: name_map(details.subject.as_ref()),
        sans: texts(details.san.as_ref()),
        valid_from: parse_time(details.valid_from.as_deref(), "details.validFrom", OP)?,
        valid_to: parse_time(details.valid_to.as_deref(), "details.validTo", OP)?,
        key_algorithm: details.key_algorithm,
        key_size,
        signature_algorithm: details.signature_algorithm,
        sha1_hash: details.sha1_hash,
        md5_hash: details.md5_hash,
        key_usage: texts(details.ku.as_ref()),
        extended_key_usage: texts(details.eku.as_ref()),
        precert: details.precert,
        tls_version: dto.status.tls_version.as_ref().and_then(text_of),
        cipher_suite: dto.status.cipher_suite.as_ref().and_then(text_of),
        operation_id: dto.operation.id,
    })
}

/// The deprecated v2 create's body (§2.4), accepted when there is no `Location`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedV2 {
    task_id: i64,
}

/// The id a create's `Location` ends in (§1: split on the last `/`). Inferred (spec §1): a
/// server that answers like the deprecated v2 (`{"taskId": n}`, no `Location`) is read too.
fn created_id(reply: &Reply) -> Result<i64, BackendError> {
    const OP: &str = "create net_task";
    if let Some(location) = reply.headers.get(reqwest::header::LOCATION) {
        let location = location
            .to_str()
            .map_err(|_| malformed(OP, "the Location header is not text"))?;
        let path = location.split(['?', '#']).next().unwrap_or_default();
        return path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .and_then(|last| last.trim().parse::<i64>().ok())
            .ok_or_else(|| malformed(OP, "the Location header does not end in a task id"));
    }
    serde_json::from_slice::<CreatedV2>(&reply.body)
        .map(|created| created.task_id)
        .map_err(|_| malformed(OP, "the 201 answer has neither a Location header nor a taskId"))
}

/// The larger of `X-Total-Count` and the body's deprecated `total`. Inferred (spec §2.9,
/// §8.1): the example contradicts itself (`X-Total-Count: 0` next to `"total":4`).
fn total_of(headers: &HeaderMap, body_total: Option<u64>) -> Option<usize> {
    let header = headers
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let body = body_total.and_then(|total| usize::try_from(total).ok());
    header.max(body)
}

/// An operation id (32 hex characters in every example) as a URL path segment.
fn operation_segment(operation_id: &str) -> Result<String, BackendError> {
    http::path_segment(KIND, "operation id", operation_id.trim())
}

impl ScmBackend {
    /// The task named exactly `name`, with its details; `None` when there is none. Every page
    /// of `GET v3/net_task?name=` is read.
    /// Inferred (spec §2.4, §8.2): whether the list's `name` filter matches exactly is unknown,
    /// so the match is made here, case-sensitively; with several tasks of that name the one
    /// with the lowest id (the oldest) is chosen, so that every caller adopts the same one.
    ///
    /// # Errors
    ///
    /// After 5,000 listed tasks without reaching the end: an unavailable error,
    /// never `None`, since a task of that name may exist and a create would duplicate it.
    pub async fn discovery_find_task(&self, name: &str) -> Result<Option<NetTask>, DiscoveryError> {
        let api = self.http.api(ApiFamily::DiscoveryV3);
        let mut position = 0_usize;
        let mut found: Option<i64> = None;
        loop {
            let reply = api
                .call(
                    "net_task list",
                    Method::GET,
                    "/net_task",
                    &[
                        ("name", name.to_owned()),
                        ("size", TASK_PAGE.to_string()),
                        ("position", position.to_string()),
                    ],
                    None::<&()>,
                    Idempotency::Idempotent,
                )
                .await
                .map_err(|error| discovery_error(error, "net_task list", Subject::None))?;
            let page: Vec<TaskListItem> = parse_json(&reply.body, "net_task list")?;
            for item in page.iter().filter(|item| item.name == name) {
                found = Some(found.map_or(item.task_id, |known| known.min(item.task_id)));
            }
            position += page.len();
            let total = total_of(&reply.headers, None);
            let done = page.is_empty() || total.map_or(page.len() < TASK_PAGE, |total| position >= total);
            if done {
                break;
            }
            if position >= MAX_TASKS_SCANNED {
                return Err(DiscoveryError::Backend(BackendError::Unavailable {
                    backend: KIND,
                    message: format!(
                        "the search for discovery task {name:?} read {position} listed tasks without \
                         reaching the end; not creating it, since it may exist (retried with backoff)"
                    ),
                }));
            }
        }
        let Some(id) = found else {
            return Ok(None);
        };
        match self.discovery_get_task(id).await {
            Ok(task) => Ok(Some(task)),
            // Deleted between the list and the read: there is none to adopt.
            Err(DiscoveryError::TaskNotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates the task (`POST v4/net_task`) and returns its id, read from `Location`. Sent once,
    /// never repeated: after a lost answer the caller looks the task up by name
    /// ([`Self::discovery_find_task`]) before creating again.
    pub async fn discovery_create_task(&self, spec: &NetTaskSpec) -> Result<i64, DiscoveryError> {
        spec.validate()?;
        let reply = self
            .http
            .api(ApiFamily::DiscoveryV4)
            .call(
                "net_task create",
                Method::POST,
                "/net_task",
                &[],
                Some(&spec.body()),
                Idempotency::Once,
            )
            .await
            .map_err(|error| discovery_error(error, "net_task create", Subject::None))?;
        Ok(created_id(&reply)?)
    }

    /// The task `id` (`GET v4/net_task/{id}`).
    pub async fn discovery_get_task(&self, id: i64) -> Result<NetTask, DiscoveryError> {
        let reply = self
            .http
            .api(ApiFamily::DiscoveryV4)
            .call(
                "net_task get",
                Method::GET,
                &format!("/net_task/{id}"),
                &[],
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|error| discovery_error(error, "net_task get", Subject::Task(id)))?;
        let dto: NetTaskDto = parse_json(&reply.body, "net_task get")?;
        Ok(net_task(id, dto)?)
    }

    /// Replaces the task `id` with `spec` (`PUT v4/net_task/{id}`, the full body). -618 (a scan
    /// runs) is [`DiscoveryError::ScanRunning`]. Inferred (spec §2.4): PUT replaces the whole
    /// task, so sending the same body twice is harmless and the call is retried.
    pub async fn discovery_update_task(&self, id: i64, spec: &NetTaskSpec) -> Result<(), DiscoveryError> {
        spec.validate()?;
        self.http
            .api(ApiFamily::DiscoveryV4)
            .call(
                "net_task update",
                Method::PUT,
                &format!("/net_task/{id}"),
                &[],
                Some(&spec.body()),
                Idempotency::Idempotent,
            )
            .await
            .map_err(|error| discovery_error(error, "net_task update", Subject::Task(id)))?;
        Ok(())
    }

    /// Starts a scan of the task `id` (`POST v3/net_task/{id}/start`). The answer carries no
    /// operation id: the new operation is found in [`Self::discovery_operations`] (§8.3). Sent
    /// once; -618 (already running) is [`DiscoveryError::ScanRunning`].
    pub async fn discovery_start_task(&self, id: i64) -> Result<(), DiscoveryError> {
        self.http
            .api(ApiFamily::DiscoveryV3)
            .call(
                "net_task start",
                Method::POST,
                &format!("/net_task/{id}/start"),
                &[],
                None::<&()>,
                Idempotency::Once,
            )
            .await
            .map_err(|error| discovery_error(error, "net_task start", Subject::Task(id)))?;
        Ok(())
    }

    /// Deletes the task `id` (`DELETE v3/net_task/{id}`). A task that is already gone (404) is
    /// not an error. Inferred (spec §8.2): 404 means gone.
    pub async fn discovery_delete_task(&self, id: i64) -> Result<(), DiscoveryError> {
        match self
            .http
            .api(ApiFamily::DiscoveryV3)
            .call(
                "net_task delete",
                Method::DELETE,
                &format!("/net_task/{id}"),
                &[],
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
        {
            Ok(_)
            | Err(CallError::Api {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(()),
            Err(error) => Err(discovery_error(error, "net_task delete", Subject::Task(id))),
        }
    }

    /// The operations (scan runs) of the task `task_id`, every page read, oldest first.
    /// Inferred (spec §2.9): the order is not documented, so they are sorted by `created`.
    pub async fn discovery_operations(&self, task_id: i64) -> Result<Vec<Operation>, DiscoveryError> {
        let api = self.http.api(ApiFamily::DiscoveryV1);
        let path = format!("/net_task/{task_id}/operation");
        let mut operations: Vec<Operation> = Vec::new();
        loop {
            let reply = api
                .call(
                    "discovery operations",
                    Method::GET,
                    &path,
                    &[
                        ("position", operations.len().to_string()),
                        ("size", OPERATION_PAGE.to_string()),
                    ],
                    None::<&()>,
                    Idempotency::Idempotent,
                )
                .await
                .map_err(|error| discovery_error(error, "discovery operations", Subject::Task(task_id)))?;
            let envelope: Envelope<OperationDto> = parse_json(&reply.body, "discovery operations")?;
            let (page, body_total) = envelope.into_parts();
            let total = total_of(&reply.headers, body_total);
            let before = operations.len();
            for dto in page {
                if !operations.iter().any(|known| known.id == dto.id) {
                    operations.push(operation(dto)?);
                }
            }
            // A page without new ids means the server ignores `position` (none is documented)
            // and answered everything at once.
            let added = operations.len() - before;
            if added == 0
                || total.is_none_or(|total| operations.len() >= total)
                || operations.len() >= MAX_OPERATIONS
            {
                break;
            }
        }
        operations.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(operations)
    }

    /// Stops the operation `operation_id` of the task `task_id`
    /// (`POST v1/net_task/{taskId}/operation/{operationId}/stop`). Inferred (spec §2.9): stopping
    /// twice stops once, so the call is retried.
    pub async fn discovery_stop_operation(
        &self,
        task_id: i64,
        operation_id: &str,
    ) -> Result<(), DiscoveryError> {
        let segment = operation_segment(operation_id)?;
        self.http
            .api(ApiFamily::DiscoveryV1)
            .call(
                "discovery operation stop",
                Method::POST,
                &format!("/net_task/{task_id}/operation/{segment}/stop"),
                &[],
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|error| {
                discovery_error(
                    error,
                    "discovery operation stop",
                    Subject::Operation(task_id, operation_id),
                )
            })?;
        Ok(())
    }

    /// The certificates the operation found (`GET v1/net_task/{taskId}/operation/{operationId}/result`),
    /// paged with `position`/`size` until the total is reached, at most
    /// [`MAX_DISCOVERY_RESULTS`] (a warning is logged when there are more). Final only once the
    /// task's status is terminal: under `PROCESSING_RESULT` the set may still grow (§8.3).
    pub async fn discovery_results(
        &self,
        task_id: i64,
        operation_id: &str,
    ) -> Result<Vec<DiscoveredCertificate>, DiscoveryError> {
        let segment = operation_segment(operation_id)?;
        let path = format!("/net_task/{task_id}/operation/{segment}/result");
        let api = self.http.api(ApiFamily::DiscoveryV1);
        let mut certificates: Vec<DiscoveredCertificate> = Vec::new();
        // Endpoint and certificate of every record read: a page that adds none means the
        // server ignores `position` and the walk would never end.
        let mut seen: HashSet<(String, u16, String)> = HashSet::new();
        let mut position = 0_usize;
        loop {
            let size = RESULT_PAGE.min(MAX_DISCOVERY_RESULTS - certificates.len());
            let reply = api
                .call(
                    "discovery results",
                    Method::GET,
                    &path,
                    &[("position", position.to_string()), ("size", size.to_string())],
                    None::<&()>,
                    Idempotency::Idempotent,
                )
                .await
                .map_err(|error| {
                    discovery_error(
                        error,
                        "discovery results",
                        Subject::Operation(task_id, operation_id),
                    )
                })?;
            let envelope: Envelope<ResultDto> = parse_json(&reply.body, "discovery results")?;
            let (page, body_total) = envelope.into_parts();
            let total = total_of(&reply.headers, body_total);
            let read = page.len();
            position += read;
            let mut added = 0_usize;
            for dto in page.into_iter().take(MAX_DISCOVERY_RESULTS - certificates.len()) {
                let found = discovered(dto)?;
                if seen.insert((found.ip.clone(), found.port, found.hash.clone())) {
                    certificates.push(found);
                    added += 1;
                }
            }
            if certificates.len() >= MAX_DISCOVERY_RESULTS {
                if total.is_some_and(|total| total > certificates.len()) {
                    tracing::warn!(
                        backend = "scm",
                        task_id,
                        total,
                        read = certificates.len(),
                        "discovery results cut at the client's limit"
                    );
                }
                break;
            }
            if added == 0 || total.map_or(read < size, |total| position >= total) {
                break;
            }
        }
        Ok(certificates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: i64, description: &str) -> CallError {
        CallError::Api {
            status: StatusCode::from_u16(status).unwrap(),
            code,
            description: description.into(),
        }
    }

    fn spec() -> NetTaskSpec {
        NetTaskSpec {
            name: "ns-web".into(),
            agent: "Cloud".into(),
            ranges: vec![
                NetRange {
                    address: "10.0.0.0/24".into(),
                    ports: vec![443, 8443],
                },
                NetRange {
                    address: "2001:db8::/120".into(),
                    ports: vec![443],
                },
            ],
            bucket_id: "26a0ce42-36d1-4980-bdcf-8e9b0d749159".into(),
        }
    }

    /// Status, code, SCM's message (verbatim from §1.1), the reason, and a word of the advice.
    const CODE_CASES: &[(u16, i64, &str, &str, &str)] = &[
        (
            400,
            -615,
            "To scan, you must first enter at least one range parameter.",
            "NoRanges",
            "at least one CIDR range",
        ),
        (400, -304, "Incorrect format CIDR.", "InvalidRange", "10.0.0.0/24"),
        (
            400,
            -3301,
            "Invalid scan range: 10.0.0.0/33",
            "InvalidRange",
            "Invalid scan range: 10.0.0.0/33 (code -3301)",
        ),
        (
            400,
            -303,
            "The range is too wide. Maximum of 65536 public ip-port pairs and 1048576 private ip-port \
             pairs per scan are allowed.",
            "RangeTooWide",
            "at most 65536 public and 1048576 private",
        ),
        (
            400,
            -305,
            "The range of ip-port pairs is too wide.",
            "RangeTooWide",
            "split them",
        ),
        (
            400,
            -607,
            "Available Agent(s) are not configured to scan the specified private range(s).",
            "AgentNotConfigured",
            "configured for these private ranges",
        ),
        (
            400,
            -637,
            "Available Agent(s) are not configured to scan the specified public range(s).",
            "AgentNotConfigured",
            "configured for these public ranges",
        ),
        (
            400,
            -618,
            "Discovery is currently running. Please try again later.",
            "ScanRunning",
            "task 17",
        ),
        (
            400,
            -5001,
            "You don' t have access to Organization assigned to the Rule",
            "BucketRulesRejected",
            "grant the admin",
        ),
        (
            400,
            -5002,
            "Assignment rules cannot be empty.",
            "BucketRulesRejected",
            "add at least one assignment rule",
        ),
        (
            400,
            -5003,
            "Cannot delete. An assignment rule has been assigned to the Net Discovery Tasks web",
            "BucketRulesRejected",
            "delete or re-point those tasks",
        ),
        (
            400,
            -1601,
            "Field 'certBucketId' has invalid value.",
            "InvalidTask",
            "existing certificate bucket",
        ),
        (
            400,
            -7,
            "agent is required but missing.",
            "InvalidTask",
            "agent name",
        ),
        (401, -16, "Unknown user", "Unauthorized", "credentials Secret"),
        (
            400,
            -3,
            "You are not authorized to perform Discovery.",
            "Unauthorized",
            "manage discovery tasks",
        ),
        (404, -1, "Unknown error.", "TaskNotFound", "created again"),
    ];

    /// Every message of §1.1 verbatim, with the reason it becomes and a word of its advice.
    #[test]
    fn documented_codes_become_reasons_a_user_can_act_on() {
        for (status, code, description, reason, advice) in CODE_CASES {
            let error = discovery_error(
                api(*status, *code, description),
                "net_task start",
                Subject::Task(17),
            );
            assert_eq!(error.reason(), *reason, "code {code}");
            let message = error.to_string();
            assert!(message.contains(advice), "code {code}: {message}");
            if *status != 404 && *code != -615 && *code != -618 {
                assert!(
                    message.contains(description),
                    "code {code} keeps SCM's words: {message}"
                );
            }
        }
    }

    #[test]
    fn range_limits_are_read_from_the_303_message() {
        assert_eq!(
            pair_limits(
                "The range is too wide. Maximum of 256 public ip-port pairs and 65,536 private ip-port pairs \
                 per scan are allowed."
            ),
            (Some(256), Some(65_536))
        );
        assert_eq!(
            pair_limits("The range of ip-port pairs is too wide."),
            (None, None)
        );
        let error = discovery_error(
            api(400, -305, "The range of ip-port pairs is too wide."),
            "x",
            Subject::None,
        );
        assert!(!error.to_string().contains("at most"), "{error}");
    }

    #[test]
    fn only_waiting_kinds_are_transient() {
        let transient =
            |code: i64| discovery_error(api(400, code, "x"), "x", Subject::Task(1)).is_transient();
        assert!(transient(-618));
        assert!(transient(-607));
        assert!(transient(-637));
        assert!(!transient(-304));
        assert!(!transient(-303));
        assert!(!transient(-615));
        assert!(!transient(-5002));
        assert!(!discovery_error(api(404, -1, ""), "x", Subject::Task(1)).is_transient());
        assert!(
            DiscoveryError::from(BackendError::RateLimited {
                backend: KIND,
                retry_after: Some(std::time::Duration::from_secs(7)),
            })
            .retry_after()
            .is_some()
        );
    }

    #[test]
    fn a_missing_operation_is_named_with_its_task() {
        let error = discovery_error(
            api(404, -1, "Unknown error."),
            "discovery results",
            Subject::Operation(9, "2c978087859623120185a07545370006"),
        );
        assert_eq!(error.reason(), "OperationNotFound");
        assert!(error.to_string().contains("2c978087859623120185a07545370006"));
        // A 404 of a list (no task named) stays the backend's NotFound.
        let error = discovery_error(api(404, -1, ""), "net_task list", Subject::None);
        assert_eq!(error.reason(), "NotFound");
    }

    #[test]
    fn both_spellings_of_every_status_are_read() {
        for (index, (name, display)) in STATUS_SPELLINGS.iter().enumerate() {
            let from_name = TaskStatus::parse(Some(name));
            let from_display = TaskStatus::parse(Some(display));
            assert_eq!(from_name, from_display, "{name}");
            assert_eq!(from_name.enum_name(), Some(*name));
            assert_eq!(from_name.display(), Some(*display));
            assert_eq!(from_name.is_terminal(), !matches!(index, 0 | 5), "{name}");
        }
        assert_eq!(
            TaskStatus::parse(Some("scan completed (successful)")),
            TaskStatus::Successful
        );
        assert_eq!(TaskStatus::parse(None), TaskStatus::Never);
        assert_eq!(TaskStatus::parse(Some("null")), TaskStatus::Never);
        assert_eq!(
            TaskStatus::parse(Some("Queued")),
            TaskStatus::Unknown("Queued".into())
        );
        assert!(!TaskStatus::Unknown("Queued".into()).is_terminal());
        assert!(TaskStatus::ProcessingResult.is_running());
        assert!(!TaskStatus::Never.is_running());
    }

    /// The v4 body: the seed's fields, `Manual`, valid v4 schedule values, one port per entry.
    #[test]
    fn the_v4_body_is_manual_with_valid_schedule_fields() {
        let body = serde_json::to_value(spec().body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "name": "ns-web", "agent": "Cloud",
                "ranges": [
                    {"address": "10.0.0.0/24", "ports": "443"},
                    {"address": "10.0.0.0/24", "ports": "8443"},
                    {"address": "2001:db8::/120", "ports": "443"}
                ],
                "certBucketId": "26a0ce42-36d1-4980-bdcf-8e9b0d749159",
                "frequency": "Manual", "timeZone": "UTC+00:00 - GMT, UCT, UTC, WET, EGST",
                "time": {"hours": 0, "minutes": 0}, "month": 1, "dayOfMonth": 1, "dayOfWeek": 1
            })
        );
    }

    #[test]
    fn specs_scm_would_refuse_are_refused_before_any_call() {
        assert!(spec().validate().is_ok());
        let with = |change: fn(&mut NetTaskSpec)| {
            let mut spec = spec();
            change(&mut spec);
            spec.validate().unwrap_err().reason()
        };
        assert_eq!(with(|s| s.ranges.clear()), "NoRanges");
        assert_eq!(with(|s| s.ranges[0].address = "10.0.0.0".into()), "InvalidRange");
        assert_eq!(
            with(|s| s.ranges[0].address = "10.0.0.0/33".into()),
            "InvalidRange"
        );
        assert_eq!(
            with(|s| s.ranges[0].address = "example.com/24".into()),
            "InvalidRange"
        );
        assert_eq!(with(|s| s.ranges[0].ports = vec![0]), "InvalidRange");
        assert_eq!(with(|s| s.ranges[0].ports.clear()), "InvalidRange");
        assert_eq!(with(|s| s.name = "x".repeat(257)), "InvalidTask");
        assert_eq!(with(|s| s.name = " ".into()), "InvalidTask");
        assert_eq!(with(|s| s.agent.clear()), "InvalidTask");
        assert_eq!(with(|s| s.bucket_id.clear()), "InvalidTask");
        assert_eq!(parse_cidr("2001:db8::/128").map(|(_, p)| p), Some(128));
        assert_eq!(parse_cidr("2001:db8::/129"), None);
        assert_eq!(parse_cidr("10.1.2.3/+8"), None);
    }

    /// The seed's v4 GET example (§2.4), and ranges in the shape a create writes.
    #[test]
    fn the_seed_get_example_is_read() {
        let dto: NetTaskDto = serde_json::from_str(
            r#"{"name":"Discovery task 0","agent":"Cloud","certificateBucket":{"id":"e6d7dfee-1442-4904-94c9-73930f2ca7e2","name":"bucket1"},"ranges":[],"frequency":"Daily","timeZone":"UTC+00:00 - GMT, UCT, UTC, WET, EGST","time":{"hours":7,"minutes":57},"status":"Scan in process"}"#,
        )
        .unwrap();
        let task = net_task(175_822, dto).unwrap();
        assert_eq!(task.id, 175_822);
        assert_eq!(task.name, "Discovery task 0");
        assert_eq!(task.agent, "Cloud");
        assert_eq!(task.bucket_id, "e6d7dfee-1442-4904-94c9-73930f2ca7e2");
        assert_eq!(task.status, TaskStatus::InProcess);
        assert_eq!(task.frequency.as_deref(), Some("Daily"));
        assert!(task.ranges.is_empty());

        let dto: NetTaskDto = serde_json::from_value(serde_json::json!({
            "name": "ns-web", "agent": "Cloud",
            "certificateBucket": {"id": "26A0CE42-36D1-4980-BDCF-8E9B0D749159", "name": "b"},
            "ranges": [
                {"address": "10.0.0.0/24", "ports": "8443"},
                {"address": "2001:db8::/120", "ports": 443},
                {"address": "10.0.0.0/24", "ports": "443"}
            ],
            "frequency": "Manual", "status": null
        }))
        .unwrap();
        let task = net_task(-3, dto).unwrap();
        assert_eq!(task.status, TaskStatus::Never);
        assert_eq!(
            task.ranges,
            [
                NetRange {
                    address: "10.0.0.0/24".into(),
                    ports: vec![8443, 443]
                },
                NetRange {
                    address: "2001:db8::/120".into(),
                    ports: vec![443]
                }
            ]
        );
        assert!(task.matches(&spec()), "order and case do not matter");
        let mut moved = spec();
        moved.ranges[0].ports = vec![443];
        assert!(!task.matches(&moved));
    }

    #[test]
    fn port_lists_and_spans_are_read_and_garbage_refused() {
        assert_eq!(parse_ports(&serde_json::json!("3")), Some(vec![3]));
        assert_eq!(
            parse_ports(&serde_json::json!("443, 8443")),
            Some(vec![443, 8443])
        );
        assert_eq!(parse_ports(&serde_json::json!("1-3")), Some(vec![1, 2, 3]));
        assert_eq!(parse_ports(&serde_json::json!(22)), Some(vec![22]));
        assert_eq!(parse_ports(&serde_json::json!("0")), None);
        assert_eq!(parse_ports(&serde_json::json!("70000")), None);
        assert_eq!(parse_ports(&serde_json::json!("5-1")), None);
        assert_eq!(parse_ports(&serde_json::json!("")), None);
        assert_eq!(parse_ports(&Value::Null), None);
        assert_eq!(
            parse_ports(&serde_json::json!("1-65535")).map(|p| p.len()),
            Some(65_535)
        );
    }

    /// The seed's list example: the names and ids the search matches on.
    #[test]
    fn the_seed_list_example_is_read() {
        let page: Vec<TaskListItem> = serde_json::from_str(
            r#"[{"taskId":168752,"name":"Discovery task 0","status":"Scan in process"},{"taskId":168753,"name":"Discovery task 1","status":"Scan FAILED"},{"taskId":168758,"name":"Discovery task 6","status":null}]"#,
        )
        .unwrap();
        assert_eq!(page.len(), 3);
        assert_eq!(page[2].task_id, 168_758);
        assert_eq!(page[1].name, "Discovery task 1");
    }

    /// The seed's operations example, with `X-Total-Count: 0` next to `"total":4`.
    #[test]
    fn the_seed_operations_example_is_read_and_its_total_is_the_larger() {
        let body = r#"{"total":4,"data":[{"id":"2c9780878596231201859c0992dc0004","status":"failed","created":"2023-01-10T14:15:51.260Z","modified":"2023-01-10T14:15:51.358Z","bucketId":"123","error":"Internal error"},{"id":"2c9780878596231201859d39f42d0005","status":"failed","created":"2023-01-10T19:48:19.117Z","modified":"2023-01-10T19:48:19.216Z","bucketId":"123","error":"Internal error"},{"id":"2c978087859623120185a07545370006","status":"completed","created":"2023-01-11T10:51:58.135Z","modified":"2023-01-11T10:51:58.232Z","bucketId":"123"},{"id":"2c978087859623120185a0861ad20007","status":"completed","created":"2023-01-11T11:10:21.394Z","modified":"2023-01-11T11:10:21.491Z","bucketId":"123"}]}"#;
        let envelope: Envelope<OperationDto> = serde_json::from_str(body).unwrap();
        let (page, body_total) = envelope.into_parts();
        let mut headers = HeaderMap::new();
        headers.insert("X-Total-Count", "0".parse().unwrap());
        assert_eq!(total_of(&headers, body_total), Some(4));
        assert_eq!(total_of(&HeaderMap::new(), None), None);
        let operations: Vec<Operation> = page.into_iter().map(|dto| operation(dto).unwrap()).collect();
        assert!(operations[0].is_failed() && operations[0].is_terminal());
        assert_eq!(operations[0].error.as_deref(), Some("Internal error"));
        assert_eq!(operations[0].bucket_id.as_deref(), Some("123"));
        assert!(operations[2].is_completed() && operations[2].error.is_none());
        assert_eq!(
            operations[2].created,
            Some("2023-01-11T10:51:58.135Z".parse().unwrap())
        );
        let running = Operation {
            status: "in_progress".into(),
            ..operations[3].clone()
        };
        assert!(!running.is_terminal());
        let stopped = Operation {
            status: "Canceled".into(),
            ..operations[3].clone()
        };
        assert!(stopped.is_terminal() && !stopped.is_completed());
    }

    /// The seed's result example (§2.9), its 6-digit fractions included.
    #[test]
    fn the_seed_result_example_is_read() {
        let body = r#"{"total":1,"data":[{"certificate":{"hash":"09a736dd5d67af1ed5b6a14fbf92ca8fe97df839","metadata":{"managedId":"ssl:130","hidden":false,"discoveryTime":"2024-06-20T11:27:13.657Z"},"details":{"cn":"*.ssl.hwcdn.net","validFrom":"2022-12-30T00:00:00Z","validTo":"2024-01-19T23:59:59Z","issuer":{},"subject":{},"san":[],"keyAlgorithm":"RSA","keySize":2048,"signatureAlgorithm":"SHA256withRSA","sn":"2AC572E243A63C139E7CD300C8010D32","md5Hash":"0e6d4f8af5d5a163676d0780b3b4b54e","sha1Hash":"09a736dd5d67af1ed5b6a14fbf92ca8fe97df839","ku":[],"eku":[],"precert":false}},"location":{"type":"NETWORK_HOST","details":{"ip":"151.139.128.14","port":443,"address":"sectigo.com","name":null,"dn":null,"upn":null,"objectType":null,"requestId":null,"haGroupId":null,"template":null,"dateCreated":null,"type":null,"requesterEmail":null,"backend":null,"host":null,"requesterName":null,"site":null,"hostName":null,"id":null,"exportable":null,"reusable":null,"uri":null,"arn":null,"exported":null,"inUse":null,"inUseBy":null,"scope":null,"labels":null}},"status":{"tlsVersion":1,"cipherSuite":"123","handshakeMs":2,"nameLookupMs":3,"status":null,"additionalEmails":null},"operation":{"id":"2c9b8087864fefb701865a26f77b0001","created":"2023-02-16T12:15:48.604401Z"},"created":"2023-01-26T05:42:45.212Z"}]}"#;
        let envelope: Envelope<ResultDto> = serde_json::from_str(body).unwrap();
        let (page, total) = envelope.into_parts();
        assert_eq!(total, Some(1));
        let found = discovered(page.into_iter().next().unwrap()).unwrap();
        assert_eq!(found.ip, "151.139.128.14");
        assert_eq!(found.port, 443);
        assert_eq!(found.hostname.as_deref(), Some("sectigo.com"));
        assert_eq!(found.hash, "09a736dd5d67af1ed5b6a14fbf92ca8fe97df839");
        assert_eq!(found.managed_id.as_deref(), Some("ssl:130"));
        assert!(found.is_managed());
        assert_eq!(found.common_name.as_deref(), Some("*.ssl.hwcdn.net"));
        assert_eq!(found.serial.as_deref(), Some("2AC572E243A63C139E7CD300C8010D32"));
        assert_eq!(found.valid_to, Some("2024-01-19T23:59:59Z".parse().unwrap()));
        assert_eq!(found.key_algorithm.as_deref(), Some("RSA"));
        assert_eq!(found.key_size, Some(2048));
        assert_eq!(found.signature_algorithm.as_deref(), Some("SHA256withRSA"));
        assert_eq!(
            found.md5_hash.as_deref(),
            Some("0e6d4f8af5d5a163676d0780b3b4b54e")
        );
        assert_eq!(found.precert, Some(false));
        assert_eq!(found.tls_version.as_deref(), Some("1"));
        assert_eq!(found.cipher_suite.as_deref(), Some("123"));
        assert_eq!(
            found.operation_id.as_deref(),
            Some("2c9b8087864fefb701865a26f77b0001")
        );
        assert_eq!(found.self_signed(), None, "the example's names are empty");
        assert_eq!(
            found.is_expired_at("2025-01-01T00:00:00Z".parse().unwrap()),
            Some(true)
        );
    }

    #[test]
    fn issuer_and_subject_maps_decide_self_signed() {
        let dto: ResultDto = serde_json::from_value(serde_json::json!({
            "certificate": {"hash": "ab", "metadata": {"managedId": null}, "details": {
                "issuer": {"CN": "box", "O": "Acme"}, "subject": {"CN": "box", "O": "Acme"},
                "validTo": "2030-01-01", "keySize": "256"}},
            "location": {"details": {"ip": "10.0.0.1", "port": "8443"}}
        }))
        .unwrap();
        let found = discovered(dto).unwrap();
        assert_eq!(found.self_signed(), Some(true));
        assert!(!found.is_managed());
        assert_eq!(found.port, 8443);
        assert_eq!(found.key_size, Some(256));
        assert_eq!(found.valid_to, Some("2030-01-01T00:00:00Z".parse().unwrap()));
        let bad: ResultDto = serde_json::from_value(serde_json::json!({
            "certificate": {"details": {"validTo": "next year"}}
        }))
        .unwrap();
        assert!(discovered(bad).unwrap_err().to_string().contains("validTo"));
    }

    #[test]
    fn the_created_id_is_the_last_segment_of_location() {
        let reply = |location: Option<&str>, body: &'static str| {
            let mut headers = HeaderMap::new();
            if let Some(location) = location {
                headers.insert(reqwest::header::LOCATION, location.parse().unwrap());
            }
            Reply {
                headers,
                body: bytes::Bytes::from_static(body.as_bytes()),
            }
        };
        assert_eq!(
            created_id(&reply(
                Some("https://cert-manager.com/api/discovery/v4/net_task/174004"),
                ""
            ))
            .unwrap(),
            174_004
        );
        assert_eq!(
            created_id(&reply(Some("https://h/api/discovery/v3/ad_task/-399610835/"), "")).unwrap(),
            -399_610_835
        );
        assert_eq!(created_id(&reply(None, r#"{"taskId":1000}"#)).unwrap(), 1000);
        assert!(created_id(&reply(Some("https://h/api/discovery/v4/net_task/"), "")).is_err());
        assert!(created_id(&reply(None, "")).is_err());
    }
}
