//! Domain control validation (`scm-dcv-domains.md` §3, §8, §9): the registered domains with their
//! validation and in-flight order, the DCV API's handlers, the checks that decide an order by
//! fetching the file or asking DNS for real (`probe`) or, for a CNAME published through a DNS
//! connector, asking the connector's state, and enrollment's question "is this name validated?".
//! It also holds the DNS connectors (spec §6), whose API is in `connectors`.
//!
//! State is keyed by the lower-cased domain name. The spec keys it by `(customerUri, domain)`;
//! the simulator serves a single customer, so the domain alone is that key.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::{
    ConnectorStatus, DcvAccess, ScmSimulatorConfig, Shared, SimDnsConnector,
    api::{Call, Reply, is_dns_name, is_email},
    connectors::is_connector_id,
    error::ScmError,
    probe::{self, Outcome, Probe},
    routes::Endpoint,
};
use crate::sim::hex_lower;

/// A DCV method as start/submit paths and `orderMode` name it (spec §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    /// File on port 80.
    Http,
    /// File on port 443.
    Https,
    /// CNAME record.
    Cname,
    /// TXT record.
    Txt,
    /// Approver email.
    Email,
}

impl Mode {
    /// The `orderMode` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
            Self::Cname => "CNAME",
            Self::Txt => "TXT",
            Self::Email => "EMAIL",
        }
    }

    /// The mode `text` names as `orderMode` does, in any case.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Http, Self::Https, Self::Cname, Self::Txt, Self::Email]
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// The completed method (`dcvMethod`, `validationMethod`).
    /// Inferred (spec §2): the mode → method mapping is the spec's reading of the names.
    pub fn completed(self) -> &'static str {
        match self {
            Self::Http => "HTTP_CSR_HASH",
            Self::Https => "HTTPS_CSR_HASH",
            Self::Cname => "CNAME_CSR_HASH",
            Self::Txt => "DNSTXT_RANDOM_VALUE",
            Self::Email => "EMAIL",
        }
    }
}

/// Which characters the TXT `point` is drawn from (spec §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxtAlphabet {
    /// Letters and digits only.
    Safe,
    /// Printable ASCII (space to `~`), always including a space, a backslash and a `"`, the
    /// characters that break naive zone-file or JSON handling (spec §10.1 item 10).
    #[default]
    Hostile,
}

/// Order status (spec §2); `AWAITING_SUBMISSION` and `REJECTED` spellings are inferred there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OrderStatus {
    #[default]
    NotInitiated,
    AwaitingSubmission,
    Submitted,
    Rejected,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotInitiated => "NOT_INITIATED",
            Self::AwaitingSubmission => "AWAITING_SUBMISSION",
            Self::Submitted => "SUBMITTED",
            Self::Rejected => "REJECTED",
        }
    }
}

/// A completed validation.
#[derive(Clone, Debug)]
struct Validation {
    method: Mode,
    at: OffsetDateTime,
    until: OffsetDateTime,
}

/// The DNS connector and provider a CNAME order is published through (spec §3.9).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ConnectorRef {
    /// The connector's `id` as configured.
    id: String,
    provider: String,
}

/// The in-flight attempt (spec §8.1 "Order").
#[derive(Clone, Debug, Default)]
struct Order {
    status: OrderStatus,
    mode: Option<Mode>,
    /// A CNAME order submitted with `dnsAgentUUID`: SCM's agent publishes the record (T6c).
    connector: Option<ConnectorRef>,
    email: Option<String>,
    txt_point: Option<String>,
    backend_id: Option<String>,
    email_reference: Option<String>,
    submitted: Option<OffsetDateTime>,
    expires: Option<OffsetDateTime>,
    last_check: Option<OffsetDateTime>,
    next_check: Option<OffsetDateTime>,
}

/// One registered domain (spec §5) with its DCV state (spec §8.1).
#[derive(Clone, Debug)]
pub struct DomainEntry {
    pub id: i64,
    /// Lower case, no trailing dot.
    pub name: String,
    pub description: Option<String>,
    pub active: bool,
    pub org_ids: Vec<i64>,
    /// The domain's hash pair, generated once (spec §9): 32 and 64 lower-case hex.
    md5: String,
    sha: String,
    validation: Option<Validation>,
    order: Order,
    /// The mode of the latest order, still listed as `dcvOrderMethod` after it completed (the
    /// list example shows `NOT_INITIATED` with `dcvOrderMethod: EMAIL`).
    last_mode: Option<Mode>,
}

impl DomainEntry {
    fn new(id: i64, name: &str, active: bool, org_id: i64) -> Self {
        let mut rng = rand::rng();
        Self {
            id,
            name: normalise(name),
            description: None,
            active,
            org_ids: vec![org_id],
            md5: hex_lower(&rng.random::<[u8; 16]>()),
            sha: hex_lower(&rng.random::<[u8; 32]>()),
            validation: None,
            order: Order::default(),
            last_mode: None,
        }
    }

