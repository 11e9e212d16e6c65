//! URL routing of the SCM API: which login (password on `/api/…`, certificate on
//! `/private/api/…`), which API family (`ssl/v1`, `dcv/v2`, `discovery/v4`, …) and which endpoint
//! a request addresses, with literal segments matched before `{sslId}` (`scm-ssl.md` §2 note).
//! The families `ssl/v1`, `dcv/v1`, `dcv/v2`, `domain/v1`, `connector/v1` and `discovery/v1`,
//! `v3`, `v4` are simulated (discovery: the `net_task` endpoints of the current version matrix,
//! operations, bucket certificates, assignment rule create and delete; other documented discovery
//! paths answer 501); a request to another documented family is routed (and authenticated) and
//! answered 501, so a client's URL for it can be checked.

use hyper::Method;
use percent_encoding::percent_decode_str;

use super::{ScmFlavor, ScmReading, dcv::Mode};

/// How the caller must authenticate, decided by the path prefix (spec §1.1, §1.2, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// `/api/ssl/v1`: `login` + `password` + `customerUri` headers.
    Password,
    /// `/private…`: TLS client certificate + `login` + `customerUri` headers.
    Certificate,
}

/// An API endpoint with its path parameters (raw text; handlers parse ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// 3.1 `GET /types`
    Types,
    /// 3.2 `GET /customFields`
    CustomFields,
    /// 3.4 `GET /`
    List,
    /// 3.5 `HEAD /`
    Count,
    /// 3.6 `GET /{sslId}`
    Details(String),
    /// 3.7 `GET /{sslId}/dcv`
    Dcv(String),
    /// 3.8 `POST /{sslId}/dcv/recheck`
    DcvRecheck(String),
    /// 3.9 `POST /enroll`
    Enroll,
    /// 3.11 `GET /collect/{sslId}[/{format}]`
    Collect(String, Option<String>),
    /// 3.13 `POST /approve/{sslId}`
    Approve(String),
    /// 3.14 `POST /decline/{sslId}`
    Decline(String),
    /// 3.15 `PUT /`
    Update,
    /// 3.16 `POST /revoke/{sslId}`
    Revoke(String),
    /// 3.17 `POST /revoke/serial/{serialNumber}`
    RevokeBySerial(String),
    /// 3.19 `POST /renew/{renewId}`
    Renew(String),
    /// 3.20 `POST /renewById/{sslId}`
    RenewById(String),
    /// 3.22 `POST /replace/{sslId}`
    Replace(String),
    /// 3.23 `DELETE /{sslId}`
    Delete(String),
    /// dcv 3.1 `GET /api/dcv/v1/validation`
    DcvList,
    /// dcv 3.2 `POST /api/dcv/v2/validation/status` (`v2`) and 3.3, its deprecated v1
    DcvStatus {
        /// The preferred v2 path.
        v2: bool,
    },
    /// dcv 3.4 `POST /api/dcv/v1/validation/sync`
    DcvSync,
    /// dcv 3.5 `POST /api/dcv/v1/validation/clear`
    DcvClear,
    /// dcv 3.6 `POST /api/dcv/v1/validation/delete`
    DcvDelete,
    /// dcv 3.8, 3.9, 3.11 `POST /api/dcv/v1/validation/start/domain/{http|https|cname|email}`
    DcvStart(Mode),
    /// dcv 3.8-3.11 `POST /api/dcv/v1/validation/submit/domain/{http|https|cname|txt|email}`
    DcvSubmit(Mode),
    /// dcv 3.11 `POST /api/dcv/v1/validation/submit-bulk/domain/email`
    DcvSubmitBulkEmail,
    /// dcv 5.1 `GET /api/domain/v1`
    DomainList,
    /// dcv 5.2 `GET /api/domain/v1/count`
    DomainCount,
    /// dcv 5.3 `GET /api/domain/v1/{id}`
    DomainDetails(String),
    /// dcv 5.4 `POST /api/domain/v1`
    DomainCreate,
    /// dcv 5.6 `DELETE /api/domain/v1/{id}`
    DomainDelete(String),
    /// dcv 5.7 `PUT /api/domain/v1/{id}/activate`
    DomainActivate(String),
    /// dcv 5.7 `PUT /api/domain/v1/{id}/suspend`
    DomainSuspend(String),
    /// dcv 6.1 `GET /api/connector/v1/dns`
    ConnectorList,
    /// dcv 6.2 `GET /api/connector/v1/dns/{id}`
    ConnectorDetails(String),
    /// dcv 6.3 `GET /api/connector/v1/dns/{id}/provider`
    ConnectorProviders(String),
    /// discovery 2.4 `POST /api/discovery/v4/net_task`
    DiscoveryCreateTask,
    /// discovery 2.4 `PUT /api/discovery/v4/net_task/{id}`
    DiscoveryUpdateTask(String),
    /// discovery 2.4 `GET /api/discovery/v4/net_task/{id}`
    DiscoveryGetTask(String),
    /// discovery 2.4 `GET /api/discovery/v3/net_task`
    DiscoveryListTasks,
    /// discovery 2.4 `POST /api/discovery/v3/net_task/{id}/start`
    DiscoveryStartTask(String),
    /// discovery 2.4 `DELETE /api/discovery/v3/net_task/{id}`
    DiscoveryDeleteTask(String),
    /// discovery 2.9 `GET /api/discovery/v1/net_task/{id}/operation`
    DiscoveryOperations(String),
    /// discovery 2.9 `POST /api/discovery/v1/net_task/{id}/operation/{operationId}/stop`
    DiscoveryStopOperation(String, String),
    /// discovery 2.9 `GET /api/discovery/v1/net_task/{id}/operation/{operationId}/result`
    DiscoveryOperationResult(String, String),
    /// discovery 2.8 `GET /api/discovery/v1/bucket/{bucketId}/certificates`
    DiscoveryBucketCertificates(String),
    /// discovery 2.7 `POST /api/discovery/v1/assignmentrule`
    DiscoveryCreateRule,
    /// discovery 2.7 `DELETE /api/discovery/v1/assignmentrule/{ruleId}`
    DiscoveryDeleteRule(String),
    /// Any path of a documented API family the simulator does not implement (the family's path
    /// after `/api`, e.g. `dcv/v2`): answered 501 after authentication.
    UnimplementedFamily(&'static str),
}

