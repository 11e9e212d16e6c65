//! Caller signing (spec §3.2): the officer who signs write requests, and the CMS `SignedData` it
//! produces over the `dataToSign` bytes the gateway hands out with error `-19`.
//!
//! What the spec leaves open and what we chose: SHA-256 as the digest; the signed attributes
//! contentType, messageDigest and signingTime (OpenSSL's defaults, which Nexus' own sample
//! uses); the signer named by issuer and serial number; the signer's certificate chain included
//! in `certificates`. The officer key must be RSA or ECDSA P-256, the key types for which
//! SHA-256 is the natural pairing (a P-384 officer would sign with SHA-384, which the spec gives
//! no evidence CM accepts).

use std::fmt;

use cms::{
    builder::{SignedDataBuilder, SignerInfoBuilder, create_signing_time_attribute},
    cert::{CertificateChoices, IssuerAndSerialNumber},
    signed_data::{EncapsulatedContentInfo, SignerIdentifier},
};
use der::{
    Any, Encode as _,
    asn1::{ObjectIdentifier, OctetString},
};
use pkcs8::DecodePrivateKey as _;
use sha2::Sha256;
use x509_cert::{Certificate, spki::AlgorithmIdentifierOwned};

use crate::{
    pki::credentials::SecretString,
    pki::key::{KeyAlgorithm, PrivateKey},
};

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// Why an officer cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The certificate PEM holds no usable certificate.
    #[error("the signing certificate cannot be read: {0}")]
    Certificate(String),
    /// The key cannot be read or is of an unsupported type (the message never holds key bytes).
    #[error("the signing key cannot be used: {0}")]
    Key(String),
    /// The key is not the certificate's.
    #[error("the signing key does not belong to the signing certificate")]
    KeyMismatch,
    /// Building the CMS structure failed.
    #[error("cannot build the CMS signature: {0}")]
    Cms(String),
}

/// The officer key, typed for the `cms` builder.
enum OfficerKey {
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    P256(p256::ecdsa::SigningKey),
}

/// A CM officer that signs requests: its certificate chain (officer first) and key.
pub struct OfficerSigner {
    chain: Vec<Certificate>,
    key: OfficerKey,
}

impl fmt::Debug for OfficerSigner {
    // Hand-written: the key must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfficerSigner")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl OfficerSigner {
    /// Reads the officer certificate (followed by its chain, optionally) and its private key
    /// (PKCS#8, PKCS#1 or SEC1 PEM); fails when the key is not the certificate's.
    pub fn from_pem(certificate_chain_pem: &str, key_pem: &SecretString) -> Result<Self, SigningError> {
        let chain = Certificate::load_pem_chain(certificate_chain_pem.trim().as_bytes())
            .map_err(|e| SigningError::Certificate(e.to_string()))?;
        let officer = chain
            .first()
            .ok_or_else(|| SigningError::Certificate("no certificate in the PEM".into()))?;
        let private = PrivateKey::from_pem(key_pem.expose()).map_err(|e| SigningError::Key(e.to_string()))?;
        let public = private
            .public_key_der()
            .map_err(|e| SigningError::Key(e.to_string()))?;
        let certified = officer
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| SigningError::Certificate(e.to_string()))?;
        if public != certified {
            return Err(SigningError::KeyMismatch);
        }
        let key = match private.algorithm() {
            KeyAlgorithm::Rsa(_) => {
                let key = rsa::RsaPrivateKey::from_pkcs8_der(private.pkcs8_der())
                    .map_err(|_| SigningError::Key("invalid RSA key".into()))?;
                OfficerKey::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
            KeyAlgorithm::EcdsaP256 => OfficerKey::P256(
                p256::ecdsa::SigningKey::from_pkcs8_der(private.pkcs8_der())
                    .map_err(|_| SigningError::Key("invalid P-256 key".into()))?,
            ),
            other => {
                return Err(SigningError::Key(format!(
                    "{other} officer keys are not supported; use RSA or ECDSA P-256"
                )));
            }
        };
        Ok(Self { chain, key })
    }

