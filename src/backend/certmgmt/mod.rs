//! A client of the Certificate Manager Service ("CertMgmt", Cloud-Connect), written from
//! `shared/spec/scm-discovery-alerts.md` §6: service status, hosts (onboarding, offboarding,
//! audit), email lists, the four certificate-expiry alert levels, the host-unavailability
//! configuration, the generated alerts, and the agent certificate report.
//!
//! It is not a CA backend (nothing is issued), so it stands alone next to them, reusing their
//! HTTP building blocks: bodies read up to [`MAX_RESPONSE_BYTES`], no redirects (a redirect would
//! carry the `Authorization` header elsewhere), ids percent-encoded into paths, decorrelated
//! jitter retries of idempotent calls, and a `caBundle` of extra trusted roots. It logs endpoint
//! names and statuses, never headers or bodies: the Basic credentials and the agents'
//! `secret_key`s are marked sensitive and held in [`SecretString`]s.
//!
//! Authentication (§6, "Auth"): HTTP Basic on `/certmgmt/...`, none on `/certmgmt/status` and
//! `/certmgmt/modules`, and `Authorization: secret_key=<secret_key>` on `/certagent/...`.
//!
//! Retries: reads, PUTs and DELETEs are idempotent and retried on transport errors, 5xx and 429.
//! Onboarding (`POST /certmgmt/host`) is idempotent too: the service keys hosts by `hostname`
//! and answers a repeated onboarding with 208 and the existing host, so a retry after a lost
//! response yields the same host (reported as not created). Creating an email list is the one
//! call sent once: a repeat would create a second list with the same name.

mod model;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use jiff::civil::Date;
use reqwest::{
    Method, StatusCode,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue},
};
use serde::Serialize;

pub use self::model::{
    AffectedCriterion, AgentCertType, AgentCertificate, AlertLevel, AlertType, AuditRecord, Cluster,
    ClusterNode, Criterion, EmailList, GeneratedAlert, HostRecord, LevelConfig, ManagedHost, Metric,
    ModuleKind, ModuleOs, ModuleRequest, NewEmailList, NodeAlertConfig, ServiceStatus, format_agent_time,
    parse_agent_time, parse_isoformat,
};
use self::model::{
    AlertsBody, AuditLogs, DeleteEmailListBody, EmailListsBody, OnboardBody, UpdateEmailListBody,
};
use super::{
    http::{self, BodyError, MAX_RESPONSE_BYTES},
    retry::{Backoff, Idempotency, RetryPolicy, parse_retry_after},
};
use crate::pki::credentials::SecretString;

/// Errors by what the caller must do about them. Messages never contain credentials or bodies
/// beyond the service's own short error text.
#[derive(Debug, thiserror::Error)]
pub enum CertMgmtError {
    /// 401 or 403: the Basic credentials or the agent's `secret_key` were refused.
    #[error("CertMgmt rejected the credentials: {message}")]
    Unauthorized {
        /// What was refused.
        message: String,
    },
    /// 404: the host, email list or level does not exist.
    #[error("CertMgmt has no {what}")]
    NotFound {
        /// What was looked up.
        what: String,
    },
    /// Another 4xx: the request is wrong and stays wrong.
    #[error("CertMgmt rejected the request: {message}")]
    InvalidRequest {
        /// The HTTP status, when the service answered.
        status: Option<u16>,
        /// The service's message, or ours.
        message: String,
    },
    /// 429: the service (or a gateway in front of it) asks us to slow down.
    #[error("CertMgmt is rate limiting requests{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// How long to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// Unreachable, timed out, or 5xx; retrying later may help.
    #[error("CertMgmt is unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
    },
    /// An answer we cannot interpret (malformed body, unexpected status).
    #[error("CertMgmt sent a malformed response to {operation}: {message}")]
    MalformedResponse {
        /// Our operation.
        operation: &'static str,
        /// What was wrong (never the body).
        message: String,
    },
    /// The client cannot work as configured (bad URL, CA bundle or credentials, a redirect).
    #[error("CertMgmt configuration is invalid: {message}")]
    Configuration {
        /// What is wrong.
        message: String,
    },
}

