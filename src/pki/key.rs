//! Private keys: generation (RSA 2048/3072/4096, ECDSA P-256/P-384, Ed25519), parsing what a
//! Secret holds (PKCS#8, PKCS#1 RSA, SEC1 EC), encoding as PKCS#1/SEC1 or PKCS#8 PEM, and the
//! public key. The canonical in-memory form is PKCS#8 DER, zeroized on drop; nothing here can
//! print key material.

use std::fmt;

use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding, PrivateKeyInfo};
use rand_core::OsRng;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use zeroize::Zeroizing;

use crate::pki::credentials::SecretString;

/// Key algorithm and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA with this many bits (2048, 3072 or 4096).
    Rsa(u32),
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa(bits) => write!(f, "RSA-{bits}"),
            Self::EcdsaP256 => f.write_str("ECDSA-P256"),
            Self::EcdsaP384 => f.write_str("ECDSA-P384"),
            Self::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// How `tls.key` is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEncoding {
    /// `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1); Ed25519 has no such form and uses
    /// PKCS#8.
    Pkcs1,
    /// `PRIVATE KEY` (PKCS#8).
    Pkcs8,
}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Unsupported algorithm or size.
    #[error("unsupported key {0}")]
    Unsupported(String),
    /// Generation failed.
    #[error("cannot generate a {0} key")]
    Generate(KeyAlgorithm),
    /// The PEM is not a private key we can read (the message never includes key bytes).
    #[error("cannot read the private key: {0}")]
    Parse(String),
    /// Encoding failed.
    #[error("cannot encode the private key: {0}")]
    Encode(String),
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// A private key.
pub struct PrivateKey {
    algorithm: KeyAlgorithm,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.algorithm)
    }
}

