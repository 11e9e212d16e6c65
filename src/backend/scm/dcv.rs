//! SCM domain control validation and the Domain API (`scm-dcv-domains.md` §3, §5): the
//! [`Capability::DomainValidation`](crate::backend::Capability) of the SCM backend.
//!
//! `POST /api/dcv/v2/validation/status` is the source of truth (§10.2); start and submit are v1
//! (§10.1 item 11: v2 exists only for status). Every response field is optional and the status
//! vocabularies are read leniently (§2: enum names or display names, any case), but a date that
//! does not parse is a malformed response, not a missing one.

use jiff::{Timestamp, civil::Date};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::{
    KIND, ScmBackend, classify,
    client::{ApiFamily, CallError, Reply},
    parse_json,
};
use crate::backend::{BackendError, retry::Idempotency};

/// How a domain's control is proven (`orderMode`, §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DcvMethod {
    /// A file under `/.well-known/pki-validation/` over plain HTTP (port 80).
    Http,
    /// The same file over HTTPS (port 443).
    Https,
    /// A CNAME record derived from the domain's hash pair.
    Cname,
    /// A TXT record at `_pki-validation.<domain>` with a random value, known only after submit.
    Txt,
    /// A person follows a link mailed to one of the domain's approver addresses.
    Email,
}

impl DcvMethod {
    /// The path segment of start and submit (`/start/domain/<segment>`).
    fn segment(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Cname => "cname",
            Self::Txt => "txt",
            Self::Email => "email",
        }
    }

    /// The `orderMode` value SCM reports for an order of this method.
    pub fn order_mode(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
            Self::Cname => "CNAME",
            Self::Txt => "TXT",
            Self::Email => "EMAIL",
        }
    }
}

/// The domain's validation (§8.1 "what certificates depend on").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidationStatus {
    /// Never validated, or the validation was deleted.
    NotValidated,
    /// Validated and not expired.
    Validated,
    /// The validation has expired.
    Expired,
    /// A value this client does not know, kept as sent.
    Other(String),
}

/// The DCV order, the in-flight attempt (§8.1). `AWAITING_SUBMISSION` and `REJECTED` are spelled
/// as the spec infers them; display names ("Awaiting submission") are read too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// No order.
    NotInitiated,
    /// Started; the challenge is known; not submitted.
    AwaitingSubmission,
    /// Submitted; the CA checks periodically.
    Submitted,
    /// Refused or lapsed.
    Rejected,
    /// A value this client does not know, kept as sent.
    Other(String),
}

/// `"Not validated"`, `"not_validated"` and `NOT_VALIDATED` alike (§2 advice).
fn normalize(value: &str) -> String {
    value.trim().to_ascii_uppercase().replace([' ', '-'], "_")
}

impl ValidationStatus {
    /// The value as SCM spells it (`NOT_VALIDATED`, ...), or as it was sent.
    pub fn as_str(&self) -> &str {
        match self {
            Self::NotValidated => "NOT_VALIDATED",
            Self::Validated => "VALIDATED",
            Self::Expired => "EXPIRED",
            Self::Other(other) => other,
        }
    }
}

impl OrderStatus {
    /// The value as SCM spells it (`NOT_INITIATED`, ...), or as it was sent.
    pub fn as_str(&self) -> &str {
        match self {
            Self::NotInitiated => "NOT_INITIATED",
            Self::AwaitingSubmission => "AWAITING_SUBMISSION",
            Self::Submitted => "SUBMITTED",
            Self::Rejected => "REJECTED",
            Self::Other(other) => other,
        }
    }
}

impl From<&str> for ValidationStatus {
    fn from(value: &str) -> Self {
        match normalize(value).as_str() {
            "NOT_VALIDATED" => Self::NotValidated,
            "VALIDATED" => Self::Validated,
            "EXPIRED" => Self::Expired,
            _ => Self::Other(value.to_owned()),
        }
    }
}

impl From<&str> for OrderStatus {
    fn from(value: &str) -> Self {
        match normalize(value).as_str() {
            "NOT_INITIATED" => Self::NotInitiated,
            "AWAITING_SUBMISSION" | "AWAITING_SUBMIT" => Self::AwaitingSubmission,
            "SUBMITTED" => Self::Submitted,
            "REJECTED" => Self::Rejected,
            _ => Self::Other(value.to_owned()),
        }
    }
}

