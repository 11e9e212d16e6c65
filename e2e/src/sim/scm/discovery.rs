//! Network discovery (`scm-discovery-alerts.md` §2.1, §2.3, §2.4, §2.9, §2.10, §8.5): network
//! scan tasks (`net_task`: create, update and get on v4; list, start and delete on v3), their
//! operations (list, stop and result on v1), the bucket certificates the results merge into
//! (§2.8) and the assignment-rule create and delete that carry -5001..-5003 (§2.7).
//!
//! Scans are real (§2.10): `start` creates an operation and a background task connects to every
//! address × port of the task's ranges, completes a TLS handshake accepting any certificate
//! ([`scan`]) and records the leaf in the documented result shape. The operation then goes from
//! `in_progress` to `completed` (or `failed`, or `canceled` when stopped); the task from
//! "Scan in process" through "Scan completed (Processing Result)" to "Scan completed
//! (Successful)" (or "(Partial SUCCESSFUL)" when not every endpoint could be scanned).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures::StreamExt as _;
use hyper::StatusCode;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{
    ScmReading, ScmSimulatorConfig, Shared,
    api::{Call, Reply},
    dcv::page_bounds,
    error::ScmError,
    orders::normalise_serial,
    routes::Endpoint,
    scan::{self, Found, iso_millis},
};
use crate::sim::hex_lower;

/// The bucket of the default configuration: the id of the seed's v4 GET example.
pub const DEFAULT_DISCOVERY_BUCKET: &str = "e6d7dfee-1442-4904-94c9-73930f2ca7e2";
/// The assignment rule of the default bucket: the id of the seed's bucket update example.
pub const DEFAULT_ASSIGNMENT_RULE: i64 = 40394;
/// The agent of the default configuration: the seed's GET example names `Cloud`.
pub const DEFAULT_DISCOVERY_AGENT: &str = "Cloud";

/// The first task id handed out (the seed's create example answers 174004).
const FIRST_TASK_ID: i64 = 174_004;
/// The first assignment rule id handed out to a created rule.
const FIRST_RULE_ID: i64 = 40_599;
/// Endpoints probed at once by one scan.
const SCAN_PARALLELISM: usize = 16;
/// The v4 `frequency` values (§2.2).
const FREQUENCIES: [&str; 8] = [
    "Manual",
    "Daily",
    "Weekly",
    "Monthly",
    "Quarterly",
    "SemiAnnually",
    "Annually",
    "Once",
];
/// The assignment rule `certType` values (§2.7).
const CERT_TYPES: [&str; 5] = ["SSL", "SMIME", "CodeSign", "Device", "BrandIndicator"];

/// A certificate bucket of the simulated account (§2.8): results of tasks naming it merge into
/// it. The simulator serves no bucket CRUD, only `/bucket/{id}/certificates`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimBucket {
    /// UUID (`certBucketId`).
    pub id: String,
    /// Display name (`certificateBucket.name` in a task's GET).
    pub name: String,
    /// Assignment rule ids attached to it (created at start, in the account's organization).
    pub assignment_rules: Vec<i64>,
}

impl SimBucket {
    /// The default bucket: [`DEFAULT_DISCOVERY_BUCKET`] named `bucket1` (as in the seed) with
    /// [`DEFAULT_ASSIGNMENT_RULE`].
    pub fn default_bucket() -> Self {
        Self {
            id: DEFAULT_DISCOVERY_BUCKET.to_owned(),
            name: "bucket1".to_owned(),
            assignment_rules: vec![DEFAULT_ASSIGNMENT_RULE],
        }
    }
}

/// Refuses configurations the simulator cannot serve: an empty agent name, a bucket id given
/// twice or empty.
pub fn check_config(config: &ScmSimulatorConfig) -> anyhow::Result<()> {
    if config
        .discovery_agents
        .iter()
        .any(|agent| agent.trim().is_empty())
    {
        anyhow::bail!("a discovery agent name is empty");
    }
    let mut ids = BTreeSet::new();
    for bucket in &config.discovery_buckets {
        let id = bucket.id.trim().to_ascii_lowercase();
        if id.is_empty() || !ids.insert(id) {
            anyhow::bail!("discovery bucket id {:?} is empty or given twice", bucket.id);
        }
    }
    Ok(())
}

/// A task's status (§2.3); `None` in [`Task::status`] is `null`, never run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskState {
    InProcess,
    Failed,
    Canceled,
    Successful,
    PartialSuccessful,
    ProcessingResult,
}

impl TaskState {
    const ALL: [TaskState; 6] = [
        Self::InProcess,
        Self::Failed,
        Self::Canceled,
        Self::Successful,
        Self::PartialSuccessful,
        Self::ProcessingResult,
    ];

    /// The enum name of the `status` query parameter.
    fn name(self) -> &'static str {
        match self {
            Self::InProcess => "IN_PROCESS",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
            Self::Successful => "SUCCESSFUL",
            Self::PartialSuccessful => "PARTIAL_SUCCESSFUL",
            Self::ProcessingResult => "PROCESSING_RESULT",
        }
    }

    /// The display string of JSON responses, exactly as the list examples show it.
    fn display(self) -> &'static str {
        match self {
            Self::InProcess => "Scan in process",
            Self::Failed => "Scan FAILED",
            Self::Canceled => "Scan CANCELED by user",
            Self::Successful => "Scan completed (Successful)",
            Self::PartialSuccessful => "Scan completed (Partial SUCCESSFUL)",
            Self::ProcessingResult => "Scan completed (Processing Result)",
        }
    }

    /// Inferred (spec §2.10 item 3): "currently running" covers the processing of the results,
    /// so a start then is -618 too.
    fn is_running(self) -> bool {
        matches!(self, Self::InProcess | Self::ProcessingResult)
    }
}

