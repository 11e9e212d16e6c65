//! The SCM SSL endpoints (spec §3): request validation with the documented codes, the state
//! changes on the order book, and the replies.

use std::{net::IpAddr, time::Instant};

use bytes::Bytes;
use hyper::{
    HeaderMap, StatusCode,
    header::{CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue, LOCATION},
};
use rand::Rng as _;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{
    JSON_UTF8, PendingVariant, ScmProfile, ScmReading, Shared,
    collect::{self, Chain, Format},
    csr::ParsedCsr,
    error::ScmError,
    orders::{
        Account, AutoRenew, CustomField, DateFormat, ListFilter, Order, OrderBook, Status, dcv_json,
        details_json, list_item_json, normalise_serial, profile_json,
    },
    response,
    routes::Endpoint,
};

/// A request's query parameters, body and `Host`.
#[derive(Debug)]
pub struct Call {
    query: Vec<(String, String)>,
    body: Bytes,
    host: Option<String>,
}

impl Call {
    /// Parses the query string (form encoding, as servlet containers decode it).
    pub fn new(query: &str, body: Bytes) -> Self {
        Self {
            query: form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
            body,
            host: None,
        }
    }

    /// The request's `Host` header, for absolute URLs in answers (`Location`).
    #[must_use]
    pub fn with_host(mut self, host: Option<String>) -> Self {
        self.host = host;
        self
    }

    /// `https://<Host>` (the simulator serves TLS only).
    pub fn base_url(&self) -> String {
        format!("https://{}", self.host.as_deref().unwrap_or("127.0.0.1"))
    }

    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn int_param(&self, name: &'static str) -> Result<Option<i64>, ScmError> {
        self.param(name)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|_| ScmError::InvalidField(name.to_owned()))
            })
            .transpose()
    }

    /// The JSON body; an empty body reads as `{}` so that required fields are reported by name.
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, ScmError> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        // Inferred (spec §1.4): malformed JSON or a wrongly typed field has no documented code;
        // we chose 400 with -1 "Unknown error." because nothing more specific applies.
        serde_json::from_slice(body).map_err(|_| ScmError::Unknown(StatusCode::BAD_REQUEST))
    }

    fn date_format(&self) -> Result<DateFormat, ScmError> {
        self.param("dateFormat")
            .map_or(Ok(DateFormat::default()), |value| {
                DateFormat::parse(value).ok_or_else(|| ScmError::InvalidField("dateFormat".to_owned()))
            })
    }
}

/// A successful answer.
#[derive(Debug)]
pub enum Reply {
    /// 200 with JSON.
    Json(Value),
    /// 200 with a JSON array and `X-Total-Count`.
    Page(Value, usize),
    /// 200 with only `X-Total-Count`.
    Count(usize),
    /// 204.
    NoContent,
    /// 202.
    Accepted,
    /// 200 with JSON as the DCV and Domain APIs send it: `application/json` without charset
    /// (spec §1.1).
    Dcv(Value),
    /// [`Reply::Dcv`] with a JSON array and `X-Total-Count`.
    DcvPage(Value, usize),
    /// 201 with `Location` and no body (domain create, spec §5.4).
    Created(String),
    /// 200 with an empty body (DCV delete, domain activate/suspend).
    Empty,
    /// 200 with a certificate file.
    File {
        /// The bytes.
        body: Vec<u8>,
        /// `Content-Disposition` file name.
        filename: String,
    },
}

impl Reply {
    /// The HTTP response.
    pub fn into_response(self) -> crate::sim::HttpResponse {
        let mut headers = HeaderMap::new();
        match self {
            Self::Json(value) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
                response(
                    StatusCode::OK,
                    headers,
                    serde_json::to_vec(&value).unwrap_or_default(),
                )
            }
            Self::Page(value, total) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
                headers.insert("X-Total-Count", HeaderValue::from(total));
                response(
                    StatusCode::OK,
                    headers,
                    serde_json::to_vec(&value).unwrap_or_default(),
                )
            }
            Self::Count(total) => {
                headers.insert("X-Total-Count", HeaderValue::from(total));
                response(StatusCode::OK, headers, Vec::new())
            }
            Self::Dcv(value) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response(
                    StatusCode::OK,
                    headers,
                    serde_json::to_vec(&value).unwrap_or_default(),
                )
            }
            Self::DcvPage(value, total) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert("X-Total-Count", HeaderValue::from(total));
                response(
                    StatusCode::OK,
                    headers,
                    serde_json::to_vec(&value).unwrap_or_default(),
                )
            }
            Self::Created(location) => {
                if let Ok(value) = HeaderValue::from_str(&location) {
                    headers.insert(LOCATION, value);
                }
                response(StatusCode::CREATED, headers, Vec::new())
            }
            Self::Empty => response(StatusCode::OK, headers, Vec::new()),
            Self::NoContent => response(StatusCode::NO_CONTENT, headers, Vec::new()),
            Self::Accepted => response(StatusCode::ACCEPTED, headers, Vec::new()),
            Self::File { body, filename } => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream;charset=UTF-8"),
                );
                if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
                    headers.insert(CONTENT_DISPOSITION, value);
                }
                response(StatusCode::OK, headers, body)
            }
        }
    }
}