impl Endpoint {
    /// The name used by request counters and fault filters.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Types => "types",
            Self::CustomFields => "customFields",
            Self::List => "list",
            Self::Count => "count",
            Self::Details(_) => "details",
            Self::Dcv(_) => "dcv",
            Self::DcvRecheck(_) => "dcvRecheck",
            Self::Enroll => "enroll",
            Self::Collect(..) => "collect",
            Self::Approve(_) => "approve",
            Self::Decline(_) => "decline",
            Self::Update => "update",
            Self::Revoke(_) => "revoke",
            Self::RevokeBySerial(_) => "revokeBySerial",
            Self::Renew(_) => "renew",
            Self::RenewById(_) => "renewById",
            Self::Replace(_) => "replace",
            Self::Delete(_) => "delete",
            Self::DcvList => "dcvList",
            Self::DcvStatus { v2: true } => "dcvStatusV2",
            Self::DcvStatus { v2: false } => "dcvStatusV1",
            Self::DcvSync => "dcvSync",
            Self::DcvClear => "dcvClear",
            Self::DcvDelete => "dcvDelete",
            Self::DcvStart(mode) => match mode {
                Mode::Http => "dcvStartHttp",
                Mode::Https => "dcvStartHttps",
                Mode::Cname => "dcvStartCname",
                Mode::Txt => "dcvStartTxt",
                Mode::Email => "dcvStartEmail",
            },
            Self::DcvSubmit(mode) => match mode {
                Mode::Http => "dcvSubmitHttp",
                Mode::Https => "dcvSubmitHttps",
                Mode::Cname => "dcvSubmitCname",
                Mode::Txt => "dcvSubmitTxt",
                Mode::Email => "dcvSubmitEmail",
            },
            Self::DcvSubmitBulkEmail => "dcvSubmitBulkEmail",
            Self::DomainList => "domainList",
            Self::DomainCount => "domainCount",
            Self::DomainDetails(_) => "domainDetails",
            Self::DomainCreate => "domainCreate",
            Self::DomainDelete(_) => "domainDelete",
            Self::DomainActivate(_) => "domainActivate",
            Self::DomainSuspend(_) => "domainSuspend",
            Self::ConnectorList => "connectorList",
            Self::ConnectorDetails(_) => "connectorDetails",
            Self::ConnectorProviders(_) => "connectorProviders",
            Self::DiscoveryCreateTask => "discoveryCreateTask",
            Self::DiscoveryUpdateTask(_) => "discoveryUpdateTask",
            Self::DiscoveryGetTask(_) => "discoveryGetTask",
            Self::DiscoveryListTasks => "discoveryListTasks",
            Self::DiscoveryStartTask(_) => "discoveryStartTask",
            Self::DiscoveryDeleteTask(_) => "discoveryDeleteTask",
            Self::DiscoveryOperations(_) => "discoveryOperations",
            Self::DiscoveryStopOperation(..) => "discoveryStopOperation",
            Self::DiscoveryOperationResult(..) => "discoveryOperationResult",
            Self::DiscoveryBucketCertificates(_) => "discoveryBucketCertificates",
            Self::DiscoveryCreateRule => "discoveryCreateRule",
            Self::DiscoveryDeleteRule(_) => "discoveryDeleteRule",
            Self::UnimplementedFamily(_) => "unimplementedFamily",
        }
    }

    /// Whether the DCV API serves it (asynchronous handlers: a DCV check fetches files and
    /// queries DNS).
    pub fn is_dcv(&self) -> bool {
        matches!(
            self,
            Self::DcvList
                | Self::DcvStatus { .. }
                | Self::DcvSync
                | Self::DcvClear
                | Self::DcvDelete
                | Self::DcvStart(_)
                | Self::DcvSubmit(_)
                | Self::DcvSubmitBulkEmail
        )
    }

    /// Whether the Domain API serves it.
    pub fn is_domain(&self) -> bool {
        matches!(
            self,
            Self::DomainList
                | Self::DomainCount
                | Self::DomainDetails(_)
                | Self::DomainCreate
                | Self::DomainDelete(_)
                | Self::DomainActivate(_)
                | Self::DomainSuspend(_)
        )
    }

    /// Whether the discovery API serves it.
    pub fn is_discovery(&self) -> bool {
        matches!(
            self,
            Self::DiscoveryCreateTask
                | Self::DiscoveryUpdateTask(_)
                | Self::DiscoveryGetTask(_)
                | Self::DiscoveryListTasks
                | Self::DiscoveryStartTask(_)
                | Self::DiscoveryDeleteTask(_)
                | Self::DiscoveryOperations(_)
                | Self::DiscoveryStopOperation(..)
                | Self::DiscoveryOperationResult(..)
                | Self::DiscoveryBucketCertificates(_)
                | Self::DiscoveryCreateRule
                | Self::DiscoveryDeleteRule(_)
        )
    }

    /// Whether the DNS connector API serves it.
    pub fn is_connector(&self) -> bool {
        matches!(
            self,
            Self::ConnectorList | Self::ConnectorDetails(_) | Self::ConnectorProviders(_)
        )
    }
}

