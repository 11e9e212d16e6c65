//! The order book: certificate orders, their life cycle (spec §1.8, §6.2), issuance from the test
//! CA, and how an order renders in details, list and DCV responses.

use std::{collections::BTreeMap, time::Instant};

use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value, json};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::{ScmFlavor, ScmProfile, csr::ParsedCsr};
use crate::sim::{LeafSpec, LeafUsage, SubjectName, TestCa, hex_lower, random_serial};

/// Certificate status values (spec §1.8) the simulator reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Awaiting approval.
    Requested,
    /// Submitted to the CA; issuance pending.
    Applied,
    /// Issued; collectable.
    Issued,
    /// Declined by an administrator.
    Declined,
    /// The CA refused to issue.
    Rejected,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}

impl Status {
    /// The spelling in responses and in the `status` filter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "Requested",
            Self::Applied => "Applied",
            Self::Issued => "Issued",
            Self::Declined => "Declined",
            Self::Rejected => "Rejected",
            Self::Revoked => "Revoked",
            Self::Expired => "Expired",
        }
    }
}

/// A `{name, value}` custom field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct CustomField {
    /// Field name.
    #[serde(default)]
    pub name: String,
    /// Field value.
    #[serde(default)]
    pub value: String,
}

/// An issued certificate and the facts details report about it.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// DER.
    pub der: CertificateDer<'static>,
    /// `A1:B2:…`, upper-case (spec §3.6 `serialNumber`, §3.17 path).
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Subject DN.
    pub subject: String,
    /// Lower-case hex fingerprints of the DER.
    pub md5: String,
    /// SHA-1 fingerprint.
    pub sha1: String,
    /// SHA-256 fingerprint.
    pub sha256: String,
}

/// What `autoRenewDetails` holds.
#[derive(Clone, Debug, Default)]
pub struct AutoRenew {
    /// `Scheduled` or `Not scheduled`.
    pub scheduled: bool,
    /// Days before expiration (only meaningful when scheduled).
    pub days_before_expiration: Option<u32>,
}

/// One SSL certificate order.
#[derive(Clone, Debug)]
pub struct Order {
    /// `sslId` / `id`.
    pub ssl_id: i64,
    /// The 20-character renew id returned by enroll only.
    pub renew_id: String,
    /// `orgId`.
    pub org_id: i64,
    /// The profile (`certType`).
    pub profile: ScmProfile,
    /// Term in days.
    pub term: u32,
    /// Current status.
    pub status: Status,
    /// The CSR in force.
    pub csr: ParsedCsr,
    /// Subject common name.
    pub common_name: Option<String>,
    /// Subject alternative names (textual, CN first when it is a name).
    pub names: Vec<String>,
    /// `comments`.
    pub comments: Option<String>,
    /// `externalRequester`.
    pub external_requester: Option<String>,
    /// `customFields`.
    pub custom_fields: Vec<CustomField>,
    /// `dcvMode` as requested.
    pub dcv_mode: Option<String>,
    /// `dcvEmail` as requested.
    pub dcv_email: Option<String>,
    /// Who requested it (the API login).
    pub requester: String,
    /// Who approved it, when approved through the API.
    pub owner: Option<String>,
    /// When it was requested.
    pub requested: OffsetDateTime,
    /// When it was approved.
    pub approved: Option<OffsetDateTime>,
    /// When it was declined.
    pub declined: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked: Option<OffsetDateTime>,
    /// When it was last replaced.
    pub replaced: Option<OffsetDateTime>,
    /// When it was renewed (a renewal order was placed for it).
    pub renewed_date: Option<OffsetDateTime>,
    /// Revocation reason code.
    pub reason_code: Option<u8>,
    /// Pending collects still to answer before issuance.
    pub pending_left: u32,
    /// Earliest issuance time.
    pub ready_at: Instant,
    /// Test knob: validity of issued certificates instead of `term` days.
    pub lifetime_override: Option<std::time::Duration>,
    /// The certificate once issued.
    pub issued: Option<IssuedCertificate>,
    /// `autoRenewDetails`.
    pub auto_renew: AutoRenew,
    /// `suspendNotifications`.
    pub suspend_notifications: bool,
    /// Last DCV check (`dcvLog.log[].lastCheck`).
    pub dcv_checked: OffsetDateTime,
}