impl CertMgmtError {
    /// A bounded PascalCase name of the error kind, for condition reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "Unauthorized",
            Self::NotFound { .. } => "NotFound",
            Self::InvalidRequest { .. } => "InvalidRequest",
            Self::RateLimited { .. } => "RateLimited",
            Self::Unavailable { .. } => "Unavailable",
            Self::MalformedResponse { .. } => "MalformedResponse",
            Self::Configuration { .. } => "InvalidConfiguration",
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Unavailable { .. } | Self::MalformedResponse { .. }
        )
    }

    /// The service's requested wait before the next call, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Names what a 404 was about.
    fn naming(self, what: impl FnOnce() -> String) -> Self {
        match self {
            Self::NotFound { .. } => Self::NotFound { what: what() },
            other => other,
        }
    }
}

/// Timeouts and retries of a [`CertMgmtClient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// TCP/TLS connect timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Whole-request timeout (default 30 s).
    pub request_timeout: Duration,
    /// Retry limits of idempotent calls.
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// How one call authenticates (§6, "Auth").
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// `/certmgmt/status`, `/certmgmt/modules`.
    None,
    /// Every other `/certmgmt/...` endpoint.
    Basic,
    /// `/certagent/...`: the host's `secret_key`.
    Agent(&'a SecretString),
}

/// A successful answer.
struct Reply {
    status: StatusCode,
    body: Bytes,
}

/// The CertMgmt client. Cloning is cheap (one connection pool).
#[derive(Clone)]
pub struct CertMgmtClient {
    http: reqwest::Client,
    /// `https://host:port`, without a trailing slash.
    base: Arc<str>,
    /// `Basic <base64(username:password)>`, marked sensitive.
    basic: HeaderValue,
    retry: RetryPolicy,
}

