//! CSR intake as SCM does it: PEM or bare base64 in, the documented error codes out (spec §3.9),
//! plus the CSR facts the API reports (hashes, key type, requested names).

use std::net::IpAddr;

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use x509_parser::{
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION},
    prelude::FromDer as _,
    public_key::PublicKey,
};

use super::error::ScmError;
use crate::sim::hex_upper;

/// Longest `csr` value the API accepts (spec §3.9: "Size must be between 1 and 32767").
const MAX_CSR_CHARS: usize = 32_767;
/// Smallest RSA key (spec §1.5 -141 with `{0}` = 2048).
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA key the simulator's profiles list.
const MAX_RSA_BITS: u32 = 8192;

/// The public key of a CSR, as SCM classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with this many modulus bits.
    Rsa(u32),
    /// EC P-256.
    P256,
    /// EC P-384.
    P384,
}

impl KeyKind {
    /// `keyAlgorithm` in details.
    pub fn algorithm(self) -> &'static str {
        match self {
            Self::Rsa(_) => "RSA",
            Self::P256 | Self::P384 => "EC",
        }
    }

    /// `keySize` in details (bits; the curve size for EC).
    pub fn size(self) -> u32 {
        match self {
            Self::Rsa(bits) => bits,
            Self::P256 => 256,
            Self::P384 => 384,
        }
    }

    /// `keyType` in details once issued, e.g. `RSA - 2048`, `EC - P-256` (spec §3.6).
    pub fn key_type(self) -> String {
        match self {
            Self::Rsa(bits) => format!("RSA - {bits}"),
            Self::P256 => "EC - P-256".to_owned(),
            Self::P384 => "EC - P-384".to_owned(),
        }
    }
}

/// A CSR that passed every check.
#[derive(Clone, Debug)]
pub struct ParsedCsr {
    /// The DER encoding.
    pub der: Vec<u8>,
    /// PEM with `\n` line ends and no final newline, as `csrDetails.csr` shows it.
    pub pem: String,
    /// Upper-case hex MD5 of the DER (`csrDetails.md5Hash`).
    pub md5: String,
    /// Upper-case hex SHA-1 of the DER (`csrDetails.sha1Hash`).
    pub sha1: String,
    /// Upper-case hex SHA-256 of the DER (`csrDetails.sha256Hash`).
    pub sha256: String,
    /// The `SubjectPublicKeyInfo`, DER.
    pub spki: Vec<u8>,
    /// The key classification.
    pub key: KeyKind,
    /// The subject's common name.
    pub common_name: Option<String>,
    /// Names from the CSR's subjectAltName extension request, textual.
    pub names: Vec<String>,
}

impl ParsedCsr {
    /// Lower-case hex SHA-256 of the DER: the key of `Stats::orders_per_csr`.
    pub fn sha256_lower(&self) -> String {
        self.sha256.to_ascii_lowercase()
    }

    /// Checks `input` in the order a validating server would (syntax, structure, key,
    /// signature) and returns the first problem with its documented code.
    pub fn parse(input: &str) -> Result<Self, ScmError> {
        if input.trim().is_empty() {
            return Err(ScmError::Required("csr"));
        }
        if input.chars().count() > MAX_CSR_CHARS {
            // Inferred (spec §3.9): we chose -1601 naming the field for an over-long CSR
            // because the size limit is a field constraint and the table has no CSR-size code.
            return Err(ScmError::InvalidField("csr".to_owned()));
        }
        let der = decode_base64(input)?;
        let (rest, request) =
            X509CertificationRequest::from_der(&der).map_err(|_| ScmError::CsrUndecodable)?;
        if !rest.is_empty() {
            return Err(ScmError::CsrUndecodable);
        }
        let key = classify_key(&request)?;
        if let KeyKind::Rsa(bits) = key {
            if bits < MIN_RSA_BITS {
                return Err(ScmError::CsrKeyTooSmall(MIN_RSA_BITS));
            }
            if bits > MAX_RSA_BITS {
                return Err(ScmError::CsrUnsupportedKeySize);
            }
        }
        request.verify_signature().map_err(|_| ScmError::CsrInvalid)?;
        let info = &request.certification_request_info;
        let common_name = info
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let names = requested_names(&request);
        let spki = info.subject_pki.raw.to_vec();
        Ok(Self {
            pem: pem_string("CERTIFICATE REQUEST", &der),
            md5: hex_upper(&Md5::digest(&der)),
            sha1: hex_upper(&Sha1::digest(&der)),
            sha256: hex_upper(&Sha256::digest(&der)),
            der,
            spki,
            key,
            common_name,
            names,
        })
    }
}

