//! What a discovered certificate is (pure): its facts from the DER, the problems that make it
//! worth a look, and the summary of a run — counts and the most urgent findings.

use std::collections::BTreeMap;

use x509_parser::{
    certificate::X509Certificate, prelude::FromDer as _, public_key::PublicKey, x509::SubjectPublicKeyInfo,
};

use crate::crd::v1alpha1::discovery_task::{DiscoveryFinding, DiscoverySummary, IssuerCount};

/// Where a certificate was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// SCM network discovery.
    Scm,
    /// The Nexus certificate database.
    Nexus,
    /// A `kubernetes.io/tls` Secret.
    Secret,
    /// A live TLS endpoint the operator connected to.
    Endpoint,
}

impl Source {
    /// The name used in status and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scm => "scm",
            Self::Nexus => "nexus",
            Self::Secret => "secret",
            Self::Endpoint => "endpoint",
        }
    }
}

/// Why a key or signature is weak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weakness {
    /// An RSA key shorter than 2048 bits (its size).
    ShortRsaKey(usize),
    /// A SHA-1 based signature.
    Sha1Signature,
}

/// One certificate seen by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Where it was seen.
    pub source: Source,
    /// `host:port`, `namespace/secret` or the CA's id for it.
    pub location: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Subject common name, when there is one.
    pub common_name: Option<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, lower-case hex.
    pub serial_hex: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Issued by itself (subject equals issuer and its own key verifies the signature).
    pub self_signed: bool,
    /// A weak key or signature, if any.
    pub weakness: Option<Weakness>,
    /// A certificate of a Certificate this operator manages.
    pub managed: bool,
    /// The certificate, DER (for reports that carry more than the facts above).
    pub der: std::sync::Arc<[u8]>,
}

/// OIDs of SHA-1 signature algorithms (RSA, DSA, ECDSA).
const SHA1_SIGNATURES: [&str; 3] = ["1.2.840.113549.1.1.5", "1.2.840.10040.4.3", "1.2.840.10045.4.1"];
/// The smallest RSA modulus not counted as weak.
const MIN_RSA_BITS: usize = 2048;

/// Reads a DER certificate seen at `location`.
pub fn examine(der: &[u8], source: Source, location: impl Into<String>) -> Result<Found, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let subject = cert.subject().to_string();
    let issuer = cert.issuer().to_string();
    let signature_oid = cert.signature_algorithm.algorithm.to_id_string();
    let weakness = rsa_bits(cert.public_key())
        .filter(|bits| *bits < MIN_RSA_BITS)
        .map(Weakness::ShortRsaKey)
        .or_else(|| {
            SHA1_SIGNATURES
                .contains(&signature_oid.as_str())
                .then_some(Weakness::Sha1Signature)
        });
    let self_signed = subject == issuer && cert.verify_signature(None).is_ok();
    Ok(Found {
        source,
        location: location.into(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        subject,
        issuer,
        serial_hex: crate::pki::inspect::hex_serial(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        self_signed,
        weakness,
        managed: false,
        der: der.into(),
    })
}

/// The modulus size of an RSA key; `None` for other keys.
fn rsa_bits(key: &SubjectPublicKeyInfo<'_>) -> Option<usize> {
    match key.parsed() {
        Ok(PublicKey::RSA(rsa)) => Some(rsa.key_size()),
        _ => None,
    }
}

/// Within this many seconds of its end a certificate is "expiring".
pub const EXPIRING_WITHIN: i64 = 30 * 86_400;
/// Findings kept in status (the CRD's limit).
pub const MAX_FINDINGS: usize = 20;
/// Issuers counted by name in the summary (the CRD's limit).
const MAX_ISSUERS: usize = 10;

/// The problem that makes a certificate worth listing, most urgent first; `None` when healthy.
pub fn problem(found: &Found, now: i64) -> Option<&'static str> {
    if found.not_after <= now {
        Some("Expired")
    } else if found.not_after - now <= EXPIRING_WITHIN {
        Some("ExpiringSoon")
    } else if found.weakness.is_some() {
        Some("WeakKey")
    } else if found.self_signed {
        Some("SelfSigned")
    } else {
        None
    }
}

fn urgency(problem: &str) -> u8 {
    match problem {
        "Expired" => 0,
        "ExpiringSoon" => 1,
        "WeakKey" => 2,
        _ => 3,
    }
}