/// An operation's `status` (§2.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OperationState {
    InProgress,
    Completed,
    Failed,
    Canceled,
}

impl OperationState {
    /// Inferred (spec §2.9): only `completed` and `failed` are attested. We chose
    /// `in_progress` for a running operation, as the spec suggests, and `canceled` (the task
    /// enum's spelling, lower case like the attested values) for a stopped one.
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

/// One `ranges[]` entry, as sent and as understood.
#[derive(Clone, Debug)]
struct Range {
    address: String,
    ports_text: String,
    network: IpAddr,
    prefix: u8,
    ports: Vec<u16>,
}

impl Range {
    /// How many addresses the CIDR covers.
    fn addresses(&self) -> u128 {
        let bits = if self.network.is_ipv4() { 32 } else { 128 };
        1_u128
            .checked_shl(u32::from(bits - self.prefix))
            .unwrap_or(u128::MAX)
    }

    /// address × port pairs.
    fn pairs(&self) -> u128 {
        self.addresses().saturating_mul(self.ports.len() as u128)
    }

    /// Inferred (spec §2.4): SCM's public/private split is undocumented. We chose the
    /// networks that are not routed on the Internet: RFC 1918, loopback, link-local and
    /// shared (CGNAT) space for IPv4; loopback, unique-local and link-local for IPv6. A range
    /// is private when its network address is.
    fn is_private(&self) -> bool {
        match self.network {
            IpAddr::V4(ip) => {
                let [a, b, ..] = ip.octets();
                ip.is_private()
                    || ip.is_loopback()
                    || ip.is_link_local()
                    || (a == 100 && (64..128).contains(&b))
            }
            IpAddr::V6(ip) => {
                let first = ip.segments()[0];
                ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
            }
        }
    }

    /// The first `limit` addresses of the CIDR, in order.
    fn iter_addresses(&self, limit: usize) -> Vec<IpAddr> {
        let count = usize::try_from(self.addresses()).unwrap_or(usize::MAX).min(limit);
        match self.network {
            IpAddr::V4(ip) => {
                let mask = u32::MAX.checked_shl(u32::from(32 - self.prefix)).unwrap_or(0);
                let base = u32::from(ip) & mask;
                (0..count)
                    .filter_map(|offset| u32::try_from(offset).ok())
                    .map(|offset| IpAddr::V4(Ipv4Addr::from(base.wrapping_add(offset))))
                    .collect()
            }
            IpAddr::V6(ip) => {
                let mask = u128::MAX.checked_shl(u32::from(128 - self.prefix)).unwrap_or(0);
                let base = u128::from(ip) & mask;
                (0..count)
                    .map(|offset| IpAddr::V6(Ipv6Addr::from(base.wrapping_add(offset as u128))))
                    .collect()
            }
        }
    }
}

/// A net task (§2.4).
#[derive(Clone, Debug)]
struct Task {
    id: i64,
    name: String,
    agent: String,
    ranges: Vec<Range>,
    bucket_id: String,
    frequency: String,
    time_zone: String,
    hours: i64,
    minutes: i64,
    month: Option<i64>,
    day_of_month: Option<i64>,
    day_of_week: Option<i64>,
    year: Option<i64>,
    status: Option<TaskState>,
}

/// One scan run.
#[derive(Debug)]
struct Operation {
    id: String,
    task_id: i64,
    bucket_id: String,
    state: OperationState,
    created: OffsetDateTime,
    modified: OffsetDateTime,
    error: Option<String>,
    /// Every endpoint found, in scan order.
    results: Vec<Found>,
    /// Whether `result` shows them. Inferred (spec §2.3, §8.3): "Processing Result" means the
    /// results are not final, so none are shown until the processing ends; a stop shows what
    /// was found before it.
    visible: bool,
    endpoints_scanned: usize,
    cancel: CancellationToken,
}

/// An assignment rule (§2.7): only what -5001..-5003 need.
#[derive(Clone, Debug)]
struct Rule {
    name: String,
}

/// Every discovery object of the account.
#[derive(Debug)]
pub struct DiscoveryBook {
    tasks: BTreeMap<i64, Task>,
    next_task_id: i64,
    operations: Vec<Operation>,
    rules: BTreeMap<i64, Rule>,
    next_rule_id: i64,
    buckets: Vec<SimBucket>,
    /// Certificates per bucket (lower-cased id), by hash: the cumulative view (§2.10 item 5).
    bucket_certificates: BTreeMap<String, BTreeMap<String, scan::Leaf>>,
}

impl DiscoveryBook {
    /// The book at start: the configured buckets and the rules they name.
    pub fn seeded(config: &ScmSimulatorConfig) -> Self {
        let mut rules = BTreeMap::new();
        for bucket in &config.discovery_buckets {
            for id in &bucket.assignment_rules {
                rules.insert(
                    *id,
                    Rule {
                        name: format!("rule {id}"),
                    },
                );
            }
        }
        let next_rule_id = rules
            .keys()
            .max()
            .map_or(FIRST_RULE_ID, |max| (max + 1).max(FIRST_RULE_ID));
        Self {
            tasks: BTreeMap::new(),
            next_task_id: FIRST_TASK_ID,
            operations: Vec::new(),
            rules,
            next_rule_id,
            buckets: config.discovery_buckets.clone(),
            bucket_certificates: BTreeMap::new(),
        }
    }

