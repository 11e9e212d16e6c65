//! Certificate signing requests built from a Certificate's names, signed with its key.

use std::net::IpAddr;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use super::key::{KeyAlgorithm, PrivateKey};

/// The names and subject attributes that go into a CSR.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsrSubject {
    /// Common name.
    pub common_name: Option<String>,
    /// Organizations (O).
    pub organizations: Vec<String>,
    /// Organizational units (OU).
    pub organizational_units: Vec<String>,
    /// Countries (C).
    pub countries: Vec<String>,
    /// Provinces (ST).
    pub provinces: Vec<String>,
    /// Localities (L).
    pub localities: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Email SANs.
    pub email_addresses: Vec<String>,
}

/// Why a CSR could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// A name cannot be encoded (e.g. not ASCII, not an IP address).
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The offending value.
        name: String,
        /// Why.
        reason: String,
    },
    /// The key could not be loaded for signing.
    #[error("cannot sign with the {0} key")]
    Key(KeyAlgorithm),
    /// Signing or encoding failed.
    #[error("cannot build the CSR: {0}")]
    Build(String),
}

/// Loads `key` as an rcgen signer.
pub(crate) fn signer(key: &PrivateKey) -> Result<KeyPair, CsrError> {
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.pkcs8_der());
    let algorithm = match key.algorithm() {
        KeyAlgorithm::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
    };
    KeyPair::from_pkcs8_der_and_sign_algo(&der, algorithm).map_err(|_| CsrError::Key(key.algorithm()))
}

/// Builds and signs a PKCS#10 request; returns its DER.
pub fn build_csr(key: &PrivateKey, subject: &CsrSubject) -> Result<Vec<u8>, CsrError> {
    let invalid = |name: &str, reason: &dyn std::fmt::Display| CsrError::InvalidName {
        name: name.into(),
        reason: reason.to_string(),
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = &subject.common_name {
        dn.push(DnType::CommonName, cn.as_str());
    }
    for (values, kind) in [
        (&subject.organizations, DnType::OrganizationName),
        (&subject.organizational_units, DnType::OrganizationalUnitName),
        (&subject.countries, DnType::CountryName),
        (&subject.provinces, DnType::StateOrProvinceName),
        (&subject.localities, DnType::LocalityName),
    ] {
        for value in values {
            dn.push(kind.clone(), value.as_str());
        }
    }
    params.distinguished_name = dn;
    let mut sans = Vec::new();
    for name in &subject.dns_names {
        sans.push(SanType::DnsName(
            name.as_str().try_into().map_err(|e| invalid(name, &e))?,
        ));
    }
    for ip in &subject.ip_addresses {
        sans.push(SanType::IpAddress(
            ip.parse::<IpAddr>().map_err(|e| invalid(ip, &e))?,
        ));
    }
    for uri in &subject.uris {
        sans.push(SanType::URI(
            uri.as_str().try_into().map_err(|e| invalid(uri, &e))?,
        ));
    }
    for email in &subject.email_addresses {
        sans.push(SanType::Rfc822Name(
            email.as_str().try_into().map_err(|e| invalid(email, &e))?,
        ));
    }
    params.subject_alt_names = sans;
    let signer = signer(key)?;
    let csr = params
        .serialize_request(&signer)
        .map_err(|e| CsrError::Build(e.to_string()))?;
    Ok(csr.der().to_vec())
}

#[cfg(test)]
mod tests {
    use x509_parser::{certification_request::X509CertificationRequest, prelude::FromDer as _};

    use super::*;

    #[test]
    fn csr_carries_names_and_key_for_every_algorithm() {
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa(2048),
        ] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let subject = CsrSubject {
                common_name: Some("web.example.com".into()),
                organizations: vec!["Example".into()],
                dns_names: vec!["web.example.com".into(), "www.example.com".into()],
                ip_addresses: vec!["192.0.2.7".into()],
                email_addresses: vec!["ops@example.com".into()],
                uris: vec!["spiffe://example.com/web".into()],
                ..CsrSubject::default()
            };
            let der = build_csr(&key, &subject).unwrap();
            let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
            csr.verify_signature().unwrap();
            assert_eq!(
                csr.certification_request_info.subject_pki.raw,
                key.public_key_der().unwrap().as_slice(),
                "{algorithm}"
            );
            let subject = csr.certification_request_info.subject.to_string();
            assert!(
                subject.contains("CN=web.example.com") && subject.contains("O=Example"),
                "{subject}"
            );
            assert_eq!(
                crate::pki::chain::csr_public_key(&der).unwrap(),
                key.public_key_der().unwrap()
            );
        }
    }

    #[test]
    fn invalid_names_are_reported() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let subject = CsrSubject {
            ip_addresses: vec!["not-an-ip".into()],
            ..CsrSubject::default()
        };
        let error = build_csr(&key, &subject).unwrap_err();
        assert!(error.to_string().contains("not-an-ip"), "{error}");
    }
}
