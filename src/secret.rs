//! The operator's most dangerous write: TLS Secrets. This module builds them (`kubernetes.io/tls`
//! with `tls.crt` = leaf + intermediates, `tls.key`, `ca.crt`, optional extra formats), decides
//! ownership (a controller ownerReference with the Certificate's UID, nothing else counts), and
//! reads an existing Secret back into what the planner needs.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use crate::{
    controller::certificate::{plan::SecretState, validate::ValidatedCertificate},
    pki::{
        inspect::{self, CertificateInfo},
        key::PrivateKey,
    },
};

/// Label on every Secret the operator writes; the metadata watch selects on it.
pub const CERTIFICATE_NAME_LABEL: &str = "pki-operator.io/certificate-name";
/// Annotation naming the issuer.
pub const ISSUER_NAME_ANNOTATION: &str = "pki-operator.io/issuer-name";
/// Annotation naming the issuer kind.
pub const ISSUER_KIND_ANNOTATION: &str = "pki-operator.io/issuer-kind";
/// Annotation with the serial number (hex).
pub const SERIAL_ANNOTATION: &str = "pki-operator.io/serial-number";
/// Annotation with the end of validity (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "pki-operator.io/not-after";

/// Issued material ready to be written.
pub struct TlsMaterial<'a> {
    /// Leaf, DER.
    pub leaf_der: &'a [u8],
    /// Issuer chain, DER, leaf's issuer first (a trailing self-signed root goes to `ca.crt`).
    pub chain_der: &'a [Vec<u8>],
    /// The private key.
    pub key: &'a PrivateKey,
    /// Facts of the leaf.
    pub info: &'a CertificateInfo,
}

fn pem(label: &str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

/// Whether `meta` names `uid` as its controlling owner.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.uid == uid && r.controller == Some(true)))
}

/// The controller ownerReference to a Certificate.
pub fn owner_reference(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "pki-operator.io/v1alpha1".into(),
        kind: "Certificate".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Everything the Secret holds, as data keys.
#[allow(clippy::too_many_arguments)]
pub fn build(
    certificate_name: &str,
    certificate_uid: &str,
    issuer: (&str, &str),
    spec: &ValidatedCertificate,
    template: Option<&crate::crd::v1alpha1::certificate::SecretTemplate>,
    formats: &[crate::crd::v1alpha1::certificate::OutputFormatType],
    material: &TlsMaterial<'_>,
    not_after_rfc3339: &str,
) -> Result<Secret, crate::pki::key::KeyError> {
    use crate::crd::v1alpha1::certificate::OutputFormatType;
    let (intermediates, root) = match material.chain_der.split_last() {
        Some((last, rest)) if is_self_signed(last) => (rest, Some(last)),
        _ => (material.chain_der, None),
    };
    let mut tls_crt = pem("CERTIFICATE", material.leaf_der);
    for der in intermediates {
        tls_crt.push_str(&pem("CERTIFICATE", der));
    }
    // ca.crt: the root when the CA sent it, else the top of the chain we have.
    let ca = root
        .or(material.chain_der.last())
        .map(|d| pem("CERTIFICATE", d))
        .unwrap_or_default();
    let key_pem = material.key.to_pem(spec.key_encoding)?;
    let mut data = BTreeMap::new();
    data.insert("tls.crt".to_owned(), ByteString(tls_crt.clone().into_bytes()));
    data.insert(
        "tls.key".to_owned(),
        ByteString(key_pem.expose().as_bytes().to_vec()),
    );
    data.insert("ca.crt".to_owned(), ByteString(ca.into_bytes()));
    for format in formats {
        match format {
            OutputFormatType::CombinedPEM => {
                let combined = format!("{}\n{tls_crt}", key_pem.expose().trim_end());
                data.insert("tls-combined.pem".to_owned(), ByteString(combined.into_bytes()));
            }
            OutputFormatType::DER => {
                data.insert(
                    "key.der".to_owned(),
                    ByteString(material.key.pkcs8_der().to_vec()),
                );
            }
        }
    }
    let mut labels = template.map(|t| t.labels.clone()).unwrap_or_default();
    labels.insert(CERTIFICATE_NAME_LABEL.to_owned(), certificate_name.to_owned());
    let mut annotations = template.map(|t| t.annotations.clone()).unwrap_or_default();
    annotations.insert(ISSUER_NAME_ANNOTATION.to_owned(), issuer.0.to_owned());
    annotations.insert(ISSUER_KIND_ANNOTATION.to_owned(), issuer.1.to_owned());
    annotations.insert(SERIAL_ANNOTATION.to_owned(), material.info.serial_hex.clone());
    annotations.insert(NOT_AFTER_ANNOTATION.to_owned(), not_after_rfc3339.to_owned());
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(spec.secret_name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(certificate_name, certificate_uid)]),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    })
}

fn is_self_signed(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| c.subject() == c.issuer())
}

/// Reads an existing Secret: ownership, the leaf, whether key and chain are intact. Returns the
/// key too, so a renewal with `rotationPolicy: Never` can reuse it.
pub fn observe(secret: Option<&Secret>, owner_uid: &str) -> (SecretState, Option<PrivateKey>) {
    let Some(secret) = secret else {
        return (SecretState::Missing, None);
    };
    if !is_controlled_by(&secret.metadata, owner_uid) {
        return (SecretState::NotOwned, None);
    }
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok());
    let key = text("tls.key").and_then(|pem| PrivateKey::from_pem(&pem).ok());
    let certificates = text("tls.crt")
        .and_then(|pem| crate::backend::chain::parse_certificates(pem.as_bytes()).ok())
        .and_then(|certs| {
            certs
                .iter()
                .map(der::Encode::to_der)
                .collect::<Result<Vec<_>, _>>()
                .ok()
        });
    let Some((leaf, chain)) = certificates.as_deref().and_then(<[Vec<u8>]>::split_first) else {
        return (
            SecretState::Owned {
                certificate: None,
                key_matches: false,
                chain_verifies: false,
            },
            key,
        );
    };
    let Ok(info) = inspect::inspect(leaf) else {
        return (
            SecretState::Owned {
                certificate: None,
                key_matches: false,
                chain_verifies: false,
            },
            key,
        );
    };
    let key_matches = key
        .as_ref()
        .and_then(|k| k.public_key_der().ok())
        .is_some_and(|pk| pk == info.public_key_der);
    let mut full_chain = chain.to_vec();
    if let Some(ca) =
        text("ca.crt").and_then(|pem| crate::backend::chain::parse_certificates(pem.as_bytes()).ok())
    {
        full_chain.extend(
            ca.iter()
                .filter_map(|c| der::Encode::to_der(c).ok())
                .filter(|d| !chain.contains(d)),
        );
    }
    let chain_verifies = inspect::verify_chain(leaf, &full_chain).is_ok();
    (
        SecretState::Owned {
            certificate: Some(info),
            key_matches,
            chain_verifies,
        },
        key,
    )
}