/// The body of `validation/status` (§3.2), as sent: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    status: Option<String>,
    validation_date: Option<String>,
    expiration_date: Option<String>,
    order_status: Option<String>,
    order_mode: Option<String>,
    url: Option<String>,
    first_line: Option<String>,
    second_line: Option<String>,
    host: Option<String>,
    point: Option<String>,
    validation_email: Option<String>,
    email_validation_reference_number: Option<String>,
    order_backend_id: Option<String>,
    submitted_date: Option<String>,
    order_expiration: Option<String>,
    last_check: Option<String>,
    next_check: Option<String>,
}

/// What the CA asks to be published, as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Serve `content` at `url` (`http://` or `https://<domain>/.well-known/pki-validation/<file>`).
    File {
        /// The URL SCM will fetch.
        url: String,
        /// The file's name, taken from the URL's path (never rebuilt: matching is case-sensitive).
        file_name: String,
        /// `firstLine`, a line break, `secondLine`.
        content: String,
    },
    /// Create a CNAME `host` → `point` (both absolute, with the trailing dot).
    Cname {
        /// Record name.
        host: String,
        /// Record target.
        point: String,
    },
    /// Create a TXT record `host` holding exactly `value` as one character-string.
    Txt {
        /// Record name (`_pki-validation.<domain>.`).
        host: String,
        /// The 32 printable-ASCII characters, byte for byte.
        value: String,
    },
    /// A person follows the link mailed to `email`.
    Email {
        /// The approver address the order was sent to, when SCM says.
        email: Option<String>,
        /// SCM's reference number of the email order.
        reference: Option<String>,
    },
}

/// A domain's DCV state (§3.2, §8.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcvState {
    /// The domain's validation.
    pub status: ValidationStatus,
    /// Last successful validation.
    pub validation_date: Option<Date>,
    /// When the validation expires. Read, never computed (§8.4).
    pub expiration_date: Option<Date>,
    /// The order in flight.
    pub order_status: OrderStatus,
    /// The order's method, as sent (`HTTP`, `CNAME`, `AUTO`, ...).
    pub order_mode: Option<String>,
    /// What the order asks to be published.
    pub challenge: Option<Challenge>,
    /// The CA's order id (a decimal string).
    pub order_backend_id: Option<String>,
    /// When the order was submitted.
    pub submitted_date: Option<Date>,
    /// When a submitted order lapses.
    pub order_expiration: Option<Timestamp>,
    /// The CA's last check of a submitted order.
    pub last_check: Option<Timestamp>,
    /// The CA's next check of a submitted order.
    pub next_check: Option<Timestamp>,
}

/// The outcome of a submit (§3.7): the order is placed; `status` is the domain's validation
/// *now*, not the order's outcome (§10.1 item 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The domain's validation now.
    pub status: Option<ValidationStatus>,
    /// The order's status (`SUBMITTED`).
    pub order_status: OrderStatus,
    /// The CA's order id.
    pub order_backend_id: Option<String>,
    /// The TXT record to publish (TXT submit only: its value exists only after submit, §3.10),
    /// or the email order's reference.
    pub challenge: Option<Challenge>,
}

/// The approver addresses of a domain (§3.11).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApproverEmails {
    /// Every address the order may be sent to.
    #[serde(default)]
    pub emails: Vec<String>,
}

/// A domain as the Domain API describes it (§5.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainDetails {
    /// SCM's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// `ACTIVE` or `SUSPENDED`.
    #[serde(default)]
    pub state: Option<String>,
    /// Delegation status, `ACTIVE` or `REQUESTED`.
    #[serde(default)]
    pub delegation_status: Option<String>,
    /// Present only when DCV is enabled for the customer (§5.3).
    #[serde(default)]
    pub validation_status: Option<String>,
}

impl DomainDetails {
    /// Whether the domain may be used (not suspended). A missing state counts as active: the
    /// field is optional like every other (§1.1).
    pub fn is_active(&self) -> bool {
        self.state
            .as_deref()
            .is_none_or(|state| normalize(state) == "ACTIVE")
    }
}

#[derive(Deserialize)]
struct DomainListItem {
    id: i64,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubmitBody {
    status: Option<String>,
    order_status: Option<String>,
    order_backend_id: Option<String>,
    host: Option<String>,
    point: Option<String>,
    email_validation_reference_number: Option<String>,
}

#[derive(Serialize)]
struct DomainRequest<'a> {
    domain: &'a str,
}