/// PEM with LF line ends and no trailing newline.
pub fn pem_string(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
        .trim_end()
        .to_owned()
}

/// Strips PEM armour and whitespace and decodes the rest. The documented regex (spec §7 item 12)
/// is a "find" over `[a-zA-Z0-9-=/\s]`; real CSRs also contain `+`, so the simulator accepts the
/// base64 alphabet plus whitespace and the `-----BEGIN/END …-----` lines.
fn decode_base64(input: &str) -> Result<Vec<u8>, ScmError> {
    let body: String = input
        .lines()
        .map(str::trim)
        .filter(|line| !(line.starts_with("-----") && line.ends_with("-----")))
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace())
        .collect();
    if body.is_empty() {
        return Err(ScmError::Required("csr"));
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    {
        return Err(ScmError::CsrNotBase64);
    }
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine.decode(body).map_err(|_| ScmError::CsrNotBase64)
}

fn classify_key(request: &X509CertificationRequest<'_>) -> Result<KeyKind, ScmError> {
    let spki = &request.certification_request_info.subject_pki;
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(ScmError::CsrUndecodable);
        };
        Ok(KeyKind::Rsa(modulus_bits(rsa.modulus)))
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.as_oid().ok());
        match curve {
            Some(curve) if curve == OID_EC_P256 => Ok(KeyKind::P256),
            Some(curve) if curve == OID_NIST_EC_P384 => Ok(KeyKind::P384),
            _ => Err(ScmError::CsrUnsupportedAlgorithm),
        }
    } else {
        Err(ScmError::CsrUnsupportedAlgorithm)
    }
}

fn modulus_bits(modulus: &[u8]) -> u32 {
    let significant = modulus
        .iter()
        .position(|byte| *byte != 0)
        .map_or(&[][..], |start| &modulus[start..]);
    match significant.first() {
        None => 0,
        Some(first) => {
            let bytes = u32::try_from(significant.len()).unwrap_or(u32::MAX / 8);
            (bytes - 1) * 8 + (8 - first.leading_zeros())
        }
    }
}