/// Runs one authenticated API call.
pub fn dispatch(shared: &Shared, endpoint: &Endpoint, call: &Call) -> Result<Reply, ScmError> {
    match endpoint {
        Endpoint::Types => types(shared, call),
        Endpoint::CustomFields => Ok(custom_fields(shared)),
        Endpoint::List => list(shared, call, false),
        Endpoint::Count => list(shared, call, true),
        Endpoint::Details(id) => details(shared, call, id),
        Endpoint::Dcv(id) => with_order(shared, id, |order, _| Ok(Reply::Json(dcv_json(order)))),
        Endpoint::DcvRecheck(id) => with_order(shared, id, |order, _| {
            order.dcv_checked = OffsetDateTime::now_utc();
            Ok(Reply::Accepted)
        }),
        Endpoint::Enroll => enroll(shared, call),
        Endpoint::Collect(id, format) => collect(shared, call, id, format.as_deref()),
        Endpoint::Approve(id) => approve(shared, call, id, true),
        Endpoint::Decline(id) => approve(shared, call, id, false),
        Endpoint::Update => update(shared, call),
        Endpoint::Revoke(id) => {
            let reason = revocation(call)?;
            with_order(shared, id, |order, _| revoke(order, reason))
        }
        Endpoint::RevokeBySerial(serial) => revoke_by_serial(shared, call, serial),
        Endpoint::Renew(renew_id) => renew_by_renew_id(shared, call, renew_id),
        Endpoint::RenewById(id) => renew_by_id(shared, call, id),
        Endpoint::Replace(id) => replace(shared, call, id),
        Endpoint::Delete(id) => delete(shared, id),
        // Unimplemented families; the DCV and Domain endpoints go to `dcv`/`domains` instead.
        _ => Err(ScmError::Unknown(StatusCode::NOT_IMPLEMENTED)),
    }
}

fn parse_ssl_id(text: &str) -> Result<i64, ScmError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| ScmError::WrongSslId(text.to_owned()))
}

/// Runs `f` on the order `id` (advanced to the present) under the book's lock.
fn with_order<T>(
    shared: &Shared,
    id: &str,
    f: impl FnOnce(&mut Order, &Shared) -> Result<T, ScmError>,
) -> Result<T, ScmError> {
    let ssl_id = parse_ssl_id(id)?;
    let mut book = shared.book();
    let order = book
        .orders
        .get_mut(&ssl_id)
        .ok_or_else(|| ScmError::WrongSslId(id.to_owned()))?;
    order.advance(&shared.issuing);
    f(order, shared)
}

fn account(shared: &Shared) -> Account<'_> {
    Account {
        flavor: shared.config.flavor,
        ca: &shared.issuing,
    }
}

// ---------------------------------------------------------------------------------------------
// 3.1, 3.2: profiles and custom fields
// ---------------------------------------------------------------------------------------------

fn types(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let organization = call.int_param("organizationId")?;
    // Inferred (spec §3.1): we chose to list nothing for another organization because the
    // simulated customer has a single organization and the filter narrows profiles to one.
    let profiles: Vec<Value> = if organization.is_none_or(|id| id == shared.config.org_id) {
        shared.config.profiles.iter().map(profile_json).collect()
    } else {
        Vec::new()
    };
    Ok(Reply::Json(Value::Array(profiles)))
}

fn custom_fields(shared: &Shared) -> Reply {
    let fields: Vec<Value> = shared
        .config
        .mandatory_custom_fields
        .iter()
        .zip(354..)
        .map(|(name, id)| json!({ "id": id, "name": name, "mandatory": true }))
        .collect();
    Reply::Json(Value::Array(fields))
}

// ---------------------------------------------------------------------------------------------
// 3.4, 3.5, 3.6, 3.23: list, count, details, delete
// ---------------------------------------------------------------------------------------------

/// Inferred (spec §1.7, §7 item 16): the docs give no default or maximum page size; we chose
/// 200 for both because python-cert_manager observed 200 as the server's maximum.
const MAX_PAGE_SIZE: usize = 200;

fn list_filter(call: &Call) -> Result<ListFilter, ScmError> {
    let text = |name: &str| call.param(name).filter(|v| !v.is_empty()).map(str::to_owned);
    let status = text("status");
    Ok(ListFilter {
        common_name: text("commonName"),
        subject_alternative_name: text("subjectAlternativeName"),
        // An empty `status` means no filter (spec §1.8).
        status,
        ssl_type_id: call.int_param("sslTypeId")?,
        org_id: call.int_param("orgId")?,
        serial_number: text("serialNumber").map(|serial| normalise_serial(&serial)),
        external_requester: text("externalRequester"),
        fingerprints: ["sha256Hash", "sha1Hash", "md5Hash"]
            .iter()
            .filter_map(|name| text(name))
            .collect(),
    })
}