impl Order {
    /// Moves the order along with time: `Applied` becomes `Issued` once its pending collects
    /// are used up and the processing delay has passed; `Issued` becomes `Expired` after
    /// `notAfter`. Called before every read, so details, list and collect agree.
    pub fn advance(&mut self, ca: &TestCa) {
        match self.status {
            Status::Applied if self.pending_left == 0 && Instant::now() >= self.ready_at => {
                match self.issue(ca) {
                    Ok(issued) => {
                        self.issued = Some(issued);
                        self.status = Status::Issued;
                    }
                    Err(error) => {
                        // Names are validated at enroll, so this is a simulator bug or an exotic
                        // name; the CA refusing to issue is what a real backend would report.
                        tracing::warn!(ssl_id = self.ssl_id, %error, "issuance failed; order rejected");
                        self.status = Status::Rejected;
                    }
                }
            }
            Status::Issued
                if self
                    .issued
                    .as_ref()
                    .is_some_and(|issued| OffsetDateTime::now_utc() >= issued.not_after) =>
            {
                self.status = Status::Expired;
            }
            _ => {}
        }
    }

    fn issue(&self, ca: &TestCa) -> Result<IssuedCertificate, crate::sim::SimError> {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let serial = random_serial();
        let spec = LeafSpec {
            common_name: self.common_name.clone(),
            names: self.names.iter().map(|name| SubjectName::parse(name)).collect(),
            not_before: now,
            not_after: now
                + self.lifetime_override.map_or_else(
                    || time::Duration::days(i64::from(self.term)),
                    |d| time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                ),
            serial: serial.to_vec(),
            usage: LeafUsage::Server,
            key_encipherment: self.csr.key.algorithm() == "RSA",
        };
        let der = ca.issue(&self.csr.spki, &spec)?;
        Ok(IssuedCertificate {
            serial: colon_hex(&serial),
            not_before: spec.not_before,
            not_after: spec.not_after,
            subject: self
                .common_name
                .as_ref()
                .map_or_else(String::new, |cn| format!("CN={cn}")),
            md5: hex_lower(&md5::Md5::digest(&der)),
            sha1: hex_lower(&Sha1::digest(&der)),
            sha256: hex_lower(&Sha256::digest(&der)),
            der,
        })
    }

    /// Every name the order covers: the CN and the SANs, without duplicates.
    pub fn all_names(&self) -> Vec<String> {
        let mut all: Vec<String> = self.common_name.iter().cloned().collect();
        for name in &self.names {
            if !all.iter().any(|known| known.eq_ignore_ascii_case(name)) {
                all.push(name.clone());
            }
        }
        all
    }

    /// The status-dependent `serialNumber`, when issued.
    pub fn serial(&self) -> Option<&str> {
        self.issued.as_ref().map(|issued| issued.serial.as_str())
    }
}

/// `A1:B2:…` upper-case hex.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A serial number normalised for comparison: upper-case hex without colons or leading zeros.
pub fn normalise_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

/// The `dateFormat` query parameter (spec §1.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DateFormat {
    /// `yyyy-MM-dd`
    Iso,
    /// `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`
    IsoHms,
    /// `dd.MM.yyyy`
    Eu,
    /// `dd.MM.yyyy HH:mm:ss`
    EuHms,
    /// `MM/dd/yyyy`, the default in details.
    #[default]
    Us,
    /// `MM/dd/yyyy HH:mm:ss`
    UsHms,
    /// `dd/MM/yyyy`
    Uk,
    /// `dd/MM/yyyy HH:mm:ss`
    UkHms,
    /// `yyyy/MM/dd`
    Jp,
    /// `yyyy/MM/dd HH:mm:ss`
    JpHms,
}

impl DateFormat {
    const ALL: [(Self, &'static str, &'static str); 10] = [
        (Self::Iso, "ISO", "yyyy-MM-dd"),
        (Self::IsoHms, "ISO_HMS", "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"),
        (Self::Eu, "EU", "dd.MM.yyyy"),
        (Self::EuHms, "EU_HMS", "dd.MM.yyyy HH:mm:ss"),
        (Self::Us, "US", "MM/dd/yyyy"),
        (Self::UsHms, "US_HMS", "MM/dd/yyyy HH:mm:ss"),
        (Self::Uk, "UK", "dd/MM/yyyy"),
        (Self::UkHms, "UK_HMS", "dd/MM/yyyy HH:mm:ss"),
        (Self::Jp, "JP", "yyyy/MM/dd"),
        (Self::JpHms, "JP_HMS", "yyyy/MM/dd HH:mm:ss"),
    ];

