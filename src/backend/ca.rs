//! The local CA backend: signs CSRs in the operator with a CA key pair from a Secret. It is the
//! embedded default for demos, development clusters and benchmarks.
//!
//! It is stateless on purpose: an order id is the CSR's SHA-256 plus the requested lifetime, so
//! `collect` can sign from the CSR alone, a restarted operator loses nothing, and
//! `find_existing_order` simply recomputes the id (unless the caller already accounts for it).
//! A local signature costs nothing, so signing the same CSR twice is harmless (unlike a second
//! order at a paid CA). There is no CRL, so revocation is accepted and has no effect beyond the
//! certificate's expiry; the backend does not declare [`Capability::Revoke`].
//!
//! An order id comes back from Certificate status, which whoever may write status controls, so
//! no value in it may panic: the lifetime it carries is clamped like any other, and no leaf
//! outlives the CA certificate that signs it.

use std::time::Duration;

use rand_core::{OsRng, RngCore as _};
use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair, SerialNumber};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, prelude::FromDer as _};

use super::{
    BackendError, BackendKind, CaBackend, Capabilities, Capability, Collected, EnrollRequest,
    IssuedCertificate, OrderHandle, Profile, RevocationReason, RevokeTarget,
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
    /// The CA certificate's `notAfter`: the latest `notAfter` of any leaf it signs.
    not_after: OffsetDateTime,
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
        let certificates = crate::pki::chain::parse_certificates(cert_pem.as_bytes())
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
        let not_after = OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp())
            .map_err(|e| invalid(format!("tls.crt: notAfter: {e}")))?;
        let key = signer(&private).map_err(|e| invalid(format!("tls.key: {e}")))?;
        Ok(Self {
            ca_der,
            chain_der,
            key,
            not_after,
        })
    }

    /// The CA certificate's `notAfter` when it is still in the future at `now`.
    fn valid_until(&self, now: OffsetDateTime) -> Result<OffsetDateTime, BackendError> {
        if self.not_after <= now {
            return Err(BackendError::Configuration {
                backend: KIND,
                message: format!(
                    "the CA certificate in tls.crt expired at {}; renew it",
                    jiff::Timestamp::from_second(self.not_after.unix_timestamp())
                        .map_or_else(|_| self.not_after.unix_timestamp().to_string(), |t| t.to_string())
                ),
            });
        }
        Ok(self.not_after)
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
        let now = OffsetDateTime::now_utc();
        let ca_not_after = self.valid_until(now)?;
        request.params.not_before = now - BACKDATE;
        // A lifetime too large for the calendar ends where the CA does, like any long one.
        request.params.not_after = time::Duration::try_from(lifetime)
            .ok()
            .and_then(|lifetime| now.checked_add(lifetime))
            .map_or(ca_not_after, |end| end.min(ca_not_after));
        request.params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
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

/// 16 bytes from the operating system's CSPRNG (serials must be unpredictable: CA/Browser Forum
/// BR 7.1 asks for at least 64 random bits), with the top bit cleared and the first byte non-zero,
/// so the serial is a positive INTEGER of exactly 16 octets (RFC 5280 allows up to 20).
fn random_serial() -> Result<[u8; 16], BackendError> {
    let mut serial = [0_u8; 16];
    OsRng
        .try_fill_bytes(&mut serial)
        .map_err(|e| BackendError::Unavailable {
            backend: KIND,
            message: format!("the operating system's random number generator failed: {e}"),
        })?;
    serial[0] = (serial[0] & 0x7f).max(1);
    Ok(serial)
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

    /// Issuance only. `renew` is a fresh signature, not a renewal of an order at a CA; there is
    /// no CRL or OCSP, so `revoke` changes nothing a relying party could see; nothing is kept
    /// to search or validate.
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Issue])
    }

    async fn check(&self) -> Result<Vec<Profile>, BackendError> {
        self.ca.valid_until(OffsetDateTime::now_utc())?;
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
        if hash != crate::pki::chain::sha256_hex(csr_der) {
            // The order is for another CSR: signing it would never yield a certificate for this
            // one, so the order fails (the caller enrolls afresh) rather than look unknown.
            return Ok(Collected::Failed {
                reason: format!(
                    "order {} was placed for a different key or names (another CSR)",
                    order.id
                ),
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
        let order = Self::order_for(request);
        // The trait's promise: an order the caller accounts for is never recovered (a reused
        // RSA or Ed25519 key gives a byte-identical CSR, hence the same id).
        Ok((!request.known_orders.contains(&order.id)).then_some(order))
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
        test_ca_until(is_ca, None)
    }

    /// A CA certificate and key; `not_after` overrides rcgen's far-future default.
    fn test_ca_until(is_ca: bool, not_after: Option<OffsetDateTime>) -> (String, String) {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "test ca");
        if let Some(not_after) = not_after {
            params.not_before = not_after - time::Duration::days(30);
            params.not_after = not_after;
        }
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

    #[test]
    fn declares_issuance_only() {
        let (cert, key) = test_ca(true);
        let backend = CaIssuerBackend::new(LocalCa::from_pem(&cert, &key).unwrap());
        assert_eq!(backend.capabilities(), Capabilities::of(&[Capability::Issue]));
        // Through the enum as the controllers hold it: the declaration is not lost in dispatch.
        let backend = super::super::Backend::Ca(backend);
        assert_eq!(backend.capabilities(), Capabilities::of(&[Capability::Issue]));
        match backend
            .capabilities()
            .require(BackendKind::Ca, Capability::Revoke.into())
        {
            Err(BackendError::Unsupported { operation, .. }) => assert_eq!(operation, "revocation"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn known_orders_are_not_recovered_and_another_csr_fails_the_order() {
        let (cert, key) = test_ca(true);
        let backend = CaIssuerBackend::new(LocalCa::from_pem(&cert, &key).unwrap());
        let request = |leaf_key: &PrivateKey| EnrollRequest {
            csr_der: build_csr(
                leaf_key,
                &CsrSubject {
                    dns_names: vec!["k.example.com".into()],
                    ..CsrSubject::default()
                },
            )
            .unwrap(),
            dns_names: vec!["k.example.com".into()],
            ..EnrollRequest::default()
        };
        let mut first = request(&PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
        let order = backend.enroll(&first).await.unwrap();
        first.known_orders = vec![order.id.clone()];
        assert_eq!(backend.find_existing_order(&first).await.unwrap(), None);
        let other = request(&PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap());
        match backend.collect(&order, &other.csr_der).await.unwrap() {
            Collected::Failed { reason } => {
                assert!(
                    reason.contains(&order.id) && reason.contains("different key"),
                    "{reason}"
                );
            }
            collected => panic!("{collected:?}"),
        }
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
        // Another CSR does not match the order: the order fails for it (the trait's contract).
        let other = build_csr(&PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap(), &subject).unwrap();
        assert!(matches!(
            backend.collect(&order, &other).await,
            Ok(Collected::Failed { .. })
        ));
    }

    fn request_for(lifetime: Option<Duration>) -> EnrollRequest {
        let leaf_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let subject = CsrSubject {
            dns_names: vec!["a.example.com".into()],
            ..CsrSubject::default()
        };
        EnrollRequest {
            csr_der: build_csr(&leaf_key, &subject).unwrap(),
            dns_names: subject.dns_names.clone(),
            lifetime,
            ..EnrollRequest::default()
        }
    }

    async fn issue(backend: &CaIssuerBackend, order: &OrderHandle, csr_der: &[u8]) -> IssuedCertificate {
        match backend.collect(order, csr_der).await.unwrap() {
            Collected::Issued(issued) => issued,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn no_leaf_outlives_the_ca_and_no_lifetime_in_status_panics() {
        // Whole seconds: certificates carry no sub-second precision.
        let ca_end =
            OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() + 86_400).unwrap();
        let (cert, key) = test_ca_until(true, Some(ca_end));
        let backend = CaIssuerBackend::new(LocalCa::from_pem(&cert, &key).unwrap());
        let not_after = |issued: &IssuedCertificate| {
            let (_, leaf) = X509Certificate::from_der(&issued.leaf_der).unwrap();
            leaf.validity().not_after.timestamp()
        };
        // 90 days asked, the CA ends tomorrow.
        let request = request_for(None);
        let order = backend.enroll(&request).await.unwrap();
        let issued = issue(&backend, &order, &request.csr_der).await;
        assert_eq!(not_after(&issued), ca_end.unix_timestamp());
        // An order id whose lifetime no calendar holds (status is writable by others).
        let tampered = OrderHandle {
            id: format!("{}-{}", request.csr_sha256_hex(), u64::MAX),
            ..order.clone()
        };
        let issued = issue(&backend, &tampered, &request.csr_der).await;
        assert_eq!(not_after(&issued), ca_end.unix_timestamp());
        // A short lifetime stays as asked.
        let short = request_for(Some(Duration::from_secs(3600)));
        let order = backend.enroll(&short).await.unwrap();
        let issued = issue(&backend, &order, &short.csr_der).await;
        let (_, leaf) = X509Certificate::from_der(&issued.leaf_der).unwrap();
        assert_eq!(
            leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp(),
            3600 + 60
        );
    }

    #[tokio::test]
    async fn an_expired_ca_signs_nothing_and_fails_its_check() {
        let (cert, key) = test_ca_until(true, Some(OffsetDateTime::now_utc() - time::Duration::days(1)));
        let backend = CaIssuerBackend::new(LocalCa::from_pem(&cert, &key).unwrap());
        let error = backend.check().await.unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
        let request = request_for(None);
        let order = backend.enroll(&request).await.unwrap();
        let error = backend.collect(&order, &request.csr_der).await.unwrap_err();
        assert_eq!(error.category(), "InvalidConfiguration", "{error}");
    }

    #[tokio::test]
    async fn serials_are_positive_sixteen_octets_and_distinct() {
        let (cert, key) = test_ca(true);
        let backend = CaIssuerBackend::new(LocalCa::from_pem(&cert, &key).unwrap());
        let request = request_for(None);
        let order = backend.enroll(&request).await.unwrap();
        let mut serials = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let issued = issue(&backend, &order, &request.csr_der).await;
            let (_, leaf) = X509Certificate::from_der(&issued.leaf_der).unwrap();
            let raw = leaf.raw_serial();
            assert_eq!(raw.len(), 16, "{raw:02x?}");
            assert!(raw[0] & 0x80 == 0 && raw[0] != 0, "{raw:02x?}");
            serials.insert(raw.to_vec());
        }
        assert_eq!(serials.len(), 8);
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