/// Why a request matched no endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// Not an SSL API path at all.
    NotFound,
    /// A documented path the simulator does not implement (locations, keygen, keystore, import,
    /// manual revoke/renew).
    NotImplemented,
    /// A known path with the wrong method.
    MethodNotAllowed,
}

/// Documented literal segments whose endpoints the simulator leaves out (spec §2).
const UNIMPLEMENTED: [&str; 3] = ["enroll-keygen", "keystore", "import"];

/// The SSL family.
const SSL_V1: &str = "ssl/v1";
/// The DCV families: v2 has only `status` (spec §10.1 item 11).
const DCV_V1: &str = "dcv/v1";
const DCV_V2: &str = "dcv/v2";
/// The Domain family.
const DOMAIN_V1: &str = "domain/v1";
/// The DNS connector family.
const CONNECTOR_V1: &str = "connector/v1";
/// The discovery families (`scm-discovery-alerts.md` §2.1): v4 creates, updates and reads
/// tasks, v3 lists, starts and deletes them, v1 has operations, buckets and rules.
const DISCOVERY_V1: &str = "discovery/v1";
const DISCOVERY_V3: &str = "discovery/v3";
const DISCOVERY_V4: &str = "discovery/v4";
/// The families the simulator serves.
pub const SIMULATED: [&str; 8] = [
    SSL_V1,
    DCV_V1,
    DCV_V2,
    DOMAIN_V1,
    CONNECTOR_V1,
    DISCOVERY_V1,
    DISCOVERY_V3,
    DISCOVERY_V4,
];

/// Every API family the specs document (the path after `/api`; deprecated discovery v2 left
/// out): `scm-ssl.md` §1.1, `scm-dcv-domains.md` §3, §5-§7, `scm-discovery-alerts.md` §2-§5.
pub const FAMILIES: [&str; 13] = [
    SSL_V1,
    "ssl/v2",
    DCV_V1,
    DCV_V2,
    DOMAIN_V1,
    CONNECTOR_V1,
    DISCOVERY_V1,
    DISCOVERY_V3,
    DISCOVERY_V4,
    "report/v1",
    "report/v2",
    "notification/v1",
    "agent/v1",
];

/// Resolves `method path` for `flavor` under `reading`.
pub fn route(
    flavor: ScmFlavor,
    reading: ScmReading,
    method: &Method,
    path: &str,
) -> Result<(Login, Endpoint), NoRoute> {
    // Certificate login puts `/private` before `/api` (spec §1.1). For InCommon's SSL family the
    // seeds disagree: 004 writes `/private/ssl/v1` (no `/api`), 001 `/private/api/ssl/v1`; see
    // ScmReading item 1. 004 documents no other family, so those follow 001.
    let (login, with_api, rest) = if let Some(rest) = path.strip_prefix("/api/") {
        (Login::Password, true, rest)
    } else if let Some(rest) = path.strip_prefix("/private/api/") {
        (Login::Certificate, true, rest)
    } else if let Some(rest) = path.strip_prefix("/private/") {
        (Login::Certificate, false, rest)
    } else {
        return Err(NoRoute::NotFound);
    };
    let (family, rest) = FAMILIES
        .iter()
        .find_map(|family| strip_prefix(rest, family).map(|rest| (*family, rest)))
        .ok_or(NoRoute::NotFound)?;
    let incommon_004_spelling =
        flavor == ScmFlavor::InCommon && reading == ScmReading::Common && family == SSL_V1;
    if login == Login::Certificate && with_api == incommon_004_spelling {
        return Err(NoRoute::NotFound);
    }
    if !SIMULATED.contains(&family) {
        return Ok((login, Endpoint::UnimplementedFamily(family)));
    }
    let mut segments: Vec<String> = rest
        .split('/')
        .skip(1)
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    // Inferred (spec §5): 004's example calls `/types/`; we chose to accept one trailing slash on
    // every path because the Spring MVC versions SCM was built on match trailing slashes by
    // default, so the real server is unlikely to accept it on `/types` alone.
    if segments.last().is_some_and(String::is_empty) {
        segments.pop();
    }
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match family {
        DCV_V1 | DCV_V2 => dcv_endpoint(family == DCV_V2, method, &segments),
        DOMAIN_V1 => domain_endpoint(method, &segments),
        CONNECTOR_V1 => connector_endpoint(method, &segments),
        DISCOVERY_V1 => discovery_v1_endpoint(method, &segments),
        DISCOVERY_V3 => discovery_v3_endpoint(method, &segments),
        DISCOVERY_V4 => discovery_v4_endpoint(method, &segments),
        _ => endpoint(method, &segments),
    }
    .map(|endpoint| (login, endpoint))
}