    /// An enum name or its format string, case-independent (spec §1.6).
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, name, pattern)| {
                value.eq_ignore_ascii_case(name) || value.eq_ignore_ascii_case(pattern)
            })
            .map(|(format, _, _)| *format)
    }

    /// Renders `at` (UTC).
    pub fn render(self, at: OffsetDateTime) -> String {
        let (y, m, d) = (at.year(), u8::from(at.month()), at.day());
        let (hh, mm, ss) = (at.hour(), at.minute(), at.second());
        match self {
            Self::Iso => format!("{y:04}-{m:02}-{d:02}"),
            Self::IsoHms => format!(
                "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
                at.millisecond()
            ),
            Self::Eu => format!("{d:02}.{m:02}.{y:04}"),
            Self::EuHms => format!("{d:02}.{m:02}.{y:04} {hh:02}:{mm:02}:{ss:02}"),
            Self::Us => format!("{m:02}/{d:02}/{y:04}"),
            Self::UsHms => format!("{m:02}/{d:02}/{y:04} {hh:02}:{mm:02}:{ss:02}"),
            Self::Uk => format!("{d:02}/{m:02}/{y:04}"),
            Self::UkHms => format!("{d:02}/{m:02}/{y:04} {hh:02}:{mm:02}:{ss:02}"),
            Self::Jp => format!("{y:04}/{m:02}/{d:02}"),
            Self::JpHms => format!("{y:04}/{m:02}/{d:02} {hh:02}:{mm:02}:{ss:02}"),
        }
    }
}

/// DCV log timestamps: `yyyy-MM-dd HH:mm:ss` (spec §1.6).
fn dcv_time(at: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// Fixed values of the simulated account, shared by every rendering.
#[derive(Clone, Copy, Debug)]
pub struct Account<'a> {
    /// Which product is simulated.
    pub flavor: ScmFlavor,
    /// The issuing CA (for `certificateDetails.issuer`).
    pub ca: &'a TestCa,
}

/// The profile object (spec §1.9), as in `/types` and in details' `certType`.
pub fn profile_json(profile: &ScmProfile) -> Value {
    json!({
        "id": profile.id,
        "name": profile.name,
        "description": format!("Description for {}", profile.name),
        "terms": profile.terms,
        "keyTypes": { "RSA": ["2048", "3072", "4096", "8192"], "EC": ["P-256", "P-384"] },
        "useSecondaryOrgName": false,
    })
}

/// `backendCertId`/`orderNumber`: a made-up CA-side order number derived from the id.
fn backend_cert_id(ssl_id: i64) -> i64 {
    7_340_000 + ssl_id
}