    /// The DER `ContentInfo` of an attached `SignedData` over `content` (the decoded
    /// `dataToSign`, never re-encoded).
    pub fn sign(&self, content: &[u8]) -> Result<Vec<u8>, SigningError> {
        let cms_error = |e: &dyn fmt::Display| SigningError::Cms(e.to_string());
        let officer = &self.chain[0];
        let econtent = Any::encode_from(&OctetString::new(content).map_err(|e| cms_error(&e))?)
            .map_err(|e| cms_error(&e))?;
        let encapsulated = EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: Some(econtent),
        };
        let digest = AlgorithmIdentifierOwned {
            oid: ID_SHA256,
            parameters: None,
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: officer.tbs_certificate.issuer.clone(),
            serial_number: officer.tbs_certificate.serial_number.clone(),
        });
        let mut builder = SignedDataBuilder::new(&encapsulated);
        builder
            .add_digest_algorithm(digest.clone())
            .map_err(|e| cms_error(&e))?;
        for certificate in &self.chain {
            builder
                .add_certificate(CertificateChoices::Certificate(certificate.clone()))
                .map_err(|e| cms_error(&e))?;
        }
        let signing_time = create_signing_time_attribute().map_err(|e| cms_error(&e))?;
        match &self.key {
            OfficerKey::Rsa(key) => {
                let mut signer = SignerInfoBuilder::new(key.as_ref(), sid, digest, &encapsulated, None)
                    .map_err(|e| cms_error(&e))?;
                signer
                    .add_signed_attribute(signing_time)
                    .map_err(|e| cms_error(&e))?;
                builder
                    .add_signer_info::<_, rsa::pkcs1v15::Signature>(signer)
                    .map_err(|e| cms_error(&e))?;
            }
            OfficerKey::P256(key) => {
                let mut signer = SignerInfoBuilder::new(key, sid, digest, &encapsulated, None)
                    .map_err(|e| cms_error(&e))?;
                signer
                    .add_signed_attribute(signing_time)
                    .map_err(|e| cms_error(&e))?;
                builder
                    .add_signer_info::<_, p256::ecdsa::DerSignature>(signer)
                    .map_err(|e| cms_error(&e))?;
            }
        }
        let info = builder.build().map_err(|e| cms_error(&e))?;
        info.to_der().map_err(|e| cms_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use cms::{content_info::ContentInfo, signed_data::SignedData};
    use der::Decode as _;
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};

    use super::*;

    fn self_signed(key: &KeyPair) -> String {
        CertificateParams::new(vec!["officer.example".to_owned()])
            .unwrap()
            .self_signed(key)
            .unwrap()
            .pem()
    }

    fn verify_with_ring(
        der: &[u8],
        content: &[u8],
        key: &KeyPair,
        algorithm: &'static dyn ring::signature::VerificationAlgorithm,
    ) {
        let info = ContentInfo::from_der(der).unwrap();
        assert_eq!(info.content_type.to_string(), "1.2.840.113549.1.7.2");
        let signed: SignedData = info.content.decode_as().unwrap();
        let econtent = signed
            .encap_content_info
            .econtent
            .as_ref()
            .expect("attached content");
        assert_eq!(econtent.decode_as::<OctetString>().unwrap().as_bytes(), content);
        assert_eq!(signed.certificates.as_ref().map(|c| c.0.len()), Some(1));
        let [signer] = signed.signer_infos.0.as_slice() else {
            panic!("one signer expected")
        };
        assert_eq!(signer.digest_alg.oid, ID_SHA256);
        let attributes = signer.signed_attrs.as_ref().expect("signed attributes");
        assert_eq!(attributes.len(), 3, "contentType, messageDigest, signingTime");
        let message = attributes.to_der().unwrap();
        let spki = key.public_key_raw();
        ring::signature::UnparsedPublicKey::new(algorithm, spki)
            .verify(&message, signer.signature.as_bytes())
            .expect("signature verifies over the signed attributes");
    }

    #[test]
    fn p256_and_rsa_officers_sign_attached_cms() {
        let content = b"\x30\x03\x0c\x01x";
        for (algorithm, verify) in [
            (
                &PKCS_ECDSA_P256_SHA256,
                &ring::signature::ECDSA_P256_SHA256_ASN1
                    as &'static dyn ring::signature::VerificationAlgorithm,
            ),
            (&PKCS_RSA_SHA256, &ring::signature::RSA_PKCS1_2048_8192_SHA256),
        ] {
            let key = if algorithm == &PKCS_RSA_SHA256 {
                let private = PrivateKey::generate(KeyAlgorithm::Rsa(2048)).unwrap();
                KeyPair::try_from(private.pkcs8_der()).unwrap()
            } else {
                KeyPair::generate_for(algorithm).unwrap()
            };
            let signer =
                OfficerSigner::from_pem(&self_signed(&key), &SecretString::new(key.serialize_pem())).unwrap();
            let der = signer.sign(content).unwrap();
            verify_with_ring(&der, content, &key, verify);
        }
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_before_any_request() {
        let officer = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let error =
            OfficerSigner::from_pem(&self_signed(&officer), &SecretString::new(other.serialize_pem()))
                .unwrap_err();
        assert!(matches!(error, SigningError::KeyMismatch), "{error}");
        let error = OfficerSigner::from_pem("not a certificate", &SecretString::new(officer.serialize_pem()))
            .unwrap_err();
        assert!(matches!(error, SigningError::Certificate(_)), "{error}");
        let debug = format!(
            "{:?}",
            OfficerSigner::from_pem(
                &self_signed(&officer),
                &SecretString::new(officer.serialize_pem())
            )
            .unwrap()
        );
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }
}
