//! The conformance suite against the local `ca` backend: the checks its declared capabilities
//! make applicable, less the two that assume an asynchronous CA keeping orders.

use anyhow::{Result, ensure};
use libtest_mimic::Trial;
use pki_operator::backend::{
    CaBackend, Capabilities, Capability,
    ca::{CaIssuerBackend, LocalCa},
};
use pki_operator_e2e::conformance::Check;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::{run, trial};

/// A CA certificate and key (PEM) for the backend, as an Issuer's Secret would hold them.
fn test_ca() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "conformance ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn backend(cert_pem: &str, key_pem: &str) -> Result<CaIssuerBackend> {
    Ok(CaIssuerBackend::new(LocalCa::from_pem(cert_pem, key_pem)?))
}

/// Whether `check` applies to the `ca` backend beyond what its capabilities decide. Two do not:
/// `CollectBeforeIssuanceIsPending`, since signing happens in `collect`, synchronously, so there
/// is no pending state to observe; and `FindExistingOrder`, since the order id is computed from
/// the CSR and lifetime, so every CSR "has" its order and nothing is ever lost ("a CSR never
/// ordered finds nothing" does not hold, and need not: collecting it signs afresh, for free).
fn applies(check: Check) -> bool {
    !matches!(
        check,
        Check::CollectBeforeIssuanceIsPending | Check::FindExistingOrder
    )
}

/// Every `ca` trial.
pub fn trials() -> Vec<Trial> {
    let (cert, key) = test_ca().expect("a test CA");
    let capabilities = backend(&cert, &key).expect("the ca backend").capabilities();
    let mut trials: Vec<Trial> = Check::applicable(capabilities)
        .filter(|check| applies(*check))
        .map(|check| {
            let (cert, key) = (cert.clone(), key.clone());
            trial(format!("ca::{}", check.name()), move || {
                run(async move { check.run(&backend(&cert, &key)?, &cert).await })
            })
        })
        .collect();
    trials.push(trial("ca::declares_issuance_only".into(), move || {
        let declared = backend(&cert, &key)?.capabilities();
        ensure!(
            declared == Capabilities::of(&[Capability::Issue]),
            "the ca backend declares {declared}"
        );
        // It keeps no revocation list: the revocation check must not be among its trials.
        ensure!(
            !Check::applicable(declared).any(|check| check == Check::RevokeIsIdempotent),
            "the revocation check applies to a backend that cannot revoke"
        );
        Ok(())
    }));
    trials
}
