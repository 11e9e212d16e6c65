//! The network side of discovery (`scm-discovery-alerts.md` §2.9, §2.10): a real TCP connection
//! and TLS handshake to one address and port, accepting whatever certificate the server
//! presents, and the leaf parsed into the fields of the documented result (`details`, §2.8).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use md5::Md5;
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::Digest as _;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_parser::{
    extensions::GeneralName,
    prelude::{FromDer as _, X509Certificate},
    public_key::PublicKey,
    x509::X509Name,
};

use super::orders::normalise_serial;
use crate::sim::hex_lower;

/// A verifier that accepts every certificate and every handshake signature: a discovery scan
/// records what a server presents (expired, self-signed, 1024-bit RSA keys that ring would
/// refuse to verify, ...), it does not judge it. The chain is read from the connection after the
/// handshake.
#[derive(Debug)]
struct AcceptAnyCertificate;

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ECDSA_NISTP521_SHA512,
            SignatureScheme::ED25519,
            SignatureScheme::ED448,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA1,
            SignatureScheme::ECDSA_SHA1_Legacy,
        ]
    }
}

/// The TLS client of every scan: TLS 1.2 and 1.3 (what rustls speaks; older servers are not
/// found), no client certificate, any server certificate.
pub fn connector() -> Result<TlsConnector, rustls::Error> {
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// What one endpoint presented.
#[derive(Clone, Debug)]
pub struct Found {
    /// The address connected to.
    pub address: SocketAddr,
    /// The leaf, parsed.
    pub leaf: Leaf,
    /// Inferred (spec §2.9): `tlsVersion` is a Number whose encoding is not documented (the
    /// example's `1` is fixture data); we chose `12` for TLS 1.2 and `13` for TLS 1.3.
    pub tls_version: u16,
    /// The negotiated suite as rustls names it, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// Connect plus handshake, milliseconds.
    pub handshake_ms: u64,
    /// When it was found.
    pub at: OffsetDateTime,
}

/// Connects to `address` and completes a TLS handshake, both within `timeout`; `None` when
/// nothing listens, the handshake fails or the server presents no certificate.
pub async fn probe(connector: &TlsConnector, address: SocketAddr, timeout: Duration) -> Option<Found> {
    let started = Instant::now();
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    let server_name = ServerName::IpAddress(address.ip().into());
    let tls = match tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%address, %error, "discovery handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%address, "discovery handshake timed out");
            return None;
        }
    };
    let connection = tls.get_ref().1;
    let leaf = connection.peer_certificates()?.first()?;
    let Some(leaf) = Leaf::parse(leaf) else {
        tracing::debug!(%address, "discovery found a certificate it cannot parse");
        return None;
    };
    let tls_version = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => 13,
        _ => 12,
    };
    let cipher_suite = connection
        .negotiated_cipher_suite()
        .and_then(|suite| suite.suite().as_str())
        .unwrap_or("unknown")
        .to_owned();
    Some(Found {
        address,
        leaf,
        tls_version,
        cipher_suite,
        handshake_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        at: OffsetDateTime::now_utc(),
    })
}

/// A certificate in the terms of the documented `details` (§2.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// First subject CN.
    pub cn: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Issuer attributes.
    pub issuer: BTreeMap<String, String>,
    /// Subject attributes.
    pub subject: BTreeMap<String, String>,
    /// SANs as text.
    pub sans: Vec<String>,
    /// `RSA`, `EC`, `Ed25519`, `Ed448`, `DSA` or the OID.
    pub key_algorithm: String,
    /// Key size in bits (0 when unknown).
    pub key_size: usize,
    /// Java-style name (`SHA256withRSA`) or the OID.
    pub signature_algorithm: String,
    /// Upper-case hex serial without leading zeros (as the example's `sn`).
    pub serial: String,
    /// Lower-case hex MD5 of the DER.
    pub md5: String,
    /// Lower-case hex SHA-1 of the DER: the certificate's `hash`.
    pub sha1: String,
    /// Key usages by name.
    pub key_usage: Vec<String>,
    /// Extended key usages as dotted OIDs.
    pub extended_key_usage: Vec<String>,
    /// Carries the CT poison extension.
    pub precert: bool,
}

