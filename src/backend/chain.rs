//! Turning what a CA sends back into an [`IssuedCertificate`]: sniffing the encoding (PEM
//! certificates, PEM or DER PKCS#7, a bare DER certificate), picking the leaf by the CSR's public
//! key (CAs order chains either way and may include unrelated certificates), and ordering the
//! issuers from the leaf upwards by subject/issuer names.

use cms::{cert::CertificateChoices, content_info::ContentInfo, signed_data::SignedData};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::{Certificate, request::CertReq};

use super::IssuedCertificate;

/// Why a CA response could not be turned into a certificate chain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// No certificate could be decoded.
    #[error("the response contains no certificate ({0})")]
    NoCertificate(String),
    /// A PEM block or DER structure is corrupt.
    #[error("a certificate in the response cannot be decoded: {0}")]
    Decode(String),
    /// The CSR given to match against is not a PKCS#10 request.
    #[error("the CSR cannot be decoded: {0}")]
    Csr(String),
    /// None of the certificates carries the CSR's public key.
    #[error("none of the {0} certificate(s) in the response carries the CSR's public key")]
    NoLeafForKey(usize),
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Decodes every certificate in a CA response body, in the order given.
pub fn parse_certificates(body: &[u8]) -> Result<Vec<Certificate>, ChainError> {
    let text = std::str::from_utf8(body).ok();
    if let Some(text) = text.filter(|t| t.contains("-----BEGIN")) {
        if text.contains("-----BEGIN CERTIFICATE-----") {
            return Certificate::load_pem_chain(text.as_bytes())
                .map_err(|e| ChainError::Decode(e.to_string()));
        }
        if text.contains("-----BEGIN PKCS7-----") {
            let (_, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
                .map_err(|e| ChainError::Decode(format!("PKCS#7 PEM: {e}")))?;
            return pkcs7_certificates(&der);
        }
        return Err(ChainError::NoCertificate(
            "PEM without CERTIFICATE or PKCS7 blocks".into(),
        ));
    }
    if body.is_empty() {
        return Err(ChainError::NoCertificate("empty body".into()));
    }
    // Binary: a PKCS#7 SignedData ("bin" format) or a single DER certificate.
    pkcs7_certificates(body).or_else(|pkcs7_error| {
        Certificate::from_der(body).map(|c| vec![c]).map_err(|_| {
            ChainError::NoCertificate(format!("neither PKCS#7 nor DER certificate ({pkcs7_error})"))
        })
    })
}

fn pkcs7_certificates(der: &[u8]) -> Result<Vec<Certificate>, ChainError> {
    let info = ContentInfo::from_der(der).map_err(|e| ChainError::Decode(format!("PKCS#7: {e}")))?;
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| ChainError::Decode(format!("PKCS#7 SignedData: {e}")))?;
    let certificates: Vec<Certificate> = signed
        .certificates
        .map(|set| {
            set.0
                .into_vec()
                .into_iter()
                .filter_map(|choice| match choice {
                    CertificateChoices::Certificate(cert) => Some(cert),
                    CertificateChoices::Other(_) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if certificates.is_empty() {
        return Err(ChainError::NoCertificate("PKCS#7 without certificates".into()));
    }
    Ok(certificates)
}

/// The DER `SubjectPublicKeyInfo` of a CSR.
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>, ChainError> {
    let request = CertReq::from_der(csr_der).map_err(|e| ChainError::Csr(e.to_string()))?;
    request
        .info
        .public_key
        .to_der()
        .map_err(|e| ChainError::Csr(e.to_string()))
}

/// Picks the certificate carrying `public_key_der` as the leaf and orders the others as its
/// issuer chain (leaf's issuer first). Certificates not on the leaf's path are dropped.
pub fn assemble(
    certificates: Vec<Certificate>,
    public_key_der: &[u8],
) -> Result<IssuedCertificate, ChainError> {
    let count = certificates.len();
    let spki = |c: &Certificate| c.tbs_certificate.subject_public_key_info.to_der().ok();
    let leaf_index = certificates
        .iter()
        .position(|c| spki(c).as_deref() == Some(public_key_der))
        .ok_or(ChainError::NoLeafForKey(count))?;
    let mut rest = certificates;
    let leaf = rest.swap_remove(leaf_index);
    let mut chain = Vec::new();
    let mut current = leaf.clone();
    // Follow issuer → subject links; stop at a self-signed root or when nothing matches.
    while current.tbs_certificate.issuer != current.tbs_certificate.subject {
        let Some(next) = rest
            .iter()
            .position(|c| c.tbs_certificate.subject == current.tbs_certificate.issuer)
        else {
            break;
        };
        let issuer = rest.swap_remove(next);
        chain.push(issuer.clone());
        current = issuer;
    }
    let to_der = |c: &Certificate| c.to_der().map_err(|e| ChainError::Decode(e.to_string()));
    Ok(IssuedCertificate {
        leaf_der: to_der(&leaf)?,
        chain_der: chain.iter().map(to_der).collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_sha256() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn empty_and_garbage_bodies_are_rejected_with_a_reason() {
        assert!(matches!(
            parse_certificates(b""),
            Err(ChainError::NoCertificate(_))
        ));
        assert!(matches!(
            parse_certificates(b"\x30\x03\x02\x01\x01"),
            Err(ChainError::NoCertificate(_))
        ));
        assert!(matches!(
            parse_certificates(b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"),
            Err(ChainError::NoCertificate(_))
        ));
        assert!(matches!(
            parse_certificates(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(ChainError::Decode(_))
        ));
    }
}