/// `submit/domain/cname` through SCM's DNS connector (§3.9): SCM's agent publishes the record.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectorSubmitRequest<'a> {
    domain: &'a str,
    #[serde(rename = "dnsAgentUUID")]
    dns_agent_uuid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_provider_name: Option<&'a str>,
}

/// Which SCM DNS connector (and provider) publishes a CNAME challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorRoute {
    /// The connector's `id` (`dnsAgentUUID`).
    pub id: String,
    /// `dnsProviderName`, when one is chosen.
    pub provider: Option<String>,
}

/// An SCM DNS connector (§6.1).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct DnsConnector {
    /// 32 hex characters: the `dnsAgentUUID` of a connector submit.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// `NOT_AVAILABLE`, `NOT_CONNECTED` or `CONNECTED`.
    #[serde(default)]
    pub status: String,
}

impl DnsConnector {
    /// Whether SCM can reach the agent now.
    pub fn is_connected(&self) -> bool {
        self.status.eq_ignore_ascii_case("CONNECTED")
    }
}

#[derive(Serialize)]
struct EmailSubmitRequest<'a> {
    domain: &'a str,
    email: &'a str,
}

/// Why a DCV or Domain call failed, in the terms a DomainValidation acts on. Documented codes
/// (§1.4) get their own kind; everything else is the SCM backend's usual classification.
#[derive(Debug, thiserror::Error)]
pub enum DcvError {
    /// -727: the domain is not registered in SCM.
    #[error("the domain {domain} does not exist in SCM (code -727): add it under Domains in SCM first")]
    DomainNotFound {
        /// The domain.
        domain: String,
    },
    /// -715: the domain is suspended.
    #[error("the domain {domain} is inactive in SCM (code -715): an SCM administrator must activate it")]
    DomainInactive {
        /// The domain.
        domain: String,
    },
    /// -1608: the account has no DCV.
    #[error(
        "DCV is not enabled for this SCM customer (code -1608): ask Sectigo to enable it for the account"
    )]
    DcvNotEnabled,
    /// -723: only registered ("high-level") domains can be validated.
    #[error(
        "{domain} cannot be validated on its own (code -723): validate the registered domain it belongs \
         to; its sub-domains inherit the validation"
    )]
    NotHighLevelDomain {
        /// The domain.
        domain: String,
    },
    /// -724: the order's state forbids the call (e.g. submit without start). The status is read
    /// again before anything else is tried.
    #[error("the DCV order for {domain} is in a state that forbids this call: {message} (code -724)")]
    OrderState {
        /// The domain.
        domain: String,
        /// SCM's message.
        message: String,
    },
    /// Anything else, classified like every SCM call.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl DcvError {
    /// A PascalCase reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::DomainNotFound { .. } => "DomainNotFound",
            Self::DomainInactive { .. } => "DomainInactive",
            Self::DcvNotEnabled => "DcvNotEnabled",
            Self::NotHighLevelDomain { .. } => "NotHighLevelDomain",
            Self::OrderState { .. } => "DcvOrderConflict",
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

    /// Whether trying again later may help. -724 does (after the status is read again).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::OrderState { .. } => true,
            Self::Backend(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// Maps a failed DCV or Domain call: the documented DCV codes first, then [`classify`].
fn dcv_error(error: CallError, operation: &'static str, domain: &str) -> DcvError {
    if let CallError::Api {
        code, description, ..
    } = &error
    {
        let domain = domain.to_owned();
        match code {
            -727 => return DcvError::DomainNotFound { domain },
            -715 => return DcvError::DomainInactive { domain },
            -1608 => return DcvError::DcvNotEnabled,
            -723 => return DcvError::NotHighLevelDomain { domain },
            -724 => {
                return DcvError::OrderState {
                    domain,
                    message: description.clone(),
                };
            }
            _ => {}
        }
    }
    DcvError::Backend(classify(error, operation))
}

/// A `yyyy-MM-dd` date, or the date of an ISO date-time (`[oas]` calls these fields date-time).
fn parse_date(value: Option<&str>, field: &'static str) -> Result<Option<Date>, BackendError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .parse::<Date>()
        .or_else(|_| {
            value
                .parse::<Timestamp>()
                .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date())
        })
        .map(Some)
        .map_err(|_| malformed(field))
}