/// Counts over everything found, and the most urgent findings (at most [`MAX_FINDINGS`]):
/// expired first, then expiring, weak and self-signed, each soonest-ending first.
pub fn summarise(found: &[Found], now: i64) -> (DiscoverySummary, Vec<DiscoveryFinding>) {
    let mut by_issuer: BTreeMap<&str, i64> = BTreeMap::new();
    let mut summary = DiscoverySummary {
        total: i64::try_from(found.len()).unwrap_or(i64::MAX),
        ..DiscoverySummary::default()
    };
    for f in found {
        *by_issuer.entry(f.issuer.as_str()).or_default() += 1;
        if f.not_after <= now {
            summary.expired += 1;
        } else if f.not_after - now <= EXPIRING_WITHIN {
            summary.expiring_within_30_days += 1;
        }
        summary.self_signed += i64::from(f.self_signed);
        summary.weak_keys += i64::from(f.weakness.is_some());
    }
    let mut issuers: Vec<IssuerCount> = by_issuer
        .into_iter()
        .map(|(issuer, count)| IssuerCount {
            issuer: issuer.to_owned(),
            count,
        })
        .collect();
    issuers.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.issuer.cmp(&b.issuer)));
    issuers.truncate(MAX_ISSUERS);
    summary.by_issuer = issuers;

    let mut notable: Vec<(&Found, &'static str)> = found
        .iter()
        .filter_map(|f| problem(f, now).map(|p| (f, p)))
        .collect();
    notable.sort_by(|(a, pa), (b, pb)| {
        urgency(pa)
            .cmp(&urgency(pb))
            .then(a.not_after.cmp(&b.not_after))
            .then_with(|| a.location.cmp(&b.location))
    });
    let findings = notable
        .into_iter()
        .take(MAX_FINDINGS)
        .map(|(f, problem)| DiscoveryFinding {
            source: f.source.as_str().into(),
            location: f.location.clone(),
            subject: f.subject.clone(),
            issuer: f.issuer.clone(),
            serial_number: f.serial_hex.clone(),
            not_after: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(f.not_after).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            ),
            problem: problem.into(),
        })
        .collect();
    (summary, findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn found(location: &str, not_after: i64) -> Found {
        Found {
            source: Source::Endpoint,
            location: location.into(),
            subject: format!("CN={location}"),
            common_name: Some(location.into()),
            issuer: "CN=Corp CA".into(),
            serial_hex: "01".into(),
            not_before: NOW - 100 * DAY,
            not_after,
            self_signed: false,
            weakness: None,
            managed: false,
            der: std::sync::Arc::from(&[][..]),
        }
    }

    #[test]
    fn a_run_is_counted_and_its_worst_findings_come_first() {
        let mut weak = found("weak:443", NOW + 300 * DAY);
        weak.weakness = Some(Weakness::ShortRsaKey(1024));
        let mut own = found("self:443", NOW + 200 * DAY);
        own.self_signed = true;
        own.issuer = own.subject.clone();
        let all = [
            found("healthy:443", NOW + 365 * DAY),
            found("soon:443", NOW + 10 * DAY),
            found("gone:443", NOW - DAY),
            weak,
            own,
        ];
        let (summary, findings) = summarise(&all, NOW);
        assert_eq!(
            (
                summary.total,
                summary.expired,
                summary.expiring_within_30_days,
                summary.weak_keys,
                summary.self_signed
            ),
            (5, 1, 1, 1, 1)
        );
        assert_eq!(
            summary.by_issuer[0],
            IssuerCount {
                issuer: "CN=Corp CA".into(),
                count: 4
            }
        );
        let listed: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.location.as_str(), f.problem.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("gone:443", "Expired"),
                ("soon:443", "ExpiringSoon"),
                ("weak:443", "WeakKey"),
                ("self:443", "SelfSigned")
            ]
        );
    }

    #[test]
    fn findings_are_bounded() {
        let all: Vec<Found> = (0..50)
            .map(|i| found(&format!("h{i}:443"), NOW - i * DAY))
            .collect();
        let (summary, findings) = summarise(&all, NOW);
        assert_eq!(summary.expired, 50);
        assert_eq!(findings.len(), MAX_FINDINGS);
        // The longest expired first (the soonest end).
        assert_eq!(findings[0].location, "h49:443");
    }

    #[test]
    fn the_der_tells_self_signed_weak_and_sha1() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["own.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let own = examine(cert.der(), Source::Secret, "ns/own").unwrap();
        assert!(own.self_signed);
        assert_eq!(own.weakness, None);
        assert_eq!(own.location, "ns/own");
        assert!(examine(b"not DER", Source::Secret, "ns/x").is_err());
    }
}