fn only(allowed: bool, endpoint: Endpoint) -> Result<Endpoint, NoRoute> {
    if allowed {
        Ok(endpoint)
    } else {
        Err(NoRoute::MethodNotAllowed)
    }
}

/// The DCV API (spec §3): every call is a POST naming the domain in its body, except the list.
fn dcv_endpoint(v2: bool, method: &Method, segments: &[&str]) -> Result<Endpoint, NoRoute> {
    let post = method == Method::POST;
    let mode = |text: &str| match text {
        "http" => Some(Mode::Http),
        "https" => Some(Mode::Https),
        "cname" => Some(Mode::Cname),
        "txt" => Some(Mode::Txt),
        "email" => Some(Mode::Email),
        _ => None,
    };
    match segments {
        ["validation", "status"] => only(post, Endpoint::DcvStatus { v2 }),
        // v2 exists only for `status` (spec §10.1 item 11).
        _ if v2 => Err(NoRoute::NotFound),
        ["validation"] => only(method == Method::GET, Endpoint::DcvList),
        ["validation", "sync"] => only(post, Endpoint::DcvSync),
        ["validation", "clear"] => only(post, Endpoint::DcvClear),
        ["validation", "delete"] => only(post, Endpoint::DcvDelete),
        // "Start request is not supported by the API" for TXT (spec §3.10): no such path.
        ["validation", "start", "domain", "txt"] => Err(NoRoute::NotFound),
        ["validation", "start", "domain", name] => mode(name).map_or(Err(NoRoute::NotFound), |mode| {
            only(post, Endpoint::DcvStart(mode))
        }),
        ["validation", "submit", "domain", name] => mode(name).map_or(Err(NoRoute::NotFound), |mode| {
            only(post, Endpoint::DcvSubmit(mode))
        }),
        ["validation", "submit-bulk", "domain", "email"] => only(post, Endpoint::DcvSubmitBulkEmail),
        _ => Err(NoRoute::NotFound),
    }
}

/// The Domain API (spec §5); CT-log monitoring and delegations are not simulated.
fn domain_endpoint(method: &Method, segments: &[&str]) -> Result<Endpoint, NoRoute> {
    let id = |s: &str| s.to_owned();
    match segments {
        [] if method == Method::POST => Ok(Endpoint::DomainCreate),
        [] => only(method == Method::GET, Endpoint::DomainList),
        ["count"] => only(method == Method::GET, Endpoint::DomainCount),
        ["delegation"] | [_, "delegation", ..] | [_, "monitoring"] => Err(NoRoute::NotImplemented),
        [domain_id] if method == Method::GET => Ok(Endpoint::DomainDetails(id(domain_id))),
        [domain_id] => only(method == Method::DELETE, Endpoint::DomainDelete(id(domain_id))),
        [domain_id, "activate"] => only(method == Method::PUT, Endpoint::DomainActivate(id(domain_id))),
        [domain_id, "suspend"] => only(method == Method::PUT, Endpoint::DomainSuspend(id(domain_id))),
        _ => Err(NoRoute::NotFound),
    }
}

/// The DNS connector API (spec §6): three reads. The ids stay raw text; an unknown one is the
/// handler's 404.
fn connector_endpoint(method: &Method, segments: &[&str]) -> Result<Endpoint, NoRoute> {
    let get = method == Method::GET;
    match segments {
        ["dns"] => only(get, Endpoint::ConnectorList),
        ["dns", id] => only(get, Endpoint::ConnectorDetails((*id).to_owned())),
        ["dns", id, "provider"] => only(get, Endpoint::ConnectorProviders((*id).to_owned())),
        _ => Err(NoRoute::NotFound),
    }
}

