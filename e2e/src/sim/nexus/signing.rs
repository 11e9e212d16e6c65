//! Caller signing (spec §3.2): the deterministic `dataToSign` blob of a write request, and the
//! check of the CMS `SignedData` a caller sends back in `signature`.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use cms::{
    cert::CertificateChoices,
    content_info::ContentInfo,
    signed_data::{SignedData, SignerIdentifier, SignerInfo},
};
use der::{
    Decode as _, Encode as _,
    asn1::{ObjectIdentifier, OctetString, Utf8StringRef},
};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use sha2::{Digest as _, Sha256};
use x509_parser::{
    certificate::X509Certificate,
    extensions::ParsedExtension,
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION},
    prelude::FromDer as _,
};

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// Marks the blob's layout, so a change of layout is visible in the bytes.
const BLOB_TAG: &str = "nexus-simulator-request/1";

/// The bytes a caller must sign for a request: a DER `SEQUENCE OF UTF8String`, the first element
/// [`BLOB_TAG`], then `operation=<endpoint>`, then one `key=value` per canonical field in the
/// order given.
///
/// Inferred (spec §3.2, §12): CM's real blob is an undocumented internal structure; we chose
/// readable `key=value` strings with no time or nonce, so the same request always yields the same
/// blob and a re-send is checked by recomputing it rather than by keeping a pending table.
pub fn data_to_sign(operation: &str, fields: &[(&str, String)]) -> Vec<u8> {
    let texts: Vec<String> = std::iter::once(BLOB_TAG.to_owned())
        .chain(std::iter::once(format!("operation={operation}")))
        .chain(fields.iter().map(|(key, value)| format!("{key}={value}")))
        .collect();
    let encoded = texts
        .iter()
        .map(|text| Utf8StringRef::new(text.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|strings| strings.to_der());
    encoded.unwrap_or_else(|error| {
        // Every field is a Rust string, which is always valid UTF-8; an empty blob cannot be
        // signed to match anything, so a failure here surfaces as -17 on the re-send.
        tracing::error!(%error, "encoding dataToSign failed");
        Vec::new()
    })
}

/// Why a `signature` was refused; every variant is answered with `-17` (spec §5.1).
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Not base64, not a DER `ContentInfo`, or not `SignedData`.
    #[error("the signature is not a base64 DER CMS SignedData")]
    Unparsable,
    /// The encapsulated content is missing (detached) or not `id-data`.
    #[error("the signed content is detached or not id-data")]
    NotAttached,
    /// The encapsulated content differs from the request's `dataToSign`.
    #[error("the signed content is not this request's dataToSign")]
    WrongContent,
    /// Not exactly one signer, or its certificate is not in `certificates`.
    #[error("no usable signer")]
    NoSigner,
    /// The signer certificate was not issued by the officer CA (or is expired).
    #[error("the signer is not a CM officer")]
    UntrustedSigner,
    /// Digest not SHA-256, key type unsupported, messageDigest mismatch, or a bad signature.
    #[error("the signature does not verify")]
    BadSignature,
}