/// An ISO date-time with zone; `yyyy-MM-dd HH:mm:ss` without one is read as UTC (§1.5).
fn parse_timestamp(value: Option<&str>, field: &'static str) -> Result<Option<Timestamp>, BackendError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .parse::<Timestamp>()
        .or_else(|_| {
            value
                .replacen(' ', "T", 1)
                .parse::<jiff::civil::DateTime>()
                .and_then(|local| local.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|zoned| zoned.timestamp())
        })
        .map(Some)
        .map_err(|_| malformed(field))
}

fn malformed(field: &'static str) -> BackendError {
    BackendError::MalformedResponse {
        backend: KIND,
        operation: "validation status",
        message: format!("{field} is not a date"),
    }
}

/// The file's name: the last segment of the URL's path.
fn file_name(url: &str) -> Option<String> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && path.contains("/.well-known/pki-validation/")).then(|| name.to_owned())
}

/// The challenge a status body carries, by its order mode.
fn challenge(body: &StatusBody) -> Result<Option<Challenge>, BackendError> {
    let mode = body.order_mode.as_deref().map(normalize);
    Ok(match mode.as_deref() {
        Some("HTTP" | "HTTPS") => match (&body.url, &body.first_line, &body.second_line) {
            (Some(url), Some(first), Some(second)) => Some(Challenge::File {
                file_name: file_name(url).ok_or(BackendError::MalformedResponse {
                    backend: KIND,
                    operation: "validation status",
                    message: "url is not under /.well-known/pki-validation/".into(),
                })?,
                url: url.clone(),
                content: format!("{first}\n{second}"),
            }),
            _ => None,
        },
        Some("CNAME") => body
            .host
            .clone()
            .zip(body.point.clone())
            .map(|(host, point)| Challenge::Cname { host, point }),
        Some("TXT") => body
            .host
            .clone()
            .zip(body.point.clone())
            .map(|(host, value)| Challenge::Txt { host, value }),
        Some("EMAIL") => Some(Challenge::Email {
            email: body.validation_email.clone(),
            reference: body.email_validation_reference_number.clone(),
        }),
        _ => None,
    })
}

fn state(body: &StatusBody) -> Result<DcvState, BackendError> {
    Ok(DcvState {
        status: body
            .status
            .as_deref()
            .map_or(ValidationStatus::NotValidated, ValidationStatus::from),
        validation_date: parse_date(body.validation_date.as_deref(), "validationDate")?,
        expiration_date: parse_date(body.expiration_date.as_deref(), "expirationDate")?,
        order_status: body
            .order_status
            .as_deref()
            .map_or(OrderStatus::NotInitiated, OrderStatus::from),
        order_mode: body.order_mode.clone(),
        challenge: challenge(body)?,
        order_backend_id: body.order_backend_id.clone(),
        submitted_date: parse_date(body.submitted_date.as_deref(), "submittedDate")?,
        order_expiration: parse_timestamp(body.order_expiration.as_deref(), "orderExpiration")?,
        last_check: parse_timestamp(body.last_check.as_deref(), "lastCheck")?,
        next_check: parse_timestamp(body.next_check.as_deref(), "nextCheck")?,
    })
}

impl ScmBackend {
    /// One DCV or Domain call with a JSON body, its failure mapped by [`dcv_error`].
    async fn dcv_call(
        &self,
        family: ApiFamily,
        operation: &'static str,
        path: &str,
        body: &(impl Serialize + Sync),
        domain: &str,
        idempotency: Idempotency,
    ) -> Result<Reply, DcvError> {
        self.http
            .api(family)
            .call(operation, Method::POST, path, &[], Some(body), idempotency)
            .await
            .map_err(|error| dcv_error(error, operation, domain))
    }

    /// The domain's DCV state: `POST /api/dcv/v2/validation/status`, the source of truth.
    pub async fn dcv_status(&self, domain: &str) -> Result<DcvState, DcvError> {
        let reply = self
            .dcv_call(
                ApiFamily::DcvV2,
                "validation status",
                "/validation/status",
                &DomainRequest { domain },
                domain,
                Idempotency::Idempotent,
            )
            .await?;
        let body: StatusBody = parse_json(&reply.body, "validation status")?;
        Ok(state(&body)?)
    }