fn list(shared: &Shared, call: &Call, count_only: bool) -> Result<Reply, ScmError> {
    let filter = list_filter(call)?;
    let index = |name: &'static str, default: usize| -> Result<usize, ScmError> {
        call.int_param(name)?.map_or(Ok(default), |value| {
            usize::try_from(value).map_err(|_| ScmError::InvalidField(name.to_owned()))
        })
    };
    let size = index("size", MAX_PAGE_SIZE)?.min(MAX_PAGE_SIZE);
    let position = index("position", 0)?;
    let mut book = shared.book();
    for order in book.orders.values_mut() {
        order.advance(&shared.issuing);
    }
    // `Unmanaged` is deprecated and always empty (spec §1.8); no order ever has it.
    let matching: Vec<&Order> = book
        .orders
        .values()
        .filter(|order| filter.matches(order))
        .collect();
    let total = matching.len();
    if count_only {
        return Ok(Reply::Count(total));
    }
    // Inferred (spec §3.4): the order of results is undocumented; ascending sslId in the common
    // reading, newest first in the strict one (ScmReading item 4).
    let mut matching = matching;
    if shared.config.reading == ScmReading::Strict {
        matching.reverse();
    }
    let page: Vec<Value> = matching
        .into_iter()
        .skip(position)
        .take(size)
        .map(list_item_json)
        .collect();
    Ok(Reply::Page(Value::Array(page), total))
}

fn details(shared: &Shared, call: &Call, id: &str) -> Result<Reply, ScmError> {
    let dates = call.date_format()?;
    with_order(shared, id, |order, shared| {
        Ok(Reply::Json(details_json(order, account(shared), dates)))
    })
}

