//! The local CA backend: signs CSRs in the operator with a CA key pair from a Secret. It is the
//! embedded default for demos, development clusters and benchmarks.
//!
//! It is stateless on purpose: an order id is the CSR's SHA-256 plus the requested lifetime, so
//! `collect` can sign from the CSR alone, a restarted operator loses nothing, and
//! `find_existing_order` simply recomputes the id. A local signature costs nothing, so signing
//! the same CSR twice is harmless (unlike a second order at a paid CA). There is no CRL, so
//! revocation is accepted and has no effect beyond the certificate's expiry.

use std::time::Duration;

use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair, SerialNumber};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::{certificate::X509Certificate, prelude::FromDer as _};

use super::{
    BackendError, BackendKind, CaBackend, Collected, EnrollRequest, IssuedCertificate, OrderHandle, Profile,
    RevocationReason, RevokeTarget,
};
use crate::pki::{csr::signer, key::PrivateKey};

const KIND: BackendKind = BackendKind::Ca;
/// Lifetime when the Certificate asks for none (90 days, as cert-manager).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// Backdating absorbs small clock differences between the operator and TLS clients.
const BACKDATE: Duration = Duration::from_secs(60);

/// A CA certificate and key.
pub struct LocalCa {
    ca_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
    key: KeyPair,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the CA from a `tls.crt` (CA certificate, optionally followed by its own chain) and a
    /// `tls.key`, checking that the certificate is a CA and that the key matches it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, BackendError> {
        let invalid = |message: String| BackendError::Configuration {
            backend: KIND,
            message,
        };
        let certificates = super::chain::parse_certificates(cert_pem.as_bytes())
            .map_err(|e| invalid(format!("tls.crt: {e}")))?;
        let mut ders = certificates.iter().map(der::Encode::to_der);
        let ca_der = ders
            .next()
            .transpose()
            .ok()
            .flatten()
            .ok_or_else(|| invalid("tls.crt holds no certificate".into()))?;
        let chain_der: Vec<Vec<u8>> = ders
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("tls.crt: {e}")))?;
        let private = PrivateKey::from_pem(key_pem).map_err(|e| invalid(format!("tls.key: {e}")))?;
        let (_, parsed) = X509Certificate::from_der(&ca_der).map_err(|e| invalid(format!("tls.crt: {e}")))?;
        if !parsed.is_ca() {
            return Err(invalid(
                "tls.crt is not a CA certificate (basicConstraints CA:FALSE)".into(),
            ));
        }
        let public = private
            .public_key_der()
            .map_err(|e| invalid(format!("tls.key: {e}")))?;
        if parsed.public_key().raw != public.as_slice() {
            return Err(invalid(
                "tls.key does not match the certificate in tls.crt".into(),
            ));
        }
        let key = signer(&private).map_err(|e| invalid(format!("tls.key: {e}")))?;
        Ok(Self {
            ca_der,
            chain_der,
            key,
        })
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.ca_der
    }

    fn sign(&self, csr_der: &[u8], lifetime: Duration) -> Result<IssuedCertificate, BackendError> {
        let invalid = |message: String| BackendError::InvalidRequest {
            backend: KIND,
            code: None,
            message,
        };
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(self.ca_der.as_slice()), &self.key)
            .map_err(|e| BackendError::Configuration {
                backend: KIND,
                message: format!("CA certificate: {e}"),
            })?;
        let mut request =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| invalid(format!("the CSR is invalid: {e}")))?;
        let now = time::OffsetDateTime::now_utc();
        request.params.not_before = now - BACKDATE;
        request.params.not_after = now + lifetime;
        request.params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        request.params.is_ca = rcgen::IsCa::ExplicitNoCa;
        request.params.use_authority_key_identifier_extension = true;
        if request.params.key_usages.is_empty() {
            request.params.key_usages = vec![
                rcgen::KeyUsagePurpose::DigitalSignature,
                rcgen::KeyUsagePurpose::KeyEncipherment,
            ];
        }
        if request.params.extended_key_usages.is_empty() {
            request.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        }
        let certificate = request
            .signed_by(&issuer)
            .map_err(|e| invalid(format!("cannot sign the CSR: {e}")))?;
        let mut chain = vec![self.ca_der.clone()];
        chain.extend(self.chain_der.iter().cloned());
        Ok(IssuedCertificate {
            leaf_der: certificate.der().to_vec(),
            chain_der: chain,
        })
    }
}

/// 16 random bytes with the top bit cleared, so the serial is a positive INTEGER (RFC 5280).
fn random_serial() -> [u8; 16] {
    let mut serial = fastrand::u128(..).to_be_bytes();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    serial
}

/// The local CA backend.
#[derive(Debug)]
pub struct CaIssuerBackend {
    ca: LocalCa,
}