    /// Asks the CA to check a submitted order now (`validation/sync?force=true`) and returns the
    /// state it then reports.
    pub async fn dcv_sync(&self, domain: &str) -> Result<DcvState, DcvError> {
        let reply = self
            .http
            .api(ApiFamily::DcvV1)
            .call(
                "validation sync",
                Method::POST,
                "/validation/sync",
                &[("force", "true".to_owned())],
                Some(&DomainRequest { domain }),
                Idempotency::Idempotent,
            )
            .await
            .map_err(|error| dcv_error(error, "validation sync", domain))?;
        let body: StatusBody = parse_json(&reply.body, "validation sync")?;
        Ok(state(&body)?)
    }

    /// Starts an order for HTTP, HTTPS or CNAME and returns its challenge. TXT has no start (its
    /// value comes with submit) and EMAIL's start lists addresses ([`Self::dcv_approver_emails`]).
    pub async fn dcv_start(&self, domain: &str, method: DcvMethod) -> Result<Challenge, DcvError> {
        if matches!(method, DcvMethod::Txt | DcvMethod::Email) {
            return Err(DcvError::Backend(BackendError::Unsupported {
                backend: KIND,
                operation: "a DCV start for TXT or EMAIL (TXT submits directly; EMAIL lists addresses)",
            }));
        }
        let path = format!("/validation/start/domain/{}", method.segment());
        // Start re-issues the same material for a domain (§8.2 T1), so repeating it is safe.
        let reply = self
            .dcv_call(
                ApiFamily::DcvV1,
                "validation start",
                &path,
                &DomainRequest { domain },
                domain,
                Idempotency::Idempotent,
            )
            .await?;
        let mut body: StatusBody = parse_json(&reply.body, "validation start")?;
        body.order_mode = Some(method.order_mode().to_owned());
        challenge(&body)?.ok_or_else(|| {
            DcvError::Backend(BackendError::MalformedResponse {
                backend: KIND,
                operation: "validation start",
                message: format!(
                    "the {} start answer lacks its challenge fields",
                    method.order_mode()
                ),
            })
        })
    }

    /// The addresses an EMAIL order may go to (`start/domain/email`).
    pub async fn dcv_approver_emails(&self, domain: &str) -> Result<ApproverEmails, DcvError> {
        let reply = self
            .dcv_call(
                ApiFamily::DcvV1,
                "validation start email",
                "/validation/start/domain/email",
                &DomainRequest { domain },
                domain,
                Idempotency::Idempotent,
            )
            .await?;
        Ok(parse_json(&reply.body, "validation start email")?)
    }

    /// The account's DNS connectors (§6.1), every status: a connector that fell to
    /// `NOT_CONNECTED` is reported as such rather than as missing.
    pub async fn dns_connectors(&self) -> Result<Vec<DnsConnector>, DcvError> {
        let reply = self
            .http
            .api(ApiFamily::ConnectorV1)
            .call(
                "dns connector list",
                Method::GET,
                "/dns",
                &[("size", CONNECTOR_PAGE.to_string()), ("position", "0".to_owned())],
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|error| dcv_error(error, "dns connector list", ""))?;
        Ok(parse_json(&reply.body, "dns connector list")?)
    }

