//! Turning what a CA sends back into an [`IssuedCertificate`]: sniffing the encoding (PEM
//! certificates, PEM or DER PKCS#7, a bare DER certificate), picking the leaf by the CSR's public
//! key (CAs order chains either way and may include unrelated certificates), and ordering the
//! issuers from the leaf upwards by subject/issuer names. A response holds at most
//! [`MAX_CERTIFICATES`] certificates and the ordering is linear in their number, so a hostile
//! answer cannot make it expensive.

use std::collections::{HashMap, VecDeque};

use cms::{cert::CertificateChoices, content_info::ContentInfo, signed_data::SignedData};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::{Certificate, request::CertReq};

/// An issued certificate with its chain, checked to be well-formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The leaf certificate, DER.
    pub leaf_der: Vec<u8>,
    /// Issuing chain, DER, ordered from the leaf's issuer towards the root; includes the root
    /// when the CA sent it.
    pub chain_der: Vec<Vec<u8>>,
}

/// The most certificates accepted in one response. Real chains hold a leaf, one or two
/// intermediates and perhaps a root and a cross-certificate; 32 leaves room for generous
/// PKCS#7 bundles while keeping the work per response small.
pub const MAX_CERTIFICATES: usize = 32;

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
    /// More certificates than any chain needs.
    #[error("the response holds {0} certificates, more than the {MAX_CERTIFICATES} accepted")]
    TooMany(usize),
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

/// Decodes every certificate in a CA response body, in the order given; at most
/// [`MAX_CERTIFICATES`].
pub fn parse_certificates(body: &[u8]) -> Result<Vec<Certificate>, ChainError> {
    let certificates = decode_certificates(body)?;
    if certificates.len() > MAX_CERTIFICATES {
        return Err(ChainError::TooMany(certificates.len()));
    }
    Ok(certificates)
}

fn decode_certificates(body: &[u8]) -> Result<Vec<Certificate>, ChainError> {
    let text = std::str::from_utf8(body).ok();
    if let Some(text) = text.filter(|t| t.contains("-----BEGIN")) {
        if text.contains("-----BEGIN CERTIFICATE-----") {
            // Counted before decoding so an oversized bundle costs a scan, not a parse.
            let count = text.matches("-----BEGIN CERTIFICATE-----").count();
            if count > MAX_CERTIFICATES {
                return Err(ChainError::TooMany(count));
            }
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
/// issuer chain (leaf's issuer first). Certificates not on the leaf's path are dropped. At most
/// [`MAX_CERTIFICATES`] are accepted; the work is linear in their number: subjects are indexed
/// once, and each certificate joins the chain at most once, so a loop of issuers ends too.
pub fn assemble(
    certificates: Vec<Certificate>,
    public_key_der: &[u8],
) -> Result<IssuedCertificate, ChainError> {
    let count = certificates.len();
    if count > MAX_CERTIFICATES {
        return Err(ChainError::TooMany(count));
    }
    let der = |c: &Certificate| c.to_der().map_err(|e| ChainError::Decode(e.to_string()));
    let name_der =
        |name: &x509_cert::name::Name| name.to_der().map_err(|e| ChainError::Decode(e.to_string()));
    let spki = |c: &Certificate| c.tbs_certificate.subject_public_key_info.to_der().ok();
    let leaf_index = certificates
        .iter()
        .position(|c| spki(c).as_deref() == Some(public_key_der))
        .ok_or(ChainError::NoLeafForKey(count))?;
    // Subject (DER, canonical) → the certificates carrying it, in the order given, so the first
    // match wins as a scan would pick it. Each certificate is taken out of its slot when it
    // joins the chain.
    let mut by_subject: HashMap<Vec<u8>, VecDeque<Certificate>> = HashMap::with_capacity(count);
    let mut leaf = None;
    for (index, certificate) in certificates.into_iter().enumerate() {
        if index == leaf_index {
            leaf = Some(certificate);
        } else {
            by_subject
                .entry(name_der(&certificate.tbs_certificate.subject)?)
                .or_default()
                .push_back(certificate);
        }
    }
    let leaf = leaf.ok_or(ChainError::NoLeafForKey(count))?;
    let leaf_der = der(&leaf)?;
    let mut chain = Vec::new();
    let mut current = leaf;
    // Follow issuer → subject links; stop at a self-signed root or when nothing matches.
    while current.tbs_certificate.issuer != current.tbs_certificate.subject {
        let Some(next) = by_subject
            .get_mut(&name_der(&current.tbs_certificate.issuer)?)
            .and_then(VecDeque::pop_front)
        else {
            break;
        };
        chain.push(der(&next)?);
        current = next;
    }
    Ok(IssuedCertificate {
        leaf_der,
        chain_der: chain,
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PublicKeyData as _};

    use super::*;

    /// A chain `CA 0` (self-signed) → `CA 1` → … → `CA {depth-2}` → leaf, as PEM blocks in
    /// that order, and the leaf's public key (DER `SubjectPublicKeyInfo`).
    fn deep_chain(depth: usize) -> (Vec<String>, Vec<u8>) {
        let mut pems = Vec::new();
        let params = |name: String, ca: bool| {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            if ca {
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }
            params
        };
        let root_key = KeyPair::generate().unwrap();
        let root_params = params("CA 0".into(), true);
        pems.push(root_params.self_signed(&root_key).unwrap().pem());
        let mut issuer = Issuer::new(root_params, root_key);
        for level in 1..depth - 1 {
            let key = KeyPair::generate().unwrap();
            let ca_params = params(format!("CA {level}"), true);
            pems.push(ca_params.signed_by(&key, &issuer).unwrap().pem());
            issuer = Issuer::new(ca_params, key);
        }
        let leaf_key = KeyPair::generate().unwrap();
        pems.push(
            params("leaf".into(), false)
                .signed_by(&leaf_key, &issuer)
                .unwrap()
                .pem(),
        );
        (pems, leaf_key.subject_public_key_info())
    }

    fn subject_cn(der: &[u8]) -> String {
        let certificate = Certificate::from_der(der).unwrap();
        certificate.tbs_certificate.subject.to_string()
    }

    #[test]
    fn a_deep_chain_in_any_order_is_assembled_leaf_upwards() {
        let (mut pems, leaf_key) = deep_chain(MAX_CERTIFICATES);
        // Worst case for a scan: root first, leaf last; plus a shuffle of the middle.
        pems.swap(3, 17);
        pems.swap(8, 25);
        let issued = assemble(parse_certificates(pems.concat().as_bytes()).unwrap(), &leaf_key).unwrap();
        assert_eq!(subject_cn(&issued.leaf_der), "CN=leaf");
        let names: Vec<String> = issued.chain_der.iter().map(|der| subject_cn(der)).collect();
        let expected: Vec<String> = (0..MAX_CERTIFICATES - 1)
            .rev()
            .map(|level| format!("CN=CA {level}"))
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn more_certificates_than_any_chain_needs_are_refused() {
        let (pems, leaf_key) = deep_chain(MAX_CERTIFICATES + 1);
        let body = pems.concat();
        assert_eq!(
            parse_certificates(body.as_bytes()),
            Err(ChainError::TooMany(MAX_CERTIFICATES + 1))
        );
        let certificates = Certificate::load_pem_chain(body.as_bytes()).unwrap();
        assert_eq!(
            assemble(certificates, &leaf_key),
            Err(ChainError::TooMany(MAX_CERTIFICATES + 1))
        );
    }

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
