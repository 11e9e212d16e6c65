//! Routing and handlers of the CertMgmt API (`scm-discovery-alerts.md` §6): which endpoint a
//! request addresses, how it authenticates, and what it answers. Bodies and queries are checked
//! to the letter of §6 (field names, types, date formats); everything 000 leaves open is marked
//! `Inferred`.

use base64::Engine as _;
use hyper::{HeaderMap, Method, StatusCode, header::AUTHORIZATION};
use jiff::{Timestamp, civil::Date, tz::TimeZone};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::{
    Shared,
    store::{
        AlertKind, Host, Inventoried, Level, LevelSettings, NodeSettings, ReportedCertificate, isoformat,
    },
};

/// How an endpoint authenticates (§6, "Auth").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `/certmgmt/status`, `/certmgmt/modules`.
    None,
    /// HTTP Basic with the configured username and password.
    Basic,
    /// `Authorization: secret_key=<secret_key>` of the host in the path.
    Agent,
}

/// An endpoint with its raw path parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /certmgmt/status`
    Status,
    /// `GET /certmgmt/modules`
    Modules,
    /// `GET /certmgmt/metrics`
    Metrics,
    /// `POST /certmgmt/host`
    Onboard,
    /// `GET /certmgmt/host/<id>`
    Host(String),
    /// `DELETE /certmgmt/host/<id>`
    Offboard(String),
    /// `GET /certmgmt/host/<id>/auditlogs`
    AuditLogs(String),
    /// `GET /certmgmt/host/<id>/alerts`
    HostAlerts(String),
    /// `GET /certmgmt/email_lists`
    EmailLists,
    /// `POST /certmgmt/email_lists`
    CreateEmailList,
    /// `GET /certmgmt/email_lists/<id>`
    EmailList(String),
    /// `PUT /certmgmt/email_lists/<id>`
    UpdateEmailList(String),
    /// `DELETE /certmgmt/email_lists/<id>`
    DeleteEmailList(String),
    /// `GET /certmgmt/alert_configs`
    AlertConfigs,
    /// `GET /certmgmt/alert_configs/<LEVEL>`
    AlertConfig(String),
    /// `PUT /certmgmt/alert_configs/<LEVEL>`
    PutAlertConfig(String),
    /// `GET /certmgmt/alert_configs/<LEVEL>/alerts`
    LevelAlerts(String),
    /// `GET /certmgmt/node_alert_configs`
    NodeAlertConfig,
    /// `PUT /certmgmt/node_alert_configs`
    PutNodeAlertConfig,
    /// `GET /certmgmt/node_alert_configs/alerts`
    NodeAlerts,
    /// `PUT /certagent/host/<id>/certificates`
    AgentReport(String),
}

impl Endpoint {
    /// The name requests are counted under.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Modules => "modules",
            Self::Metrics => "metrics",
            Self::Onboard => "onboard",
            Self::Host(_) => "host",
            Self::Offboard(_) => "offboard",
            Self::AuditLogs(_) => "auditlogs",
            Self::HostAlerts(_) => "host_alerts",
            Self::EmailLists => "email_lists",
            Self::CreateEmailList => "create_email_list",
            Self::EmailList(_) => "email_list",
            Self::UpdateEmailList(_) => "update_email_list",
            Self::DeleteEmailList(_) => "delete_email_list",
            Self::AlertConfigs => "alert_configs",
            Self::AlertConfig(_) => "alert_config",
            Self::PutAlertConfig(_) => "put_alert_config",
            Self::LevelAlerts(_) => "level_alerts",
            Self::NodeAlertConfig => "node_alert_config",
            Self::PutNodeAlertConfig => "put_node_alert_config",
            Self::NodeAlerts => "node_alerts",
            Self::AgentReport(_) => "agent_report",
        }
    }

    /// How it authenticates.
    pub fn auth(&self) -> Auth {
        match self {
            Self::Status | Self::Modules => Auth::None,
            Self::AgentReport(_) => Auth::Agent,
            _ => Auth::Basic,
        }
    }
}

/// Why a request matches no endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// No such path.
    NotFound,
    /// The path exists with other methods.
    MethodNotAllowed,
}