impl CaIssuerBackend {
    /// A backend signing with `ca`.
    pub fn new(ca: LocalCa) -> Self {
        Self { ca }
    }

    /// The CA certificate followed by its own chain, DER.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        let mut chain = vec![self.ca.ca_der.clone()];
        chain.extend(self.ca.chain_der.iter().cloned());
        chain
    }

    fn order_for(request: &EnrollRequest) -> OrderHandle {
        let lifetime = request.lifetime.unwrap_or(DEFAULT_LIFETIME).as_secs();
        OrderHandle {
            backend: KIND,
            id: format!("{}-{lifetime}", request.csr_sha256_hex()),
            renew_id: None,
        }
    }
}

impl CaBackend for CaIssuerBackend {
    fn kind(&self) -> BackendKind {
        KIND
    }

    async fn check(&self) -> Result<Vec<Profile>, BackendError> {
        Ok(Vec::new())
    }

    async fn enroll(&self, request: &EnrollRequest) -> Result<OrderHandle, BackendError> {
        Ok(Self::order_for(request))
    }

    async fn collect(&self, order: &OrderHandle, csr_der: &[u8]) -> Result<Collected, BackendError> {
        let (hash, lifetime) = order.id.rsplit_once('-').ok_or_else(|| BackendError::NotFound {
            backend: KIND,
            what: format!("order {}", order.id),
        })?;
        if hash != super::chain::sha256_hex(csr_der) {
            return Err(BackendError::NotFound {
                backend: KIND,
                what: format!("order {} for this CSR", order.id),
            });
        }
        let seconds: u64 = lifetime.parse().map_err(|_| BackendError::NotFound {
            backend: KIND,
            what: format!("order {}", order.id),
        })?;
        Ok(Collected::Issued(
            self.ca.sign(csr_der, Duration::from_secs(seconds))?,
        ))
    }

    async fn renew(
        &self,
        _order: &OrderHandle,
        request: &EnrollRequest,
    ) -> Result<OrderHandle, BackendError> {
        Ok(Self::order_for(request))
    }

    async fn revoke(&self, _target: &RevokeTarget, _reason: RevocationReason) -> Result<(), BackendError> {
        Ok(())
    }

    async fn find_existing_order(
        &self,
        request: &EnrollRequest,
    ) -> Result<Option<OrderHandle>, BackendError> {
        Ok(Some(Self::order_for(request)))
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};

    use super::*;
    use crate::pki::{
        csr::{CsrSubject, build_csr},
        key::{KeyAlgorithm, KeyEncoding},
    };

    fn test_ca(is_ca: bool) -> (String, String) {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "test ca");
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        let cert = params.self_signed(&signer(&key).unwrap()).unwrap();
        (
            cert.pem(),
            key.to_pem(KeyEncoding::Pkcs8).unwrap().expose().to_owned(),
        )
    }

    #[tokio::test]
    async fn signs_a_csr_with_the_requested_lifetime_and_names() {
        let (cert, key) = test_ca(true);
        let backend = CaIssuerBackend::new(LocalCa::from_pem(&cert, &key).unwrap());
        let leaf_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let subject = CsrSubject {
            dns_names: vec!["a.example.com".into()],
            ..CsrSubject::default()
        };
        let request = EnrollRequest {
            csr_der: build_csr(&leaf_key, &subject).unwrap(),
            dns_names: subject.dns_names.clone(),
            lifetime: Some(Duration::from_secs(3600)),
            ..EnrollRequest::default()
        };
        let order = backend.enroll(&request).await.unwrap();
        assert_eq!(
            backend.find_existing_order(&request).await.unwrap(),
            Some(order.clone())
        );
        let Collected::Issued(issued) = backend.collect(&order, &request.csr_der).await.unwrap() else {
            panic!()
        };
        let (_, leaf) = X509Certificate::from_der(&issued.leaf_der).unwrap();
        let (_, ca) = X509Certificate::from_der(&issued.chain_der[0]).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            leaf_key.public_key_der().unwrap().as_slice()
        );
        let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 60);
        // Another CSR does not match the order.
        let other = build_csr(&PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap(), &subject).unwrap();
        assert!(matches!(
            backend.collect(&order, &other).await,
            Err(BackendError::NotFound { .. })
        ));
    }

    #[test]
    fn rejects_non_ca_certificates_and_mismatched_keys() {
        let (cert, key) = test_ca(false);
        let error = LocalCa::from_pem(&cert, &key).unwrap_err();
        assert!(error.to_string().contains("not a CA"), "{error}");
        let (cert, _) = test_ca(true);
        let (_, other_key) = test_ca(true);
        let error = LocalCa::from_pem(&cert, &other_key).unwrap_err();
        assert!(error.to_string().contains("does not match"), "{error}");
    }
}