fn delete(shared: &Shared, id: &str) -> Result<Reply, ScmError> {
    let ssl_id = parse_ssl_id(id)?;
    // Inferred (spec §3.23): the docs allow deleting only imported or discovered certificates;
    // we chose to let any order be deleted because the simulator models neither origin and the
    // endpoint would otherwise be unreachable (tests use it to clean up).
    shared
        .book()
        .orders
        .remove(&ssl_id)
        .map(|_| Reply::NoContent)
        .ok_or_else(|| ScmError::WrongSslId(id.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// 3.9: enroll
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EnrollRequest {
    org_id: Option<i64>,
    csr: Option<String>,
    // 004's table writes `SubjAltNames` (spec §5).
    #[serde(alias = "SubjAltNames")]
    subj_alt_names: Option<String>,
    cert_type: Option<i64>,
    term: Option<i64>,
    comments: Option<String>,
    custom_fields: Option<Vec<CustomField>>,
    external_requester: Option<String>,
    dcv_mode: Option<String>,
    dcv_email: Option<String>,
    // InCommon's legacy fields (spec §5): accepted and ignored in both flavours.
    #[allow(dead_code, reason = "accepted for compatibility, never used")]
    number_servers: Option<i64>,
    #[allow(dead_code, reason = "accepted for compatibility, never used")]
    server_type: Option<i64>,
}

/// Everything a new order needs, validated.
struct NewOrder {
    org_id: i64,
    profile: ScmProfile,
    term: u32,
    csr: ParsedCsr,
    common_name: Option<String>,
    names: Vec<String>,
    comments: Option<String>,
    external_requester: Option<String>,
    custom_fields: Vec<CustomField>,
    dcv_mode: Option<String>,
    dcv_email: Option<String>,
}

/// Inferred (spec §3.9, §5): only 004 states a SAN limit (100); we enforce it in both flavours
/// and answer -1601 naming `subjAltNames`, as the table has no SAN-count code.
const MAX_SANS: usize = 100;

fn enroll(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let request: EnrollRequest = call.json()?;
    let org_id = check_org(shared, request.org_id)?;
    let csr = ParsedCsr::parse(request.csr.as_deref().unwrap_or_default())?;
    let profile = check_profile(shared, request.cert_type)?;
    let term = check_term(&profile, request.term)?;
    let requested: Vec<String> = request
        .subj_alt_names
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    if requested.len() > MAX_SANS {
        return Err(ScmError::InvalidField("subjAltNames".to_owned()));
    }
    let custom_fields = check_custom_fields(shared, request.custom_fields.unwrap_or_default())?;
    let comments = check_length("comments", request.comments, 1024)?;
    let external_requester = check_emails("externalRequester", request.external_requester, 512)?;
    let (dcv_mode, dcv_email) = check_dcv(request.dcv_mode, request.dcv_email)?;
    // Inferred (spec §3.9): we chose the CSR's CN (or, without one, the first requested SAN)
    // as the common name because enroll has no commonName field; and as SANs the CN, the
    // requested names and the CSR's own SAN request, in that order and without duplicates,
    // because public CAs repeat the CN as a SAN and a CSR-only SAN must not be dropped.
    let common_name = csr.common_name.clone().or_else(|| requested.first().cloned());
    let names = merge_names(common_name.as_deref(), requested.iter().chain(&csr.names));
    check_names(shared, common_name.as_deref(), &names)?;
    let new = NewOrder {
        org_id,
        profile,
        term,
        csr,
        common_name,
        names,
        comments,
        external_requester,
        custom_fields,
        dcv_mode,
        dcv_email,
    };
    let mut book = shared.book();
    let order = place_order(shared, &mut book, new);
    tracing::info!(ssl_id = order.ssl_id, common_name = ?order.common_name, "order placed (enroll)");
    Ok(Reply::Json(
        json!({ "sslId": order.ssl_id, "renewId": order.renew_id }),
    ))
}

fn place_order<'a>(shared: &Shared, book: &'a mut OrderBook, new: NewOrder) -> &'a Order {
    let now = OffsetDateTime::now_utc();
    let ssl_id = book.next_id();
    book.count_order(&new.csr);
    let order = Order {
        ssl_id,
        renew_id: renew_id(),
        org_id: new.org_id,
        profile: new.profile,
        term: new.term,
        status: if shared.config.require_approval {
            Status::Requested
        } else {
            Status::Applied
        },
        csr: new.csr,
        common_name: new.common_name,
        names: new.names,
        comments: new.comments,
        external_requester: new.external_requester,
        custom_fields: new.custom_fields,
        dcv_mode: new.dcv_mode,
        dcv_email: new.dcv_email,
        requester: shared.config.login.clone(),
        owner: None,
        requested: now,
        approved: None,
        declined: None,
        revoked: None,
        replaced: None,
        renewed_date: None,
        reason_code: None,
        pending_left: shared.config.pending_collects,
        ready_at: Instant::now() + shared.config.processing_delay,
        lifetime_override: shared.config.certificate_lifetime,
        issued: None,
        auto_renew: AutoRenew::default(),
        suspend_notifications: false,
        dcv_checked: now,
    };
    book.orders.entry(ssl_id).or_insert(order)
}

/// 20 characters of `[A-Za-z0-9-]`, like the documented examples (spec §3.9).
fn renew_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn check_org(shared: &Shared, org_id: Option<i64>) -> Result<i64, ScmError> {
    match org_id {
        None => Err(ScmError::Required("orgId")),
        Some(id) if id == shared.config.org_id => Ok(id),
        Some(_) => Err(ScmError::OrgInvalid),
    }
}

fn check_profile(shared: &Shared, cert_type: Option<i64>) -> Result<ScmProfile, ScmError> {
    let id = cert_type.ok_or(ScmError::Required("certType"))?;
    shared
        .config
        .profiles
        .iter()
        .find(|profile| profile.id == id)
        .cloned()
        .ok_or(ScmError::ProfileInvalid)
}

fn check_term(profile: &ScmProfile, term: Option<i64>) -> Result<u32, ScmError> {
    let term = term.ok_or(ScmError::Required("term"))?;
    // Inferred (spec §3.9): we chose -36 for a term outside the profile's list (and one below
    // 1) because its message names exactly that condition.
    u32::try_from(term)
        .ok()
        .filter(|term| profile.terms.contains(term))
        .ok_or(ScmError::TermInvalid)
}

fn check_custom_fields(shared: &Shared, fields: Vec<CustomField>) -> Result<Vec<CustomField>, ScmError> {
    for mandatory in &shared.config.mandatory_custom_fields {
        let present = fields
            .iter()
            .any(|field| field.name == *mandatory && !field.value.trim().is_empty());
        if !present {
            return Err(ScmError::MandatoryCustomFieldMissing);
        }
    }
    // Inferred (spec §3.9): names must be "of an enabled custom field", but we chose to keep
    // unknown names as given rather than refuse them, because the error for one is
    // undocumented and the simulator can only configure mandatory fields.
    if fields
        .iter()
        .any(|field| field.name.is_empty() || field.name.len() > 256 || field.value.len() > 256)
    {
        return Err(ScmError::InvalidField("customFields".to_owned()));
    }
    Ok(fields)
}

/// Empty strings read as absent; longer than `max` is -1601 (inferred: a field constraint).
fn check_length(field: &'static str, value: Option<String>, max: usize) -> Result<Option<String>, ScmError> {
    match value {
        Some(value) if value.chars().count() > max => Err(ScmError::InvalidField(field.to_owned())),
        Some(value) if value.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// `email@domain.com` or a comma-separated list of them (spec §3.9).
fn check_emails(field: &'static str, value: Option<String>, max: usize) -> Result<Option<String>, ScmError> {
    let value = check_length(field, value, max)?;
    if let Some(list) = &value
        && !list.split(',').map(str::trim).all(is_email)
    {
        return Err(ScmError::InvalidField(field.to_owned()));
    }
    Ok(value)
}

pub(super) fn is_email(text: &str) -> bool {
    text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !text.contains(char::is_whitespace)
            && is_dns_name(domain)
            && domain.contains('.')
    })
}

/// The enroll/renew/replace `dcvMode` values (spec §4; `scm-ssl.md` §3.9, §3.20, §3.22).
const DCV_MODES: [&str; 5] = ["CNAME", "EMAIL", "HTTP", "HTTPS", "TXT"];

/// `dcvMode` and `dcvEmail` of an order (spec §4): a mode outside [`DCV_MODES`] is -1601 on
/// `dcvMode`, EMAIL without an address -7 on `dcvEmail`, a malformed address -1601 on
/// `dcvEmail`. Empty strings count as absent; both are kept as sent.
/// Inferred (`scm-ssl.md` §3.9): the docs do not say whether case matters; we chose exact,
/// upper-case matching as documented, so a client's spelling slip shows up here rather than at
/// the real CA. `dcvEmail` with another mode is kept, not refused: the docs only require it
/// for EMAIL.
fn check_dcv(
    mode: Option<String>,
    email: Option<String>,
) -> Result<(Option<String>, Option<String>), ScmError> {
    let mode = mode.filter(|mode| !mode.is_empty());
    let email = email.filter(|email| !email.is_empty());
    if let Some(mode) = &mode {
        if !DCV_MODES.contains(&mode.as_str()) {
            return Err(ScmError::InvalidField("dcvMode".to_owned()));
        }
        if mode == "EMAIL" && email.is_none() {
            return Err(ScmError::Required("dcvEmail"));
        }
    }
    if email.as_deref().is_some_and(|email| !is_email(email)) {
        return Err(ScmError::InvalidField("dcvEmail".to_owned()));
    }
    Ok((mode, email))
}

pub(super) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The CN (when it is a host name or address) followed by `others`, without duplicates.
fn merge_names<'a>(common_name: Option<&'a str>, others: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let cn = common_name.filter(|cn| is_dns_name(cn) || cn.parse::<IpAddr>().is_ok());
    for name in cn.into_iter().chain(others.map(String::as_str)) {
        if !names.iter().any(|known| known.eq_ignore_ascii_case(name)) {
            names.push(name.to_owned());
        }
    }
    names
}