    /// The DNS providers connector `id` can update (§6.3).
    pub async fn dns_connector_providers(&self, id: &str) -> Result<Vec<String>, DcvError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(DcvError::Backend(BackendError::InvalidRequest {
                backend: KIND,
                code: None,
                message: format!("{id:?} is not a DNS connector id"),
            }));
        }
        let reply = self
            .http
            .api(ApiFamily::ConnectorV1)
            .call(
                "dns connector providers",
                Method::GET,
                &format!("/dns/{id}/provider"),
                &[],
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|error| match error {
                CallError::Api {
                    status: StatusCode::NOT_FOUND,
                    ..
                } => DcvError::Backend(BackendError::NotFound {
                    backend: KIND,
                    what: format!("DNS connector {id}"),
                }),
                other => dcv_error(other, "dns connector providers", ""),
            })?;
        Ok(parse_json(&reply.body, "dns connector providers")?)
    }

    /// Submits a started CNAME order through SCM's DNS connector: SCM's agent publishes the
    /// record itself (§3.9). Sent once, like [`Self::dcv_submit`].
    pub async fn dcv_submit_through_connector(
        &self,
        domain: &str,
        route: &ConnectorRoute,
    ) -> Result<Submitted, DcvError> {
        let reply = self
            .dcv_call(
                ApiFamily::DcvV1,
                "validation submit",
                "/validation/submit/domain/cname",
                &ConnectorSubmitRequest {
                    domain,
                    dns_agent_uuid: &route.id,
                    dns_provider_name: route.provider.as_deref(),
                },
                domain,
                Idempotency::Once,
            )
            .await?;
        let body: SubmitBody = parse_json(&reply.body, "validation submit")?;
        Ok(Submitted {
            status: body.status.as_deref().map(ValidationStatus::from),
            order_status: body
                .order_status
                .as_deref()
                .map_or(OrderStatus::Submitted, OrderStatus::from),
            order_backend_id: body.order_backend_id,
            challenge: None,
        })
    }

    /// Submits the order: the CA starts checking. Sent once, never repeated (a second submit is
    /// -724 at best); after a lost answer the caller reads the status.
    pub async fn dcv_submit(
        &self,
        domain: &str,
        method: DcvMethod,
        email: Option<&str>,
    ) -> Result<Submitted, DcvError> {
        let path = format!("/validation/submit/domain/{}", method.segment());
        let reply = match (method, email) {
            (DcvMethod::Email, Some(email)) => {
                self.dcv_call(
                    ApiFamily::DcvV1,
                    "validation submit",
                    &path,
                    &EmailSubmitRequest { domain, email },
                    domain,
                    Idempotency::Once,
                )
                .await?
            }
            (DcvMethod::Email, None) => {
                return Err(DcvError::Backend(BackendError::InvalidRequest {
                    backend: KIND,
                    code: None,
                    message: "an EMAIL validation needs the approver address".into(),
                }));
            }
            _ => {
                self.dcv_call(
                    ApiFamily::DcvV1,
                    "validation submit",
                    &path,
                    &DomainRequest { domain },
                    domain,
                    Idempotency::Once,
                )
                .await?
            }
        };
        let body: SubmitBody = parse_json(&reply.body, "validation submit")?;
        let challenge = match method {
            DcvMethod::Txt => Some(
                body.host
                    .zip(body.point)
                    .map(|(host, value)| Challenge::Txt { host, value })
                    .ok_or(BackendError::MalformedResponse {
                        backend: KIND,
                        operation: "validation submit",
                        message: "the TXT submit answer lacks host or point".into(),
                    })?,
            ),
            DcvMethod::Email => Some(Challenge::Email {
                email: email.map(str::to_owned),
                reference: body.email_validation_reference_number,
            }),
            _ => None,
        };
        Ok(Submitted {
            status: body.status.as_deref().map(ValidationStatus::from),
            order_status: body
                .order_status
                .as_deref()
                .map_or(OrderStatus::Submitted, OrderStatus::from),
            order_backend_id: body.order_backend_id,
            challenge,
        })
    }

    /// Resets the domain's order to `NOT_INITIATED` (`validation/clear`); the validation itself
    /// is kept (§10.1 item 4). For an order that lapsed.
    pub async fn dcv_clear(&self, domain: &str) -> Result<(), DcvError> {
        self.dcv_call(
            ApiFamily::DcvV1,
            "validation clear",
            "/validation/clear",
            &DomainRequest { domain },
            domain,
            Idempotency::Idempotent,
        )
        .await?;
        Ok(())
    }

    /// The domain registered in SCM under exactly `name` (case-insensitive, client-side: whether
    /// the list's `name` filter matches exactly is unknown, §5.1), with its details.
    pub async fn find_domain(&self, name: &str) -> Result<Option<DomainDetails>, DcvError> {
        let wanted = name.trim_end_matches('.').to_ascii_lowercase();
        let domain_api = self.http.api(ApiFamily::DomainV1);
        let mut position = 0_usize;
        loop {
            let reply = domain_api
                .call(
                    "domain list",
                    Method::GET,
                    "",
                    &[
                        ("name", wanted.clone()),
                        ("size", DOMAIN_PAGE.to_string()),
                        ("position", position.to_string()),
                    ],
                    None::<&()>,
                    Idempotency::Idempotent,
                )
                .await
                .map_err(|error| dcv_error(error, "domain list", name))?;
            let page: Vec<DomainListItem> = parse_json(&reply.body, "domain list")?;
            if let Some(found) = page.iter().find(|d| d.name.eq_ignore_ascii_case(&wanted)) {
                return self.domain_details(found.id, name).await.map(Some);
            }
            position += page.len();
            let total = reply
                .headers
                .get("x-total-count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if page.is_empty()
                || total.is_none_or(|total| position >= total)
                || position >= MAX_DOMAINS_SCANNED
            {
                return Ok(None);
            }
        }
    }

    async fn domain_details(&self, id: i64, name: &str) -> Result<DomainDetails, DcvError> {
        let reply = self
            .http
            .api(ApiFamily::DomainV1)
            .call(
                "domain details",
                Method::GET,
                &format!("/{id}"),
                &[],
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|error| match error {
                CallError::Api {
                    status: StatusCode::NOT_FOUND,
                    ..
                } => DcvError::DomainNotFound {
                    domain: name.to_owned(),
                },
                other => dcv_error(other, "domain details", name),
            })?;
        Ok(parse_json(&reply.body, "domain details")?)
    }
}