/// The endpoint `method` and `path` address. Paths match exactly: no trailing slash.
// Inferred (spec §6): 000 lists no trailing-slash forms; `/certmgmt/host/` is unknown (404).
pub fn route(method: &Method, path: &str) -> Result<Endpoint, NoRoute> {
    let segments: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let get = *method == Method::GET;
    let put = *method == Method::PUT;
    let post = *method == Method::POST;
    let delete = *method == Method::DELETE;
    let pick = |endpoint: Option<Endpoint>| endpoint.ok_or(NoRoute::MethodNotAllowed);
    let id_ok = |id: &str| !id.is_empty();
    match segments.as_slice() {
        ["certmgmt", "status"] => pick(get.then_some(Endpoint::Status)),
        ["certmgmt", "modules"] => pick(get.then_some(Endpoint::Modules)),
        ["certmgmt", "metrics"] => pick(get.then_some(Endpoint::Metrics)),
        ["certmgmt", "host"] => pick(post.then_some(Endpoint::Onboard)),
        ["certmgmt", "host", id] if id_ok(id) => {
            let id = (*id).to_owned();
            pick(if get {
                Some(Endpoint::Host(id))
            } else if delete {
                Some(Endpoint::Offboard(id))
            } else {
                None
            })
        }
        ["certmgmt", "host", id, "auditlogs"] if id_ok(id) => {
            pick(get.then(|| Endpoint::AuditLogs((*id).to_owned())))
        }
        ["certmgmt", "host", id, "alerts"] if id_ok(id) => {
            pick(get.then(|| Endpoint::HostAlerts((*id).to_owned())))
        }
        ["certmgmt", "email_lists"] => pick(if get {
            Some(Endpoint::EmailLists)
        } else if post {
            Some(Endpoint::CreateEmailList)
        } else {
            None
        }),
        ["certmgmt", "email_lists", id] if id_ok(id) => {
            let id = (*id).to_owned();
            pick(if get {
                Some(Endpoint::EmailList(id))
            } else if put {
                Some(Endpoint::UpdateEmailList(id))
            } else if delete {
                Some(Endpoint::DeleteEmailList(id))
            } else {
                None
            })
        }
        ["certmgmt", "alert_configs"] => pick(get.then_some(Endpoint::AlertConfigs)),
        ["certmgmt", "alert_configs", level] if id_ok(level) => {
            let level = (*level).to_owned();
            pick(if get {
                Some(Endpoint::AlertConfig(level))
            } else if put {
                Some(Endpoint::PutAlertConfig(level))
            } else {
                None
            })
        }
        ["certmgmt", "alert_configs", level, "alerts"] if id_ok(level) => {
            pick(get.then(|| Endpoint::LevelAlerts((*level).to_owned())))
        }
        ["certmgmt", "node_alert_configs"] => pick(if get {
            Some(Endpoint::NodeAlertConfig)
        } else if put {
            Some(Endpoint::PutNodeAlertConfig)
        } else {
            None
        }),
        ["certmgmt", "node_alert_configs", "alerts"] => pick(get.then_some(Endpoint::NodeAlerts)),
        ["certagent", "host", id, "certificates"] if id_ok(id) => {
            pick(put.then(|| Endpoint::AgentReport((*id).to_owned())))
        }
        _ => Err(NoRoute::NotFound),
    }
}

/// A request's parts the handlers need.
pub struct Call<'a> {
    pub headers: &'a HeaderMap,
    pub query: &'a str,
    pub body: &'a [u8],
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// A successful answer.
#[derive(Debug)]
pub enum Reply {
    /// A JSON body.
    Json(StatusCode, Value),
    /// No body.
    Empty(StatusCode),
    /// The `modules` download (204 without a body, or 200 with an empty zip).
    Module,
}