/// Discovery v4 (spec §2.1): only `net_task` create, update and get; there is no v4 list, start
/// or delete (404). The documented `ad_task` paths are not simulated (501).
fn discovery_v4_endpoint(method: &Method, segments: &[&str]) -> Result<Endpoint, NoRoute> {
    let id = |s: &str| s.to_owned();
    match segments {
        ["net_task"] if method == Method::GET => Err(NoRoute::NotFound),
        ["net_task"] => only(method == Method::POST, Endpoint::DiscoveryCreateTask),
        ["net_task", task_id] if method == Method::GET => Ok(Endpoint::DiscoveryGetTask(id(task_id))),
        ["net_task", task_id] => only(method == Method::PUT, Endpoint::DiscoveryUpdateTask(id(task_id))),
        ["ad_task"] | ["ad_task", _] => Err(NoRoute::NotImplemented),
        _ => Err(NoRoute::NotFound),
    }
}

/// Discovery v3 (spec §2.1): `net_task` list, start and delete. Its deprecated create, update and
/// get, and the `ad_task` paths, are documented but not simulated (501).
fn discovery_v3_endpoint(method: &Method, segments: &[&str]) -> Result<Endpoint, NoRoute> {
    let id = |s: &str| s.to_owned();
    match segments {
        ["net_task"] if method == Method::GET => Ok(Endpoint::DiscoveryListTasks),
        ["net_task", task_id] if method == Method::DELETE => Ok(Endpoint::DiscoveryDeleteTask(id(task_id))),
        ["net_task"] | ["net_task", _] => {
            // v3's deprecated create (POST) and update and get (PUT, GET on an id).
            let deprecated = if segments.len() == 1 {
                method == Method::POST
            } else {
                method == Method::GET || method == Method::PUT
            };
            Err(if deprecated {
                NoRoute::NotImplemented
            } else {
                NoRoute::MethodNotAllowed
            })
        }
        ["net_task", task_id, "start"] => {
            only(method == Method::POST, Endpoint::DiscoveryStartTask(id(task_id)))
        }
        ["ad_task"] | ["ad_task", _] | ["ad_task", _, "start"] => Err(NoRoute::NotImplemented),
        _ => Err(NoRoute::NotFound),
    }
}

/// Discovery v1 (spec §2.1, §2.7-§2.9): `net_task` operations, bucket certificates, assignment
/// rule create and delete. The other documented v1 paths (azure tasks, the other task types'
/// operations, bucket and rule management) are not simulated (501).
fn discovery_v1_endpoint(method: &Method, segments: &[&str]) -> Result<Endpoint, NoRoute> {
    let id = |s: &str| s.to_owned();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segments {
        ["net_task", task_id, "operation"] => only(get, Endpoint::DiscoveryOperations(id(task_id))),
        ["net_task", task_id, "operation", operation, "stop"] => {
            only(post, Endpoint::DiscoveryStopOperation(id(task_id), id(operation)))
        }
        ["net_task", task_id, "operation", operation, "result"] => only(
            get,
            Endpoint::DiscoveryOperationResult(id(task_id), id(operation)),
        ),
        ["bucket", bucket_id, "certificates"] => {
            only(get, Endpoint::DiscoveryBucketCertificates(id(bucket_id)))
        }
        ["assignmentrule"] if post => Ok(Endpoint::DiscoveryCreateRule),
        ["assignmentrule", rule_id] if method == Method::DELETE && *rule_id != "count" => {
            Ok(Endpoint::DiscoveryDeleteRule(id(rule_id)))
        }
        ["ad_task" | "azure_task", _, "operation", ..] | ["azure_task" | "bucket" | "assignmentrule", ..] => {
            Err(NoRoute::NotImplemented)
        }
        _ => Err(NoRoute::NotFound),
    }
}

/// `path` without `prefix`, when `prefix` is a whole-segment prefix of it.
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn endpoint(method: &Method, segments: &[&str]) -> Result<Endpoint, NoRoute> {
    let is = |wanted: &Method| method == wanted;
    let id = |s: &str| s.to_owned();
    match segments {
        [] if is(&Method::GET) => Ok(Endpoint::List),
        [] if is(&Method::HEAD) => Ok(Endpoint::Count),
        [] => only(is(&Method::PUT), Endpoint::Update),
        ["types"] => only(is(&Method::GET), Endpoint::Types),
        ["customFields"] => only(is(&Method::GET), Endpoint::CustomFields),
        ["enroll"] => only(is(&Method::POST), Endpoint::Enroll),
        // 004 documents collect as POST while its example is a GET (spec §5); accept both.
        ["collect", ssl_id] => only(
            is(&Method::GET) || is(&Method::POST),
            Endpoint::Collect(id(ssl_id), None),
        ),
        ["collect", ssl_id, format] => only(
            is(&Method::GET) || is(&Method::POST),
            Endpoint::Collect(id(ssl_id), Some(id(format))),
        ),
        ["approve", ssl_id] => only(is(&Method::POST), Endpoint::Approve(id(ssl_id))),
        ["decline", ssl_id] => only(is(&Method::POST), Endpoint::Decline(id(ssl_id))),
        ["revoke", "manual"] | ["renew", "manual", _] => Err(NoRoute::NotImplemented),
        ["revoke", "serial", serial] => only(is(&Method::POST), Endpoint::RevokeBySerial(id(serial))),
        ["revoke", ssl_id] => only(is(&Method::POST), Endpoint::Revoke(id(ssl_id))),
        ["renew", renew_id] => only(is(&Method::POST), Endpoint::Renew(id(renew_id))),
        ["renewById", ssl_id] => only(is(&Method::POST), Endpoint::RenewById(id(ssl_id))),
        ["replace", ssl_id] => only(is(&Method::POST), Endpoint::Replace(id(ssl_id))),
        [first, ..] if UNIMPLEMENTED.contains(first) => Err(NoRoute::NotImplemented),
        [_, "location", ..] => Err(NoRoute::NotImplemented),
        [literal, ..] if is_literal(literal) => Err(NoRoute::NotFound),
        [ssl_id] if is(&Method::GET) => Ok(Endpoint::Details(id(ssl_id))),
        [ssl_id] => only(is(&Method::DELETE), Endpoint::Delete(id(ssl_id))),
        [ssl_id, "dcv"] => only(is(&Method::GET), Endpoint::Dcv(id(ssl_id))),
        [ssl_id, "dcv", "recheck"] => only(is(&Method::POST), Endpoint::DcvRecheck(id(ssl_id))),
        _ => Err(NoRoute::NotFound),
    }
}