/// Domains asked for per page of the list (`[oas]` caps `size` at 200).
const DOMAIN_PAGE: usize = 200;
/// Connectors read (an account has a handful; one page of the documented maximum).
const CONNECTOR_PAGE: usize = 200;
/// How many listed domains a search reads at most: the name filter narrows the list, so a
/// longer list means the filter is ignored and the domain is not worth a full scan.
const MAX_DOMAINS_SCANNED: usize = 2_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &serde_json::Value) -> StatusBody {
        serde_json::from_value(json.clone()).unwrap()
    }

    /// The seed's v2 example (a re-validation of an expired domain, in progress) is read whole.
    #[test]
    fn the_seed_status_example_is_read() {
        let example = body(&serde_json::json!({
            "status" : "EXPIRED", "validationDate" : "2024-12-04", "expirationDate" : "2025-11-24",
            "orderStatus" : "SUBMITTED", "orderMode" : "HTTP",
            "url" : "http://example.com/.well-known/pki-validation/88F809061BDC7A65DC409D53F99E7544.txt",
            "firstLine" : "a82374a0ef33dcf28016018f5eb25cc32c8b3b9b7af188bb9e74a82964a0575e",
            "secondLine" : "sectigo.com", "orderBackendId" : "99887766", "submittedDate" : "2025-12-04",
            "orderExpiration" : "2026-01-03T07:52:47.794Z",
            "lastCheck" : "2025-12-04T06:52:47.794Z", "nextCheck" : "2025-12-04T08:52:47.794Z"
        }));
        let state = state(&example).unwrap();
        assert_eq!(state.status, ValidationStatus::Expired);
        assert_eq!(state.order_status, OrderStatus::Submitted);
        assert_eq!(state.expiration_date, Some(jiff::civil::date(2025, 11, 24)));
        assert_eq!(
            state.next_check,
            Some("2025-12-04T08:52:47.794Z".parse().unwrap())
        );
        assert_eq!(
            state.challenge,
            Some(Challenge::File {
                url: "http://example.com/.well-known/pki-validation/88F809061BDC7A65DC409D53F99E7544.txt"
                    .into(),
                file_name: "88F809061BDC7A65DC409D53F99E7544.txt".into(),
                content: "a82374a0ef33dcf28016018f5eb25cc32c8b3b9b7af188bb9e74a82964a0575e\nsectigo.com"
                    .into(),
            })
        );
        assert_eq!(state.order_backend_id.as_deref(), Some("99887766"));
    }

    #[test]
    fn statuses_are_read_leniently_and_unknown_ones_kept() {
        assert_eq!(
            ValidationStatus::from("Not validated"),
            ValidationStatus::NotValidated
        );
        assert_eq!(ValidationStatus::from("validated"), ValidationStatus::Validated);
        assert_eq!(
            OrderStatus::from("Awaiting submission"),
            OrderStatus::AwaitingSubmission
        );
        assert_eq!(OrderStatus::from("Not Initiated"), OrderStatus::NotInitiated);
        assert_eq!(
            OrderStatus::from("Action Required"),
            OrderStatus::Other("Action Required".into())
        );
        let at_rest = state(&body(
            &serde_json::json!({"status": "VALIDATED", "validationDate": "2024-12-05",
            "expirationDate": "2025-12-05", "orderStatus": "NOT_INITIATED"}),
        ))
        .unwrap();
        assert_eq!(at_rest.challenge, None);
        assert_eq!(at_rest.validation_date, Some(jiff::civil::date(2024, 12, 5)));
    }

    #[test]
    fn dns_and_email_challenges_follow_the_order_mode() {
        let cname = state(&body(&serde_json::json!({"status": "NOT_VALIDATED",
            "orderStatus": "AWAITING_SUBMISSION", "orderMode": "CNAME",
            "host": "_685bb4b52e86cd979e32fc39f22afa41.ccmqa.com.",
            "point": "3dae349f789a0bb710f1f9ad9e52eb20.062637186ee7a30836bf0ae9f743b9ba.sectigo.com."})))
        .unwrap();
        assert!(
            matches!(&cname.challenge, Some(Challenge::Cname { host, .. }) if host.starts_with("_685bb4b5"))
        );
        // The TXT value may hold any printable character and is kept byte for byte.
        let txt = state(&body(
            &serde_json::json!({"orderStatus": "SUBMITTED", "orderMode": "TXT",
            "host": "_pki-validation.ccmqa.com.", "point": "F(U_t|L%>8]iU6Yx\\CFm;0O8DViEQ/|`"}),
        ))
        .unwrap();
        assert_eq!(
            txt.challenge,
            Some(Challenge::Txt {
                host: "_pki-validation.ccmqa.com.".into(),
                value: "F(U_t|L%>8]iU6Yx\\CFm;0O8DViEQ/|`".into()
            })
        );
        let email = state(&body(
            &serde_json::json!({"status": "NOT_VALIDATED", "orderStatus": "SUBMITTED",
            "orderMode": "EMAIL", "emailValidationReferenceNumber": "876186775", "orderBackendId": "1234"}),
        ))
        .unwrap();
        assert_eq!(
            email.challenge,
            Some(Challenge::Email {
                email: None,
                reference: Some("876186775".into())
            })
        );
    }

    #[test]
    fn dates_in_every_documented_format_and_garbage_refused() {
        assert_eq!(
            parse_timestamp(Some("2025-12-04 07:48:44"), "lastCheck").unwrap(),
            Some("2025-12-04T07:48:44Z".parse().unwrap()),
            "no zone means UTC"
        );
        assert_eq!(
            parse_date(Some("2025-12-05T00:00:00Z"), "expirationDate").unwrap(),
            Some(jiff::civil::date(2025, 12, 5))
        );
        assert_eq!(parse_date(None, "expirationDate").unwrap(), None);
        let error = parse_date(Some("next year"), "expirationDate").unwrap_err();
        assert!(error.to_string().contains("expirationDate"), "{error}");
        let bad_url = body(
            &serde_json::json!({"orderMode": "HTTP", "url": "http://example.com/x.txt",
            "firstLine": "a", "secondLine": "sectigo.com"}),
        );
        assert!(
            challenge(&bad_url).is_err(),
            "a file outside pki-validation is refused"
        );
    }

    #[test]
    fn documented_codes_become_reasons_a_user_can_act_on() {
        let api = |code: i64| CallError::Api {
            status: StatusCode::BAD_REQUEST,
            code,
            description: format!("message {code}"),
        };
        let cases = [
            (-727, "DomainNotFound", "does not exist in SCM"),
            (-715, "DomainInactive", "inactive"),
            (-1608, "DcvNotEnabled", "not enabled"),
            (-723, "NotHighLevelDomain", "registered domain"),
            (-724, "DcvOrderConflict", "forbids this call"),
            (-3, "Unauthorized", "privilege"),
            (-107, "DomainNotValidated", "message -107"),
        ];
        for (code, reason, needle) in cases {
            let error = dcv_error(api(code), "validation submit", "shop.example.com");
            assert_eq!(error.reason(), reason, "code {code}");
            assert!(error.to_string().contains(needle), "code {code}: {error}");
        }
        assert!(dcv_error(api(-724), "x", "d").is_transient());
        assert!(!dcv_error(api(-727), "x", "d").is_transient());
    }

    #[test]
    fn a_domain_without_state_is_active_and_suspended_ones_are_not() {
        let details: DomainDetails =
            serde_json::from_value(serde_json::json!({"id": 2031, "name": "ccmqa.com",
            "delegationStatus": "ACTIVE", "state": "ACTIVE", "validationStatus": "VALIDATED"}))
            .unwrap();
        assert!(details.is_active());
        let suspended = DomainDetails {
            state: Some("SUSPENDED".into()),
            ..details.clone()
        };
        assert!(!suspended.is_active());
        assert!(
            DomainDetails {
                state: None,
                ..details
            }
            .is_active()
        );
    }
}