/// An error answer: `{"message": "..."}`.
// Inferred (spec §6 "Errors"): 000 documents no error bodies; we answer a Flask-RESTful-style
// `{"message": ...}` (the service is Python, §6 "Formats").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 400.
    BadRequest(String),
    /// 401; `basic` adds `WWW-Authenticate: Basic`.
    Unauthorized {
        /// The message.
        message: String,
        /// Whether the endpoint takes Basic credentials.
        basic: bool,
    },
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 413.
    PayloadTooLarge,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::BadRequest(message) | Self::NotFound(message) | Self::Unauthorized { message, .. } => {
                message.clone()
            }
            Self::MethodNotAllowed => "The method is not allowed for the requested URL.".to_owned(),
            Self::PayloadTooLarge => "The request body is too large.".to_owned(),
        }
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// Checks HTTP Basic credentials.
pub fn check_basic(headers: &HeaderMap, username: &str, password: &str) -> Result<(), ApiError> {
    let refused = |message: &str| ApiError::Unauthorized {
        message: message.to_owned(),
        basic: true,
    };
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| refused("Authentication required"))?;
    let (scheme, encoded) = value
        .split_once(' ')
        .ok_or_else(|| refused("Basic authentication required"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(refused("Basic authentication required"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| refused("Malformed Basic credentials"))?;
    match decoded.split_once(':') {
        Some((user, pass)) if user == username && pass == password => Ok(()),
        _ => Err(refused("Invalid username or password")),
    }
}

/// Answers an authenticated request.
pub fn dispatch(shared: &Shared, endpoint: &Endpoint, call: &Call<'_>) -> Result<Reply, ApiError> {
    match endpoint {
        Endpoint::Status => Ok(status(shared, call)),
        Endpoint::Modules => modules(call),
        Endpoint::Metrics => Ok(metrics(shared)),
        Endpoint::Onboard => onboard(shared, call),
        Endpoint::Host(id) => {
            let store = shared.store();
            let host = store.hosts.get(id).ok_or_else(|| unknown_host(id))?;
            Ok(Reply::Json(StatusCode::OK, host.to_json()))
        }
        Endpoint::Offboard(id) => offboard(shared, id),
        Endpoint::AuditLogs(id) => audit_logs(shared, id, call),
        Endpoint::HostAlerts(id) => host_alerts(shared, id, call),
        Endpoint::EmailLists => {
            let store = shared.store();
            // Inferred (spec §6.3): 000 shows one object; we answer an array of every list.
            let lists: Vec<Value> = store
                .email_lists
                .values()
                .map(super::store::EmailListEntry::to_json)
                .collect();
            Ok(Reply::Json(StatusCode::OK, Value::Array(lists)))
        }
        Endpoint::CreateEmailList => create_email_list(shared, call),
        Endpoint::EmailList(id) => {
            let id = email_list_id(id)?;
            let store = shared.store();
            let list = store.email_lists.get(&id).ok_or_else(|| unknown_list(id))?;
            Ok(Reply::Json(StatusCode::OK, list.to_json()))
        }
        Endpoint::UpdateEmailList(id) => update_email_list(shared, id, call),
        Endpoint::DeleteEmailList(id) => {
            let id = email_list_id(id)?;
            let affected = shared
                .store()
                .delete_email_list(id)
                .ok_or_else(|| unknown_list(id))?;
            let criteria: Vec<Value> = affected.into_iter().map(|url| json!({"url": url})).collect();
            Ok(Reply::Json(
                StatusCode::OK,
                json!({"affected_criteria": criteria}),
            ))
        }
        Endpoint::AlertConfigs => {
            let store = shared.store();
            let all: Map<String, Value> = store
                .levels
                .iter()
                .map(|(level, settings)| (level.as_str().to_owned(), level_json(settings)))
                .collect();
            Ok(Reply::Json(StatusCode::OK, Value::Object(all)))
        }
        Endpoint::AlertConfig(level) => {
            let level = level_of(level)?;
            let store = shared.store();
            let settings = store
                .levels
                .get(&level)
                .ok_or_else(|| unknown_level(level.as_str()))?;
            Ok(Reply::Json(StatusCode::OK, level_json(settings)))
        }
        Endpoint::PutAlertConfig(level) => put_alert_config(shared, level, call),
        Endpoint::LevelAlerts(level) => {
            let level = level_of(level)?;
            let (from, to) = alert_range(call)?;
            let store = shared.store();
            let alerts: Vec<Value> = store
                .alerts
                .iter()
                .filter(|alert| alert.kind == AlertKind::Certificate && alert.level == Some(level))
                .filter(|alert| in_range(alert.date(), from, to))
                .map(super::store::SimAlert::to_json)
                .collect();
            Ok(Reply::Json(StatusCode::OK, json!({"alerts": alerts})))
        }
        Endpoint::NodeAlertConfig => {
            let store = shared.store();
            Ok(Reply::Json(StatusCode::OK, node_json(&store.node)))
        }
        Endpoint::PutNodeAlertConfig => put_node_alert_config(shared, call),
        Endpoint::NodeAlerts => {
            let (from, to) = alert_range(call)?;
            let store = shared.store();
            let alerts: Vec<Value> = store
                .alerts
                .iter()
                .filter(|alert| alert.kind == AlertKind::Node)
                .filter(|alert| in_range(alert.date(), from, to))
                .map(super::store::SimAlert::to_json)
                .collect();
            Ok(Reply::Json(StatusCode::OK, json!({"alerts": alerts})))
        }
        Endpoint::AgentReport(id) => agent_report(shared, id, call),
    }
}

// ---------------------------------------------------------------------------------------------
// §6.1 Service
// ---------------------------------------------------------------------------------------------

fn status(shared: &Shared, call: &Call<'_>) -> Reply {
    // Inferred (spec §6.1): only `true` (any case) asks for detail; anything else is the default.
    let detail = call
        .param("detail")
        .is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let config = &shared.config;
    let store = shared.store();
    let now = store.now();
    let nodes: Vec<Value> = config
        .cluster_nodes
        .iter()
        .enumerate()
        .map(|(index, fqdn)| json!({"primary": index == 0, "host_fqdn": fqdn}))
        .collect();
    let mut body = json!({
        "url": "certmgmt/status",
        "description": "CertMgmt Service Status Snapshot",
        "version": config.version,
        "build-no": config.build_no,
        "status": config.service_status,
        // Inferred (spec §6.1): "message if the service fails"; empty while it does not.
        "status_data": config.status_data,
        "server_time": isoformat(now),
        "up_since": isoformat(store.started),
        "up_time": super::store::python_timedelta(now.duration_since(store.started)),
        "db_status": config.db_status,
        "cluster": {"nodes": nodes},
        "onboard_count": store.hosts.len(),
    });
    if detail {
        let hosts: Vec<Value> = store
            .hosts
            .values()
            .map(|host| {
                json!({
                    "url": format!("certmgmt/host/{}", host.id),
                    "host_id": host.id,
                    "hostname": host.hostname,
                    "last_contact_time": isoformat(host.last_contact_time),
                })
            })
            .collect();
        body["managed_hosts"] = Value::Array(hosts);
    }
    Reply::Json(StatusCode::OK, body)
}

fn modules(call: &Call<'_>) -> Result<Reply, ApiError> {
    let os = call.param("OS").ok_or_else(|| bad("OS is required"))?;
    if !matches!(os.as_str(), "win" | "vos") {
        return Err(bad(format!("OS must be win or vos, not {os:?}")));
    }
    let module = call.param("module").ok_or_else(|| bad("module is required"))?;
    match module.as_str() {
        "discovery" => {}
        "certfinder" | "upload" => {
            for name in ["Component", "Version"] {
                if call.param(name).is_none_or(|value| value.is_empty()) {
                    return Err(bad(format!("{name} is required for module={module}")));
                }
            }
        }
        other => {
            return Err(bad(format!(
                "module must be discovery, certfinder or upload, not {other:?}"
            )));
        }
    }
    Ok(Reply::Module)
}

fn metrics(shared: &Shared) -> Reply {
    let store = shared.store();
    let datetime = |at: Option<Timestamp>| at.map_or(Value::Null, |at| Value::String(isoformat(at)));
    // Inferred (spec §6.1): 000 names no metric ids; these three use its units and statistics.
    Reply::Json(
        StatusCode::OK,
        json!({
            "service_start": {"desc": "Service start time", "unit": "datetime",
                              "value": isoformat(store.started), "statistics": "VALUE"},
            "last_agent_report": {"desc": "Last agent certificate report", "unit": "datetime",
                                  "value": datetime(store.last_agent_report), "statistics": "VALUE"},
            "agent_reports": {"desc": "Agent certificate reports processed", "unit": "ms",
                              "value": store.agent_reports, "statistics": "COUNT"},
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// §6.2 Hosts and audit
// ---------------------------------------------------------------------------------------------

fn unknown_host(id: &str) -> ApiError {
    ApiError::NotFound(format!("Host {id} not found"))
}

fn onboard(shared: &Shared, call: &Call<'_>) -> Result<Reply, ApiError> {
    let body = json_body(call.body)?;
    let fields = object(&body, "the body")?;
    let hostname = required_string(fields, "hostname")?;
    let server_type = required_string(fields, "server_type")?;
    // Inferred (spec §6.2): the server_type values are undocumented; any non-empty string is
    // accepted, and an empty hostname or server_type is refused.
    if hostname.is_empty() || server_type.is_empty() {
        return Err(bad("hostname and server_type must not be empty"));
    }
    let mut store = shared.store();
    // Inferred (spec §6.2): "already exists" is by exact hostname; the 208 answer is the
    // existing host unchanged (same id and secret_key).
    if let Some(existing) = store.hosts.values().find(|host| host.hostname == hostname) {
        return Ok(Reply::Json(StatusCode::ALREADY_REPORTED, existing.to_json()));
    }
    let now = store.now();
    let host = Host {
        id: new_host_id(),
        hostname: hostname.to_owned(),
        server_type: server_type.to_owned(),
        onboarding_time: now,
        secret_key: new_secret_key(),
        old_secret_key: None,
        // Inferred (spec §6.2): the key is created at onboarding, so secret_update_time and
        // last_contact_time start as onboarding_time (000 renders both with isoformat(), never
        // null).
        secret_update_time: now,
        last_contact_time: now,
        certificates: Vec::new(),
        reports: 0,
    };
    let body = host.to_json();
    let id = host.id.clone();
    store.known_hosts.insert(id.clone());
    store.hosts.insert(id.clone(), host);
    store.record_audit(
        &id,
        "HOST_ONBOARDED",
        format!("Host {hostname} ({server_type}) onboarded"),
    );
    tracing::info!(host_id = %id, hostname, "CertMgmt host onboarded");
    Ok(Reply::Json(StatusCode::CREATED, body))
}

/// `DELETE /certmgmt/host/<id>`.
// Inferred (spec §6.2): offboarding forgets the host's keys and inventory; its audit log and
// generated alerts stay (they are history), and onboarding the hostname again creates a new host.
fn offboard(shared: &Shared, id: &str) -> Result<Reply, ApiError> {
    let mut store = shared.store();
    let host = store.hosts.remove(id).ok_or_else(|| unknown_host(id))?;
    store.record_audit(
        id,
        "HOST_OFFBOARDED",
        format!("Host {} offboarded", host.hostname),
    );
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

fn audit_logs(shared: &Shared, id: &str, call: &Call<'_>) -> Result<Reply, ApiError> {
    // Inferred (spec §6.2): both dates are optional and inclusive; the logs of an offboarded host
    // stay readable (its offboarding is the last entry).
    let from = call
        .param("from")
        .map(|text| audit_date(&text, "from"))
        .transpose()?;
    let to = call.param("to").map(|text| audit_date(&text, "to")).transpose()?;
    let store = shared.store();
    if !store.known_hosts.contains(id) {
        return Err(unknown_host(id));
    }
    let entries: Vec<Value> = store
        .audit
        .iter()
        .filter(|entry| entry.host_id == id)
        .filter(|entry| in_range(entry.at.map(|at| at.to_zoned(TimeZone::UTC).date()), from, to))
        .map(|entry| {
            json!({
                "id": entry.id,
                "datetime": entry.datetime,
                "host_id": entry.host_id,
                "activity": entry.activity,
                "details": entry.details,
            })
        })
        .collect();
    Ok(Reply::Json(
        StatusCode::OK,
        json!({"url": format!("certmgmt/host/{id}/auditlogs"), "audit_data": entries}),
    ))
}

fn host_alerts(shared: &Shared, id: &str, call: &Call<'_>) -> Result<Reply, ApiError> {
    let (from, to) = alert_range(call)?;
    let kind = match call.param("type").as_deref() {
        None | Some("") => None,
        Some("certificate") => Some(AlertKind::Certificate),
        Some("node") => Some(AlertKind::Node),
        Some(other) => return Err(bad(format!("type must be certificate or node, not {other:?}"))),
    };
    let level = match call.param("level").as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            Level::parse(text)
                .ok_or_else(|| bad(format!("level must be INFO, WARN, HIGH or ERROR, not {text:?}")))?,
        ),
    };
    let store = shared.store();
    if !store.known_hosts.contains(id) {
        return Err(unknown_host(id));
    }
    // Inferred (spec §6.6): a level filter keeps only certificate alerts of that level (node
    // alerts have none).
    let alerts: Vec<Value> = store
        .alerts
        .iter()
        .filter(|alert| alert.host_id == id)
        .filter(|alert| kind.is_none_or(|kind| alert.kind == kind))
        .filter(|alert| level.is_none_or(|level| alert.level == Some(level)))
        .filter(|alert| in_range(alert.date(), from, to))
        .map(super::store::SimAlert::to_host_json)
        .collect();
    Ok(Reply::Json(StatusCode::OK, json!({"alerts": alerts})))
}

// ---------------------------------------------------------------------------------------------
// §6.3 Email lists
// ---------------------------------------------------------------------------------------------

fn unknown_list(id: i64) -> ApiError {
    ApiError::NotFound(format!("Email list {id} not found"))
}

/// A path's email list id; not an integer is an unknown list.
fn email_list_id(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("Email list {text} not found")))
}

/// `to`/`cc`: an array of addresses. `to` must not be empty; `cc` may (000: "Empty list allowed").
// Inferred (spec §6.3): an address is checked to be `local@domain` (one `@`, both parts
// non-empty, no whitespace).
fn addresses(fields: &Map<String, Value>, name: &str, may_be_empty: bool) -> Result<Vec<String>, ApiError> {
    let value = fields
        .get(name)
        .ok_or_else(|| bad(format!("{name} is required")))?;
    let items = value
        .as_array()
        .ok_or_else(|| bad(format!("{name} must be an array of email addresses")))?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let address = item
            .as_str()
            .ok_or_else(|| bad(format!("{name} must be an array of email addresses")))?;
        let valid = match address.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !address.chars().any(char::is_whitespace)
            }
            None => false,
        };
        if !valid {
            return Err(bad(format!("{name}: {address:?} is not an email address")));
        }
        out.push(address.to_owned());
    }
    if out.is_empty() && !may_be_empty {
        return Err(bad(format!("{name} must not be empty")));
    }
    Ok(out)
}