impl PrivateKey {
    /// Generates a new key.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let der = match algorithm {
            KeyAlgorithm::Rsa(bits @ (2048 | 3072 | 4096)) => {
                let bits = usize::try_from(bits).map_err(|_| KeyError::Generate(algorithm))?;
                let key =
                    rsa::RsaPrivateKey::new(&mut OsRng, bits).map_err(|_| KeyError::Generate(algorithm))?;
                key.to_pkcs8_der()
            }
            KeyAlgorithm::Rsa(bits) => return Err(KeyError::Unsupported(format!("RSA size {bits}"))),
            KeyAlgorithm::EcdsaP256 => p256::SecretKey::random(&mut OsRng).to_pkcs8_der(),
            KeyAlgorithm::EcdsaP384 => p384::SecretKey::random(&mut OsRng).to_pkcs8_der(),
            KeyAlgorithm::Ed25519 => ed25519_dalek::SigningKey::generate(&mut OsRng).to_pkcs8_der(),
        }
        .map_err(|_| KeyError::Generate(algorithm))?;
        Ok(Self {
            algorithm,
            pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
        })
    }

    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|_| KeyError::Parse("not a PEM document".into()))?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => {
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&der)
                    .map_err(|_| KeyError::Parse("invalid PKCS#1 RSA key".into()))?;
                let pkcs8 = key.to_pkcs8_der().map_err(|e| KeyError::Encode(e.to_string()))?;
                Self::from_pkcs8_der(pkcs8.as_bytes())
            }
            "EC PRIVATE KEY" => {
                if let Ok(key) = p256::SecretKey::from_sec1_der(&der) {
                    let pkcs8 = key.to_pkcs8_der().map_err(|e| KeyError::Encode(e.to_string()))?;
                    return Ok(Self {
                        algorithm: KeyAlgorithm::EcdsaP256,
                        pkcs8: Zeroizing::new(pkcs8.as_bytes().to_vec()),
                    });
                }
                let key = p384::SecretKey::from_sec1_der(&der).map_err(|_| {
                    KeyError::Parse("EC key on an unsupported curve (P-256 and P-384 are supported)".into())
                })?;
                let pkcs8 = key.to_pkcs8_der().map_err(|e| KeyError::Encode(e.to_string()))?;
                Ok(Self {
                    algorithm: KeyAlgorithm::EcdsaP384,
                    pkcs8: Zeroizing::new(pkcs8.as_bytes().to_vec()),
                })
            }
            other => Err(KeyError::Parse(format!(
                "PEM label {other:?} is not a private key"
            ))),
        }
    }

    /// Reads a PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info =
            PrivateKeyInfo::try_from(der).map_err(|_| KeyError::Parse("invalid PKCS#8 structure".into()))?;
        let oid = info.algorithm.oid.to_string();
        let algorithm = match oid.as_str() {
            OID_RSA => {
                let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
                    .map_err(|_| KeyError::Parse("invalid RSA key".into()))?;
                let bits = u32::try_from(rsa::traits::PublicKeyParts::size(&key) * 8).unwrap_or(0);
                KeyAlgorithm::Rsa(bits)
            }
            OID_EC => match info.algorithm.parameters_oid().map(|o| o.to_string()).as_deref() {
                Ok(OID_P256) => KeyAlgorithm::EcdsaP256,
                Ok(OID_P384) => KeyAlgorithm::EcdsaP384,
                _ => {
                    return Err(KeyError::Unsupported(
                        "EC curve (P-256 and P-384 are supported)".into(),
                    ));
                }
            },
            OID_ED25519 => KeyAlgorithm::Ed25519,
            other => return Err(KeyError::Unsupported(format!("key algorithm {other}"))),
        };
        Ok(Self {
            algorithm,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// PEM in the requested encoding.
    pub fn to_pem(&self, encoding: KeyEncoding) -> Result<SecretString, KeyError> {
        let encode = |e: &dyn fmt::Display| KeyError::Encode(e.to_string());
        let pem = match (encoding, self.algorithm) {
            (KeyEncoding::Pkcs8, _) | (KeyEncoding::Pkcs1, KeyAlgorithm::Ed25519) => {
                pem_rfc7468::encode_string("PRIVATE KEY", LineEnding::LF, &self.pkcs8)
                    .map_err(|e| encode(&e))?
            }
            (KeyEncoding::Pkcs1, KeyAlgorithm::Rsa(_)) => {
                let key = rsa::RsaPrivateKey::from_pkcs8_der(&self.pkcs8).map_err(|e| encode(&e))?;
                key.to_pkcs1_pem(LineEnding::LF)
                    .map_err(|e| encode(&e))?
                    .to_string()
            }
            (KeyEncoding::Pkcs1, KeyAlgorithm::EcdsaP256) => {
                let key = p256::SecretKey::from_pkcs8_der(&self.pkcs8).map_err(|e| encode(&e))?;
                key.to_sec1_pem(LineEnding::LF)
                    .map_err(|e| encode(&e))?
                    .to_string()
            }
            (KeyEncoding::Pkcs1, KeyAlgorithm::EcdsaP384) => {
                let key = p384::SecretKey::from_pkcs8_der(&self.pkcs8).map_err(|e| encode(&e))?;
                key.to_sec1_pem(LineEnding::LF)
                    .map_err(|e| encode(&e))?
                    .to_string()
            }
        };
        Ok(SecretString::new(pem))
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        let encode = |e: &dyn fmt::Display| KeyError::Encode(e.to_string());
        let der = match self.algorithm {
            KeyAlgorithm::Rsa(_) => rsa::RsaPrivateKey::from_pkcs8_der(&self.pkcs8)
                .map_err(|e| encode(&e))?
                .to_public_key()
                .to_public_key_der(),
            KeyAlgorithm::EcdsaP256 => p256::SecretKey::from_pkcs8_der(&self.pkcs8)
                .map_err(|e| encode(&e))?
                .public_key()
                .to_public_key_der(),
            KeyAlgorithm::EcdsaP384 => p384::SecretKey::from_pkcs8_der(&self.pkcs8)
                .map_err(|e| encode(&e))?
                .public_key()
                .to_public_key_der(),
            KeyAlgorithm::Ed25519 => ed25519_dalek::SigningKey::from_pkcs8_der(&self.pkcs8)
                .map_err(|e| encode(&e))?
                .verifying_key()
                .to_public_key_der(),
        }
        .map_err(|e| encode(&e))?;
        Ok(der.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips_through_both_encodings() {
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa(2048),
        ] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let public = key.public_key_der().unwrap();
            for encoding in [KeyEncoding::Pkcs1, KeyEncoding::Pkcs8] {
                let pem = key.to_pem(encoding).unwrap();
                let expected_label = match (encoding, algorithm) {
                    (KeyEncoding::Pkcs1, KeyAlgorithm::Rsa(_)) => "RSA PRIVATE KEY",
                    (KeyEncoding::Pkcs1, KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384) => {
                        "EC PRIVATE KEY"
                    }
                    _ => "PRIVATE KEY",
                };
                assert!(
                    pem.expose()
                        .starts_with(&format!("-----BEGIN {expected_label}-----")),
                    "{algorithm} {encoding:?}"
                );
                let back = PrivateKey::from_pem(pem.expose()).unwrap();
                assert_eq!(back.algorithm(), algorithm);
                assert_eq!(back.public_key_der().unwrap(), public);
            }
        }
    }

    #[test]
    fn unsupported_sizes_and_garbage_are_rejected_without_echoing_input() {
        assert!(matches!(
            PrivateKey::generate(KeyAlgorithm::Rsa(1024)),
            Err(KeyError::Unsupported(_))
        ));
        let error =
            PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(!error.to_string().contains("c2VjcmV0"));
        assert!(matches!(PrivateKey::from_pem("hello"), Err(KeyError::Parse(_))));
    }

    #[test]
    fn debug_is_redacted() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(ECDSA-P256, <redacted>)");
    }
}