impl fmt::Debug for CertMgmtClient {
    // Hand-written so the credentials cannot reach a log line, whatever reqwest prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertMgmtClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl CertMgmtClient {
    /// A client of the service at `base_url` (`https://<cconecthostname>:8445`, §6 "Base URL")
    /// logging in as `username`, trusting the system roots plus the PEM `ca_bundle_pem`, with
    /// default timeouts and retries.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the client takes the password over so the caller keeps no copy; only its Basic \
                  header value, marked sensitive, is kept"
    )]
    pub fn new(
        base_url: &str,
        username: &str,
        password: SecretString,
        ca_bundle_pem: Option<&str>,
    ) -> Result<Self, CertMgmtError> {
        Self::with_options(
            base_url,
            username,
            &password,
            ca_bundle_pem,
            ClientOptions::default(),
        )
    }

    /// [`CertMgmtClient::new`] with explicit timeouts and retries.
    pub fn with_options(
        base_url: &str,
        username: &str,
        password: &SecretString,
        ca_bundle_pem: Option<&str>,
        options: ClientOptions,
    ) -> Result<Self, CertMgmtError> {
        // rustls needs a process-wide crypto provider; kube uses ring too. Installing twice is
        // harmless (the second attempt reports the first one is already there).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |message: String| CertMgmtError::Configuration { message };
        let base = base_url.trim_end_matches('/');
        if !base.starts_with("https://") {
            return Err(invalid(format!("url {base:?} must start with https://")));
        }
        reqwest::Url::parse(base).map_err(|e| invalid(format!("url {base:?} is not a URL: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("pki-operator/", env!("CARGO_PKG_VERSION")))
            .https_only(true)
            .redirect(http::no_redirects());
        if let Some(bundle) = ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(bundle.as_bytes())
                .map_err(|e| invalid(format!("caBundle is not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(invalid("caBundle holds no PEM certificate".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.into(),
            basic: basic_authorization(username, password)?,
            retry: options.retry,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    // -----------------------------------------------------------------------------------------
    // §6.1 Service
    // -----------------------------------------------------------------------------------------

    /// `GET /certmgmt/status?detail=<detail>` (no authentication); `detail` adds
    /// `managed_hosts`. `detail=false` is sent explicitly (the documented default).
    pub async fn status(&self, detail: bool) -> Result<ServiceStatus, CertMgmtError> {
        let query = [("detail", detail.to_string())];
        let reply = self.get("status", "/certmgmt/status", &query, Auth::None).await?;
        parse_json(&reply.body, "status")
    }

    /// `GET /certmgmt/modules` (no authentication): the client script zip. 000 documents 204
    /// next to a `script.zip` attachment, so an empty 200 or 204 answer yields no bytes.
    pub async fn download_module(&self, request: &ModuleRequest) -> Result<Bytes, CertMgmtError> {
        let reply = self
            .get("modules", "/certmgmt/modules", &request.query(), Auth::None)
            .await?;
        Ok(reply.body)
    }

    /// `GET /certmgmt/metrics`: metric id → metric.
    pub async fn metrics(&self) -> Result<BTreeMap<String, Metric>, CertMgmtError> {
        let reply = self.get("metrics", "/certmgmt/metrics", &[], Auth::Basic).await?;
        parse_json(&reply.body, "metrics")
    }

    // -----------------------------------------------------------------------------------------
    // §6.2 Hosts and audit
    // -----------------------------------------------------------------------------------------

    /// `POST /certmgmt/host`: onboards `hostname`. Returns the host and whether it was created
    /// (201) rather than already onboarded (208). Retried like a read (see the module docs), so
    /// after a lost response the host created by the first attempt comes back as not created.
    pub async fn onboard_host(
        &self,
        hostname: &str,
        server_type: &str,
    ) -> Result<(HostRecord, bool), CertMgmtError> {
        let body = OnboardBody {
            hostname,
            server_type,
        };
        let reply = self
            .call(
                "onboard",
                Method::POST,
                "/certmgmt/host",
                &[],
                Some(&body),
                Auth::Basic,
                Idempotency::Idempotent,
            )
            .await?;
        // Inferred (spec §6.2): any success other than 201 and 208 is not an onboarding answer.
        let created = match reply.status.as_u16() {
            201 => true,
            208 => false,
            other => {
                return Err(CertMgmtError::MalformedResponse {
                    operation: "onboard",
                    message: format!("HTTP {other}, expected 201 (created) or 208 (already exists)"),
                });
            }
        };
        Ok((parse_json(&reply.body, "onboard")?, created))
    }

    /// `GET /certmgmt/host/<host_id>`, secret fields included.
    pub async fn host(&self, host_id: &str) -> Result<HostRecord, CertMgmtError> {
        let path = format!("/certmgmt/host/{}", segment("host id", host_id)?);
        let reply = self
            .get("host", &path, &[], Auth::Basic)
            .await
            .map_err(|e| e.naming(|| format!("host {host_id:?}")))?;
        parse_json(&reply.body, "host")
    }

    /// `DELETE /certmgmt/host/<host_id>` (204). Retried, so a `NotFound` may also mean an
    /// earlier attempt already offboarded the host.
    pub async fn offboard_host(&self, host_id: &str) -> Result<(), CertMgmtError> {
        let path = format!("/certmgmt/host/{}", segment("host id", host_id)?);
        self.call(
            "offboard",
            Method::DELETE,
            &path,
            &[],
            None::<&()>,
            Auth::Basic,
            Idempotency::Idempotent,
        )
        .await
        .map_err(|e| e.naming(|| format!("host {host_id:?}")))?;
        Ok(())
    }

    /// `GET /certmgmt/host/<host_id>/auditlogs?from=YYYY-MM-DD&to=YYYY-MM-DD`.
    pub async fn audit_logs(
        &self,
        host_id: &str,
        from: Date,
        to: Date,
    ) -> Result<Vec<AuditRecord>, CertMgmtError> {
        let path = format!("/certmgmt/host/{}/auditlogs", segment("host id", host_id)?);
        let query = [("from", model::audit_date(from)), ("to", model::audit_date(to))];
        let reply = self
            .get("auditlogs", &path, &query, Auth::Basic)
            .await
            .map_err(|e| e.naming(|| format!("host {host_id:?}")))?;
        Ok(parse_json::<AuditLogs>(&reply.body, "auditlogs")?.audit_data)
    }

    // -----------------------------------------------------------------------------------------
    // §6.7 Agent certificate report
    // -----------------------------------------------------------------------------------------

    /// `PUT /certagent/host/<host_id>/certificates` with `Authorization: secret_key=<key>`: the
    /// host's whole certificate inventory, as a JSON array (204).
    pub async fn report_certificates(
        &self,
        host_id: &str,
        secret_key: &SecretString,
        certs: &[AgentCertificate],
    ) -> Result<(), CertMgmtError> {
        let path = format!("/certagent/host/{}/certificates", segment("host id", host_id)?);
        self.call(
            "report certificates",
            Method::PUT,
            &path,
            &[],
            Some(&certs),
            Auth::Agent(secret_key),
            Idempotency::Idempotent,
        )
        .await
        .map_err(|e| e.naming(|| format!("host {host_id:?}")))?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // §6.3 Email lists
    // -----------------------------------------------------------------------------------------

    /// `GET /certmgmt/email_lists`.
    pub async fn email_lists(&self) -> Result<Vec<EmailList>, CertMgmtError> {
        let reply = self
            .get("email lists", "/certmgmt/email_lists", &[], Auth::Basic)
            .await?;
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        Ok(parse_json::<EmailListsBody>(&reply.body, "email lists")?.into_vec())
    }

    /// `GET /certmgmt/email_lists/<id>`.
    pub async fn email_list(&self, id: i64) -> Result<EmailList, CertMgmtError> {
        let reply = self
            .get(
                "email list",
                &format!("/certmgmt/email_lists/{id}"),
                &[],
                Auth::Basic,
            )
            .await
            .map_err(|e| e.naming(|| format!("email list {id}")))?;
        parse_json(&reply.body, "email list")
    }

    /// `POST /certmgmt/email_lists` (201). Sent once: a repeat would create a second list.
    pub async fn create_email_list(&self, list: &NewEmailList) -> Result<EmailList, CertMgmtError> {
        let reply = self
            .call(
                "create email list",
                Method::POST,
                "/certmgmt/email_lists",
                &[],
                Some(list),
                Auth::Basic,
                Idempotency::Once,
            )
            .await?;
        let mut created: EmailList = parse_json(&reply.body, "create email list")?;
        // 000's create response has no `email_list_name`; the list has the name we sent.
        if created.email_list_name.is_none() {
            created.email_list_name = Some(list.email_list_name.clone());
        }
        Ok(created)
    }

    /// `PUT /certmgmt/email_lists/<id>` (204); `cc` may be empty.
    pub async fn update_email_list(&self, id: i64, list: &NewEmailList) -> Result<(), CertMgmtError> {
        let body = UpdateEmailListBody {
            email_list_id: id,
            email_list_name: &list.email_list_name,
            to: &list.to,
            cc: &list.cc,
        };
        self.call(
            "update email list",
            Method::PUT,
            &format!("/certmgmt/email_lists/{id}"),
            &[],
            Some(&body),
            Auth::Basic,
            Idempotency::Idempotent,
        )
        .await
        .map_err(|e| e.naming(|| format!("email list {id}")))?;
        Ok(())
    }

    /// `DELETE /certmgmt/email_lists/<id>` (200): the alert configurations that referenced the
    /// list (`affected_criteria`). Retried, so a `NotFound` may also mean an earlier attempt
    /// deleted the list (and its `affected_criteria` are lost).
    pub async fn delete_email_list(&self, id: i64) -> Result<Vec<AffectedCriterion>, CertMgmtError> {
        let reply = self
            .call(
                "delete email list",
                Method::DELETE,
                &format!("/certmgmt/email_lists/{id}"),
                &[],
                None::<&()>,
                Auth::Basic,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|e| e.naming(|| format!("email list {id}")))?;
        // Inferred (spec §6.3): 000 documents 200 with a body; an empty answer (say a 204) is
        // read as "no configuration referenced the list".
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        Ok(parse_json::<DeleteEmailListBody>(&reply.body, "delete email list")?.affected_criteria)
    }

    // -----------------------------------------------------------------------------------------
    // §6.4 Certificate-expiry alert configuration
    // -----------------------------------------------------------------------------------------

    /// `GET /certmgmt/alert_configs`: the configuration of every level the service returned.
    // Inferred (spec §6.4): a key that is not one of the four levels is ignored, not an error.
    pub async fn alert_configs(&self) -> Result<BTreeMap<AlertLevel, LevelConfig>, CertMgmtError> {
        let reply = self
            .get("alert configs", "/certmgmt/alert_configs", &[], Auth::Basic)
            .await?;
        let all: BTreeMap<String, serde_json::Value> = parse_json(&reply.body, "alert configs")?;
        let mut levels = BTreeMap::new();
        for (key, value) in all {
            let Ok(level) = key.parse::<AlertLevel>() else {
                continue;
            };
            let config = serde_json::from_value(value).map_err(|e| CertMgmtError::MalformedResponse {
                operation: "alert configs",
                message: format!("{level}: {e}"),
            })?;
            levels.insert(level, config);
        }
        Ok(levels)
    }

    /// `GET /certmgmt/alert_configs/<LEVEL>`.
    pub async fn alert_config(&self, level: AlertLevel) -> Result<LevelConfig, CertMgmtError> {
        let reply = self
            .get(
                "alert config",
                &format!("/certmgmt/alert_configs/{level}"),
                &[],
                Auth::Basic,
            )
            .await
            .map_err(|e| e.naming(|| format!("alert level {level}")))?;
        parse_json(&reply.body, "alert config")
    }

    /// `PUT /certmgmt/alert_configs/<LEVEL>` (204).
    pub async fn put_alert_config(
        &self,
        level: AlertLevel,
        config: &LevelConfig,
    ) -> Result<(), CertMgmtError> {
        self.call(
            "put alert config",
            Method::PUT,
            &format!("/certmgmt/alert_configs/{level}"),
            &[],
            Some(config),
            Auth::Basic,
            Idempotency::Idempotent,
        )
        .await
        .map_err(|e| e.naming(|| format!("alert level {level}")))?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // §6.5 Host-unavailability alert configuration
    // -----------------------------------------------------------------------------------------

    /// `GET /certmgmt/node_alert_configs`.
    pub async fn node_alert_config(&self) -> Result<NodeAlertConfig, CertMgmtError> {
        let reply = self
            .get(
                "node alert config",
                "/certmgmt/node_alert_configs",
                &[],
                Auth::Basic,
            )
            .await?;
        parse_json(&reply.body, "node alert config")
    }

    /// `PUT /certmgmt/node_alert_configs` (204).
    pub async fn put_node_alert_config(&self, config: &NodeAlertConfig) -> Result<(), CertMgmtError> {
        self.call(
            "put node alert config",
            Method::PUT,
            "/certmgmt/node_alert_configs",
            &[],
            Some(config),
            Auth::Basic,
            Idempotency::Idempotent,
        )
        .await?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // §6.6 Generated alerts
    // -----------------------------------------------------------------------------------------

    /// `GET /certmgmt/alert_configs/<LEVEL>/alerts?from_dt=YYYYMMDD&to_dt=YYYYMMDD`. The
    /// records carry no `type` or `level`; they are filled in (`certificate`, `level`).
    pub async fn level_alerts(
        &self,
        level: AlertLevel,
        from: Date,
        to: Date,
    ) -> Result<Vec<GeneratedAlert>, CertMgmtError> {
        let reply = self
            .get(
                "level alerts",
                &format!("/certmgmt/alert_configs/{level}/alerts"),
                &alert_query(from, to),
                Auth::Basic,
            )
            .await
            .map_err(|e| e.naming(|| format!("alert level {level}")))?;
        let mut alerts = parse_json::<AlertsBody>(&reply.body, "level alerts")?.alerts;
        for alert in &mut alerts {
            alert.type_.get_or_insert(AlertType::Certificate);
            alert.level.get_or_insert(level);
        }
        Ok(alerts)
    }

    /// `GET /certmgmt/node_alert_configs/alerts?from_dt=YYYYMMDD&to_dt=YYYYMMDD`. The records'
    /// `type` is filled in (`node`).
    pub async fn node_alerts(&self, from: Date, to: Date) -> Result<Vec<GeneratedAlert>, CertMgmtError> {
        let reply = self
            .get(
                "node alerts",
                "/certmgmt/node_alert_configs/alerts",
                &alert_query(from, to),
                Auth::Basic,
            )
            .await?;
        let mut alerts = parse_json::<AlertsBody>(&reply.body, "node alerts")?.alerts;
        for alert in &mut alerts {
            alert.type_.get_or_insert(AlertType::Node);
        }
        Ok(alerts)
    }

    /// `GET /certmgmt/host/<host_id>/alerts?from_dt&to_dt[&type][&level]`.
    pub async fn host_alerts(
        &self,
        host_id: &str,
        from: Date,
        to: Date,
        type_: Option<AlertType>,
        level: Option<AlertLevel>,
    ) -> Result<Vec<GeneratedAlert>, CertMgmtError> {
        let path = format!("/certmgmt/host/{}/alerts", segment("host id", host_id)?);
        let mut query = alert_query(from, to).to_vec();
        if let Some(type_) = type_ {
            query.push(("type", type_.as_str().to_owned()));
        }
        if let Some(level) = level {
            query.push(("level", level.as_str().to_owned()));
        }
        let reply = self
            .get("host alerts", &path, &query, Auth::Basic)
            .await
            .map_err(|e| e.naming(|| format!("host {host_id:?}")))?;
        Ok(parse_json::<AlertsBody>(&reply.body, "host alerts")?.alerts)
    }

    // -----------------------------------------------------------------------------------------
    // HTTP
    // -----------------------------------------------------------------------------------------

    async fn get(
        &self,
        endpoint: &'static str,
        path: &str,
        query: &[(&str, String)],
        auth: Auth<'_>,
    ) -> Result<Reply, CertMgmtError> {
        self.call(
            endpoint,
            Method::GET,
            path,
            query,
            None::<&()>,
            auth,
            Idempotency::Idempotent,
        )
        .await
    }

    /// Sends one call to `path`, repeating it only if it is idempotent. `endpoint` names the
    /// call in logs and errors.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private funnel for every endpoint; a parameter struct would only rename them"
    )]
    async fn call(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + Sync + ?Sized)>,
        auth: Auth<'_>,
        idempotency: Idempotency,
    ) -> Result<Reply, CertMgmtError> {
        let url = format!("{}{path}", self.base);
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CertMgmtError::InvalidRequest {
                status: None,
                message: format!("{endpoint}: cannot encode the body: {e}"),
            })?;
        let authorization = match auth {
            Auth::None => None,
            Auth::Basic => Some(self.basic.clone()),
            Auth::Agent(key) => Some(agent_authorization(key)?),
        };
        let mut backoff = Backoff::new(self.retry);
        loop {
            let attempt = backoff.attempt();
            // 000 lists both headers for every endpoint, bodiless ones included.
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .header(ACCEPT, HeaderValue::from_static("application/json"))
                .query(query);
            if let Some(authorization) = &authorization {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let retryable = idempotency == Idempotency::Idempotent && backoff.can_retry();
            let (error, retry_after) = match request.send().await {
                Err(error) => {
                    let classified = transport_error(endpoint, &error);
                    tracing::debug!(service = "certmgmt", endpoint, attempt, error = %error.without_url(), "request failed");
                    (classified, None)
                }
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(
                        service = "certmgmt",
                        endpoint,
                        attempt,
                        status = status.as_u16(),
                        "response"
                    );
                    if status.is_redirection() {
                        return Err(redirect_error(endpoint, status));
                    }
                    let headers = response.headers().clone();
                    let body = read_body(endpoint, response).await?;
                    if status.is_success() {
                        return Ok(Reply { status, body });
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let retry_after = parse_retry_after(&headers);
                        let error = CertMgmtError::RateLimited { retry_after };
                        if !(retryable && retry_after.is_none_or(|wait| backoff.may_wait(wait))) {
                            return Err(error);
                        }
                        (error, retry_after)
                    } else if status.is_server_error() {
                        (
                            CertMgmtError::Unavailable {
                                message: format!("{endpoint} answered HTTP {}", status.as_u16()),
                            },
                            None,
                        )
                    } else {
                        return Err(classify(endpoint, status, &body));
                    }
                }
            };
            if !retryable {
                return Err(error);
            }
            let wait = backoff.next_wait(retry_after);
            tracing::debug!(
                service = "certmgmt",
                endpoint,
                attempt,
                wait_ms = wait.as_millis(),
                "retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request that got no response: the service is unavailable (for a POST it may or may not have
/// acted on it).
fn transport_error(endpoint: &'static str, error: &reqwest::Error) -> CertMgmtError {
    let message = if error.is_timeout() {
        "request timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "the connection failed before a response arrived"
    };
    CertMgmtError::Unavailable {
        message: format!("{endpoint}: {message}"),
    }
}

/// A 3xx: the configured URL sends us elsewhere, which only the configuration can fix. The
/// target is not named (a `Location` may carry tokens).
fn redirect_error(endpoint: &'static str, status: StatusCode) -> CertMgmtError {
    CertMgmtError::Configuration {
        message: format!(
            "{endpoint}: the service answered HTTP {}, a redirect, which is not followed (it would send \
             the credentials elsewhere); set url to the service itself",
            status.as_u16()
        ),
    }
}

/// The body of a response, read up to [`MAX_RESPONSE_BYTES`].
async fn read_body(endpoint: &'static str, response: reqwest::Response) -> Result<Bytes, CertMgmtError> {
    http::read_body(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|error| match error {
            BodyError::TooLarge => CertMgmtError::MalformedResponse {
                operation: endpoint,
                message: format!(
                    "the response body exceeds the {} MiB limit; the read was aborted (check that url \
                     points at the CertMgmt service)",
                    MAX_RESPONSE_BYTES / (1024 * 1024)
                ),
            },
            BodyError::Transport(_) => CertMgmtError::Unavailable {
                message: format!("{endpoint}: the response body was cut off"),
            },
        })
}

/// Longest piece of a service error message kept in our error.
const MAX_MESSAGE_CHARS: usize = 300;

/// A 4xx other than 429 as our error. 000 documents no error bodies.
// Inferred (spec §6): errors are 401 for bad credentials and 404 for unknown ids (§6 "Errors");
// 403 is read as 401. A JSON object's `message`, `description`, `error` or `detail` string (the
// usual Python web framework spellings) is quoted, cut to 300 characters; any other body is not.
fn classify(endpoint: &'static str, status: StatusCode, body: &[u8]) -> CertMgmtError {
    let code = status.as_u16();
    let said = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            ["message", "description", "error", "detail"]
                .iter()
                .find_map(|key| value.get(key)?.as_str().map(str::to_owned))
        })
        .map(|text| text.trim().chars().take(MAX_MESSAGE_CHARS).collect::<String>())
        .filter(|text| !text.is_empty());
    let message = match said {
        Some(text) => format!("{endpoint}: HTTP {code}: {text}"),
        None => format!("{endpoint}: HTTP {code}"),
    };
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CertMgmtError::Unauthorized { message },
        StatusCode::NOT_FOUND => CertMgmtError::NotFound {
            what: format!("resource for {endpoint}"),
        },
        _ => CertMgmtError::InvalidRequest {
            status: Some(code),
            message,
        },
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    operation: &'static str,
) -> Result<T, CertMgmtError> {
    serde_json::from_slice(body).map_err(|e| CertMgmtError::MalformedResponse {
        operation,
        // serde's message names the field and position, never echoes the body.
        message: e.to_string(),
    })
}

/// `Authorization: Basic <base64(username:password)>` (RFC 7617), marked sensitive.
fn basic_authorization(username: &str, password: &SecretString) -> Result<HeaderValue, CertMgmtError> {
    if username.contains(':') {
        return Err(CertMgmtError::Configuration {
            message: "the username contains ':', which HTTP Basic authentication cannot carry".into(),
        });
    }
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| CertMgmtError::Configuration {
            message: "the credentials cannot be placed in an HTTP header".into(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `Authorization: secret_key=<secret_key>` (§6.7), marked sensitive.
fn agent_authorization(secret_key: &SecretString) -> Result<HeaderValue, CertMgmtError> {
    let mut value = HeaderValue::from_str(&format!("secret_key={}", secret_key.expose())).map_err(|_| {
        CertMgmtError::InvalidRequest {
            status: None,
            message: "the secret_key contains characters not allowed in an HTTP header".into(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn alert_query(from: Date, to: Date) -> [(&'static str, String); 2] {
    [
        ("from_dt", model::alert_date(from)),
        ("to_dt", model::alert_date(to)),
    ]
}

/// `text` as one URL path segment (see [`http::path_segment`]): percent-encoded; empty, `.` and
/// `..` refused.
fn segment(what: &'static str, text: &str) -> Result<String, CertMgmtError> {
    if matches!(text, "" | "." | "..") {
        return Err(CertMgmtError::InvalidRequest {
            status: None,
            message: format!("the {what} {text:?} cannot be placed in a URL path"),
        });
    }
    let mut out = String::with_capacity(text.len());
    http::percent_encode(text, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests;