/// Literal first segments: with an unexpected shape they are unknown paths, never ids.
fn is_literal(segment: &str) -> bool {
    matches!(
        segment,
        "types"
            | "customFields"
            | "enroll"
            | "collect"
            | "approve"
            | "decline"
            | "revoke"
            | "renew"
            | "renewById"
            | "replace"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(flavor: ScmFlavor, path: &str) -> Result<(Login, Endpoint), NoRoute> {
        route(flavor, ScmReading::Common, &Method::GET, path)
    }

    #[test]
    fn prefixes_per_flavor() {
        assert_eq!(
            get(ScmFlavor::Sectigo, "/api/ssl/v1/types"),
            Ok((Login::Password, Endpoint::Types))
        );
        assert_eq!(
            get(ScmFlavor::Sectigo, "/api/ssl/v1/types/"),
            Ok((Login::Password, Endpoint::Types))
        );
        assert_eq!(
            get(ScmFlavor::Sectigo, "/private/api/ssl/v1/types"),
            Ok((Login::Certificate, Endpoint::Types))
        );
        assert_eq!(
            get(ScmFlavor::Sectigo, "/private/ssl/v1/types"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            get(ScmFlavor::InCommon, "/private/ssl/v1/types"),
            Ok((Login::Certificate, Endpoint::Types))
        );
        assert_eq!(
            get(ScmFlavor::InCommon, "/api/ssl/v1"),
            Ok((Login::Password, Endpoint::List))
        );
        assert_eq!(
            get(ScmFlavor::InCommon, "/api/ssl/v1x/types"),
            Err(NoRoute::NotFound)
        );
    }

    #[test]
    fn strict_incommon_serves_001s_certificate_prefix_only() {
        let strict = |path| route(ScmFlavor::InCommon, ScmReading::Strict, &Method::GET, path);
        assert_eq!(
            strict("/private/api/ssl/v1/types"),
            Ok((Login::Certificate, Endpoint::Types))
        );
        assert_eq!(strict("/private/ssl/v1/types"), Err(NoRoute::NotFound));
        assert_eq!(
            strict("/api/ssl/v1/types"),
            Ok((Login::Password, Endpoint::Types))
        );
        assert_eq!(
            get(ScmFlavor::InCommon, "/private/api/ssl/v1/types"),
            Err(NoRoute::NotFound)
        );
    }

    #[test]
    fn every_family_is_routed_under_both_logins_and_the_unsimulated_ones_are_501() {
        for flavor in [ScmFlavor::Sectigo, ScmFlavor::InCommon] {
            for reading in [ScmReading::Common, ScmReading::Strict] {
                let at = |path: &str| route(flavor, reading, &Method::POST, path);
                for family in FAMILIES.into_iter().filter(|f| !SIMULATED.contains(f)) {
                    let unimplemented = |login| Ok((login, Endpoint::UnimplementedFamily(family)));
                    assert_eq!(at(&format!("/api/{family}")), unimplemented(Login::Password));
                    assert_eq!(
                        at(&format!("/api/{family}/validation/status")),
                        unimplemented(Login::Password)
                    );
                    assert_eq!(
                        at(&format!("/private/api/{family}/validation/status")),
                        unimplemented(Login::Certificate),
                        "{flavor:?} {reading:?}"
                    );
                    // 004's spelling without `/api` is InCommon's and for SSL only.
                    assert_eq!(at(&format!("/private/{family}/x")), Err(NoRoute::NotFound));
                    assert_eq!(at(&format!("/{family}/x")), Err(NoRoute::NotFound));
                }
                assert_eq!(
                    at("/private/api/dcv/v2/validation/status"),
                    Ok((Login::Certificate, Endpoint::DcvStatus { v2: true }))
                );
                assert_eq!(at("/private/dcv/v1/validation/clear"), Err(NoRoute::NotFound));
                assert_eq!(at("/api/dcv/v3/validation"), Err(NoRoute::NotFound));
                assert_eq!(at("/api/dcvx/v1/validation"), Err(NoRoute::NotFound));
                assert_eq!(at("/api/discovery/v2/net_task"), Err(NoRoute::NotFound));
                assert_eq!(at("/api/ssl/v1/enroll").map(|(_, e)| e), Ok(Endpoint::Enroll));
            }
        }
    }

    #[test]
    fn dcv_and_domain_paths() {
        let at = |method: Method, path: &str| {
            route(ScmFlavor::Sectigo, ScmReading::Common, &method, path).map(|(_, e)| e)
        };
        assert_eq!(at(Method::GET, "/api/dcv/v1/validation"), Ok(Endpoint::DcvList));
        assert_eq!(
            at(Method::POST, "/api/dcv/v1/validation"),
            Err(NoRoute::MethodNotAllowed)
        );
        assert_eq!(
            at(Method::POST, "/api/dcv/v1/validation/status"),
            Ok(Endpoint::DcvStatus { v2: false })
        );
        assert_eq!(
            at(Method::POST, "/api/dcv/v2/validation/status"),
            Ok(Endpoint::DcvStatus { v2: true })
        );
        assert_eq!(
            at(Method::POST, "/api/dcv/v2/validation/clear"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            at(Method::POST, "/api/dcv/v1/validation/start/domain/https"),
            Ok(Endpoint::DcvStart(Mode::Https))
        );
        assert_eq!(
            at(Method::POST, "/api/dcv/v1/validation/start/domain/txt"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            at(Method::POST, "/api/dcv/v1/validation/submit/domain/txt"),
            Ok(Endpoint::DcvSubmit(Mode::Txt))
        );
        assert_eq!(
            at(Method::POST, "/api/dcv/v1/validation/submit-bulk/domain/email"),
            Ok(Endpoint::DcvSubmitBulkEmail)
        );
        assert_eq!(at(Method::GET, "/api/domain/v1"), Ok(Endpoint::DomainList));
        assert_eq!(at(Method::POST, "/api/domain/v1"), Ok(Endpoint::DomainCreate));
        assert_eq!(at(Method::GET, "/api/domain/v1/count"), Ok(Endpoint::DomainCount));
        assert_eq!(
            at(Method::GET, "/api/domain/v1/2031"),
            Ok(Endpoint::DomainDetails("2031".into()))
        );
        assert_eq!(
            at(Method::PUT, "/api/domain/v1/2031/suspend"),
            Ok(Endpoint::DomainSuspend("2031".into()))
        );
        assert_eq!(
            at(Method::POST, "/api/domain/v1/2031/delegation"),
            Err(NoRoute::NotImplemented)
        );
        assert_eq!(
            at(Method::GET, "/api/connector/v1/dns"),
            Ok(Endpoint::ConnectorList)
        );
        assert_eq!(
            at(
                Method::GET,
                "/api/connector/v1/dns/27b53c63824d41218882e891b4121af2"
            ),
            Ok(Endpoint::ConnectorDetails(
                "27b53c63824d41218882e891b4121af2".into()
            ))
        );
        assert_eq!(
            at(Method::GET, "/api/connector/v1/dns/abc/provider"),
            Ok(Endpoint::ConnectorProviders("abc".into()))
        );
        assert_eq!(
            at(Method::POST, "/api/connector/v1/dns"),
            Err(NoRoute::MethodNotAllowed)
        );
        assert_eq!(
            at(Method::GET, "/api/connector/v1/agents"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            route(
                ScmFlavor::InCommon,
                ScmReading::Common,
                &Method::GET,
                "/private/api/connector/v1/dns"
            ),
            Ok((Login::Certificate, Endpoint::ConnectorList))
        );
    }

    #[test]
    fn literals_before_ids() {
        let post = |path| route(ScmFlavor::Sectigo, ScmReading::Common, &Method::POST, path).map(|(_, e)| e);
        assert_eq!(
            post("/api/ssl/v1/revoke/serial/A9%3A3E"),
            Ok(Endpoint::RevokeBySerial("A9:3E".into()))
        );
        assert_eq!(post("/api/ssl/v1/revoke/17"), Ok(Endpoint::Revoke("17".into())));
        assert_eq!(
            post("/api/ssl/v1/17/dcv/recheck"),
            Ok(Endpoint::DcvRecheck("17".into()))
        );
        assert_eq!(post("/api/ssl/v1/enroll-keygen"), Err(NoRoute::NotImplemented));
        assert_eq!(post("/api/ssl/v1/types"), Err(NoRoute::MethodNotAllowed));
        assert_eq!(
            get(ScmFlavor::Sectigo, "/api/ssl/v1/collect/5/x509CO").map(|(_, e)| e),
            Ok(Endpoint::Collect("5".into(), Some("x509CO".into())))
        );
        assert_eq!(
            get(ScmFlavor::Sectigo, "/api/ssl/v1/12").map(|(_, e)| e),
            Ok(Endpoint::Details("12".into()))
        );
        assert_eq!(
            route(
                ScmFlavor::Sectigo,
                ScmReading::Common,
                &Method::HEAD,
                "/api/ssl/v1"
            )
            .map(|(_, e)| e),
            Ok(Endpoint::Count)
        );
    }

    /// The version matrix of spec §2.1, exactly: create/update/get on v4 only, list/start/delete
    /// on v3 only (v3's deprecated create/update/get are documented, so 501), operations on v1.
    #[test]
    fn discovery_follows_the_version_matrix() {
        let at = |method: Method, path: &str| {
            route(ScmFlavor::Sectigo, ScmReading::Common, &method, path).map(|(_, e)| e)
        };
        let task = |id: &str| id.to_owned();
        assert_eq!(
            at(Method::POST, "/api/discovery/v4/net_task"),
            Ok(Endpoint::DiscoveryCreateTask)
        );
        assert_eq!(
            at(Method::PUT, "/api/discovery/v4/net_task/-7"),
            Ok(Endpoint::DiscoveryUpdateTask(task("-7")))
        );
        assert_eq!(
            at(Method::GET, "/api/discovery/v4/net_task/174004"),
            Ok(Endpoint::DiscoveryGetTask(task("174004")))
        );
        assert_eq!(
            at(Method::GET, "/api/discovery/v3/net_task"),
            Ok(Endpoint::DiscoveryListTasks)
        );
        assert_eq!(
            at(Method::POST, "/api/discovery/v3/net_task/5/start"),
            Ok(Endpoint::DiscoveryStartTask(task("5")))
        );
        assert_eq!(
            at(Method::DELETE, "/api/discovery/v3/net_task/5"),
            Ok(Endpoint::DiscoveryDeleteTask(task("5")))
        );
        // No v4 list, start or delete.
        assert_eq!(
            at(Method::GET, "/api/discovery/v4/net_task"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            at(Method::POST, "/api/discovery/v4/net_task/5/start"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            at(Method::DELETE, "/api/discovery/v4/net_task/5"),
            Err(NoRoute::MethodNotAllowed)
        );
        // v3's deprecated create, update and get exist but are not simulated.
        assert_eq!(
            at(Method::POST, "/api/discovery/v3/net_task"),
            Err(NoRoute::NotImplemented)
        );
        assert_eq!(
            at(Method::GET, "/api/discovery/v3/net_task/5"),
            Err(NoRoute::NotImplemented)
        );
        assert_eq!(
            at(Method::PUT, "/api/discovery/v3/net_task/5"),
            Err(NoRoute::NotImplemented)
        );
    }

    /// Operations, bucket certificates and assignment rules on v1; the other documented v1
    /// paths are 501.
    #[test]
    fn discovery_v1_paths() {
        let at = |method: Method, path: &str| {
            route(ScmFlavor::Sectigo, ScmReading::Common, &method, path).map(|(_, e)| e)
        };
        let task = |id: &str| id.to_owned();
        assert_eq!(
            at(Method::GET, "/api/discovery/v1/net_task/5/operation"),
            Ok(Endpoint::DiscoveryOperations(task("5")))
        );
        assert_eq!(
            at(
                Method::POST,
                "/api/discovery/v1/net_task/5/operation/2c978087859623120185a07545370106/stop"
            ),
            Ok(Endpoint::DiscoveryStopOperation(
                task("5"),
                task("2c978087859623120185a07545370106")
            ))
        );
        assert_eq!(
            at(Method::GET, "/api/discovery/v1/net_task/5/operation/ab/result"),
            Ok(Endpoint::DiscoveryOperationResult(task("5"), task("ab")))
        );
        assert_eq!(
            at(Method::GET, "/api/discovery/v1/ad_task/5/operation"),
            Err(NoRoute::NotImplemented)
        );
        assert_eq!(
            at(Method::GET, "/api/discovery/v1/bucket/b1/certificates"),
            Ok(Endpoint::DiscoveryBucketCertificates(task("b1")))
        );
        assert_eq!(
            at(Method::GET, "/api/discovery/v1/bucket"),
            Err(NoRoute::NotImplemented)
        );
        assert_eq!(
            at(Method::POST, "/api/discovery/v1/assignmentrule"),
            Ok(Endpoint::DiscoveryCreateRule)
        );
        assert_eq!(
            at(Method::DELETE, "/api/discovery/v1/assignmentrule/40394"),
            Ok(Endpoint::DiscoveryDeleteRule(task("40394")))
        );
        assert_eq!(
            at(Method::GET, "/api/discovery/v1/assignmentrule/count"),
            Err(NoRoute::NotImplemented)
        );
        assert_eq!(
            at(Method::POST, "/api/discovery/v1/net_task"),
            Err(NoRoute::NotFound),
            "net_task create is not a v1 path"
        );
        assert_eq!(
            route(
                ScmFlavor::InCommon,
                ScmReading::Common,
                &Method::GET,
                "/private/api/discovery/v3/net_task"
            ),
            Ok((Login::Certificate, Endpoint::DiscoveryListTasks))
        );
    }
}