/// Details (spec §3.6). Absent values are omitted, never `null` (spec §7 item 10).
pub fn details_json(order: &Order, account: Account<'_>, dates: DateFormat) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(key.to_owned(), value);
        }
    };
    let date = |at: Option<OffsetDateTime>| at.map(|at| Value::from(dates.render(at)));
    let issued = order.issued.as_ref();
    put("commonName", order.common_name.clone().map(Value::from));
    put("sslId", Some(order.ssl_id.into()));
    put("id", Some(order.ssl_id.into()));
    put("orgId", Some(order.org_id.into()));
    put("status", Some(order.status.as_str().into()));
    put("orderNumber", Some(backend_cert_id(order.ssl_id).into()));
    put(
        "backendCertId",
        Some(backend_cert_id(order.ssl_id).to_string().into()),
    );
    put(
        "vendor",
        Some(
            match account.flavor {
                ScmFlavor::Sectigo => "Sectigo Limited",
                ScmFlavor::InCommon => "InCommon",
            }
            .into(),
        ),
    );
    put("certType", Some(profile_json(&order.profile)));
    put("validationType", Some("Domain Validation (DV)".into()));
    put("term", Some(order.term.into()));
    put("owner", order.owner.clone().map(Value::from));
    put("ownerId", order.owner.as_ref().map(|_| Value::from(10_024)));
    put("requester", Some(order.requester.clone().into()));
    put("requesterId", Some(10_001.into()));
    // Inferred (spec §1.8): we chose "REST API" for orders placed through /api/ssl/v1 because
    // the display list pairs it with the REST filter value and the endpoint is the REST API.
    put("requestedVia", Some("REST API".into()));
    put(
        "externalRequester",
        order.external_requester.clone().map(Value::from),
    );
    put("comments", order.comments.clone().map(Value::from));
    put("requested", date(Some(order.requested)));
    put("approved", date(order.approved));
    put("issued", date(issued.map(|i| i.not_before)));
    put("declined", date(order.declined));
    put("expires", date(issued.map(|i| i.not_after)));
    put("replaced", date(order.replaced));
    put("revoked", date(order.revoked));
    put("reasonCode", order.reason_code.map(Value::from));
    put("renewed", Some(order.renewed_date.is_some().into()));
    put("renewedDate", date(order.renewed_date));
    put("serialNumber", issued.map(|i| i.serial.clone().into()));
    put("signatureAlg", issued.map(|_| "SHA256withECDSA".into()));
    put("keyAlgorithm", Some(order.csr.key.algorithm().into()));
    // Before issuance the docs' update example shows keySize 0 and keyType "RSA" (spec §3.6).
    put("keySize", Some(issued.map_or(0, |_| order.csr.key.size()).into()));
    put(
        "keyType",
        Some(
            issued
                .map_or_else(
                    || order.csr.key.algorithm().to_owned(),
                    |_| order.csr.key.key_type(),
                )
                .into(),
        ),
    );
    put("keyUsages", issued.map(|_| key_usages(order)));
    put(
        "extendedKeyUsages",
        issued.map(|_| json!(["serverAuth", "clientAuth"])),
    );
    put("subjectAlternativeNames", Some(json!(order.names)));
    put("customFields", Some(json!(order.custom_fields)));
    put(
        "certificateDetails",
        issued.map(|i| certificate_details(order, i, account.ca)),
    );
    put("autoInstallDetails", Some(json!({ "state": "Not configured" })));
    put("autoRenewDetails", Some(auto_renew_json(&order.auto_renew)));
    put("suspendNotifications", Some(order.suspend_notifications.into()));
    put(
        "csrDetails",
        Some(json!({
            "csr": order.csr.pem,
            "md5Hash": order.csr.md5,
            "sha1Hash": order.csr.sha1,
            "sha256Hash": order.csr.sha256,
        })),
    );
    Value::Object(out)
}

fn key_usages(order: &Order) -> Value {
    if order.csr.key.algorithm() == "RSA" {
        json!(["digitalSignature", "keyEncipherment"])
    } else {
        json!(["digitalSignature"])
    }
}

fn auto_renew_json(auto_renew: &AutoRenew) -> Value {
    if auto_renew.scheduled {
        json!({
            "state": "Scheduled",
            "daysBeforeExpiration": auto_renew.days_before_expiration.unwrap_or(30),
        })
    } else {
        json!({ "state": "Not scheduled" })
    }
}

fn certificate_details(order: &Order, issued: &IssuedCertificate, ca: &TestCa) -> Value {
    // Inferred (spec §3.6): we chose lower-case hex for every certificate fingerprint because
    // the only real value in the docs (sha256Hash) is lower-case, while CSR hashes are upper-case.
    json!({
        "issuer": ca.intermediate_subject(),
        "subject": issued.subject,
        // Inferred (spec §3.6): we chose the names joined with ", " because the docs type this
        // as one string and give no example.
        "subjectAltNames": order.names.join(", "),
        "md5Hash": issued.md5,
        "sha1Hash": issued.sha1,
        "sha256Hash": issued.sha256,
    })
}

/// A list item (spec §3.4): `sslId`, `commonName`, `subjectAlternativeNames`, `serialNumber`,
/// each omitted when absent.
pub fn list_item_json(order: &Order) -> Value {
    let mut item = Map::new();
    item.insert("sslId".to_owned(), order.ssl_id.into());
    if let Some(cn) = &order.common_name {
        item.insert("commonName".to_owned(), cn.clone().into());
    }
    if !order.names.is_empty() {
        item.insert("subjectAlternativeNames".to_owned(), json!(order.names));
    }
    if let Some(serial) = order.serial() {
        item.insert("serialNumber".to_owned(), serial.into());
    }
    Value::Object(item)
}