    /// `NOT_VALIDATED`, `VALIDATED` or `EXPIRED` at `now` (T10 is applied on read).
    fn status(&self, now: OffsetDateTime) -> &'static str {
        match &self.validation {
            None => "NOT_VALIDATED",
            Some(validation) if now <= validation.until => "VALIDATED",
            Some(_) => "EXPIRED",
        }
    }

    fn is_validated(&self, now: OffsetDateTime) -> bool {
        self.status(now) == "VALIDATED"
    }

    /// T9: a submitted order lapses at `orderExpiration`.
    /// Inferred (spec §8.2 T9): we chose `REJECTED` (not `NOT_INITIATED`) so a client can tell a
    /// lapsed order from one never placed; the mode is kept, the challenge material dropped.
    fn advance(&mut self, now: OffsetDateTime) {
        if self.order.status == OrderStatus::Submitted && self.order.expires.is_some_and(|at| now > at) {
            tracing::info!(domain = %self.name, "DCV order lapsed");
            self.order = Order {
                status: OrderStatus::Rejected,
                mode: self.order.mode,
                ..Order::default()
            };
        }
    }

    fn file_name(&self) -> String {
        format!("{}.txt", self.md5.to_ascii_uppercase())
    }

    fn url(&self, https: bool) -> String {
        let scheme = if https { "https" } else { "http" };
        format!(
            "{scheme}://{}/.well-known/pki-validation/{}",
            self.name,
            self.file_name()
        )
    }

    fn cname_host(&self) -> String {
        format!("_{}.{}.", self.md5, self.name)
    }

    fn cname_point(&self) -> String {
        format!("{}.{}.sectigo.com.", &self.sha[..32], &self.sha[32..])
    }

    fn txt_host(&self) -> String {
        format!("_pki-validation.{}.", self.name)
    }

    /// The §3.2 body (v1 and v2 alike), null fields omitted.
    fn status_json(&self, now: OffsetDateTime) -> Value {
        let mut body = Map::new();
        let mut put = |key: &str, value: String| {
            body.insert(key.to_owned(), Value::String(value));
        };
        put("status", self.status(now).to_owned());
        if let Some(validation) = &self.validation {
            put("validationDate", date(validation.at));
            put("expirationDate", date(validation.until));
        }
        let order = &self.order;
        put("orderStatus", order.status.as_str().to_owned());
        if let Some(mode) = order.mode {
            put("orderMode", mode.as_str().to_owned());
        }
        let live = matches!(
            order.status,
            OrderStatus::AwaitingSubmission | OrderStatus::Submitted
        );
        match order.mode.filter(|_| live) {
            Some(mode @ (Mode::Http | Mode::Https)) => {
                put("url", self.url(mode == Mode::Https));
                put("firstLine", self.sha.clone());
                put("secondLine", "sectigo.com".to_owned());
            }
            Some(Mode::Cname) => {
                put("host", self.cname_host());
                put("point", self.cname_point());
            }
            Some(Mode::Txt) => {
                if let Some(point) = &order.txt_point {
                    put("host", self.txt_host());
                    put("point", point.clone());
                }
            }
            Some(Mode::Email) => {
                if let Some(email) = &order.email {
                    put("validationEmail", email.clone());
                }
                if let Some(reference) = &order.email_reference {
                    put("emailValidationReferenceNumber", reference.clone());
                }
            }
            None => {}
        }
        if order.status == OrderStatus::Submitted {
            let stamps = [
                ("orderBackendId", order.backend_id.clone()),
                ("submittedDate", order.submitted.map(date)),
                ("orderExpiration", order.expires.map(instant)),
                ("lastCheck", order.last_check.map(instant)),
                ("nextCheck", order.next_check.map(instant)),
            ];
            for (key, value) in stamps {
                if let Some(value) = value {
                    put(key, value);
                }
            }
        }
        Value::Object(body)
    }

    /// One row of the §3.1 list.
    fn list_json(&self, state: &DomainEntry, now: OffsetDateTime) -> Value {
        let mut row = json!({
            "domain": self.name,
            "dcvStatus": state.status(now),
            "dcvOrderStatus": state.order.status.as_str(),
        });
        if let Some(validation) = &state.validation {
            row["dcvMethod"] = validation.method.completed().into();
            row["expirationDate"] = date(validation.until).into();
        }
        if let Some(mode) = state.order.mode.or(state.last_mode) {
            row["dcvOrderMethod"] = mode.as_str().into();
        }
        row
    }
}

/// `yyyy-MM-dd` (spec §1.5).
pub fn date(at: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", at.year(), u8::from(at.month()), at.day())
}

/// ISO-8601 with milliseconds and `Z` (spec §1.5).
fn instant(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        date(at),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// What [`super::Stats`] reports of one DCV check the simulator made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcvCheck {
    /// The domain whose order was checked.
    pub domain: String,
    /// `HTTP`, `HTTPS`, `CNAME`, `TXT` or `EMAIL`.
    pub method: String,
    /// What was asked: the URL fetched (with the address connected to), the DNS question (with
    /// the server asked), or the approver address.
    pub target: String,
    /// Whether the check found the expected content.
    pub passed: bool,
    /// What was found, or why it failed.
    pub detail: String,
    /// For a CNAME order placed through a DNS connector, the connector's id: the simulator then
    /// asked no DNS server, it relied on the connector's agent (see [`DcvBook`]).
    #[serde(default)]
    pub connector: Option<String>,
}

/// Every registered domain and the DCV bookkeeping.
pub struct DcvBook {
    domains: BTreeMap<i64, DomainEntry>,
    next_domain_id: i64,
    next_backend_id: u64,
    next_email_reference: u64,
    /// Not in SCM: how far the simulated clock is ahead of the real one (control surface).
    offset: Duration,
    /// Every check made since the last stats reset.
    pub checks: Vec<DcvCheck>,
    /// Whether domains are registered or ever were: enrollment then asks DCV state, not
    /// [`super::ScmSimulatorConfig::validated_domains`].
    pub managed: bool,
    /// The DNS connectors, in configured order; only their status changes.
    connectors: Vec<SimDnsConnector>,
}

impl DcvBook {
    /// The book seeded with the configured domains (validated ones with `dcv_validity` from
    /// their validation date) and DNS connectors.
    pub fn seeded(config: &ScmSimulatorConfig) -> Self {
        let domains = &config.domains;
        let mut book = Self {
            domains: BTreeMap::new(),
            // Ids like the docs' examples (2018-2031).
            next_domain_id: 2001,
            next_backend_id: 100_500,
            next_email_reference: 876_186_775,
            offset: Duration::ZERO,
            checks: Vec::new(),
            managed: !domains.is_empty(),
            connectors: config.dns_connectors.clone(),
        };
        let now = book.now();
        for seed in domains {
            let id = book.next_domain_id;
            book.next_domain_id += 1;
            let mut entry = DomainEntry::new(id, &seed.name, seed.active, config.org_id);
            if seed.validated {
                let at = now - time::Duration::days(i64::from(seed.validated_days_ago));
                entry.validation = Some(Validation {
                    // Inferred: a seeded validation is reported as done by HTTP; the seed
                    // only needs some completed method.
                    method: Mode::Http,
                    at,
                    until: at + config.dcv_validity,
                });
                entry.last_mode = Some(Mode::Http);
            }
            book.domains.insert(id, entry);
        }
        book
    }