impl Leaf {
    /// Parses a DER certificate; `None` when it is not one.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, certificate) = X509Certificate::from_der(der).ok()?;
        let validity = certificate.validity();
        let time = |seconds: i64| OffsetDateTime::from_unix_timestamp(seconds).ok();
        let sans = certificate
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| san.value.general_names.iter().filter_map(general_name).collect())
            .unwrap_or_default();
        let (key_algorithm, key_size) = key(&certificate);
        let key_usage = certificate
            .key_usage()
            .ok()
            .flatten()
            .map(|ku| {
                let ku = ku.value;
                [
                    (ku.digital_signature(), "digitalSignature"),
                    (ku.non_repudiation(), "nonRepudiation"),
                    (ku.key_encipherment(), "keyEncipherment"),
                    (ku.data_encipherment(), "dataEncipherment"),
                    (ku.key_agreement(), "keyAgreement"),
                    (ku.key_cert_sign(), "keyCertSign"),
                    (ku.crl_sign(), "cRLSign"),
                    (ku.encipher_only(), "encipherOnly"),
                    (ku.decipher_only(), "decipherOnly"),
                ]
                .into_iter()
                .filter(|(set, _)| *set)
                .map(|(_, name)| name.to_owned())
                .collect()
            })
            .unwrap_or_default();
        let extended_key_usage = certificate
            .extended_key_usage()
            .ok()
            .flatten()
            .map(|eku| {
                let eku = eku.value;
                let mut oids: Vec<String> = [
                    (eku.any, "2.5.29.37.0"),
                    (eku.server_auth, "1.3.6.1.5.5.7.3.1"),
                    (eku.client_auth, "1.3.6.1.5.5.7.3.2"),
                    (eku.code_signing, "1.3.6.1.5.5.7.3.3"),
                    (eku.email_protection, "1.3.6.1.5.5.7.3.4"),
                    (eku.time_stamping, "1.3.6.1.5.5.7.3.8"),
                    (eku.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
                ]
                .into_iter()
                .filter(|(set, _)| *set)
                .map(|(_, oid)| oid.to_owned())
                .collect();
                oids.extend(eku.other.iter().map(ToString::to_string));
                oids
            })
            .unwrap_or_default();
        Some(Self {
            cn: certificate
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            not_before: time(validity.not_before.timestamp())?,
            not_after: time(validity.not_after.timestamp())?,
            issuer: name_map(certificate.issuer()),
            subject: name_map(certificate.subject()),
            sans,
            key_algorithm,
            key_size,
            signature_algorithm: signature_name(&certificate.signature_algorithm.algorithm.to_id_string()),
            serial: normalise_serial(&hex_lower(certificate.raw_serial())),
            md5: hex_lower(&Md5::digest(der)),
            sha1: hex_lower(&Sha1::digest(der)),
            key_usage,
            extended_key_usage,
            precert: certificate
                .extensions()
                .iter()
                .any(|extension| extension.oid.to_id_string() == "1.3.6.1.4.1.11129.2.4.3"),
        })
    }

    /// The documented `details` object (§2.8).
    /// Inferred (spec §2.8): the docs show only an RSA example and empty lists. We chose Java's
    /// spellings, as SCM is a Java service: `keyAlgorithm` `RSA`/`EC`/`Ed25519`, `keySize` in
    /// bits (the curve size for EC), `signatureAlgorithm` such as `SHA256withECDSA`; `sn` as
    /// upper-case hex without leading zeros (the example's form); `ku` as RFC 5280 names
    /// (`digitalSignature`); `eku` as dotted OIDs (what Java's `getExtendedKeyUsage` returns);
    /// `precert` set by the CT poison extension; the hashes in lower-case hex, `hash` being the
    /// SHA-1 as in the examples.
    pub fn details_json(&self) -> Value {
        json!({
            "cn": self.cn,
            "validFrom": iso_seconds(self.not_before),
            "validTo": iso_seconds(self.not_after),
            "issuer": self.issuer,
            "subject": self.subject,
            "san": self.sans,
            "keyAlgorithm": self.key_algorithm,
            "keySize": self.key_size,
            "signatureAlgorithm": self.signature_algorithm,
            "sn": self.serial,
            "md5Hash": self.md5,
            "sha1Hash": self.sha1,
            "ku": self.key_usage,
            "eku": self.extended_key_usage,
            "precert": self.precert,
        })
    }
}

