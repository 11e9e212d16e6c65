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

use crate::pki::{
    inspect::{self, CertificateInfo},
    key::{KeyEncoding, PrivateKey},
};

/// The output Secret as observed.
// One value exists per reconcile; boxing the certificate would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    /// No Secret with that name.
    Missing,
    /// A Secret exists that this Certificate does not own.
    NotOwned,
    /// Our Secret; `certificate` is its parsed `tls.crt` leaf when readable.
    Owned {
        /// The leaf, if `tls.crt` parses.
        certificate: Option<CertificateInfo>,
        /// `tls.key` parses and matches the leaf.
        key_matches: bool,
        /// The chain in `tls.crt` verifies.
        chain_verifies: bool,
    },
}

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

/// What goes into the Secret besides the PEM files.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outputs<'a> {
    /// Labels and annotations to copy.
    pub template: Option<&'a crate::crd::v1alpha1::certificate::SecretTemplate>,
    /// Extra formats.
    pub formats: &'a [crate::crd::v1alpha1::certificate::OutputFormatType],
    /// Password of `keystore.p12` / `truststore.p12`, when PKCS#12 keystores are requested.
    pub pkcs12_password: Option<&'a str>,
}

/// Why the Secret could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Encoding the key failed.
    #[error(transparent)]
    Key(#[from] crate::pki::key::KeyError),
    /// Writing a keystore failed.
    #[error(transparent)]
    Pkcs12(#[from] crate::pki::pkcs12::Pkcs12Error),
}

/// The data keys an up-to-date Secret must hold for `outputs`.
pub fn expected_keys(outputs: &Outputs<'_>) -> Vec<&'static str> {
    use crate::crd::v1alpha1::certificate::OutputFormatType;
    let mut keys = vec!["tls.crt", "tls.key", "ca.crt"];
    for format in outputs.formats {
        keys.push(match format {
            OutputFormatType::CombinedPEM => "tls-combined.pem",
            OutputFormatType::DER => "key.der",
        });
    }
    if outputs.pkcs12_password.is_some() {
        keys.extend(["keystore.p12", "truststore.p12"]);
    }
    keys
}

/// Data keys written only when an output format or keystore asks for them.
pub const OPTIONAL_KEYS: [&str; 4] = ["tls-combined.pem", "key.der", "keystore.p12", "truststore.p12"];

/// Optional data keys `secret` holds that `outputs` no longer asks for.
pub fn stale_keys(secret: &Secret, outputs: &Outputs<'_>) -> Vec<&'static str> {
    let expected = expected_keys(outputs);
    OPTIONAL_KEYS
        .into_iter()
        .filter(|k| !expected.contains(k))
        .filter(|k| secret.data.as_ref().is_some_and(|d| d.contains_key(*k)))
        .collect()
}

/// The leaf and issuing chain (from `tls.crt` and `ca.crt`) a Secret holds, DER, so its outputs
/// can be rewritten without asking the CA again.
pub fn certificates(secret: &Secret) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let data = secret.data.as_ref()?;
    let ders = |key: &str| -> Option<Vec<Vec<u8>>> {
        let bytes = &data.get(key)?.0;
        let certs = crate::pki::chain::parse_certificates(bytes).ok()?;
        certs
            .iter()
            .map(der::Encode::to_der)
            .collect::<Result<Vec<_>, _>>()
            .ok()
    };
    let mut certs = ders("tls.crt")?;
    if certs.is_empty() {
        return None;
    }
    let leaf = certs.remove(0);
    for ca in ders("ca.crt").unwrap_or_default() {
        if !certs.contains(&ca) && ca != leaf {
            certs.push(ca);
        }
    }
    Some((leaf, certs))
}

/// Whether `secret` holds exactly the optional data keys and every template label/annotation
/// `outputs` asks for (a removed output format counts as a difference).
pub fn has_outputs(secret: &Secret, outputs: &Outputs<'_>) -> bool {
    if !stale_keys(secret, outputs).is_empty() {
        return false;
    }
    let data = secret.data.as_ref();
    let keys_present = expected_keys(outputs)
        .iter()
        .all(|k| data.is_some_and(|d| d.contains_key(*k)));
    let template_applied = outputs.template.is_none_or(|t| {
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        t.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && t.annotations.iter().all(|(k, v)| annotations.get(k) == Some(v))
    });
    keys_present && template_applied
}

/// Everything the Secret holds, as data keys.
pub fn build(
    certificate_name: &str,
    certificate_uid: &str,
    issuer: (&str, &str),
    (secret_name, key_encoding): (&str, KeyEncoding),
    outputs: &Outputs<'_>,
    material: &TlsMaterial<'_>,
    not_after_rfc3339: &str,
) -> Result<Secret, BuildError> {
    use crate::crd::v1alpha1::certificate::OutputFormatType;
    let template = outputs.template;
    let formats = outputs.formats;
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
    let key_pem = material.key.to_pem(key_encoding)?;
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
    if let Some(password) = outputs.pkcs12_password {
        let mut chain: Vec<Vec<u8>> = intermediates.to_vec();
        chain.extend(root.cloned());
        let keystore = crate::pki::pkcs12::keystore(material.key, material.leaf_der, &chain, password)?;
        let trusted: Vec<Vec<u8>> = root.or(material.chain_der.last()).cloned().into_iter().collect();
        let truststore = crate::pki::pkcs12::truststore(&trusted, password)?;
        data.insert("keystore.p12".to_owned(), ByteString(keystore));
        data.insert("truststore.p12".to_owned(), ByteString(truststore));
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
            name: Some(secret_name.to_owned()),
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
        .and_then(|pem| crate::pki::chain::parse_certificates(pem.as_bytes()).ok())
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
        text("ca.crt").and_then(|pem| crate::pki::chain::parse_certificates(pem.as_bytes()).ok())
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

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};

    use super::*;
    use crate::{
        controller::certificate::validate::{ValidatedCertificate, validate},
        crd::v1alpha1::{certificate::CertificateSpec, common::IssuerRef},
        pki::{csr::signer, key::KeyAlgorithm},
    };

    struct Fixture {
        spec: ValidatedCertificate,
        key: PrivateKey,
        leaf: Vec<u8>,
        chain: Vec<Vec<u8>>,
    }

    /// root → intermediate → leaf for `a.example.com`.
    fn fixture() -> Fixture {
        let ca = |name: &str| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, name);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            p
        };
        let root_key = rcgen::KeyPair::generate().unwrap();
        let root = ca("root").self_signed(&root_key).unwrap();
        let root_issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &root_key).unwrap();
        let mid_key = rcgen::KeyPair::generate().unwrap();
        let mid = ca("intermediate").signed_by(&mid_key, &root_issuer).unwrap();
        let mid_issuer = rcgen::Issuer::from_ca_cert_der(mid.der(), &mid_key).unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let leaf = CertificateParams::new(vec!["a.example.com".to_owned()])
            .unwrap()
            .signed_by(&signer(&key).unwrap(), &mid_issuer)
            .unwrap();
        let spec = validate(&CertificateSpec {
            secret_name: "a-tls".into(),
            issuer_ref: IssuerRef {
                name: "ca".into(),
                ..IssuerRef::default()
            },
            dns_names: vec!["a.example.com".into()],
            ..CertificateSpec::default()
        })
        .unwrap();
        Fixture {
            spec,
            key,
            leaf: leaf.der().to_vec(),
            chain: vec![mid.der().to_vec(), root.der().to_vec()],
        }
    }

    fn built(f: &Fixture, outputs: &Outputs<'_>) -> Secret {
        let info = inspect::inspect(&f.leaf).unwrap();
        let material = TlsMaterial {
            leaf_der: &f.leaf,
            chain_der: &f.chain,
            key: &f.key,
            info: &info,
        };
        build(
            "a",
            "uid-1",
            ("ca", "Issuer"),
            (&f.spec.secret_name, f.spec.key_encoding),
            outputs,
            &material,
            "2030-01-01T00:00:00Z",
        )
        .unwrap()
    }

    #[test]
    fn tls_crt_holds_leaf_and_intermediates_and_ca_crt_the_root() {
        let f = fixture();
        let secret = built(&f, &Outputs::default());
        let data = secret.data.clone().unwrap();
        let tls = crate::pki::chain::parse_certificates(&data["tls.crt"].0).unwrap();
        assert_eq!(tls.len(), 2, "leaf + intermediate, root excluded");
        let ca = crate::pki::chain::parse_certificates(&data["ca.crt"].0).unwrap();
        assert_eq!(der::Encode::to_der(&ca[0]).unwrap(), f.chain[1]);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert!(is_controlled_by(&secret.metadata, "uid-1"));
        assert!(has_outputs(&secret, &Outputs::default()));
        let (state, key) = observe(Some(&secret), "uid-1");
        assert!(matches!(
            state,
            SecretState::Owned {
                certificate: Some(_),
                key_matches: true,
                chain_verifies: true
            }
        ));
        assert!(key.is_some());
    }

    #[test]
    fn only_a_controller_reference_with_our_uid_counts_as_ownership() {
        let f = fixture();
        let mut secret = built(&f, &Outputs::default());
        assert_eq!(observe(Some(&secret), "someone-else").0, SecretState::NotOwned);
        if let Some(refs) = secret.metadata.owner_references.as_mut() {
            refs[0].controller = Some(false);
        }
        assert_eq!(observe(Some(&secret), "uid-1").0, SecretState::NotOwned);
        assert_eq!(observe(None, "uid-1").0, SecretState::Missing);
    }

    #[test]
    fn a_swapped_key_or_missing_output_is_detected() {
        let f = fixture();
        let mut secret = built(&f, &Outputs::default());
        let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = other.to_pem(crate::pki::key::KeyEncoding::Pkcs8).unwrap();
        secret
            .data
            .as_mut()
            .unwrap()
            .insert("tls.key".into(), ByteString(pem.expose().as_bytes().to_vec()));
        assert!(matches!(
            observe(Some(&secret), "uid-1").0,
            SecretState::Owned {
                key_matches: false,
                ..
            }
        ));
        let formats = [crate::crd::v1alpha1::certificate::OutputFormatType::DER];
        assert!(!has_outputs(
            &secret,
            &Outputs {
                formats: &formats,
                ..Outputs::default()
            }
        ));
    }
}