    /// The simulated present.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.offset
    }

    /// Moves the simulated clock forward.
    pub fn advance_clock(&mut self, by: Duration) {
        self.offset += by;
        tracing::info!(?by, offset = ?self.offset, "DCV clock advanced");
    }

    pub fn entries(&self) -> impl Iterator<Item = &DomainEntry> {
        self.domains.values()
    }

    pub fn entry(&self, id: i64) -> Option<&DomainEntry> {
        self.domains.get(&id)
    }

    pub fn entry_mut(&mut self, id: i64) -> Option<&mut DomainEntry> {
        self.domains.get_mut(&id)
    }

    pub fn find(&self, name: &str) -> Option<&DomainEntry> {
        let name = normalise(name);
        self.domains.values().find(|entry| entry.name == name)
    }

    /// Registers a domain (Domain API create); the caller checked the name.
    pub fn register(
        &mut self,
        name: &str,
        description: Option<String>,
        active: bool,
        org_ids: Vec<i64>,
    ) -> i64 {
        let id = self.next_domain_id;
        self.next_domain_id += 1;
        let mut entry = DomainEntry::new(id, name, active, 0);
        entry.description = description;
        entry.org_ids = org_ids;
        self.domains.insert(id, entry);
        self.managed = true;
        id
    }

    pub fn remove(&mut self, id: i64) -> Option<DomainEntry> {
        self.domains.remove(&id)
    }

    pub fn connectors(&self) -> &[SimDnsConnector] {
        &self.connectors
    }

    /// The connector `id` names; hex digits compare in any case.
    pub fn connector(&self, id: &str) -> Option<&SimDnsConnector> {
        find_connector(&self.connectors, id)
    }

    /// The control surface's status change ([`super::ScmSimulator::set_connector_status`]).
    pub fn set_connector_status(&mut self, id: &str, status: ConnectorStatus) -> Result<(), String> {
        let connector = self
            .connectors
            .iter_mut()
            .find(|connector| connector.id.eq_ignore_ascii_case(id))
            .ok_or_else(|| format!("no DNS connector has the id {id}"))?;
        connector.status = status;
        tracing::info!(id = %connector.id, status = status.as_str(), "DNS connector status changed");
        Ok(())
    }

    /// The connector a connector submit for `domain` goes through, or the refusal (T6c's
    /// precondition: "connector CONNECTED and provider valid").
    ///
    /// Inferred (spec §1.4, §3.9, §9): no code is documented for these cases. An id that names
    /// no connector, or a provider the connector does not list (`/provider`, §6.3), is a body
    /// field with an invalid value: -1601 on `dnsAgentUUID` or `dnsProviderName` (404 is for
    /// path ids only, §9). A connector that exists but is not `CONNECTED` cannot publish, so
    /// the backend fails to carry out the validation: -1603 "Error while validating the domain
    /// {domain}". Nothing changes on a refusal; the order stays `AWAITING_SUBMISSION`.
    fn connector_for(&self, domain: &str, wanted: &ConnectorRef) -> Result<ConnectorRef, ScmError> {
        let connector = self
            .connector(&wanted.id)
            .ok_or_else(|| ScmError::InvalidField("dnsAgentUUID".to_owned()))?;
        if !connector.providers.contains(&wanted.provider) {
            return Err(ScmError::InvalidField("dnsProviderName".to_owned()));
        }
        if connector.status != ConnectorStatus::Connected {
            return Err(ScmError::DcvBackendFailed(domain.to_owned()));
        }
        Ok(ConnectorRef {
            id: connector.id.clone(),
            provider: wanted.provider.clone(),
        })
    }

    /// The registered domains equal to or above `name`, highest first.
    fn ancestors_or_self(&self, name: &str) -> Vec<&DomainEntry> {
        let mut found: Vec<&DomainEntry> = self
            .domains
            .values()
            .filter(|entry| name == entry.name || name.ends_with(&format!(".{}", entry.name)))
            .collect();
        found.sort_by_key(|entry| entry.name.len());
        found
    }

    /// The entry whose DCV state covers `name`: its highest registered ancestor or itself.
    /// Inferred (spec §8.4 "Sub-domains"): sub-domains inherit their registered parent's
    /// validation, so a registered sub-domain shows its highest parent's state.
    fn governing(&self, name: &str) -> Option<&DomainEntry> {
        self.ancestors_or_self(name).into_iter().next()
    }

    /// Validation details for the Domain API (§5.3): `validationStatus`, `validationMethod`,
    /// `dcvValidation`, `dcvExpiration` of the governing entry.
    pub fn domain_validation(&self, name: &str) -> Map<String, Value> {
        let now = self.now();
        let mut fields = Map::new();
        if let Some(state) = self.governing(name) {
            fields.insert("validationStatus".into(), state.status(now).into());
            if let Some(validation) = &state.validation {
                fields.insert("validationMethod".into(), validation.method.completed().into());
                fields.insert("dcvValidation".into(), date(validation.at).into());
                fields.insert("dcvExpiration".into(), date(validation.until).into());
            }
        }
        fields
    }

    /// Why enrollment must refuse `name` (a DNS name or an IP address text), if it must.
    ///
    /// Inferred (spec §4, §1.4): the spec lists -107, -737 and -1137 for enroll without
    /// validation; we chose -107 (its message names one domain and says "incomplete or
    /// expired", and the simulator already answered it). A name under no registered domain gets
    /// -1010 "Domain '{0}' is not allowed." and one whose registered domains are all suspended
    /// -715, the codes the spec's table expects at enroll for those cases.
    pub fn enroll_refusal(&self, name: &str) -> Option<ScmError> {
        let target = normalise(name.strip_prefix("*.").unwrap_or(name));
        let now = self.now();
        // The highest registered domain decides: its validation covers the names below it,
        // and suspending it suspends them.
        let Some(governing) = self.governing(&target) else {
            return Some(ScmError::DomainNotAllowed(name.to_owned()));
        };
        if !governing.active {
            Some(ScmError::DomainInactive(governing.name.clone()))
        } else if governing.is_validated(now) {
            None
        } else {
            Some(ScmError::DcvIncomplete(name.to_owned()))
        }
    }
}

fn find_connector<'a>(connectors: &'a [SimDnsConnector], id: &str) -> Option<&'a SimDnsConnector> {
    connectors
        .iter()
        .find(|connector| connector.id.eq_ignore_ascii_case(id))
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DomainRequest {
    domain: Option<String>,
    domains: Option<Vec<String>>,
    email: Option<String>,
    /// The DNS-connector form of `submit/domain/cname` (spec §3.9), spelled as documented.
    #[serde(rename = "dnsAgentUUID")]
    dns_agent_uuid: Option<String>,
    dns_provider_name: Option<String>,
}