fn requested_names(request: &X509CertificationRequest<'_>) -> Vec<String> {
    let Some(extensions) = request.requested_extensions() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for extension in extensions {
        let ParsedExtension::SubjectAlternativeName(san) = extension else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(text) | GeneralName::RFC822Name(text) | GeneralName::URI(text) => {
                    names.push((*text).to_owned());
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    names
}

/// Lower-case hex SHA-256 of arbitrary bytes.
#[cfg(test)]
pub fn sha256_lower(bytes: &[u8]) -> String {
    crate::sim::hex_lower(&Sha256::digest(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

    use super::*;

    /// A CSR for `cn` with `sans`, signed by a new key of `alg`.
    pub fn csr_pem(cn: &str, sans: &[&str], key: &KeyPair) -> String {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    pub fn p256_csr(cn: &str, sans: &[&str]) -> String {
        csr_pem(cn, sans, &KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap())
    }

    /// A 1024-bit RSA CSR, generated once with openssl (ring cannot make RSA keys).
    const RSA_1024_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBWzCBxQIBADAcMRowGAYDVQQDDBFzbWFsbC5leGFtcGxlLmNvbTCBnzANBgkq
hkiG9w0BAQEFAAOBjQAwgYkCgYEAo+wJ0Qo5ljMajm7yyyvDFjo2pMGRlVkxy8tN
xJHSE0ZsGnNxVM8BUpTI7TFaQg2onGrK1FMWWJN24UGKe4RI+m3mYfzndCzpFoZX
k5RbtABNbdpUxbFyHj+lzo8Curzcou4LRX0G3TpKCMwDN55cdBeuXJZpVo2w//JM
Sc0RfrsCAwEAAaAAMA0GCSqGSIb3DQEBCwUAA4GBAJmbL0TSBkQXNs9bGgGinh+7
stwptPvHLiQCb6IvZ4K22OJ1iqMagwXMkh4UFxL/58xMhIjgmf6cfhON3tfkyR2O
vJuMKm/umXUSkiiTa14kwtXwKaY5q4U8MxqlCYXODx/hinD5n1jfM+mWqWF+Cis0
YfkFScsM2Hj+Put51UFu
-----END CERTIFICATE REQUEST-----";

    /// A 2048-bit RSA CSR with SAN, key usage and EKU requests, generated once with openssl.
    pub const RSA_2048_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIICwzCCAasCAQAwGjEYMBYGA1UEAwwPcnNhLmV4YW1wbGUuY29tMIIBIjANBgkq
hkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAi8df4gLcaIRRSPzqsg/S2IgsIt0Nvmq3
62HMbKwiBRJ2j0ap0+fqH+SucSbdRfCEmKNvDASAk5JO5KV59nmgne2jL9W/Lcbj
YCDRyI06mre05uOn3zUlp+Z+gmMlW6osRJnYQfnK+99DIGPr8Ab/JiNn/LOgUUAN
pIgLSH1u4mhaikDmAb1J3ggpZUOChZq9rceURF6n+hYjOq1EZG3kYnGGJM+jPSGi
K58+zVMEWN6jkVb/D2aviCSPWdewdqDHO0QYt/cHgT2l4HFqUSLfiq/XaMxx/yXG
Os0CrDloohhRHhwmRLdmEoTie/l28basehdR/qu6+Il0xbzHodrLCwIDAQABoGQw
YgYJKoZIhvcNAQkOMVUwUzAvBgNVHREEKDAmgg9yc2EuZXhhbXBsZS5jb22CE3d3
dy5yc2EuZXhhbXBsZS5jb20wCwYDVR0PBAQDAgWgMBMGA1UdJQQMMAoGCCsGAQUF
BwMBMA0GCSqGSIb3DQEBCwUAA4IBAQBoU1TeNMbuYEO4q8FHTKU9JtVZEBZAZWtB
nnX90CmFOpgN5uX1Tyx2ObxoJ9CsVJ0fqrDYAvE4Kd7/v2LxJRi9kJ3HRuJwIoeS
Pf1uPoinZME6u2ovKe7ip/M7g51yBekaiDFUltMZI0jTjScHeXn8woykyJvKic7P
3ASO8PLs/+uRA2lhGPqti6yynvGqGKl3j5qq91kLyRtbsKVRrdq/mLwyKnWAldUT
YfQ9fUwi0gTnb/JHFBZUj/A41HJPI5kLEAHg7BkZMjZaPZ8uZJB2XuHk8GNtdqfA
jPkbIL5hpDX1s4Qgd0slegtIl563LFZ8FytVPeVi5Fm5J8rNiBtb
-----END CERTIFICATE REQUEST-----";

    #[test]
    fn accepts_pem_and_bare_base64_and_reports_hashes() {
        let pem = p256_csr("app.example.com", &["app.example.com", "10.1.2.3"]);
        let parsed = ParsedCsr::parse(&pem).unwrap();
        assert_eq!(parsed.key, KeyKind::P256);
        assert_eq!(parsed.common_name.as_deref(), Some("app.example.com"));
        assert_eq!(parsed.names, ["app.example.com", "10.1.2.3"]);
        assert_eq!(parsed.sha256, hex_upper(&Sha256::digest(&parsed.der)));
        assert_eq!(parsed.md5.len(), 32);
        assert!(parsed.pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
        // Bare base64 with newlines, as the update example sends it.
        let bare: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(ParsedCsr::parse(&bare).unwrap().der, parsed.der);
    }

    #[test]
    fn rejects_with_documented_codes() {
        let code = |input: &str| ParsedCsr::parse(input).unwrap_err().code();
        assert_eq!(code("  "), -7);
        assert_eq!(code("not base64 at all!"), -9);
        assert_eq!(
            code("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"),
            -10
        );
        let ed25519 = csr_pem(
            "ed.example.com",
            &[],
            &KeyPair::generate_for(&PKCS_ED25519).unwrap(),
        );
        assert_eq!(code(&ed25519), -11);
        assert_eq!(code(RSA_1024_CSR), -141);
        assert_eq!(
            ParsedCsr::parse(RSA_1024_CSR).unwrap_err().to_string(),
            "The public key size in the CSR should be 2048 bits minimum."
        );
        // Flip a bit of the signature (the last bytes of the DER).
        let parsed = ParsedCsr::parse(&p256_csr("x.example.com", &[])).unwrap();
        let mut der = parsed.der.clone();
        let last = der.len() - 3;
        der[last] ^= 0x01;
        assert_eq!(code(&pem_string("CERTIFICATE REQUEST", &der)), -138);
    }

    #[test]
    fn accepts_rsa_2048_with_extension_requests() {
        let parsed = ParsedCsr::parse(RSA_2048_CSR).unwrap();
        assert_eq!(parsed.key, KeyKind::Rsa(2048));
        assert_eq!(parsed.key.key_type(), "RSA - 2048");
        assert_eq!(parsed.names, ["rsa.example.com", "www.rsa.example.com"]);
    }

    #[test]
    fn rsa_modulus_bits() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0, 0]), 24);
        assert_eq!(modulus_bits(&[0x01, 0xff]), 9);
        assert_eq!(modulus_bits(&[]), 0);
    }
}