/// Checks `signature_b64` (base64 DER CMS, whitespace tolerated) against the expected blob and
/// the officer CA's issuing certificate `officer_issuer_der`.
pub fn verify(signature_b64: &str, expected: &[u8], officer_issuer_der: &[u8]) -> Result<(), SignatureError> {
    let compact: String = signature_b64.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD.decode(compact).map_err(|_| SignatureError::Unparsable)?;
    let info = ContentInfo::from_der(&der).map_err(|_| SignatureError::Unparsable)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(SignatureError::Unparsable);
    }
    let signed: SignedData = info.content.decode_as().map_err(|_| SignatureError::Unparsable)?;
    let encapsulated = &signed.encap_content_info;
    if encapsulated.econtent_type != ID_DATA {
        return Err(SignatureError::NotAttached);
    }
    let content = encapsulated
        .econtent
        .as_ref()
        .ok_or(SignatureError::NotAttached)?
        .decode_as::<OctetString>()
        .map_err(|_| SignatureError::NotAttached)?;
    if content.as_bytes() != expected {
        return Err(SignatureError::WrongContent);
    }
    let [signer] = signed.signer_infos.0.as_slice() else {
        return Err(SignatureError::NoSigner);
    };
    let signer_der = signer_certificate(&signed, signer)?;
    let (_, signer_certificate) =
        X509Certificate::from_der(&signer_der).map_err(|_| SignatureError::NoSigner)?;
    let (_, issuer) =
        X509Certificate::from_der(officer_issuer_der).map_err(|_| SignatureError::UntrustedSigner)?;
    if signer_certificate.issuer().as_raw() != issuer.subject().as_raw()
        || signer_certificate
            .verify_signature(Some(issuer.public_key()))
            .is_err()
        || !signer_certificate.validity().is_valid()
    {
        return Err(SignatureError::UntrustedSigner);
    }
    if signer.digest_alg.oid != ID_SHA256 {
        return Err(SignatureError::BadSignature);
    }
    let message = match &signer.signed_attrs {
        Some(attributes) => {
            let digest = attributes
                .iter()
                .find(|attribute| attribute.oid == ID_MESSAGE_DIGEST)
                .and_then(|attribute| attribute.values.iter().next())
                .and_then(|value| value.decode_as::<OctetString>().ok())
                .ok_or(SignatureError::BadSignature)?;
            if digest.as_bytes() != Sha256::digest(content.as_bytes()).as_slice() {
                return Err(SignatureError::BadSignature);
            }
            // RFC 5652 §5.4: the signature covers the attributes' DER with the SET OF tag.
            attributes.to_der().map_err(|_| SignatureError::BadSignature)?
        }
        None => content.as_bytes().to_vec(),
    };
    let algorithm = verification_algorithm(&signer_certificate)?;
    let public_key = &signer_certificate.public_key().subject_public_key.data;
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(&message, signer.signature.as_bytes())
        .map_err(|_| SignatureError::BadSignature)
}

/// The DER of the certificate `signer` names, taken from the `SignedData`'s certificates.
///
/// Inferred (spec §3.2): the doc leaves open whether the signer certificate must be included;
/// we require it, as OpenSSL and .NET include it by default.
fn signer_certificate(signed: &SignedData, signer: &SignerInfo) -> Result<Vec<u8>, SignatureError> {
    let certificates = signed.certificates.as_ref().ok_or(SignatureError::NoSigner)?;
    certificates
        .0
        .iter()
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(certificate) => certificate.to_der().ok(),
            CertificateChoices::Other(_) => None,
        })
        .find(|der| {
            let Ok((_, certificate)) = X509Certificate::from_der(der) else {
                return false;
            };
            match &signer.sid {
                SignerIdentifier::IssuerAndSerialNumber(id) => {
                    id.issuer.to_der().ok().as_deref() == Some(certificate.issuer().as_raw())
                        && id.serial_number.as_bytes() == certificate.raw_serial()
                }
                SignerIdentifier::SubjectKeyIdentifier(ski) => {
                    certificate.extensions().iter().any(|extension| {
                        matches!(
                            extension.parsed_extension(),
                            ParsedExtension::SubjectKeyIdentifier(id) if id.0 == ski.0.as_bytes()
                        )
                    })
                }
            }
        })
        .ok_or(SignatureError::NoSigner)
}

/// SHA-256 with the signer's key type; the signature algorithm field itself is not trusted, as
/// signers write either `ecdsa-with-SHA256`/`sha256WithRSAEncryption` or the bare key algorithm.
fn verification_algorithm(
    certificate: &X509Certificate<'_>,
) -> Result<&'static dyn VerificationAlgorithm, SignatureError> {
    let spki = certificate.public_key();
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        return Ok(&signature::RSA_PKCS1_2048_8192_SHA256);
    }
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.as_oid().ok());
        match curve {
            Some(curve) if curve == OID_EC_P256 => return Ok(&signature::ECDSA_P256_SHA256_ASN1),
            Some(curve) if curve == OID_NIST_EC_P384 => return Ok(&signature::ECDSA_P384_SHA256_ASN1),
            _ => {}
        }
    }
    Err(SignatureError::BadSignature)
}