impl DomainRequest {
    /// The connector a `submit/domain/cname` names, if it names one (spec §3.9).
    ///
    /// Inferred (spec §3.9): `[oas]` marks both fields optional because the plain form has
    /// neither; a submit with only one of them cannot be carried out (the console picks both a
    /// connector and a provider), so the missing one is -7 "… is required but missing.". An id
    /// that is not 32 hex characters is -1601 on `dnsAgentUUID`; hex digits compare in any
    /// case, dashes are not removed.
    fn connector(&self) -> Result<Option<ConnectorRef>, ScmError> {
        let text = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        match (text(&self.dns_agent_uuid), text(&self.dns_provider_name)) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(ScmError::Required("dnsAgentUUID")),
            (Some(_), None) => Err(ScmError::Required("dnsProviderName")),
            (Some(id), Some(provider)) if is_connector_id(&id) => Ok(Some(ConnectorRef { id, provider })),
            (Some(_), Some(_)) => Err(ScmError::InvalidField("dnsAgentUUID".to_owned())),
        }
    }
}

/// Runs one authenticated DCV API call.
pub async fn dispatch(shared: &Shared, endpoint: &Endpoint, call: &Call) -> Result<Reply, ScmError> {
    match shared.config.dcv_access {
        DcvAccess::Allowed => {}
        // The only -3 example is this exact message (spec §1.3).
        DcvAccess::NotPrivileged => return Err(ScmError::NotAuthorized("DCV validation")),
        DcvAccess::DisabledForCustomer => return Err(ScmError::DcvNotEnabled),
    }
    match endpoint {
        Endpoint::DcvList => list(shared, call).await,
        Endpoint::DcvStatus { .. } => {
            let id = target(shared, call.json::<DomainRequest>()?.domain.as_deref(), false)?;
            run_due_checks(shared, &[id], false).await;
            Ok(status_reply(shared, id))
        }
        Endpoint::DcvSync => {
            let id = target(shared, call.json::<DomainRequest>()?.domain.as_deref(), false)?;
            // Inferred (spec §3.4): `force=true` checks now; without it only a due check runs.
            let force = call
                .param("force")
                .is_some_and(|value| value.eq_ignore_ascii_case("true"));
            run_due_checks(shared, &[id], force).await;
            Ok(status_reply(shared, id))
        }
        Endpoint::DcvClear => clear(shared, call),
        Endpoint::DcvDelete => delete(shared, call),
        Endpoint::DcvStart(Mode::Email) => email_addresses(shared, call),
        Endpoint::DcvStart(mode) => start(shared, call, *mode),
        Endpoint::DcvSubmit(mode) => submit(shared, call, *mode).await,
        Endpoint::DcvSubmitBulkEmail => submit_bulk_email(shared, call).await,
        _ => Err(ScmError::Unknown(hyper::StatusCode::NOT_FOUND)),
    }
}

/// The entry a DCV call on `domain` addresses, with the documented refusals (spec §9):
/// -7 absent, -1601 length outside 3..255, -732 not a name, -723 a wildcard or a name under a
/// registered domain, -727 unknown, -715 suspended (unless `allow_suspended`).
fn target(shared: &Shared, domain: Option<&str>, allow_suspended: bool) -> Result<i64, ScmError> {
    let raw = domain.map(str::trim).filter(|domain| !domain.is_empty());
    let raw = raw.ok_or(ScmError::Required("domain"))?;
    if !(3..=255).contains(&raw.chars().count()) {
        return Err(ScmError::InvalidField("domain".to_owned()));
    }
    let name = normalise(raw);
    if name.starts_with("*.") {
        return Err(ScmError::NotHighLevel(raw.to_owned()));
    }
    if !is_dns_name(&name) {
        // Inferred (spec §1.4): -732 "Invalid domain name." for a malformed name; the table
        // lists it for DCV and §9 does not cover syntax.
        return Err(ScmError::InvalidDomainName);
    }
    let book = shared.dcv();
    let candidates = book.ancestors_or_self(&name);
    // Inferred (spec §1.4 -723, §8.4): only the highest registered domain carries a validation;
    // DCV on a name below one (registered itself or not) is -723.
    let entry = match candidates.as_slice() {
        [] => {
            return Err(ScmError::DomainUnknown(
                raw.to_owned(),
                hyper::StatusCode::BAD_REQUEST,
            ));
        }
        [only] if only.name == name => *only,
        _ => return Err(ScmError::NotHighLevel(raw.to_owned())),
    };
    if !entry.active && !allow_suspended {
        return Err(ScmError::DomainInactive(entry.name.clone()));
    }
    Ok(entry.id)
}

fn status_reply(shared: &Shared, id: i64) -> Reply {
    let mut book = shared.dcv();
    let now = book.now();
    match book.entry_mut(id) {
        Some(entry) => {
            entry.advance(now);
            Reply::Dcv(entry.status_json(now))
        }
        // Deleted by a concurrent Domain API call.
        None => Reply::Dcv(json!({"status": "NOT_VALIDATED", "orderStatus": "NOT_INITIATED"})),
    }
}

/// Inferred (spec §1.5): `[oas]` caps `size` at 200; we also default to 200.
const MAX_PAGE_SIZE: usize = 200;

/// `position` and `size` (capped) of a list call.
pub(super) fn page_bounds(call: &Call) -> Result<(usize, usize), ScmError> {
    let index = |name: &'static str, default: usize| -> Result<usize, ScmError> {
        call.int_param(name)?.map_or(Ok(default), |value| {
            usize::try_from(value).map_err(|_| ScmError::InvalidField(name.to_owned()))
        })
    };
    Ok((
        index("position", 0)?,
        index("size", MAX_PAGE_SIZE)?.min(MAX_PAGE_SIZE),
    ))
}