/// DCV details (spec §3.7): a log entry and instructions per DNS name the order covers.
pub fn dcv_json(order: &Order) -> Value {
    let mode = order
        .dcv_mode
        .as_deref()
        .map_or_else(|| "CNAME".to_owned(), str::to_ascii_uppercase);
    let mut domains: Vec<String> = Vec::new();
    for name in order.all_names() {
        if !matches!(SubjectName::parse(&name), SubjectName::Dns(_)) {
            continue;
        }
        let domain = name.strip_prefix("*.").unwrap_or(&name).to_ascii_lowercase();
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    let next_check = order.dcv_checked + time::Duration::hours(1);
    let log: Vec<Value> = domains
        .iter()
        .map(|domain| {
            let mut entry = json!({
                "domainName": domain,
                // Every name of an accepted order is validated: enroll refuses names outside
                // `validated_domains` with -107 instead of parking them.
                "dcvStatus": "Validated",
                "dcvMethod": dcv_method(&mode),
                "dcvDate": dcv_time(order.requested),
                "lastCheck": dcv_time(order.dcv_checked),
                "nextCheck": dcv_time(next_check),
            });
            if mode == "EMAIL" {
                entry["dcvEmailRefNumber"] = 1.into();
            }
            entry
        })
        .collect();
    let instructions: Vec<Value> = domains
        .iter()
        .map(|domain| dcv_instruction(order, domain, &mode))
        .collect();
    json!({
        "dcvLog": { "error": { "code": 0, "description": null }, "log": log },
        "instructions": instructions,
    })
}

fn dcv_method(mode: &str) -> String {
    if mode == "EMAIL" {
        "EMAIL".to_owned()
    } else {
        format!("{mode}_CSR_HASH")
    }
}

fn dcv_instruction(order: &Order, domain: &str, mode: &str) -> Value {
    let md5 = &order.csr.md5;
    let sha256 = &order.csr.sha256;
    match mode {
        // Inferred (spec §3.7): the docs verify only the CNAME derivation; for HTTP(S) we chose
        // Sectigo's published file-based DCV layout (file `/.well-known/pki-validation/<MD5>.txt`
        // holding the SHA-256 and `sectigo.com`) because it uses the same CSR hashes.
        "HTTP" | "HTTPS" => json!({
            "domainName": domain,
            "dcvMode": mode,
            "url": format!("{}://{domain}/.well-known/pki-validation/{md5}.txt", mode.to_ascii_lowercase()),
            "file": format!("{sha256}\nsectigo.com"),
        }),
        // Inferred (spec §3.7): for TXT we chose a record on the domain itself holding the
        // SHA-256 and `sectigo.com` because it is the TXT form of the same CSR-hash method.
        "TXT" => json!({
            "domainName": domain,
            "dcvMode": mode,
            "host": format!("{domain}."),
            "point": format!("{sha256} sectigo.com"),
        }),
        "EMAIL" => json!({
            "domainName": domain,
            "dcvMode": mode,
            "dcvEmail": order.dcv_email.clone().unwrap_or_else(|| format!("admin@{domain}")),
        }),
        // The verified derivation (spec §3.7).
        _ => json!({
            "domainName": domain,
            "dcvMode": "CNAME",
            "host": format!("_{md5}.{domain}."),
            "point": format!("{}.{}.sectigo.com.", &sha256[..32], &sha256[32..]),
        }),
    }
}

/// List/count filters (spec §3.4). String filters match case-insensitively by substring.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// `commonName`.
    pub common_name: Option<String>,
    /// `subjectAlternativeName`.
    pub subject_alternative_name: Option<String>,
    /// `status`.
    pub status: Option<String>,
    /// `sslTypeId`.
    pub ssl_type_id: Option<i64>,
    /// `orgId`.
    pub org_id: Option<i64>,
    /// `serialNumber`, normalised.
    pub serial_number: Option<String>,
    /// `externalRequester`.
    pub external_requester: Option<String>,
    /// `sha256Hash`, `sha1Hash`, `md5Hash` of the certificate.
    pub fingerprints: Vec<String>,
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

impl ListFilter {
    /// Whether `order` passes every filter given.
    pub fn matches(&self, order: &Order) -> bool {
        // Inferred (spec §3.4): the docs do not say whether string filters match exactly; we
        // chose case-insensitive substring matching, the looser reading, so clients must verify
        // candidates through details as the spec recommends.
        let text = |filter: &Option<String>, value: Option<&str>| {
            filter
                .as_ref()
                .is_none_or(|needle| value.is_some_and(|value| contains_ignore_case(value, needle)))
        };
        text(&self.common_name, order.common_name.as_deref())
            && self
                .subject_alternative_name
                .as_ref()
                .is_none_or(|needle| order.names.iter().any(|name| contains_ignore_case(name, needle)))
            && self
                .status
                .as_ref()
                .is_none_or(|status| status.eq_ignore_ascii_case(order.status.as_str()))
            && self.ssl_type_id.is_none_or(|id| id == order.profile.id)
            && self.org_id.is_none_or(|id| id == order.org_id)
            && self
                .serial_number
                .as_ref()
                .is_none_or(|serial| order.serial().is_some_and(|own| normalise_serial(own) == *serial))
            && text(&self.external_requester, order.external_requester.as_deref())
            && self.fingerprints_match(order)
    }

    fn fingerprints_match(&self, order: &Order) -> bool {
        // Inferred (spec §3.4): we chose the certificate's fingerprints, not the CSR's, because
        // certificateDetails carries sha1Hash/md5Hash; an order without a certificate matches
        // none.
        self.fingerprints.iter().all(|wanted| {
            order.issued.as_ref().is_some_and(|issued| {
                [&issued.sha256, &issued.sha1, &issued.md5]
                    .iter()
                    .any(|own| own.eq_ignore_ascii_case(wanted))
            })
        })
    }
}

/// The orders, their ids, and the per-CSR order counts.
#[derive(Debug)]
pub struct OrderBook {
    /// Orders by `sslId`.
    pub orders: BTreeMap<i64, Order>,
    next_ssl_id: i64,
    /// Lower-case hex SHA-256 of the DER CSR → orders created with it.
    pub orders_per_csr: BTreeMap<String, u32>,
}

impl Default for OrderBook {
    fn default() -> Self {
        Self {
            orders: BTreeMap::new(),
            next_ssl_id: 1000,
            orders_per_csr: BTreeMap::new(),
        }
    }
}

impl OrderBook {
    /// An empty book whose first order gets `first_ssl_id`.
    pub fn starting_at(first_ssl_id: i64) -> Self {
        Self {
            next_ssl_id: first_ssl_id,
            ..Self::default()
        }
    }

    /// Allocates the next `sslId`.
    pub fn next_id(&mut self) -> i64 {
        let id = self.next_ssl_id;
        self.next_ssl_id += 1;
        id
    }

    /// Counts one order placed with `csr`.
    pub fn count_order(&mut self, csr: &ParsedCsr) {
        *self.orders_per_csr.entry(csr.sha256_lower()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_normalise() {
        assert_eq!(normalise_serial("0a:3e:C0"), "A3EC0");
        assert_eq!(normalise_serial("A3EC0"), "A3EC0");
        assert_eq!(colon_hex(&[0x0a, 0x3e, 0xc0]), "0A:3E:C0");
    }

    #[test]
    fn date_formats_by_name_or_pattern() {
        let at = OffsetDateTime::from_unix_timestamp(1_720_621_800).unwrap(); // 2024-07-10 14:30:00
        assert_eq!(DateFormat::default().render(at), "07/10/2024");
        assert_eq!(DateFormat::parse("eu").unwrap().render(at), "10.07.2024");
        assert_eq!(DateFormat::parse("dd.mm.yyyy"), Some(DateFormat::Eu));
        assert_eq!(
            DateFormat::parse("iso_hms").unwrap().render(at),
            "2024-07-10T14:30:00.000Z"
        );
        assert_eq!(DateFormat::parse("nope"), None);
        assert_eq!(dcv_time(at), "2024-07-10 14:30:00");
    }
}