fn create_email_list(shared: &Shared, call: &Call<'_>) -> Result<Reply, ApiError> {
    let body = json_body(call.body)?;
    let fields = object(&body, "the body")?;
    let name = required_string(fields, "email_list_name")?;
    if name.is_empty() {
        return Err(bad("email_list_name must not be empty"));
    }
    let to = addresses(fields, "to", false)?;
    // Inferred (spec §6.3): `cc` is optional on create (absent: empty).
    let cc = if fields.contains_key("cc") {
        addresses(fields, "cc", true)?
    } else {
        Vec::new()
    };
    let mut store = shared.store();
    let list = store.create_email_list(name.to_owned(), to, cc);
    Ok(Reply::Json(StatusCode::CREATED, list.to_json()))
}

fn update_email_list(shared: &Shared, id: &str, call: &Call<'_>) -> Result<Reply, ApiError> {
    let id = email_list_id(id)?;
    let body = json_body(call.body)?;
    let fields = object(&body, "the body")?;
    // Inferred (spec §6.3): the optional `email_list_id` must name the list in the path; the
    // optional `email_list_name` (the create body's field) renames the list; `url` is ignored;
    // `to` and `cc` are both required (the PUT replaces the recipients).
    if let Some(value) = fields.get("email_list_id")
        && value.as_i64() != Some(id)
    {
        return Err(bad(format!(
            "email_list_id {value} does not match the path ({id})"
        )));
    }
    let name = match fields.get("email_list_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if !name.is_empty() => Some(name.clone()),
        Some(_) => return Err(bad("email_list_name must be a non-empty string")),
    };
    let to = addresses(fields, "to", false)?;
    let cc = addresses(fields, "cc", true)?;
    let mut store = shared.store();
    let list = store.email_lists.get_mut(&id).ok_or_else(|| unknown_list(id))?;
    list.to = to;
    list.cc = cc;
    if let Some(name) = name {
        list.email_list_name = name;
    }
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------------------------------
// §6.4, §6.5 Alert configuration
// ---------------------------------------------------------------------------------------------

fn unknown_level(text: &str) -> ApiError {
    ApiError::NotFound(format!("Alert level {text} not found"))
}

fn level_of(text: &str) -> Result<Level, ApiError> {
    Level::parse(text).ok_or_else(|| unknown_level(text))
}

fn level_json(settings: &LevelSettings) -> Value {
    json!({
        "enabled": settings.enabled,
        "email_list_ids": settings.email_list_ids,
        "remaining_days": settings.remaining_days,
    })
}

fn node_json(settings: &NodeSettings) -> Value {
    json!({
        "enabled": settings.enabled,
        "email_list_ids": settings.email_list_ids,
        "max_days_checkin_delay": settings.max_days_checkin_delay,
    })
}

/// `email_list_ids`: integers naming existing lists.
// Inferred (spec §6.4, §6.5): an id naming no list is refused with 400, as is a repeated id.
fn list_ids(fields: &Map<String, Value>, known: impl Fn(i64) -> bool) -> Result<Vec<i64>, ApiError> {
    let value = fields
        .get("email_list_ids")
        .ok_or_else(|| bad("email_list_ids is required"))?;
    let items = value
        .as_array()
        .ok_or_else(|| bad("email_list_ids must be an array of integers"))?;
    let mut ids: Vec<i64> = Vec::with_capacity(items.len());
    for item in items {
        let id = item
            .as_i64()
            .ok_or_else(|| bad("email_list_ids must be an array of integers"))?;
        if !known(id) {
            return Err(bad(format!("email list {id} does not exist")));
        }
        if ids.contains(&id) {
            return Err(bad(format!("email list {id} is listed twice")));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// `PUT /certmgmt/alert_configs/<LEVEL>`: all three fields required, as 000's body lists them.
fn put_alert_config(shared: &Shared, level: &str, call: &Call<'_>) -> Result<Reply, ApiError> {
    let level = level_of(level)?;
    let body = json_body(call.body)?;
    let fields = object(&body, "the body")?;
    let enabled = required_bool(fields, "enabled")?;
    let remaining_days = required_integer(fields, "remaining_days")?;
    // Inferred (spec §6.4): remaining_days is a count of days, so it cannot be negative.
    if remaining_days < 0 {
        return Err(bad("remaining_days must not be negative"));
    }
    let mut store = shared.store();
    let email_list_ids = list_ids(fields, |id| store.email_lists.contains_key(&id))?;
    store.levels.insert(
        level,
        LevelSettings {
            enabled,
            email_list_ids,
            remaining_days,
        },
    );
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

fn put_node_alert_config(shared: &Shared, call: &Call<'_>) -> Result<Reply, ApiError> {
    let body = json_body(call.body)?;
    let fields = object(&body, "the body")?;
    let enabled = required_bool(fields, "enabled")?;
    let max_days_checkin_delay = required_integer(fields, "max_days_checkin_delay")?;
    // Inferred (spec §6.5): at least one day (zero would flag every host at once).
    if max_days_checkin_delay < 1 {
        return Err(bad("max_days_checkin_delay must be at least 1"));
    }
    let mut store = shared.store();
    let email_list_ids = list_ids(fields, |id| store.email_lists.contains_key(&id))?;
    store.node = NodeSettings {
        enabled,
        email_list_ids,
        max_days_checkin_delay,
    };
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------------------------------
// §6.7 Agent certificate report
// ---------------------------------------------------------------------------------------------

const STRING_FIELDS: [&str; 9] = [
    "service_name",
    "cert_sn",
    "cert_type",
    "cert_issuer",
    "cert_subject",
    "leaf_cert_cn",
    "leaf_cert_sn",
    "cert_cn",
    "cert_path",
];

const DATE_FIELDS: [&str; 3] = ["cert_not_before", "cert_not_after", "cert_modified_date"];

fn agent_report(shared: &Shared, id: &str, call: &Call<'_>) -> Result<Reply, ApiError> {
    let refused = |message: &str| ApiError::Unauthorized {
        message: message.to_owned(),
        basic: false,
    };
    let presented = call
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("secret_key="))
        .ok_or_else(|| refused("Authorization: secret_key=<secret_key> required"))?
        .to_owned();
    {
        let store = shared.store();
        // Inferred (spec §6.7): an unknown host is 404; a wrong key for a known host 401. Only the
        // current secret_key is accepted (not old_secret_key), so agents must follow a rotation.
        let host = store.hosts.get(id).ok_or_else(|| unknown_host(id))?;
        if !constant_time_eq(presented.as_bytes(), host.secret_key.as_bytes()) {
            return Err(refused("Invalid secret_key"));
        }
    }
    let body = json_body(call.body)?;
    // Inferred (spec §6.7): the body is validated whole before anything is stored: every field
    // present with its type, cert_type one of Root/Intermediate/Public, the three dates
    // YYYYMMDDHHMMSSZ; a failure is 400 naming the element and field. Unknown fields are ignored.
    let items = body
        .as_array()
        .ok_or_else(|| bad("the body must be a JSON array of certificates"))?;
    let mut inventory = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        inventory.push(reported(index, item)?);
    }
    let count = inventory.len();
    let mut store = shared.store();
    let now = store.now();
    let host = store.hosts.get_mut(id).ok_or_else(|| unknown_host(id))?;
    host.certificates = inventory;
    host.last_contact_time = now;
    host.reports += 1;
    store.agent_reports += 1;
    store.last_agent_report = Some(now);
    store.record_audit(
        id,
        "CERTIFICATES_REPORTED",
        format!("{count} certificates reported"),
    );
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

fn reported(index: usize, item: &Value) -> Result<Inventoried, ApiError> {
    let at = |field: &str| format!("certificates[{index}].{field}");
    let fields = item
        .as_object()
        .ok_or_else(|| bad(format!("certificates[{index}] must be an object")))?;
    let text = |field: &str| -> Result<String, ApiError> {
        match fields.get(field) {
            None => Err(bad(format!("{} is required", at(field)))),
            Some(Value::String(value)) => Ok(value.clone()),
            Some(_) => Err(bad(format!("{} must be a string", at(field)))),
        }
    };
    for field in STRING_FIELDS.iter().chain(&DATE_FIELDS) {
        text(field)?;
    }
    let cert_type = text("cert_type")?;
    if !matches!(cert_type.as_str(), "Root" | "Intermediate" | "Public") {
        return Err(bad(format!(
            "{} must be Root, Intermediate or Public, not {cert_type:?}",
            at("cert_type")
        )));
    }
    let sans = match fields.get("cert_sans") {
        None => return Err(bad(format!("{} is required", at("cert_sans")))),
        Some(Value::Array(values)) => values
            .iter()
            .map(|value| value.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(format!("{} must be an array of strings", at("cert_sans"))))?,
        Some(_) => return Err(bad(format!("{} must be an array of strings", at("cert_sans")))),
    };
    let mut dates = [Timestamp::UNIX_EPOCH; 3];
    for (slot, field) in dates.iter_mut().zip(DATE_FIELDS) {
        let value = text(field)?;
        *slot = agent_time(&value)
            .ok_or_else(|| bad(format!("{}: {value:?} is not YYYYMMDDHHMMSSZ", at(field))))?;
    }
    let certificate = ReportedCertificate {
        service_name: text("service_name")?,
        cert_sn: text("cert_sn")?,
        cert_type,
        cert_issuer: text("cert_issuer")?,
        cert_subject: text("cert_subject")?,
        leaf_cert_cn: text("leaf_cert_cn")?,
        leaf_cert_sn: text("leaf_cert_sn")?,
        cert_cn: text("cert_cn")?,
        cert_sans: sans,
        cert_not_before: text("cert_not_before")?,
        cert_not_after: text("cert_not_after")?,
        cert_modified_date: text("cert_modified_date")?,
        cert_path: text("cert_path")?,
    };
    Ok(Inventoried {
        certificate,
        not_after: dates[1],
    })
}

/// Compares without an early exit, so response timing does not reveal a key's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------------------------

/// `YYYYMMDDHHMMSSZ`: fourteen digits of a real UTC time, then `Z`.
pub fn agent_time(text: &str) -> Option<Timestamp> {
    let digits = text.strip_suffix('Z')?;
    if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part = |from: usize, to: usize| digits.get(from..to)?.parse::<i16>().ok();
    let small = |from: usize, to: usize| part(from, to).and_then(|value| i8::try_from(value).ok());
    jiff::civil::DateTime::new(
        part(0, 4)?,
        small(4, 6)?,
        small(6, 8)?,
        small(8, 10)?,
        small(10, 12)?,
        small(12, 14)?,
        0,
    )
    .ok()?
    .to_zoned(TimeZone::UTC)
    .ok()
    .map(|zoned| zoned.timestamp())
}

/// A `YYYYMMDD` alert query date.
fn compact_date(text: &str) -> Option<Date> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part = |from: usize, to: usize| text.get(from..to)?.parse::<i16>().ok();
    Date::new(
        part(0, 4)?,
        i8::try_from(part(4, 6)?).ok()?,
        i8::try_from(part(6, 8)?).ok()?,
    )
    .ok()
}

/// A `YYYY-MM-DD` audit query date.
fn audit_date(text: &str, name: &str) -> Result<Date, ApiError> {
    let parsed = (text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-')
        .then(|| compact_date(&text.replace('-', "")))
        .flatten();
    parsed.ok_or_else(|| bad(format!("{name}: {text:?} is not YYYY-MM-DD")))
}

/// `from_dt` and `to_dt` (`YYYYMMDD`), each optional and inclusive.
// Inferred (spec §6.6): whether the filters are inclusive or optional is undocumented; both are
// inclusive, and a missing one leaves that end open. A malformed one is 400.
fn alert_range(call: &Call<'_>) -> Result<(Option<Date>, Option<Date>), ApiError> {
    let parse = |name: &str| {
        call.param(name)
            .map(|text| compact_date(&text).ok_or_else(|| bad(format!("{name}: {text:?} is not YYYYMMDD"))))
            .transpose()
    };
    Ok((parse("from_dt")?, parse("to_dt")?))
}

fn in_range(date: Option<Date>, from: Option<Date>, to: Option<Date>) -> bool {
    let Some(date) = date else {
        return false;
    };
    from.is_none_or(|from| date >= from) && to.is_none_or(|to| date <= to)
}

// ---------------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------------

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("the body is not valid JSON: {e}")))
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ApiError> {
    value
        .as_object()
        .ok_or_else(|| bad(format!("{what} must be a JSON object")))
}

fn required_string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(bad(format!("{name} is required"))),
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(bad(format!("{name} must be a string"))),
    }
}

fn required_bool(fields: &Map<String, Value>, name: &str) -> Result<bool, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(bad(format!("{name} is required"))),
        Some(Value::Bool(value)) => Ok(*value),
        Some(_) => Err(bad(format!("{name} must be true or false"))),
    }
}

fn required_integer(fields: &Map<String, Value>, name: &str) -> Result<i64, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(bad(format!("{name} is required"))),
        Some(value) => value
            .as_i64()
            .ok_or_else(|| bad(format!("{name} must be an integer"))),
    }
}

/// A fresh host id: a random UUID (version 4) in its hyphenated form.
// Inferred (spec §6.2): 000 quotes the id ("<node.host_id>") without showing one; §6.6's inferred
// example "7f3c..." suggests a hex token; we use a UUID string.
fn new_host_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = crate::sim::hex_lower(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A fresh `secret_key`: 32 random bytes, lower-case hex.
// Inferred (spec §6.2): the key's format is undocumented; 64 hex characters (Python's
// `secrets.token_hex(32)`) fit an HTTP header as they are.
pub fn new_secret_key() -> String {
    crate::sim::hex_lower(&rand::random::<[u8; 32]>())
}