/// §3.1. Filters: `domain` (case-insensitive substring, inferred from the example returning
/// `www.ccmqa.com` for `ccmqa.com`), `org` (a delegation's org), `department` (ignored: the
/// simulated customer has no departments), `dcvStatus`, `orderStatus` (enum names,
/// case-insensitive), `expiresIn` (validated with an expiration within N days, already expired
/// included). Empty values mean no filter, as in the example.
async fn list(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let text = |name: &str| {
        call.param(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (position, size) = page_bounds(call)?;
    let domain = text("domain").map(|d| normalise(&d));
    let org = if text("org").is_some() {
        call.int_param("org")?
    } else {
        None
    };
    let expires_in = if text("expiresIn").is_some() {
        let days = call.int_param("expiresIn")?.unwrap_or_default();
        if days < 1 {
            return Err(ScmError::InvalidField("expiresIn".to_owned()));
        }
        Some(days)
    } else {
        None
    };
    let dcv_status = text("dcvStatus");
    let order_status = text("orderStatus");
    let ids: Vec<i64> = shared.dcv().entries().map(|entry| entry.id).collect();
    run_due_checks(shared, &ids, false).await;
    let mut book = shared.dcv();
    let now = book.now();
    for id in &ids {
        if let Some(entry) = book.entry_mut(*id) {
            entry.advance(now);
        }
    }
    let rows: Vec<Value> = book
        .entries()
        .filter_map(|entry| {
            let state = book.governing(&entry.name)?;
            let keep = domain.as_ref().is_none_or(|d| entry.name.contains(d.as_str()))
                && org.is_none_or(|org| entry.org_ids.contains(&org))
                && dcv_status
                    .as_ref()
                    .is_none_or(|s| s.eq_ignore_ascii_case(state.status(now)))
                && order_status
                    .as_ref()
                    .is_none_or(|s| s.eq_ignore_ascii_case(state.order.status.as_str()))
                && expires_in.is_none_or(|days| {
                    state
                        .validation
                        .as_ref()
                        .is_some_and(|v| v.until <= now + time::Duration::days(days))
                });
            keep.then(|| entry.list_json(state, now))
        })
        .collect();
    let total = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(position).take(size).collect();
    Ok(Reply::DcvPage(Value::Array(page), total))
}

/// §3.5 (T11). Inferred (spec §3.5, §10.1 item 4): `clear` cancels the order and keeps the
/// validation, as the example shows, although the description says it resets both.
fn clear(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let id = target(shared, call.json::<DomainRequest>()?.domain.as_deref(), true)?;
    let mut book = shared.dcv();
    let now = book.now();
    let entry = book.entry_mut(id).ok_or(ScmError::InvalidDomainName)?;
    entry.order = Order::default();
    let status = entry.status(now);
    let order_status = entry.order.status.as_str();
    tracing::info!(domain = %entry.name, "DCV order cleared");
    Ok(Reply::Dcv(json!({
        "status": status,
        "orderStatus": order_status,
        "message": format!("DCV status: {status}; DCV order status: {order_status}"),
    })))
}

/// §3.6 (T12): 200 with an empty body.
fn delete(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let id = target(shared, call.json::<DomainRequest>()?.domain.as_deref(), true)?;
    let mut book = shared.dcv();
    let entry = book.entry_mut(id).ok_or(ScmError::InvalidDomainName)?;
    entry.validation = None;
    entry.order = Order::default();
    entry.last_mode = None;
    tracing::info!(domain = %entry.name, "DCV validation deleted");
    Ok(Reply::Empty)
}

/// T1/T2: `start/domain/{http|https|cname}`.
fn start(shared: &Shared, call: &Call, mode: Mode) -> Result<Reply, ScmError> {
    let id = target(shared, call.json::<DomainRequest>()?.domain.as_deref(), false)?;
    let mut book = shared.dcv();
    let now = book.now();
    let entry = book.entry_mut(id).ok_or(ScmError::InvalidDomainName)?;
    entry.advance(now);
    if entry.order.status == OrderStatus::Submitted {
        // Inferred (spec §9): -724 naming the order status that forbids the call.
        return Err(ScmError::DcvStateForbids(
            entry.name.clone(),
            entry.order.status.as_str().to_owned(),
        ));
    }
    entry.order = Order {
        status: OrderStatus::AwaitingSubmission,
        mode: Some(mode),
        ..Order::default()
    };
    entry.last_mode = Some(mode);
    tracing::info!(domain = %entry.name, mode = mode.as_str(), "DCV order started");
    Ok(Reply::Dcv(match mode {
        Mode::Cname => json!({ "host": entry.cname_host(), "point": entry.cname_point() }),
        _ => json!({
            "url": entry.url(mode == Mode::Https),
            "firstLine": entry.sha,
            "secondLine": "sectigo.com",
        }),
    }))
}

/// `adminEmails` (spec §9): the five role addresses at the domain.
fn admin_emails(domain: &str) -> Vec<String> {
    ["admin", "administrator", "hostmaster", "postmaster", "webmaster"]
        .iter()
        .map(|local| format!("{local}@{domain}"))
        .collect()
}

/// The addresses `submit/domain/email` accepts for `domain`.
/// Inferred (spec §9): no WHOIS or DNS-TXT contacts are simulated, so `whoisEmails` and
/// `dnsTxtEmails` are empty and the admin addresses are the whole list.
fn allowed_emails(domain: &str) -> Vec<String> {
    admin_emails(domain)
}

/// §3.11 `start/domain/email`, single (`domain`) or bulk (`domains`): the address lists.
/// Inferred (spec §8.2 T3): it leaves the order unchanged, since it only looks addresses up
/// (and a bulk call could not sensibly start orders on many domains).
fn email_addresses(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let request: DomainRequest = call.json()?;
    let names: Vec<String> = match (&request.domain, &request.domains) {
        (Some(domain), _) if !domain.trim().is_empty() => vec![domain.clone()],
        (_, Some(domains)) if !domains.is_empty() => domains.clone(),
        _ => return Err(ScmError::Required("domain")),
    };
    let bulk = request.domain.as_deref().is_none_or(|d| d.trim().is_empty());
    let mut per_domain = Vec::new();
    let mut emails: Option<Vec<String>> = None;
    for name in &names {
        let id = target(shared, Some(name), false)?;
        let domain = shared.dcv().entry(id).map(|e| e.name.clone()).unwrap_or_default();
        let admins = admin_emails(&domain);
        per_domain.push(json!({
            "domainName": domain,
            "whoisEmails": [],
            "adminEmails": admins,
            "dnsTxtEmails": [],
        }));
        let mine = allowed_emails(&domain);
        // The union for one domain, the intersection for a bulk call (spec §9).
        emails = Some(match emails {
            None => mine,
            Some(common) => common.into_iter().filter(|e| mine.contains(e)).collect(),
        });
    }
    let emails = emails.unwrap_or_default();
    tracing::debug!(bulk, domains = names.len(), "DCV email addresses listed");
    Ok(Reply::Dcv(json!({ "emails": emails, "dcvEmails": per_domain })))
}

fn check_email(email: Option<String>) -> Result<String, ScmError> {
    let email = email.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty());
    let email = email.ok_or(ScmError::Required("email"))?;
    if email.len() > 255 || !is_email(&email) {
        return Err(ScmError::InvalidField("email".to_owned()));
    }
    Ok(email)
}

/// T4/T5/T6/T6c: `submit/domain/{http|https|cname|txt|email}`. The order is created, the answer
/// says `SUBMITTED`, and the first check runs at once (before the answer is sent, so a client's
/// next status read sees its outcome).
/// Inferred (spec §8.2, §9): the spec's CA checks at `nextCheck`; we also check on submit because
/// the client submits only after publishing (spec §10.2), and a real CA's first check follows the
/// submit closely. A CNAME submit naming a DNS connector (T6c) has its record published by the
/// connector's agent, so that first check passes while the connector is `CONNECTED`; the
/// answer's `status` is still the one before the check, as in the spec's connector example
/// (`NOT_VALIDATED`).
/// Inferred (spec §3.9, §8.2 T6c "As T4"): the connector form, like the plain one, needs a
/// CNAME start first (-724 otherwise); the spec calls the start only "advisable", but T6c is
/// T4 with a connector, and T4 requires it.
async fn submit(shared: &Shared, call: &Call, mode: Mode) -> Result<Reply, ScmError> {
    let request: DomainRequest = call.json()?;
    let id = target(shared, request.domain.as_deref(), false)?;
    let email = if mode == Mode::Email {
        Some(check_email(request.email.clone())?)
    } else {
        None
    };
    // Only the CNAME path has the connector form; other paths ignore the fields.
    let wanted = if mode == Mode::Cname {
        request.connector()?
    } else {
        None
    };
    let reply = {
        let mut book = shared.dcv();
        let now = book.now();
        let backend_id = book.next_backend_id.to_string();
        let email_reference = book.next_email_reference.to_string();
        let config = &shared.config;
        // Decided before the order is looked at; reported only after the state check, so a
        // submit without a start is -724 whatever connector it names.
        let connector = wanted.map(|wanted| {
            let domain = book.entry(id).map(|entry| entry.name.clone()).unwrap_or_default();
            book.connector_for(&domain, &wanted)
        });
        let entry = book.entry_mut(id).ok_or(ScmError::InvalidDomainName)?;
        entry.advance(now);
        let order = &entry.order;
        let allowed = match mode {
            // T4: only after a start of the same mode.
            Mode::Http | Mode::Https | Mode::Cname => {
                order.status == OrderStatus::AwaitingSubmission && order.mode == Some(mode)
            }
            // T5, T6: anything but an order already submitted.
            // Inferred (spec §8.2 T6): like TXT, email refuses a second submit with -724.
            Mode::Txt | Mode::Email => order.status != OrderStatus::Submitted,
        };
        if !allowed {
            return Err(ScmError::DcvStateForbids(
                entry.name.clone(),
                order.status.as_str().to_owned(),
            ));
        }
        if let Some(email) = &email
            && !allowed_emails(&entry.name).contains(email)
        {
            // Inferred (spec §3.11): an address not in `emails` is a field constraint, -1601.
            return Err(ScmError::InvalidField("email".to_owned()));
        }
        let connector = connector.transpose()?;
        let via = connector.as_ref().map(|c| format!("{} ({})", c.id, c.provider));
        entry.order = Order {
            status: OrderStatus::Submitted,
            mode: Some(mode),
            connector,
            email: email.clone(),
            txt_point: (mode == Mode::Txt).then(|| txt_point(config.dcv_txt_alphabet)),
            backend_id: Some(backend_id.clone()),
            email_reference: (mode == Mode::Email).then(|| email_reference.clone()),
            submitted: Some(now),
            expires: Some(now + config.dcv_order_lifetime),
            last_check: None,
            next_check: Some(now),
        };
        entry.last_mode = Some(mode);
        let mut body = json!({
            "status": entry.status(now),
            "orderStatus": OrderStatus::Submitted.as_str(),
            "message": "Submitted successfully",
            "orderBackendId": backend_id,
        });
        if mode == Mode::Txt {
            body["host"] = entry.txt_host().into();
            body["point"] = entry.order.txt_point.clone().into();
        }
        if mode == Mode::Email {
            body["emailValidationReferenceNumber"] = email_reference.into();
        }
        tracing::info!(domain = %entry.name, mode = mode.as_str(), backend_id = %body["orderBackendId"], connector = ?via, "DCV order submitted");
        book.next_backend_id += 1;
        if mode == Mode::Email {
            book.next_email_reference += 1;
        }
        body
    };
    run_due_checks(shared, &[id], true).await;
    Ok(Reply::Dcv(reply))
}

/// §3.11 `submit-bulk/domain/email` (T6b): one order id for every domain; no `status`.
async fn submit_bulk_email(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let request: DomainRequest = call.json()?;
    let names = request
        .domains
        .filter(|domains| !domains.is_empty())
        .ok_or(ScmError::Required("domains"))?;
    let email = check_email(request.email)?;
    let ids = names
        .iter()
        .map(|name| target(shared, Some(name), false))
        .collect::<Result<Vec<i64>, ScmError>>()?;
    let backend_id = {
        let mut book = shared.dcv();
        let now = book.now();
        for id in &ids {
            let entry = book.entry_mut(*id).ok_or(ScmError::InvalidDomainName)?;
            entry.advance(now);
            if entry.order.status == OrderStatus::Submitted {
                return Err(ScmError::DcvStateForbids(
                    entry.name.clone(),
                    entry.order.status.as_str().to_owned(),
                ));
            }
            if !allowed_emails(&entry.name).contains(&email) {
                return Err(ScmError::InvalidField("email".to_owned()));
            }
        }
        let backend_id = book.next_backend_id.to_string();
        book.next_backend_id += 1;
        for id in &ids {
            let reference = book.next_email_reference.to_string();
            book.next_email_reference += 1;
            let lifetime = shared.config.dcv_order_lifetime;
            if let Some(entry) = book.entry_mut(*id) {
                entry.order = Order {
                    status: OrderStatus::Submitted,
                    mode: Some(Mode::Email),
                    email: Some(email.clone()),
                    backend_id: Some(backend_id.clone()),
                    email_reference: Some(reference),
                    submitted: Some(now),
                    expires: Some(now + lifetime),
                    next_check: Some(now),
                    ..Order::default()
                };
                entry.last_mode = Some(Mode::Email);
            }
        }
        backend_id
    };
    run_due_checks(shared, &ids, true).await;
    Ok(Reply::Dcv(json!({
        "orderStatus": OrderStatus::Submitted.as_str(),
        "message": "Submitted successfully",
        "orderBackendId": backend_id,
    })))
}

/// 32 characters for the TXT `point` (spec §3.10, §9).
fn txt_point(alphabet: TxtAlphabet) -> String {
    const SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    match alphabet {
        TxtAlphabet::Safe => (0..32)
            .map(|_| char::from(SAFE[rng.random_range(0..SAFE.len())]))
            .collect(),
        TxtAlphabet::Hostile => {
            let mut chars: Vec<char> = (0..29)
                .map(|_| char::from(rng.random_range(0x20..=0x7e_u8)))
                .collect();
            for special in [' ', '\\', '"'] {
                let at = rng.random_range(0..=chars.len());
                chars.insert(at, special);
            }
            chars.into_iter().collect()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks (T7, T8)
// ---------------------------------------------------------------------------------------------

/// Checks every submitted order among `ids` that is due (`nextCheck` reached) or, with
/// `force`, every submitted one, and applies the outcomes. The book's lock is not held while a
/// file is fetched or DNS is asked; an outcome applies only if its order is still the one
/// checked.
///
/// Inferred (spec §9 "Checker"): due checks run when a DCV call reads the order (status, sync,
/// list) instead of on a timer, so advancing the DCV clock needs no waiting and nothing is
/// fetched while nobody looks; a client that polls status, as spec §10.2 prescribes, sees the
/// same outcomes at the same simulated times.
pub async fn run_due_checks(shared: &Shared, ids: &[i64], force: bool) {
    let mut probes = Vec::new();
    {
        let mut guard = shared.dcv();
        // Borrowed field by field: an entry and the connectors at once.
        let book = &mut *guard;
        let now = book.now();
        for id in ids {
            let Some(entry) = book.domains.get_mut(id) else {
                continue;
            };
            entry.advance(now);
            let order = &entry.order;
            let due = order.next_check.is_some_and(|at| at <= now);
            if order.status != OrderStatus::Submitted || !(force || due) {
                continue;
            }
            if let (Some(Mode::Cname), Some(connector)) = (order.mode, &order.connector) {
                let outcome = connector_check(&book.connectors, connector, &entry.cname_host());
                probes.push((
                    *id,
                    order.backend_id.clone(),
                    order.mode,
                    Some(connector.id.clone()),
                    Check::Decided(outcome),
                ));
                continue;
            }
            let probe = match order.mode {
                Some(mode @ (Mode::Http | Mode::Https)) => Probe::Http {
                    https: mode == Mode::Https,
                    domain: entry.name.clone(),
                    file: entry.file_name(),
                    first_line: entry.sha.clone(),
                    second_line: "sectigo.com".to_owned(),
                },
                Some(Mode::Cname) => Probe::Cname {
                    host: entry.cname_host(),
                    point: entry.cname_point(),
                },
                Some(Mode::Txt) => Probe::Txt {
                    host: entry.txt_host(),
                    point: order.txt_point.clone().unwrap_or_default(),
                },
                // Email completes only by the link being clicked ([`click`]).
                Some(Mode::Email) | None => continue,
            };
            probes.push((
                *id,
                order.backend_id.clone(),
                order.mode,
                None,
                Check::Probe(probe),
            ));
        }
    }
    for (id, backend_id, mode, connector, check) in probes {
        let outcome = match check {
            Check::Probe(probe) => probe::run(&shared.config, &probe).await,
            Check::Decided(outcome) => outcome,
        };
        let mut book = shared.dcv();
        let now = book.now();
        let interval = shared.config.dcv_check_interval;
        let validity = shared.config.dcv_validity;
        let Some(entry) = book.entry_mut(id) else { continue };
        let domain = entry.name.clone();
        if entry.order.status == OrderStatus::Submitted && entry.order.backend_id == backend_id {
            if outcome.passed {
                if let Some(mode) = mode {
                    validate(entry, mode, now, validity);
                }
            } else {
                // T8: stays submitted; the next check is scheduled.
                entry.order.last_check = Some(now);
                entry.order.next_check = Some(now + interval);
            }
        }
        book.checks.push(DcvCheck {
            domain,
            method: mode.map(Mode::as_str).unwrap_or_default().to_owned(),
            target: outcome.target,
            passed: outcome.passed,
            detail: outcome.detail,
            connector,
        });
    }
}

/// A check [`run_due_checks`] makes: asking the network, or already decided from the book.
enum Check {
    Probe(Probe),
    Decided(Outcome),
}

/// The check of a CNAME order placed through a DNS connector: no DNS question is asked.
/// Inferred (spec §3.9, §8.2 T6c, §10.3 "watch for the connector falling to `NOT_CONNECTED`"):
/// SCM's own agent publishes the record, so the simulator takes it as published while the
/// connector is `CONNECTED` and still lists the provider, and the check fails (T8, the order
/// stays `SUBMITTED`) while it is not.
fn connector_check(connectors: &[SimDnsConnector], wanted: &ConnectorRef, host: &str) -> Outcome {
    let target = format!(
        "{host} CNAME via DNS connector {} ({})",
        wanted.id, wanted.provider
    );
    let (passed, detail) = match find_connector(connectors, &wanted.id) {
        None => (false, "the DNS connector no longer exists".to_owned()),
        Some(connector) if !connector.providers.contains(&wanted.provider) => (
            false,
            format!("the DNS connector no longer lists {}", wanted.provider),
        ),
        Some(connector) if connector.status != ConnectorStatus::Connected => (
            false,
            format!("the DNS connector is {}", connector.status.as_str()),
        ),
        Some(_) => (true, "published by the DNS connector's agent".to_owned()),
    };
    tracing::info!(checked = %target, passed, detail = %detail, "DCV check");
    Outcome {
        passed,
        target,
        detail,
    }
}

/// [`super::ScmSimulator::console_start_and_submit`]: the start for `mode` (none for TXT) and its
/// submit, through [`dispatch`] as the API's calls go. EMAIL submits to the first address
/// `start/domain/email` lists.
/// Inferred (spec §3.9 "Validate → … → Start → … → Submit"): the console drives the same
/// per-domain DCV state as the API, so a console order is an API order; the customer's DCV
/// switch and the `allowDCV` privilege apply to it as to any call.
pub async fn console(shared: &Shared, domain: &str, mode: Mode) -> Result<(), ScmError> {
    let call = |body: &Value| Call::new("", Bytes::from(body.to_string()));
    let mut body = json!({ "domain": domain });
    if mode != Mode::Txt {
        dispatch(shared, &Endpoint::DcvStart(mode), &call(&body)).await?;
    }
    if mode == Mode::Email {
        body["email"] = allowed_emails(&normalise(domain)).into_iter().next().into();
    }
    dispatch(shared, &Endpoint::DcvSubmit(mode), &call(&body)).await?;
    tracing::info!(domain, mode = mode.as_str(), "DCV order placed in the console");
    Ok(())
}

/// T7: the order succeeded.
fn validate(entry: &mut DomainEntry, mode: Mode, now: OffsetDateTime, validity: Duration) {
    entry.validation = Some(Validation {
        method: mode,
        at: now,
        until: now + validity,
    });
    entry.order = Order::default();
    entry.last_mode = Some(mode);
    tracing::info!(domain = %entry.name, method = mode.completed(), "domain validated");
}

/// Why a click on an approval link did nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClickError {
    /// No registered domain has this name.
    #[error("no domain {0} is registered")]
    UnknownDomain(String),
    /// The domain has no submitted EMAIL order, so no link was sent.
    #[error("{0} has no submitted EMAIL order")]
    NoEmailOrder(String),
}

/// The approver "clicks the link" of `domain`'s submitted EMAIL order: it is validated at once.
/// Inferred (spec §9 "EMAIL: a test hook"): the click completes the order immediately rather than
/// at the next scheduled check, because a real approval is recorded when the link is opened.
pub fn click(shared: &Shared, domain: &str) -> Result<(), ClickError> {
    let mut book = shared.dcv();
    let now = book.now();
    let id = book
        .find(domain)
        .map(|entry| entry.id)
        .ok_or_else(|| ClickError::UnknownDomain(domain.to_owned()))?;
    let validity = shared.config.dcv_validity;
    let entry = book
        .entry_mut(id)
        .ok_or_else(|| ClickError::UnknownDomain(domain.to_owned()))?;
    entry.advance(now);
    let order = &entry.order;
    if order.status != OrderStatus::Submitted || order.mode != Some(Mode::Email) {
        return Err(ClickError::NoEmailOrder(entry.name.clone()));
    }
    let email = order.email.clone().unwrap_or_default();
    let name = entry.name.clone();
    validate(entry, Mode::Email, now, validity);
    book.checks.push(DcvCheck {
        domain: name,
        method: Mode::Email.as_str().to_owned(),
        target: email,
        passed: true,
        detail: "approval link clicked".to_owned(),
        connector: None,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_material_follows_the_documented_shapes() {
        let entry = DomainEntry::new(1, "CcmQA.com.", true, 1);
        assert_eq!(entry.name, "ccmqa.com");
        let file = entry.file_name();
        assert_eq!(file.len(), 36);
        assert!(
            file[..32]
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(
            entry.url(false),
            format!("http://ccmqa.com/.well-known/pki-validation/{file}")
        );
        assert!(entry.url(true).starts_with("https://ccmqa.com/"));
        // CNAME ties to the HTTP pair (spec §3.9).
        assert_eq!(
            entry.cname_host(),
            format!("_{}.ccmqa.com.", file[..32].to_ascii_lowercase())
        );
        let point = entry.cname_point();
        assert_eq!(point.len(), 32 + 1 + 32 + ".sectigo.com.".len());
        assert_eq!(point.replace('.', "").trim_end_matches("sectigocom"), entry.sha);
        assert_eq!(entry.txt_host(), "_pki-validation.ccmqa.com.");
    }

    #[test]
    fn txt_points_are_32_printable_characters() {
        for _ in 0..50 {
            let hostile = txt_point(TxtAlphabet::Hostile);
            assert_eq!(hostile.len(), 32);
            assert!(hostile.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            for special in [' ', '\\', '"'] {
                assert!(hostile.contains(special), "{hostile:?} lacks {special:?}");
            }
            let safe = txt_point(TxtAlphabet::Safe);
            assert_eq!(safe.len(), 32);
            assert!(safe.chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn dates_use_the_documented_formats() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_834_767_794_000_000).unwrap();
        assert_eq!(date(at), "2025-12-04");
        assert_eq!(instant(at), "2025-12-04T07:52:47.794Z");
    }

    #[test]
    fn a_connector_check_holds_only_while_the_connector_can_publish() {
        let mut connector = SimDnsConnector::new("agent", &["cloudflare"]);
        let wanted = ConnectorRef {
            id: connector.id.clone(),
            provider: "cloudflare".to_owned(),
        };
        let host = "_abc.a.example.";
        let passed = connector_check(std::slice::from_ref(&connector), &wanted, host);
        assert!(passed.passed, "{passed:?}");
        assert_eq!(
            passed.target,
            format!("{host} CNAME via DNS connector {} (cloudflare)", connector.id)
        );
        // T8 while the agent is away: the order stays submitted and is checked again later.
        connector.status = ConnectorStatus::NotConnected;
        let failed = connector_check(std::slice::from_ref(&connector), &wanted, host);
        assert!(!failed.passed);
        assert!(failed.detail.contains("NOT_CONNECTED"), "{failed:?}");
        assert!(!connector_check(&[], &wanted, host).passed);
    }

    #[test]
    fn expiry_and_lapse_happen_on_read() {
        let mut entry = DomainEntry::new(1, "a.example", true, 1);
        let now = OffsetDateTime::now_utc();
        validate(&mut entry, Mode::Cname, now, Duration::from_secs(60));
        assert_eq!(entry.status(now), "VALIDATED");
        assert_eq!(entry.status(now + time::Duration::seconds(61)), "EXPIRED");
        entry.order = Order {
            status: OrderStatus::Submitted,
            mode: Some(Mode::Http),
            expires: Some(now + time::Duration::days(30)),
            ..Order::default()
        };
        entry.advance(now + time::Duration::days(29));
        assert_eq!(entry.order.status, OrderStatus::Submitted);
        entry.advance(now + time::Duration::days(31));
        assert_eq!(entry.order.status, OrderStatus::Rejected);
        assert_eq!(entry.order.mode, Some(Mode::Http));
        let body = entry.status_json(now);
        assert_eq!(body["orderStatus"], "REJECTED");
        assert!(
            body.get("url").is_none(),
            "a lapsed order has no material: {body}"
        );
    }
}