/// An issuer or subject as attribute → value.
/// Inferred (spec §2.8): the docs show these objects only empty (`{}`); we chose a map of the
/// attributes' short names (`CN`, `O`, `OU`, `C`, ...; other attributes by dotted OID) to their
/// values, several values of one attribute joined with `, `.
fn name_map(name: &X509Name<'_>) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for attribute in name.iter_attributes() {
        let oid = attribute.attr_type().to_id_string();
        let key = match oid.as_str() {
            "2.5.4.3" => "CN",
            "2.5.4.10" => "O",
            "2.5.4.11" => "OU",
            "2.5.4.6" => "C",
            "2.5.4.7" => "L",
            "2.5.4.8" => "ST",
            "2.5.4.9" => "STREET",
            "2.5.4.5" => "SERIALNUMBER",
            "0.9.2342.19200300.100.1.25" => "DC",
            "1.2.840.113549.1.9.1" => "EMAILADDRESS",
            other => other,
        }
        .to_owned();
        let value = attribute.as_str().map_or_else(
            |_| String::from_utf8_lossy(attribute.attr_value().data).into_owned(),
            str::to_owned,
        );
        map.entry(key)
            .and_modify(|known| {
                known.push_str(", ");
                known.push_str(&value);
            })
            .or_insert(value);
    }
    map
}

fn general_name(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(text) | GeneralName::RFC822Name(text) | GeneralName::URI(text) => {
            Some((*text).to_owned())
        }
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes)
                .ok()
                .map(|b| IpAddr::from(b).to_string()),
            16 => <[u8; 16]>::try_from(*bytes)
                .ok()
                .map(|b| IpAddr::from(b).to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// `keyAlgorithm` and `keySize` as Java names them (`RSA`/2048, `EC`/256).
fn key(certificate: &X509Certificate<'_>) -> (String, usize) {
    let spki = certificate.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    match (oid.as_str(), spki.parsed()) {
        (_, Ok(PublicKey::RSA(rsa))) => ("RSA".to_owned(), rsa.key_size()),
        (_, Ok(PublicKey::EC(point))) => ("EC".to_owned(), point.key_size()),
        ("1.3.101.112", _) => ("Ed25519".to_owned(), 255),
        ("1.3.101.113", _) => ("Ed448".to_owned(), 448),
        (_, Ok(PublicKey::DSA(_))) => ("DSA".to_owned(), 0),
        (other, _) => (other.to_owned(), 0),
    }
}

/// Java's names of the common signature algorithms; others by OID.
fn signature_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.4" => "MD5withRSA",
        "1.2.840.113549.1.1.5" => "SHA1withRSA",
        "1.2.840.113549.1.1.11" => "SHA256withRSA",
        "1.2.840.113549.1.1.12" => "SHA384withRSA",
        "1.2.840.113549.1.1.13" => "SHA512withRSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.10045.4.1" => "SHA1withECDSA",
        "1.2.840.10045.4.3.2" => "SHA256withECDSA",
        "1.2.840.10045.4.3.3" => "SHA384withECDSA",
        "1.2.840.10045.4.3.4" => "SHA512withECDSA",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        other => other,
    }
    .to_owned()
}

/// `2022-12-30T00:00:00Z`, as the example's `validFrom`/`validTo`.
pub fn iso_seconds(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `2023-01-10T14:15:51.260Z`, as the example's operation times.
pub fn iso_millis(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}
