//! Checks of issued material before it is trusted or written: what a certificate says (validity,
//! serial, names, key), whether a key belongs to it, and whether a chain's signatures verify.

use std::net::IpAddr;

use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer as _};

use super::csr::CsrSubject;

/// The facts of a certificate the controller needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Serial number, lower-case hex without separators.
    pub serial_hex: String,
    /// Subject common name.
    pub common_name: Option<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs (textual).
    pub ip_addresses: Vec<String>,
    /// Email SANs.
    pub email_addresses: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// DER `SubjectPublicKeyInfo`.
    pub public_key_der: Vec<u8>,
    /// Issuer distinguished name.
    pub issuer: String,
}

/// Why a certificate or chain is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InspectError {
    /// Not DER X.509.
    #[error("not a valid X.509 certificate: {0}")]
    Parse(String),
    /// A signature in the chain does not verify.
    #[error("the chain does not verify: {0}")]
    Chain(String),
}

/// Reads a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertificateInfo, InspectError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| InspectError::Parse(e.to_string()))?;
    let mut info = CertificateInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial_hex: hex_serial(cert.raw_serial()),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        email_addresses: Vec::new(),
        uris: Vec::new(),
        public_key_der: cert.public_key().raw.to_vec(),
        issuer: cert.issuer().to_string(),
    };
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        for name in &sans.value.general_names {
            match name {
                GeneralName::DNSName(d) => info.dns_names.push((*d).to_owned()),
                GeneralName::RFC822Name(e) => info.email_addresses.push((*e).to_owned()),
                GeneralName::URI(u) => info.uris.push((*u).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    info.ip_addresses.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(info)
}

/// A certificate serial as lower-case hex, without the DER sign byte.
pub fn hex_serial(raw: &[u8]) -> String {
    let trimmed: &[u8] = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    crate::pki::chain::hex(trimmed)
}

impl CertificateInfo {
    /// Whether the certificate carries exactly the names the spec asks for. The CA may add the
    /// common name as a DNS SAN, so a DNS SAN equal to the CN is not an extra name; the CN itself
    /// is compared only when the spec sets one.
    pub fn names_match(&self, subject: &CsrSubject) -> bool {
        let sorted = |v: &[String]| {
            let mut v: Vec<String> = v.iter().map(|s| s.to_ascii_lowercase()).collect();
            v.sort();
            v.dedup();
            v
        };
        let mut wanted_dns = subject.dns_names.clone();
        let mut have_dns = self.dns_names.clone();
        if let Some(cn) = &subject.common_name {
            if self.common_name.as_deref().map(str::to_ascii_lowercase) != Some(cn.to_ascii_lowercase()) {
                return false;
            }
            if !wanted_dns.iter().any(|d| d.eq_ignore_ascii_case(cn)) {
                have_dns.retain(|d| !d.eq_ignore_ascii_case(cn));
            }
        }
        wanted_dns = sorted(&wanted_dns);
        let ips = |v: &[String]| {
            let mut v: Vec<String> = v
                .iter()
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_or_else(|_| s.clone(), |ip| ip.to_string())
                })
                .collect();
            v.sort();
            v
        };
        sorted(&have_dns) == wanted_dns
            && ips(&self.ip_addresses) == ips(&subject.ip_addresses)
            && sorted(&self.email_addresses) == sorted(&subject.email_addresses)
            && sorted(&self.uris) == sorted(&subject.uris)
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, InspectError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| InspectError::Parse(e.to_string()))
}

/// Verifies that `leaf` is signed by `chain[0]`, each chain element by the next, and that the
/// last one is self-signed or signed by one of `roots` when given.
pub fn verify_chain(leaf: &[u8], chain: &[Vec<u8>]) -> Result<(), InspectError> {
    let mut current = parse(leaf)?;
    for der in chain {
        let issuer = parse(der)?;
        current.verify_signature(Some(issuer.public_key())).map_err(|_| {
            InspectError::Chain(format!(
                "{} is not signed by {}",
                current.subject(),
                issuer.subject()
            ))
        })?;
        current = issuer;
    }
    if current.subject() == current.issuer() {
        current
            .verify_signature(None)
            .map_err(|_| InspectError::Chain(format!("self-signed {} does not verify", current.subject())))?;
    }
    Ok(())
}
