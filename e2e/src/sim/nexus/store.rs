//! The simulated CM database: issued certificates, their revocation state, and the JSON shape
//! (`JsonCertificate`, spec §9.1) the API renders them in.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;

/// Where a certificate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not revoked.
    Active,
    /// Revoked with this reason (6 is "Certificate Hold", which reinstate can undo).
    Revoked {
        /// RFC 5280 reason code.
        reason: u8,
        /// When.
        at: OffsetDateTime,
    },
}

/// The reason code of a hold (spec §5.3).
pub const HOLD: u8 = 6;

/// One issued certificate.
#[derive(Clone, Debug)]
pub struct StoredCertificate {
    /// CM's id, a decimal string.
    pub certid: String,
    /// X.509 serial, lower-case hex without leading zeros.
    pub serial_hex: String,
    /// X.509 serial as the DER integer's bytes, upper-case hex (leading `00` kept).
    pub serial_der_hex: String,
    /// DER of the certificate.
    pub der: Vec<u8>,
    /// Subject rendered values-only, as the doc's examples do.
    pub subject: String,
    /// Subject common name, for the `subjectCommonName` filter.
    pub common_name: Option<String>,
    /// Issuer DN in RFC 1779 style (`cn=…,o=…,c=…`).
    pub issuer: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// Revocation state.
    pub status: Status,
    /// Token procedure that issued it.
    pub procedure: String,
    /// Subject key identifier, upper-case hex (the doc's example spelling).
    pub ski: Option<String>,
    /// Authority key identifier, upper-case hex.
    pub aki: Option<String>,
    /// Searches (`GET /certificates`) that still miss it, counting down: CM's index lagging
    /// behind issuance.
    pub unindexed_searches: u32,
}

impl StoredCertificate {
    /// `status` as details shows it.
    pub fn status_name(&self) -> &'static str {
        match self.status {
            Status::Active => "active",
            Status::Revoked { .. } => "revoked",
        }
    }

    /// The `JsonCertificate` rendering; dates as epoch milliseconds like every doc example, or
    /// as RFC 3339 strings like the schema declares (spec §4, §11 item 1). Serials are spelled
    /// as DER bytes (`der_serials`, the strict reading) or without leading zeros.
    pub fn to_json(&self, rfc3339_dates: bool, der_serials: bool) -> Value {
        let date = |at: OffsetDateTime| {
            if rfc3339_dates {
                at.format(&time::format_description::well_known::Rfc3339)
                    .map_or(Value::Null, Value::from)
            } else {
                Value::from(epoch_ms(at))
            }
        };
        let mut value = json!({
            "certid": self.certid,
            "status": self.status_name(),
            "subject": self.subject,
            "issuer": self.issuer,
            "certificateserialnumber": if der_serials { &self.serial_der_hex } else { &self.serial_hex },
            "validfrom": date(self.not_before),
            "validto": date(self.not_after),
            "subjectType": "EE",
            "keyusage": ["digitalSignature", "serverAuth", "clientAuth"],
        });
        if let Some(object) = value.as_object_mut() {
            if let Status::Revoked { reason, at } = self.status {
                // Inferred (spec §9.1): the reason's format is undocumented; we chose the numeric
                // code as a string, which the spec tells clients to parse.
                object.insert("reason".to_owned(), Value::from(reason.to_string()));
                object.insert("revocationtime".to_owned(), date(at));
            }
            if let Some(ski) = &self.ski {
                object.insert("subjectKeyIdentifier".to_owned(), Value::from(ski.clone()));
            }
            if let Some(aki) = &self.aki {
                object.insert("authorityKeyIdentifier".to_owned(), Value::from(aki.clone()));
            }
        }
        value
    }
}

fn epoch_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Every certificate, plus the counters tests read.
#[derive(Debug)]
pub struct Store {
    /// In issuance order.
    pub certificates: Vec<StoredCertificate>,
    /// Lower-case hex SHA-256 of the DER CSR → certificates issued for it.
    pub issuances_per_csr: BTreeMap<String, u32>,
    next_certid: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            certificates: Vec::new(),
            issuances_per_csr: BTreeMap::new(),
            // The doc's examples use ids such as "10003".
            next_certid: 10_001,
        }
    }
}

impl Store {
    /// The next `certid`.
    pub fn allocate_certid(&mut self) -> String {
        let id = self.next_certid;
        self.next_certid += 1;
        id.to_string()
    }

    /// Which certificates one search sees, in store order, and one search less of index lag
    /// for the others.
    ///
    /// Inferred (spec §12, "CM indexing may lag"): a fresh certificate is invisible to the next
    /// `index_lag_searches` searches, whatever their filters; details and download see it at once.
    pub fn searchable(&mut self) -> Vec<bool> {
        self.certificates
            .iter_mut()
            .map(|certificate| {
                let indexed = certificate.unindexed_searches == 0;
                certificate.unindexed_searches = certificate.unindexed_searches.saturating_sub(1);
                indexed
            })
            .collect()
    }

    /// The certificate with this id.
    pub fn find(&self, certid: &str) -> Option<&StoredCertificate> {
        self.certificates.iter().find(|c| c.certid == certid)
    }

    /// The certificate with this id, mutable.
    pub fn find_mut(&mut self, certid: &str) -> Option<&mut StoredCertificate> {
        self.certificates.iter_mut().find(|c| c.certid == certid)
    }
}

/// Lower-case hex without leading zeros, as Java's `BigInteger.toString(16)` (spec §4).
pub fn normalize_serial(hex: &str) -> String {
    let lower = hex.trim().to_ascii_lowercase().replace(':', "");
    let trimmed = lower.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// A DN compared loosely: lower case, no blanks around `,` and `=`.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            rdn.split('=')
                .map(|part| part.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join("=")
        })
        .collect::<Vec<_>>()
        .join(",")
}
