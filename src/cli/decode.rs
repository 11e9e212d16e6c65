//! What `kubectl pki` shows of a certificate and a TLS Secret: the facts [`crate::pki::inspect`]
//! reads plus the subject and key type, days left, and whether `tls.key` belongs to the leaf.
//! Pure: no Kubernetes calls, so it is unit-tested with certificates made in the test.

use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use x509_parser::{certificate::X509Certificate, prelude::FromDer as _, public_key::PublicKey};

use crate::pki::{inspect, key::PrivateKey};

const SECONDS_PER_DAY: i64 = 86_400;

/// One decoded certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateView {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, lower-case hex (as in `status.serialNumber`).
    pub serial: String,
    /// Every SAN: DNS names, IP addresses, emails and URIs.
    pub sans: Vec<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whole days until `notAfter` (negative once expired).
    pub days_left: i64,
    /// Public key algorithm and size, e.g. `ECDSA-P256`, `RSA-2048`.
    pub key_type: String,
}

/// A TLS Secret decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    /// The Secret's name.
    pub name: String,
    /// `tls.crt` (leaf first, then its chain) followed by any `ca.crt` certificate not in it.
    pub certificates: Vec<CertificateView>,
    /// Whether `tls.key` is the leaf's key; `None` when there is no readable `tls.key`.
    pub key_matches: Option<bool>,
}

/// Why a Secret cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// `tls.crt` is missing or holds no certificate.
    #[error("Secret {0} has no readable certificate in tls.crt")]
    NoCertificate(String),
    /// A certificate does not parse.
    #[error("Secret {secret}: {source}")]
    Inspect {
        /// The Secret.
        secret: String,
        /// The parser's error.
        source: inspect::InspectError,
    },
}

/// Whole days from `now` to `not_after` (both Unix seconds), rounded down: a certificate
/// expiring in 23 hours has 0 days left, one expired an hour ago -1.
pub fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(SECONDS_PER_DAY)
}

/// RFC 3339 for Unix seconds (the seconds themselves if out of range).
pub fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

/// The key algorithm of a certificate, named as [`crate::pki::key::KeyAlgorithm`] prints it.
fn key_type(cert: &X509Certificate<'_>) -> String {
    const ED25519: &str = "1.3.101.112";
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => format!("ECDSA-P{}", point.key_size()),
        _ if spki.algorithm.algorithm.to_id_string() == ED25519 => "Ed25519".to_owned(),
        _ => spki.algorithm.algorithm.to_id_string(),
    }
}

/// Decodes one DER certificate as of `now` (Unix seconds).
pub fn describe(der: &[u8], now: i64) -> Result<CertificateView, inspect::InspectError> {
    let info = inspect::inspect(der)?;
    // `inspect` reads what the controller needs; the subject and key type are only shown, so
    // they are read here rather than widening the controller's type.
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| inspect::InspectError::Parse(e.to_string()))?;
    let sans = [info.dns_names, info.ip_addresses, info.email_addresses, info.uris].concat();
    Ok(CertificateView {
        subject: cert.subject().to_string(),
        issuer: info.issuer,
        serial: info.serial_hex,
        sans,
        not_before: rfc3339(info.not_before),
        not_after: rfc3339(info.not_after),
        days_left: days_left(info.not_after, now),
        key_type: key_type(&cert),
    })
}

/// Decodes a TLS Secret's certificates and checks its key against the leaf.
pub fn decode_secret(secret: &Secret, now: i64) -> Result<SecretView, DecodeError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let (leaf, chain) =
        crate::secret::certificates(secret).ok_or_else(|| DecodeError::NoCertificate(name.clone()))?;
    let certificates = std::iter::once(&leaf)
        .chain(&chain)
        .map(|der| describe(der, now))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| DecodeError::Inspect {
            secret: name.clone(),
            source,
        })?;
    let key_matches = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.key"))
        .and_then(|pem| std::str::from_utf8(&pem.0).ok())
        .and_then(|pem| PrivateKey::from_pem(pem).ok())
        .and_then(|key| key.public_key_der().ok())
        .map(|public| inspect::inspect(&leaf).is_ok_and(|info| info.public_key_der == public));
    Ok(SecretView {
        name,
        certificates,
        key_matches,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn days_left_rounds_down() {
        assert_eq!(days_left(100 * SECONDS_PER_DAY, 0), 100);
        assert_eq!(days_left(SECONDS_PER_DAY - 1, 0), 0);
        assert_eq!(days_left(0, 3600), -1);
        assert_eq!(days_left(0, 0), 0);
    }

    #[test]
    fn rfc3339_prints_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    fn tls_secret(cert: &str, key: &str) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web-tls".to_owned()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("tls.crt".to_owned(), ByteString(cert.as_bytes().to_vec())),
                ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
            ])),
            ..Default::default()
        }
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_secret_is_decoded_and_its_key_checked() {
        let (cert, key) = self_signed("web.example.com");
        let view = decode_secret(&tls_secret(&cert, &key), 0).expect("decoded");
        assert_eq!(view.name, "web-tls");
        let leaf = &view.certificates[0];
        assert_eq!(leaf.subject, "CN=web.example.com");
        assert_eq!(leaf.sans, vec!["web.example.com".to_owned()]);
        assert_eq!(leaf.key_type, "ECDSA-P256");
        assert!(leaf.days_left > 0);
        assert_eq!(view.key_matches, Some(true));

        let (_, other_key) = self_signed("other.example.com");
        let view = decode_secret(&tls_secret(&cert, &other_key), 0).expect("decoded");
        assert_eq!(view.key_matches, Some(false));
    }

    #[test]
    fn a_secret_without_certificate_is_an_error() {
        let err = decode_secret(&tls_secret("", ""), 0).expect_err("no certificate");
        assert_eq!(err, DecodeError::NoCertificate("web-tls".to_owned()));
    }
}