    fn bucket(&self, id: &str) -> Option<&SimBucket> {
        self.buckets
            .iter()
            .find(|bucket| bucket.id.eq_ignore_ascii_case(id.trim()))
    }

    fn running_operation(&self, task_id: i64) -> Option<&Operation> {
        self.operations
            .iter()
            .find(|operation| operation.task_id == task_id && operation.state == OperationState::InProgress)
    }

    fn operation_mut(&mut self, task_id: i64, id: &str) -> Option<&mut Operation> {
        self.operations
            .iter_mut()
            .find(|operation| operation.task_id == task_id && operation.id.eq_ignore_ascii_case(id))
    }

    /// The tasks, for [`super::Stats`].
    pub fn task_summaries(&self) -> Vec<DiscoveryTaskSummary> {
        self.tasks
            .values()
            .map(|task| DiscoveryTaskSummary {
                id: task.id,
                name: task.name.clone(),
                agent: task.agent.clone(),
                ranges: task
                    .ranges
                    .iter()
                    .map(|range| (range.address.clone(), range.ports_text.clone()))
                    .collect(),
                bucket_id: task.bucket_id.clone(),
                status: task.status.map(|status| status.display().to_owned()),
            })
            .collect()
    }

    /// The operations, for [`super::Stats`].
    pub fn operation_summaries(&self) -> Vec<DiscoveryOperationSummary> {
        self.operations
            .iter()
            .map(|operation| DiscoveryOperationSummary {
                id: operation.id.clone(),
                task_id: operation.task_id,
                status: operation.state.as_str().to_owned(),
                endpoints_scanned: operation.endpoints_scanned,
                certificates: operation.results.len(),
                error: operation.error.clone(),
            })
            .collect()
    }
}

/// A net task as [`super::Stats`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryTaskSummary {
    /// Task id.
    pub id: i64,
    /// `name`.
    pub name: String,
    /// `agent`.
    pub agent: String,
    /// `ranges[]` as sent: (`address`, `ports`).
    pub ranges: Vec<(String, String)>,
    /// `certBucketId`.
    pub bucket_id: String,
    /// The display status, `None` before the first run.
    pub status: Option<String>,
}

/// A discovery operation as [`super::Stats`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryOperationSummary {
    /// Operation id.
    pub id: String,
    /// Its task.
    pub task_id: i64,
    /// `status` as the operations list shows it.
    pub status: String,
    /// Address × port pairs connected to.
    pub endpoints_scanned: usize,
    /// TLS endpoints found.
    pub certificates: usize,
    /// `error`, for a failed operation.
    pub error: Option<String>,
}

/// The v3/v4 create and update body (§2.4); lenient types, so required fields are reported by
/// name.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskBody {
    name: Option<String>,
    agent: Option<String>,
    ranges: Option<Vec<RangeBody>>,
    cert_bucket_id: Option<String>,
    frequency: Option<String>,
    time_zone: Option<String>,
    time: Option<TimeBody>,
    month: Option<i64>,
    day_of_month: Option<i64>,
    day_of_week: Option<i64>,
    year: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RangeBody {
    address: Option<String>,
    ports: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct TimeBody {
    hours: Option<i64>,
    minutes: Option<i64>,
}

/// Runs one authenticated discovery call.
pub fn dispatch(shared: &Shared, endpoint: &Endpoint, call: &Call) -> Result<Reply, ScmError> {
    match endpoint {
        Endpoint::DiscoveryCreateTask => create(shared, call),
        Endpoint::DiscoveryUpdateTask(id) => update(shared, id, call),
        Endpoint::DiscoveryGetTask(id) => get(shared, id),
        Endpoint::DiscoveryListTasks => list(shared, call),
        Endpoint::DiscoveryStartTask(id) => start(shared, id),
        Endpoint::DiscoveryDeleteTask(id) => delete(shared, id),
        Endpoint::DiscoveryOperations(id) => operations(shared, id, call),
        Endpoint::DiscoveryStopOperation(id, operation) => stop(shared, id, operation),
        Endpoint::DiscoveryOperationResult(id, operation) => result(shared, id, operation, call),
        Endpoint::DiscoveryBucketCertificates(id) => bucket_certificates(shared, id, call),
        Endpoint::DiscoveryCreateRule => create_rule(shared, call),
        Endpoint::DiscoveryDeleteRule(id) => delete_rule(shared, id),
        _ => Err(not_found()),
    }
}

/// An id in the path that names nothing.
/// Inferred (spec §1, §8.2): 404, as the spec advises for unknown ids; no code in the table
/// names a task or an operation, so the body is the generic -1 "Unknown error.".
fn not_found() -> ScmError {
    ScmError::Unknown(StatusCode::NOT_FOUND)
}

fn task_id(text: &str) -> Result<i64, ScmError> {
    text.trim().parse::<i64>().map_err(|_| not_found())
}

/// The `ranges[].address` CIDR. Inferred (spec §2.4): -304 for anything but
/// `<IPv4 or IPv6>/<prefix within the family>`; a bare address and a host name are refused
/// too, since every example writes a prefix and -304 says "format CIDR".
fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.trim().split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= bits).then_some((address, prefix))
}