/// Syntax of every name, then domain validation (spec §3.9 -107).
fn check_names(shared: &Shared, common_name: Option<&str>, names: &[String]) -> Result<(), ScmError> {
    let Some(common_name) = common_name else {
        return Err(ScmError::Required("commonName"));
    };
    if common_name.chars().count() > 64 {
        // Inferred (spec §3.10/§3.22): we chose the 1..64 CN limit of keygen and replace for
        // enroll too (-1601) because it is X.509's upper bound for a common name.
        return Err(ScmError::InvalidField("commonName".to_owned()));
    }
    for name in names {
        let valid = match crate::sim::SubjectName::parse(name) {
            crate::sim::SubjectName::Dns(dns) => is_dns_name(&dns),
            crate::sim::SubjectName::Email(email) => is_email(&email),
            crate::sim::SubjectName::Ip(_) | crate::sim::SubjectName::Uri(_) => true,
        };
        if !valid {
            // Inferred (spec §3.9): we chose -1601 naming the field because a malformed SAN has
            // no dedicated code.
            return Err(ScmError::InvalidField("subjAltNames".to_owned()));
        }
    }
    {
        // With registered domains, DCV state decides (spec §4: enroll fails until the domain
        // is validated).
        let book = shared.dcv();
        if book.managed {
            for name in names {
                // Inferred: DCV is about host names; IP addresses, mailbox and URI names are
                // not domain-validated here.
                let crate::sim::SubjectName::Dns(target) = crate::sim::SubjectName::parse(name) else {
                    continue;
                };
                if let Some(refusal) = book.enroll_refusal(&target) {
                    return Err(refusal);
                }
            }
            return Ok(());
        }
    }
    let Some(validated) = &shared.config.validated_domains else {
        return Ok(());
    };
    for name in names {
        let target = match crate::sim::SubjectName::parse(name) {
            crate::sim::SubjectName::Dns(dns) => dns.strip_prefix("*.").unwrap_or(&dns).to_ascii_lowercase(),
            crate::sim::SubjectName::Ip(ip) => ip.to_string(),
            // DCV is about host names; mailbox and URI names are not domain-validated.
            crate::sim::SubjectName::Email(_) | crate::sim::SubjectName::Uri(_) => continue,
        };
        let covered = validated.iter().any(|domain| {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            target == domain || target.ends_with(&format!(".{domain}"))
        });
        if !covered {
            return Err(ScmError::DcvIncomplete(name.clone()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3.11: collect
// ---------------------------------------------------------------------------------------------

fn collect(shared: &Shared, call: &Call, id: &str, path_format: Option<&str>) -> Result<Reply, ScmError> {
    let variant = match shared.config.reading {
        ScmReading::Common => shared.config.pending_variant,
        // ScmReading item 3: the "State" group's code.
        ScmReading::Strict => PendingVariant::Code130,
    };
    with_order(shared, id, |order, shared| {
        let format = Format::parse(path_format.or_else(|| call.param("format")))?;
        match order.status {
            Status::Issued | Status::Expired => {
                let issued = order.issued.as_ref().ok_or(ScmError::NotCollectable)?;
                let body = collect::render(
                    format,
                    Chain {
                        leaf: &issued.der,
                        intermediate: shared.issuing.intermediate_der(),
                        root: shared.issuing.root_der(),
                    },
                );
                Ok(Reply::File {
                    body,
                    filename: file_name(order),
                })
            }
            Status::Requested | Status::Applied => {
                // Pending collects count only once the order is with the CA: an order waiting
                // for approval is not being processed yet.
                if order.status == Status::Applied {
                    order.pending_left = order.pending_left.saturating_sub(1);
                }
                Err(match variant {
                    PendingVariant::Code1400 => ScmError::BeingProcessed,
                    PendingVariant::Code0 => ScmError::BeingProcessedCodeZero,
                    PendingVariant::Code183 => ScmError::NotCollectable,
                    PendingVariant::Code103 => ScmError::NotCollectedYet,
                    PendingVariant::Code130 => ScmError::NotIssued(order.status.as_str().to_owned()),
                })
            }
            Status::Revoked => Err(ScmError::CollectRevoked),
            Status::Declined | Status::Rejected => Err(ScmError::NotCollectable),
        }
    })
}

fn file_name(order: &Order) -> String {
    let stem: String = order.common_name.as_deref().map_or_else(
        || order.ssl_id.to_string(),
        |cn| {
            cn.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        },
    );
    format!("{stem}.cert")
}

// ---------------------------------------------------------------------------------------------
// 3.13, 3.14: approve, decline
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessageRequest {
    message: Option<String>,
}

fn approve(shared: &Shared, call: &Call, id: &str, approve: bool) -> Result<Reply, ScmError> {
    let request: MessageRequest = call.json()?;
    required_text("message", request.message, 512)?;
    with_order(shared, id, |order, shared| {
        let now = OffsetDateTime::now_utc();
        match (approve, order.status) {
            (true, Status::Requested) => {
                // Approved → Applied at once: the simulated CA submits approved orders
                // immediately, so `Approved` is never observable.
                order.status = Status::Applied;
                order.approved = Some(now);
                order.owner = Some(shared.config.login.clone());
            }
            (false, Status::Requested | Status::Applied) => {
                order.status = Status::Declined;
                order.declined = Some(now);
            }
            // Inferred (spec §3.14): decline documents no state error; we chose -1112, the
            // approval-decision state error, for declining a certificate that is not pending.
            (_, status) => return Err(ScmError::CannotApprove(status.as_str().to_owned())),
        }
        Ok(Reply::NoContent)
    })
}

/// A required string of 1..=`max` characters: missing or empty is -7, too long -1601.
fn required_text(field: &'static str, value: Option<String>, max: usize) -> Result<String, ScmError> {
    match value {
        None => Err(ScmError::Required(field)),
        Some(value) if value.trim().is_empty() => Err(ScmError::Required(field)),
        Some(value) if value.chars().count() > max => Err(ScmError::InvalidField(field.to_owned())),
        Some(value) => Ok(value),
    }
}

// ---------------------------------------------------------------------------------------------
// 3.16, 3.17: revoke
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RevokeRequest {
    reason_code: Option<i64>,
    reason: Option<String>,
}

fn revocation(call: &Call) -> Result<Option<u8>, ScmError> {
    let request: RevokeRequest = call.json()?;
    required_text("reason", request.reason, 512)?;
    // "Allowed ranges 0,1 and 3-5" (spec §3.16); 004 sends no code at all, so it is optional.
    match request.reason_code {
        None => Ok(None),
        Some(code @ (0 | 1 | 3..=5)) => Ok(u8::try_from(code).ok()),
        // Inferred (spec §3.16): we chose -1601 because an out-of-range code breaks a field
        // constraint and no code is documented for it.
        Some(_) => Err(ScmError::InvalidField("reasonCode".to_owned())),
    }
}

fn revoke(order: &mut Order, reason_code: Option<u8>) -> Result<Reply, ScmError> {
    match order.status {
        Status::Issued => {
            order.status = Status::Revoked;
            order.revoked = Some(OffsetDateTime::now_utc());
            order.reason_code = Some(reason_code.unwrap_or(0));
            tracing::info!(ssl_id = order.ssl_id, "certificate revoked");
            Ok(Reply::NoContent)
        }
        Status::Revoked => Err(ScmError::AlreadyRevoked),
        _ => Err(ScmError::OnlyIssuedRevocable),
    }
}

fn revoke_by_serial(shared: &Shared, call: &Call, serial: &str) -> Result<Reply, ScmError> {
    let reason = revocation(call)?;
    let wanted = normalise_serial(serial);
    let mut book = shared.book();
    for order in book.orders.values_mut() {
        order.advance(&shared.issuing);
    }
    let order = book
        .orders
        .values_mut()
        .find(|order| order.serial().is_some_and(|own| normalise_serial(own) == wanted))
        // Inferred (spec §3.17): an unknown serial has no documented code; we chose -5101
        // "Certificate not found. {0}" with the serial as given.
        .ok_or_else(|| ScmError::CertificateNotFound(serial.to_owned()))?;
    revoke(order, reason)
}

// ---------------------------------------------------------------------------------------------
// 3.19, 3.20: renew
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RenewRequest {
    csr: Option<String>,
    dcv_mode: Option<String>,
    dcv_email: Option<String>,
}

fn renew_by_renew_id(shared: &Shared, call: &Call, renew_id: &str) -> Result<Reply, ScmError> {
    let request: RenewRequest = call.json()?;
    let ssl_id = shared
        .book()
        .orders
        .values()
        .find(|order| order.renew_id == renew_id)
        .map(|order| order.ssl_id)
        // Inferred (spec §3.19): we chose -123 for an unknown renewId because its message is
        // what a lookup that returned nothing reports.
        .ok_or(ScmError::RenewTargetInvalid)?;
    renew(shared, ssl_id, request)?;
    // 204 and no new id (spec §3.19).
    Ok(Reply::NoContent)
}

fn renew_by_id(shared: &Shared, call: &Call, id: &str) -> Result<Reply, ScmError> {
    let request: RenewRequest = call.json()?;
    let ssl_id = parse_ssl_id(id)?;
    let new_id = renew(shared, ssl_id, request)?;
    Ok(Reply::Json(json!({ "sslId": new_id })))
}

/// Places a renewal of `ssl_id` with its parameters and the given or the original CSR; marks
/// the original renewed. Returns the new `sslId`.
fn renew(shared: &Shared, ssl_id: i64, request: RenewRequest) -> Result<i64, ScmError> {
    let new_csr = request
        .csr
        .filter(|csr| !csr.trim().is_empty())
        .map(|csr| ParsedCsr::parse(&csr))
        .transpose()?;
    let (dcv_mode, dcv_email) = check_dcv(request.dcv_mode, request.dcv_email)?;
    let mut book = shared.book();
    let original = book
        .orders
        .get_mut(&ssl_id)
        .ok_or_else(|| ScmError::WrongSslId(ssl_id.to_string()))?;
    original.advance(&shared.issuing);
    // Inferred (spec §3.20): renewal needs a certificate to renew; we chose -105 with the
    // status for any order that is neither Issued nor Expired.
    if !matches!(original.status, Status::Issued | Status::Expired) {
        return Err(ScmError::RenewFailed(original.status.as_str().to_owned()));
    }
    original.renewed_date = Some(OffsetDateTime::now_utc());
    // Inferred (spec §3.19/§3.20): we chose to copy names, profile, term, org and metadata and
    // let a new CSR replace only the key, because the docs renew "using the CSR and parameters
    // of the initial certificate". The strict reading (ScmReading item 2) ignores a new CSR.
    let new_csr = match shared.config.reading {
        ScmReading::Common => new_csr,
        ScmReading::Strict => None,
    };
    // A sent `dcvMode` brings its own `dcvEmail` (as replace does); without one the initial
    // order's pair carries over, so an EMAIL renewal never pairs with another mode's address.
    let (dcv_mode, dcv_email) = if dcv_mode.is_some() {
        (dcv_mode, dcv_email)
    } else {
        (original.dcv_mode.clone(), original.dcv_email.clone())
    };
    let new = NewOrder {
        org_id: original.org_id,
        profile: original.profile.clone(),
        term: original.term,
        csr: new_csr.unwrap_or_else(|| original.csr.clone()),
        common_name: original.common_name.clone(),
        names: original.names.clone(),
        comments: original.comments.clone(),
        external_requester: original.external_requester.clone(),
        custom_fields: original.custom_fields.clone(),
        dcv_mode,
        dcv_email,
    };
    let order = place_order(shared, &mut book, new);
    tracing::info!(ssl_id = order.ssl_id, renewed = ssl_id, "order placed (renewal)");
    Ok(order.ssl_id)
}

// ---------------------------------------------------------------------------------------------
// 3.22: replace
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ReplaceRequest {
    csr: Option<String>,
    reason: Option<String>,
    common_name: Option<String>,
    subject_alternative_names: Option<Vec<String>>,
    dcv_mode: Option<String>,
    dcv_email: Option<String>,
}

fn replace(shared: &Shared, call: &Call, id: &str) -> Result<Reply, ScmError> {
    let request: ReplaceRequest = call.json()?;
    let csr_text = request
        .csr
        .filter(|csr| !csr.trim().is_empty())
        .ok_or(ScmError::Required("csr"))?;
    required_text("reason", request.reason, 512)?;
    let csr = ParsedCsr::parse(&csr_text)?;
    let (dcv_mode, dcv_email) = check_dcv(request.dcv_mode, request.dcv_email)?;
    let common_name = request.common_name.filter(|cn| !cn.is_empty());
    with_order(shared, id, |order, shared| {
        // Inferred (spec §3.22): replacing needs an issued certificate; we chose -130 with the
        // status otherwise.
        if order.status != Status::Issued {
            return Err(ScmError::NotIssued(order.status.as_str().to_owned()));
        }
        let common_name = common_name
            .or_else(|| csr.common_name.clone())
            .or_else(|| order.common_name.clone());
        let others = request
            .subject_alternative_names
            .unwrap_or_else(|| order.names.clone());
        let names = merge_names(common_name.as_deref(), others.iter().chain(&csr.names));
        check_names(shared, common_name.as_deref(), &names)?;
        // Inferred (spec §3.22): we chose to send the same sslId back into the issuance pipeline
        // with the new CSR (the old certificate is superseded and no longer served) because
        // replace answers 204 without a new id.
        order.csr = csr;
        order.common_name = common_name;
        order.names = names;
        order.status = Status::Applied;
        order.issued = None;
        order.replaced = Some(OffsetDateTime::now_utc());
        order.pending_left = shared.config.pending_collects;
        order.ready_at = Instant::now() + shared.config.processing_delay;
        if dcv_mode.is_some() {
            order.dcv_mode = dcv_mode;
            order.dcv_email = dcv_email;
        }
        tracing::info!(ssl_id = order.ssl_id, "order placed (replace)");
        Ok(order.csr.clone())
    })
    .map(|csr| {
        shared.book().count_order(&csr);
        Reply::NoContent
    })
}

// ---------------------------------------------------------------------------------------------
// 3.15: update
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UpdateRequest {
    ssl_id: Option<i64>,
    term: Option<i64>,
    cert_type_id: Option<i64>,
    org_id: Option<i64>,
    common_name: Option<String>,
    csr: Option<String>,
    external_requester: Option<String>,
    comments: Option<String>,
    subject_alternative_names: Option<Vec<String>>,
    custom_fields: Option<Vec<CustomField>>,
    auto_renew_details: Option<AutoRenewInput>,
    suspend_notifications: Option<bool>,
    requester: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct AutoRenewInput {
    state: Option<String>,
    days_before_expiration: Option<i64>,
}

fn update(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let dates = call.date_format()?;
    let request: UpdateRequest = call.json()?;
    let ssl_id = request.ssl_id.ok_or(ScmError::Required("sslId"))?;
    let csr = request
        .csr
        .as_deref()
        .filter(|csr| !csr.trim().is_empty())
        .map(ParsedCsr::parse)
        .transpose()?;
    let comments = check_length("comments", request.comments.clone(), 1024)?;
    let external_requester = check_emails("externalRequester", request.external_requester.clone(), 512)?;
    let custom_fields = request
        .custom_fields
        .clone()
        .map(|fields| check_custom_fields(shared, fields))
        .transpose()?;
    let auto_renew = request
        .auto_renew_details
        .as_ref()
        .map(check_auto_renew)
        .transpose()?;
    with_order(shared, &ssl_id.to_string(), |order, shared| {
        update_restricted(shared, order, &request, csr)?;
        if request.comments.is_some() {
            order.comments = comments;
        }
        if request.external_requester.is_some() {
            order.external_requester = external_requester;
        }
        if let Some(fields) = custom_fields {
            order.custom_fields = fields;
        }
        if let Some(auto_renew) = auto_renew {
            order.auto_renew = auto_renew;
        }
        if let Some(suspend) = request.suspend_notifications {
            order.suspend_notifications = suspend;
        }
        if let Some(requester) = request.requester.clone().filter(|r| !r.is_empty()) {
            order.requester = requester;
        }
        Ok(Reply::Json(details_json(order, account(shared), dates)))
    })
}

fn check_auto_renew(input: &AutoRenewInput) -> Result<AutoRenew, ScmError> {
    let scheduled = match input.state.as_deref() {
        None | Some("Not scheduled") => false,
        Some("Scheduled") => true,
        Some(_) => return Err(ScmError::InvalidField("autoRenewDetails.state".to_owned())),
    };
    let days = input
        .days_before_expiration
        .map(|days| {
            u32::try_from(days)
                .ok()
                .filter(|days| *days >= 1)
                .ok_or_else(|| ScmError::InvalidField("autoRenewDetails.daysBeforeExpiration".to_owned()))
        })
        .transpose()?;
    Ok(AutoRenew {
        scheduled,
        days_before_expiration: days.filter(|_| scheduled),
    })
}

/// Organization, profile, term, CN, CSR and SANs: editable only in Requested, Declined,
/// Rejected or Invalid (spec §3.15).
fn update_restricted(
    shared: &Shared,
    order: &mut Order,
    request: &UpdateRequest,
    csr: Option<ParsedCsr>,
) -> Result<(), ScmError> {
    let editable = matches!(
        order.status,
        Status::Requested | Status::Declined | Status::Rejected
    );
    let changes = [
        ("orgId", request.org_id.is_some_and(|id| id != order.org_id)),
        (
            "certTypeId",
            request.cert_type_id.is_some_and(|id| id != order.profile.id),
        ),
        (
            "term",
            request.term.is_some_and(|term| term != i64::from(order.term)),
        ),
        (
            "commonName",
            request
                .common_name
                .as_ref()
                .is_some_and(|cn| Some(cn) != order.common_name.as_ref()),
        ),
        ("csr", csr.as_ref().is_some_and(|csr| csr.der != order.csr.der)),
        (
            "subjectAlternativeNames",
            request
                .subject_alternative_names
                .as_ref()
                .is_some_and(|names| *names != order.names),
        ),
    ];
    if !editable {
        // Inferred (spec §3.15): changing a restricted field in another state has no documented
        // code; we chose -1601 naming the first such field (unchanged values pass).
        return match changes.iter().find(|(_, changed)| *changed) {
            Some((field, _)) => Err(ScmError::InvalidField((*field).to_owned())),
            None => Ok(()),
        };
    }
    if request.org_id.is_some() {
        order.org_id = check_org(shared, request.org_id)?;
    }
    if request.cert_type_id.is_some() {
        order.profile = check_profile(shared, request.cert_type_id)?;
    }
    let term = request.term.unwrap_or_else(|| i64::from(order.term));
    order.term = check_term(&order.profile, Some(term))?;
    if let Some(csr) = csr {
        order.csr = csr;
    }
    let common_name = request.common_name.clone().or_else(|| order.common_name.clone());
    if request.common_name.is_some() || request.subject_alternative_names.is_some() {
        let others = request
            .subject_alternative_names
            .clone()
            .unwrap_or_else(|| order.names.clone());
        let names = merge_names(common_name.as_deref(), others.iter());
        check_names(shared, common_name.as_deref(), &names)?;
        order.common_name = common_name;
        order.names = names;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_name_syntax() {
        assert!(is_dns_name("a.example.com"));
        assert!(is_dns_name("*.example.com"));
        assert!(!is_dns_name("bad name.example.com"));
        assert!(!is_dns_name("-x.example.com"));
        assert!(is_email("admin@example.com"));
        assert!(!is_email("admin@"));
    }

    #[test]
    fn names_merge_cn_first_without_duplicates() {
        let others = ["A.example.com".to_owned(), "b.example.com".to_owned()];
        assert_eq!(
            merge_names(Some("a.example.com"), others.iter()),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!(merge_names(Some("Not A Host"), others.iter()), others);
    }

    #[test]
    fn renew_ids_look_like_the_documented_ones() {
        let id = renew_id();
        assert_eq!(id.len(), 20);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