/// `ranges[].ports`. Inferred (spec §2.4): only a single number as a string is attested; we
/// also accept a JSON number, comma-separated lists and `a-b` spans, since the ports field
/// plausibly takes them; anything else (or a port outside 1-65535) is -3301.
fn parse_ports(value: Option<&Value>) -> Option<(String, Vec<u16>)> {
    let text = match value? {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.trim().to_owned(),
        _ => return None,
    };
    let mut ports = Vec::new();
    for token in text.split(',').map(str::trim) {
        let (low, high) = if let Some((low, high)) = token.split_once('-') {
            (low.trim().parse::<u16>().ok()?, high.trim().parse::<u16>().ok()?)
        } else {
            let port = token.parse::<u16>().ok()?;
            (port, port)
        };
        if low == 0 || high < low {
            return None;
        }
        for port in low..=high {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    (!ports.is_empty()).then_some((text, ports))
}

/// Validates a v4 body (§2.4, §2.10 item 4) in this order:
/// -7 for a missing `name`, `agent`, `certBucketId`, `frequency`, `timeZone` or `time`
/// (Inferred (spec §1.1): the docs say "Must not be empty/null" without a code; -7 "{0} is
/// required but missing." is the table's code for that), -1601 for a name over 256
/// characters, an unknown `frequency` or an out-of-range `month`/`dayOfMonth`/`dayOfWeek`
/// (Inferred (spec §2.2): the documented constraints have no code; -1601 "Field '{0}' has
/// invalid value." is the table's generic one; `time` has no documented range and is not
/// checked);
/// -615 for no ranges; per range -304 (CIDR), -3301 (ports) and -305 (over the per-range pair
/// limit); -303 over the per-task public or private pair limit; -607/-637 for an agent not
/// configured (private ranges first); and -1601 `certBucketId` for a bucket the account does not
/// have (Inferred (spec §2.4): no code is documented for an unknown bucket).
fn validate(shared: &Shared, body: TaskBody, id: i64) -> Result<Task, ScmError> {
    let config = &shared.config;
    let text = |value: Option<String>, field: &'static str| {
        value
            .filter(|v| !v.trim().is_empty())
            .ok_or(ScmError::Required(field))
    };
    let name = text(body.name, "name")?;
    if name.chars().count() > 256 {
        return Err(ScmError::InvalidField("name".to_owned()));
    }
    let agent = text(body.agent, "agent")?;
    let bucket_id = text(body.cert_bucket_id, "certBucketId")?.trim().to_owned();
    let frequency = text(body.frequency, "frequency")?;
    // Inferred (spec §2.2): the v4 values are matched case-insensitively and stored as listed.
    let frequency = FREQUENCIES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(frequency.trim()))
        .ok_or_else(|| ScmError::InvalidField("frequency".to_owned()))?;
    let time_zone = text(body.time_zone, "timeZone")?;
    let time = body.time.ok_or(ScmError::Required("time"))?;
    for (value, field, range) in [
        (body.month, "month", 1..=12),
        (body.day_of_month, "dayOfMonth", 1..=31),
        (body.day_of_week, "dayOfWeek", 1..=7),
    ] {
        if value.is_some_and(|value| !range.contains(&value)) {
            return Err(ScmError::InvalidField(field.to_owned()));
        }
    }
    let raw_ranges = body.ranges.unwrap_or_default();
    if raw_ranges.is_empty() {
        return Err(ScmError::NoScanRange);
    }
    let mut ranges = Vec::with_capacity(raw_ranges.len());
    for raw in raw_ranges {
        let address = raw.address.unwrap_or_default();
        let (network, prefix) = parse_cidr(&address).ok_or(ScmError::CidrFormat)?;
        let (ports_text, ports) = parse_ports(raw.ports.as_ref()).ok_or_else(|| {
            // Inferred (spec §1.1): {0} is the range as `address:ports`.
            let ports = match &raw.ports {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            ScmError::InvalidScanRange(format!("{}:{ports}", address.trim()))
        })?;
        let range = Range {
            address: address.trim().to_owned(),
            ports_text,
            network,
            prefix,
            ports,
        };
        if range.pairs() > u128::from(config.discovery_max_range_pairs) {
            return Err(ScmError::RangePairsTooWide);
        }
        ranges.push(range);
    }
    let sum = |private: bool| {
        ranges
            .iter()
            .filter(|range| range.is_private() == private)
            .fold(0_u128, |total, range| total.saturating_add(range.pairs()))
    };
    if sum(false) > u128::from(config.discovery_max_public_pairs)
        || sum(true) > u128::from(config.discovery_max_private_pairs)
    {
        return Err(ScmError::RangeTooWide(
            config.discovery_max_public_pairs,
            config.discovery_max_private_pairs,
        ));
    }
    check_agent(config, &agent, &ranges)?;
    let book = shared.discovery();
    if book.bucket(&bucket_id).is_none() {
        return Err(ScmError::InvalidField("certBucketId".to_owned()));
    }
    Ok(Task {
        id,
        name,
        agent,
        ranges,
        bucket_id,
        frequency: (*frequency).to_owned(),
        time_zone,
        hours: time.hours.unwrap_or_default(),
        minutes: time.minutes.unwrap_or_default(),
        month: body.month,
        day_of_month: body.day_of_month,
        day_of_week: body.day_of_week,
        year: body.year,
        status: None,
    })
}

/// -607/-637: the agent must be one of the configured ones.
/// Inferred (spec §2.4, §2.10 item 4): a configured agent scans public and private ranges
/// alike; an unknown one is -607 when any range is private, else -637.
fn check_agent(config: &ScmSimulatorConfig, agent: &str, ranges: &[Range]) -> Result<(), ScmError> {
    if config.discovery_agents.iter().any(|known| known == agent.trim()) {
        return Ok(());
    }
    if ranges.iter().any(Range::is_private) {
        Err(ScmError::AgentPrivateRanges)
    } else {
        Err(ScmError::AgentPublicRanges)
    }
}

/// §2.4 create: 201, `Location`, no body.
fn create(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let body: TaskBody = call.json()?;
    let mut task = validate(shared, body, 0)?;
    let mut book = shared.discovery();
    let id = book.next_task_id;
    book.next_task_id += 1;
    task.id = id;
    tracing::info!(id, name = %task.name, "discovery task created");
    book.tasks.insert(id, task);
    Ok(Reply::Created(format!(
        "{}/api/discovery/v4/net_task/{id}",
        call.base_url()
    )))
}

/// §2.4 update: the whole body replaces the task; 200 without a body. -618 while a scan runs
/// (Inferred (spec §2.4): the docs say "probably update/delete").
fn update(shared: &Shared, id: &str, call: &Call) -> Result<Reply, ScmError> {
    let id = task_id(id)?;
    {
        let book = shared.discovery();
        let task = book.tasks.get(&id).ok_or_else(not_found)?;
        if task.status.is_some_and(TaskState::is_running) {
            return Err(ScmError::DiscoveryRunning);
        }
    }
    let body: TaskBody = call.json()?;
    let mut task = validate(shared, body, id)?;
    let mut book = shared.discovery();
    let known = book.tasks.get_mut(&id).ok_or_else(not_found)?;
    task.status = known.status;
    *known = task;
    tracing::info!(id, "discovery task updated");
    Ok(Reply::Empty)
}

/// §2.4 get. Unset schedule fields are left out, as in the example.
fn get(shared: &Shared, id: &str) -> Result<Reply, ScmError> {
    let id = task_id(id)?;
    let book = shared.discovery();
    let task = book.tasks.get(&id).ok_or_else(not_found)?;
    let bucket_name = book.bucket(&task.bucket_id).map(|bucket| bucket.name.clone());
    let mut body = json!({
        "name": task.name,
        "agent": task.agent,
        "certificateBucket": {"id": task.bucket_id, "name": bucket_name},
        "ranges": task.ranges.iter().map(|range| json!({"address": range.address, "ports": range.ports_text})).collect::<Vec<_>>(),
        "frequency": task.frequency,
        "timeZone": task.time_zone,
        "time": {"hours": task.hours, "minutes": task.minutes},
    });
    for (field, value) in [
        ("month", task.month),
        ("dayOfMonth", task.day_of_month),
        ("dayOfWeek", task.day_of_week),
        ("year", task.year),
    ] {
        if let Some(value) = value {
            body[field] = json!(value);
        }
    }
    body["status"] = json!(task.status.map(TaskState::display));
    Ok(Reply::Dcv(body))
}

/// §2.4 list. Filters: `name` (Inferred (spec §2.4): a case-insensitive substring, since exact
/// or substring is not stated, so a client must match exactly itself) and `status` (an enum
/// name, any case; another value is -1601). Ascending `taskId`.
fn list(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let text = |name: &str| call.param(name).map(str::trim).filter(|value| !value.is_empty());
    let name = text("name").map(str::to_ascii_lowercase);
    let status = text("status")
        .map(|wanted| {
            TaskState::ALL
                .into_iter()
                .find(|state| state.name().eq_ignore_ascii_case(wanted))
                .ok_or_else(|| ScmError::InvalidField("status".to_owned()))
        })
        .transpose()?;
    let (position, size) = page_bounds(call)?;
    let book = shared.discovery();
    let rows: Vec<Value> = book
        .tasks
        .values()
        .filter(|task| {
            name.as_ref()
                .is_none_or(|name| task.name.to_ascii_lowercase().contains(name.as_str()))
                && status.is_none_or(|status| task.status == Some(status))
        })
        .map(|task| json!({"taskId": task.id, "name": task.name, "status": task.status.map(TaskState::display)}))
        .collect();
    let total = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(position).take(size).collect();
    Ok(Reply::DcvPage(Value::Array(page), total))
}

/// §2.4 start: 200 without a body (no operation id); the scan runs in the background. -618
/// while a scan of the task runs.
fn start(shared: &Shared, id: &str) -> Result<Reply, ScmError> {
    let id = task_id(id)?;
    let config = &shared.config;
    let mut book = shared.discovery();
    let task = book.tasks.get(&id).ok_or_else(not_found)?;
    if task.status.is_some_and(TaskState::is_running) || book.running_operation(id).is_some() {
        return Err(ScmError::DiscoveryRunning);
    }
    if task.ranges.is_empty() {
        return Err(ScmError::NoScanRange);
    }
    check_agent(config, &task.agent, &task.ranges)?;
    let (targets, complete) = targets(config, &task.ranges);
    let bucket_id = task.bucket_id.clone();
    let operation_id = hex_lower(&rand::rng().random::<[u8; 16]>());
    let now = OffsetDateTime::now_utc();
    let cancel = shared.shutdown.child_token();
    book.operations.push(Operation {
        id: operation_id.clone(),
        task_id: id,
        bucket_id,
        state: OperationState::InProgress,
        created: now,
        modified: now,
        error: None,
        results: Vec::new(),
        visible: false,
        endpoints_scanned: 0,
        cancel: cancel.clone(),
    });
    if let Some(task) = book.tasks.get_mut(&id) {
        task.status = Some(TaskState::InProcess);
    }
    drop(book);
    tracing::info!(task = id, operation = %operation_id, endpoints = targets.len(), "discovery scan started");
    let run = ScanRun {
        book: Arc::clone(&shared.discovery),
        task_id: id,
        operation_id,
        targets,
        complete,
        connect_timeout: config.discovery_connect_timeout,
        minimum_duration: config.discovery_scan_duration,
        processing_time: config.discovery_processing_time,
        failure: config.discovery_scan_failure.clone(),
        cancel,
    };
    tokio::spawn(run.run());
    Ok(Reply::Empty)
}

/// The endpoints a scan connects to, and whether they are all of the ranges' pairs.
/// Inferred (spec §2.10): a real scan of a wide range would take hours, so at most
/// `discovery_max_scanned_addresses` distinct addresses are scanned (in range order); and
/// unless `discovery_scan_any_address` is set only loopback addresses are connected to, so a
/// test can never make the simulator probe someone else's network. Either cut makes the scan
/// "Partial SUCCESSFUL".
fn targets(config: &ScmSimulatorConfig, ranges: &[Range]) -> (Vec<SocketAddr>, bool) {
    let limit = config.discovery_max_scanned_addresses;
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut complete = true;
    let mut pairs = Vec::new();
    for range in ranges {
        if u128::try_from(limit).unwrap_or(u128::MAX) < range.addresses() {
            complete = false;
        }
        for address in range.iter_addresses(limit) {
            if !addresses.contains(&address) {
                if addresses.len() >= limit {
                    complete = false;
                    continue;
                }
                addresses.push(address);
            }
            if !config.discovery_scan_any_address && !address.is_loopback() {
                complete = false;
                continue;
            }
            for port in &range.ports {
                let target = SocketAddr::new(address, *port);
                if !pairs.contains(&target) {
                    pairs.push(target);
                }
            }
        }
    }
    (pairs, complete)
}

/// §2.4 delete: 204. -618 while a scan runs (Inferred (spec §2.4): "a -618 is plausible").
/// Inferred (spec §2.8): the operations go with the task; the bucket keeps what they found,
/// being the cumulative view across runs.
fn delete(shared: &Shared, id: &str) -> Result<Reply, ScmError> {
    let id = task_id(id)?;
    let mut book = shared.discovery();
    let task = book.tasks.get(&id).ok_or_else(not_found)?;
    if task.status.is_some_and(TaskState::is_running) {
        return Err(ScmError::DiscoveryRunning);
    }
    book.tasks.remove(&id);
    book.operations.retain(|operation| operation.task_id != id);
    tracing::info!(id, "discovery task deleted");
    Ok(Reply::NoContent)
}

/// §2.9 operations list: `{"total", "data"}` plus `X-Total-Count`, ascending `created`.
/// Inferred (spec §2.9): no query parameters are documented; `position`/`size` are honoured
/// when sent. Under [`ScmReading::Strict`] `X-Total-Count` is `0`, as in the example (next to
/// the right `total`).
fn operations(shared: &Shared, id: &str, call: &Call) -> Result<Reply, ScmError> {
    let id = task_id(id)?;
    let (position, size) = page_bounds(call)?;
    let book = shared.discovery();
    if !book.tasks.contains_key(&id) {
        return Err(not_found());
    }
    let rows: Vec<Value> = book
        .operations
        .iter()
        .filter(|operation| operation.task_id == id)
        .map(|operation| {
            let mut row = json!({
                "id": operation.id,
                "status": operation.state.as_str(),
                "created": iso_millis(operation.created),
                "modified": iso_millis(operation.modified),
                "bucketId": operation.bucket_id,
            });
            if let Some(error) = &operation.error {
                row["error"] = json!(error);
            }
            row
        })
        .collect();
    let total = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(position).take(size).collect();
    let header = match shared.config.reading {
        ScmReading::Common => total,
        ScmReading::Strict => 0,
    };
    Ok(Reply::DcvPage(json!({"total": total, "data": page}), header))
}

/// §2.9 stop: 200 without a body. A running operation becomes `canceled` and its task "Scan
/// CANCELED by user" (§2.10 item 2) at once; what was found so far is kept. Inferred (spec
/// §2.9): stopping an operation that is not running changes nothing and answers 200.
fn stop(shared: &Shared, id: &str, operation_id: &str) -> Result<Reply, ScmError> {
    let id = task_id(id)?;
    let mut book = shared.discovery();
    if !book.tasks.contains_key(&id) {
        return Err(not_found());
    }
    let operation = book.operation_mut(id, operation_id).ok_or_else(not_found)?;
    if operation.state != OperationState::InProgress {
        return Ok(Reply::Empty);
    }
    operation.cancel.cancel();
    operation.state = OperationState::Canceled;
    operation.modified = OffsetDateTime::now_utc();
    operation.visible = true;
    if let Some(task) = book.tasks.get_mut(&id) {
        task.status = Some(TaskState::Canceled);
    }
    tracing::info!(task = id, operation = operation_id, "discovery operation stopped");
    Ok(Reply::Empty)
}

/// §2.9 result: `{"total", "data"}` plus `X-Total-Count`, paged by `position`/`size`. Empty
/// until the results are processed.
fn result(shared: &Shared, id: &str, operation_id: &str, call: &Call) -> Result<Reply, ScmError> {
    let id = task_id(id)?;
    let (position, size) = page_bounds(call)?;
    let managed = managed_ids(shared);
    let mut book = shared.discovery();
    if !book.tasks.contains_key(&id) {
        return Err(not_found());
    }
    let operation = book.operation_mut(id, operation_id).ok_or_else(not_found)?;
    let visible: &[Found] = if operation.visible {
        &operation.results
    } else {
        &[]
    };
    let total = visible.len();
    let page: Vec<Value> = visible
        .iter()
        .skip(position)
        .take(size)
        .map(|found| result_json(found, &operation.id, operation.created, &managed))
        .collect();
    Ok(Reply::DcvPage(json!({"total": total, "data": page}), total))
}

/// Normalised serial → `ssl:<sslId>` for every certificate this simulator issued.
/// Inferred (spec §2.9): `managedId` names an SCM-managed certificate as `ssl:<id>`; a found
/// certificate is managed when its serial is one of an issued order's.
fn managed_ids(shared: &Shared) -> BTreeMap<String, String> {
    shared
        .book()
        .orders
        .values()
        .filter_map(|order| {
            order
                .serial()
                .map(|serial| (normalise_serial(serial), format!("ssl:{}", order.ssl_id)))
        })
        .collect()
}

/// One result record (§2.9). `location.details.address` is the IP as text: Inferred (spec
/// §2.9): the scanned host name; the simulator scans addresses and does no reverse lookup.
fn result_json(
    found: &Found,
    operation_id: &str,
    operation_created: OffsetDateTime,
    managed: &BTreeMap<String, String>,
) -> Value {
    let leaf = &found.leaf;
    let mut location = json!({
        "ip": found.address.ip().to_string(),
        "port": found.address.port(),
        "address": found.address.ip().to_string(),
    });
    for field in [
        "name",
        "dn",
        "upn",
        "objectType",
        "requestId",
        "haGroupId",
        "template",
        "dateCreated",
        "type",
        "requesterEmail",
        "backend",
        "host",
        "requesterName",
        "site",
        "hostName",
        "id",
        "exportable",
        "reusable",
        "uri",
        "arn",
        "exported",
        "inUse",
        "inUseBy",
        "scope",
        "labels",
    ] {
        location[field] = Value::Null;
    }
    json!({
        "certificate": {
            "hash": leaf.sha1,
            "metadata": {
                "managedId": managed.get(&leaf.serial),
                "hidden": false,
                "discoveryTime": iso_millis(found.at),
            },
            "details": leaf.details_json(),
        },
        "location": {"type": "NETWORK_HOST", "details": location},
        "status": {
            "tlsVersion": found.tls_version,
            "cipherSuite": found.cipher_suite,
            "handshakeMs": found.handshake_ms,
            "nameLookupMs": 0,
            "status": null,
            "additionalEmails": null,
        },
        "operation": {"id": operation_id, "created": iso_millis(operation_created)},
        "created": iso_millis(found.at),
    })
}

/// §2.8 bucket certificates: `{"total", "data": [{"hash", "details"}]}`, without
/// `X-Total-Count` (the example has none), paged by `position`/`size`.
fn bucket_certificates(shared: &Shared, id: &str, call: &Call) -> Result<Reply, ScmError> {
    let (position, size) = page_bounds(call)?;
    let book = shared.discovery();
    let bucket = book.bucket(id).ok_or_else(not_found)?;
    let key = bucket.id.to_ascii_lowercase();
    let certificates = book.bucket_certificates.get(&key);
    let total = certificates.map_or(0, BTreeMap::len);
    let page: Vec<Value> = certificates
        .into_iter()
        .flat_map(|map| map.iter())
        .skip(position)
        .take(size)
        .map(|(hash, leaf)| json!({"hash": hash, "details": leaf.details_json()}))
        .collect();
    Ok(Reply::Dcv(json!({"total": total, "data": page})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleBody {
    name: Option<String>,
    org_id: Option<i64>,
    cert_type: Option<String>,
    filters: Option<Vec<Value>>,
}

/// §2.7 create: 201 with `Location`. -7 without a name or `orgId`, -1601 for a name over 128
/// characters or an unknown `certType`; -5001 for an organization other than the account's and
/// -5002 for no filters. Inferred (spec §1.1): the table ties -5001 ("You don't have access to
/// Organization assigned to the Rule") and -5002 ("Assignment rules cannot be empty.") to rule
/// create/update without saying when; the simulated admin manages only the account's
/// organization, and "cannot be empty" is read as an empty `filters` list.
fn create_rule(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let body: RuleBody = call.json()?;
    let name = body
        .name
        .filter(|name| !name.trim().is_empty())
        .ok_or(ScmError::Required("name"))?;
    if name.chars().count() > 128 {
        return Err(ScmError::InvalidField("name".to_owned()));
    }
    let org_id = body.org_id.ok_or(ScmError::Required("orgId"))?;
    if let Some(cert_type) = &body.cert_type
        && !CERT_TYPES.contains(&cert_type.as_str())
    {
        return Err(ScmError::InvalidField("certType".to_owned()));
    }
    if org_id != shared.config.org_id {
        return Err(ScmError::RuleOrganizationDenied);
    }
    if body.filters.unwrap_or_default().is_empty() {
        return Err(ScmError::AssignmentRulesEmpty);
    }
    let mut book = shared.discovery();
    let id = book.next_rule_id;
    book.next_rule_id += 1;
    book.rules.insert(id, Rule { name });
    Ok(Reply::Created(format!(
        "{}/api/discovery/v1/assignmentrule/{id}",
        call.base_url()
    )))
}

/// §2.7 delete: 204, or -5003 naming the net tasks whose bucket carries the rule.
/// Inferred (spec §2.7): rules reach tasks through their bucket; {0} lists the tasks' names.
fn delete_rule(shared: &Shared, id: &str) -> Result<Reply, ScmError> {
    let id = id.trim().parse::<i64>().map_err(|_| not_found())?;
    let mut book = shared.discovery();
    if !book.rules.contains_key(&id) {
        return Err(not_found());
    }
    let users: Vec<String> = book
        .tasks
        .values()
        .filter(|task| {
            book.bucket(&task.bucket_id)
                .is_some_and(|bucket| bucket.assignment_rules.contains(&id))
        })
        .map(|task| task.name.clone())
        .collect();
    if !users.is_empty() {
        return Err(ScmError::RuleInUse(users.join(", ")));
    }
    if let Some(rule) = book.rules.remove(&id) {
        tracing::info!(id, name = %rule.name, "assignment rule deleted");
    }
    for bucket in &mut book.buckets {
        bucket.assignment_rules.retain(|rule| *rule != id);
    }
    Ok(Reply::NoContent)
}

/// One scan in the background.
struct ScanRun {
    book: Arc<Mutex<DiscoveryBook>>,
    task_id: i64,
    operation_id: String,
    targets: Vec<SocketAddr>,
    complete: bool,
    connect_timeout: Duration,
    minimum_duration: Duration,
    processing_time: Duration,
    failure: Option<String>,
    cancel: CancellationToken,
}

fn lock(book: &Mutex<DiscoveryBook>) -> MutexGuard<'_, DiscoveryBook> {
    // Every change is complete before the lock is released, as for the other books.
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ScanRun {
    async fn run(self) {
        let started = tokio::time::Instant::now();
        let scanned = self.targets.len();
        let found = tokio::select! {
            found = self.probe_all() => Some(found),
            () = self.cancel.cancelled() => None,
        };
        let found = match found {
            Some(found) => {
                tokio::select! {
                    () = tokio::time::sleep_until(started + self.minimum_duration) => Some(found),
                    () = self.cancel.cancelled() => None,
                }
            }
            None => None,
        };
        let Some(found) = found else {
            // Stopped (the stop already set the statuses) or shut down.
            tracing::info!(task = self.task_id, operation = %self.operation_id, "discovery scan ended early");
            return;
        };
        let now = OffsetDateTime::now_utc();
        {
            let mut book = lock(&self.book);
            let Some(operation) = book.operation_mut(self.task_id, &self.operation_id) else {
                return;
            };
            if operation.state != OperationState::InProgress {
                return;
            }
            operation.modified = now;
            operation.endpoints_scanned = scanned;
            let state = if let Some(error) = &self.failure {
                operation.state = OperationState::Failed;
                operation.error = Some(error.clone());
                TaskState::Failed
            } else {
                operation.state = OperationState::Completed;
                operation.results = found;
                TaskState::ProcessingResult
            };
            if let Some(task) = book.tasks.get_mut(&self.task_id) {
                task.status = Some(state);
            }
            if state == TaskState::Failed {
                tracing::info!(task = self.task_id, operation = %self.operation_id, "discovery scan failed");
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(self.processing_time) => {}
            () = self.cancel.cancelled() => return,
        }
        let mut book = lock(&self.book);
        let Some(operation) = book.operation_mut(self.task_id, &self.operation_id) else {
            return;
        };
        operation.visible = true;
        // Inferred (spec §2.10 item 5): results merge into the task's bucket, one entry per
        // certificate hash.
        let bucket = operation.bucket_id.to_ascii_lowercase();
        let leaves: Vec<scan::Leaf> = operation.results.iter().map(|found| found.leaf.clone()).collect();
        let count = leaves.len();
        let certificates = book.bucket_certificates.entry(bucket).or_default();
        for leaf in leaves {
            certificates.insert(leaf.sha1.clone(), leaf);
        }
        if let Some(task) = book.tasks.get_mut(&self.task_id) {
            task.status = Some(if self.complete {
                TaskState::Successful
            } else {
                TaskState::PartialSuccessful
            });
        }
        tracing::info!(task = self.task_id, operation = %self.operation_id, scanned, found = count, "discovery scan completed");
    }

    /// Every target, [`SCAN_PARALLELISM`] at a time, in target order.
    async fn probe_all(&self) -> Vec<Found> {
        let connector = match scan::connector() {
            Ok(connector) => connector,
            Err(error) => {
                tracing::warn!(%error, "discovery TLS client cannot be built");
                return Vec::new();
            }
        };
        let timeout = self.connect_timeout;
        let connector = &connector;
        futures::stream::iter(self.targets.iter().copied())
            .map(|target| scan::probe(connector, target, timeout))
            .buffered(SCAN_PARALLELISM)
            .filter_map(|found| async move { found })
            .collect()
            .await
    }
}
