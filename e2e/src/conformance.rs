//! The backend conformance suite: what every [`CaBackend`] must do, written once and run against
//! each backend with its simulator (SCM in both flavours and both logins, Nexus in both signing
//! modes, and the local `ca`). Each check returns an error that says what the backend did
//! instead; [`Check`] lists them. Which checks apply to a backend follows from its declared
//! capabilities ([`Check::applicable`]); besides that a synchronous CA (Nexus, `ca`) skips
//! [`Check::CollectBeforeIssuanceIsPending`].

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use pki_operator::backend::{
    BackendError, CaBackend, Capabilities, Capability, Collected, EnrollRequest, IssuedCertificate,
    OrderHandle, RevocationReason, RevokeTarget,
};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData as _,
};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer as _};

/// The checks of the suite, so a backend's test binary can run each one as a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// [`enroll_then_collect_issues_a_verified_chain`].
    EnrollThenCollect,
    /// [`collect_before_issuance_is_pending`]: asynchronous CAs only.
    CollectBeforeIssuanceIsPending,
    /// [`collect_unknown_order_is_not_found`].
    CollectUnknownOrderIsNotFound,
    /// [`revoke_is_idempotent`].
    RevokeIsIdempotent,
    /// [`renew_issues_a_new_certificate`].
    RenewIssuesANewCertificate,
    /// [`find_existing_order_finds_the_order`].
    FindExistingOrder,
    /// [`find_existing_order_skips_known_orders`].
    FindExistingOrderSkipsKnownOrders,
    /// [`collect_for_another_key_fails_the_order`].
    CollectForAnotherKeyFails,
}

impl Check {
    /// Every check.
    pub const ALL: [Check; 8] = [
        Check::EnrollThenCollect,
        Check::CollectBeforeIssuanceIsPending,
        Check::CollectUnknownOrderIsNotFound,
        Check::RevokeIsIdempotent,
        Check::RenewIssuesANewCertificate,
        Check::FindExistingOrder,
        Check::FindExistingOrderSkipsKnownOrders,
        Check::CollectForAnotherKeyFails,
    ];

    /// What a backend must be able to do for the check to apply to it.
    pub fn needs(self) -> Capabilities {
        match self {
            // Revoking something the CA cannot revoke proves nothing.
            Check::RevokeIsIdempotent => Capabilities::of(&[Capability::Issue, Capability::Revoke]),
            // Renewal is checked the way the controller drives it: by id where the backend
            // renews, by a fresh enrollment where it answers Unsupported; issuing is enough.
            _ => Capabilities::from(Capability::Issue),
        }
    }

    /// The checks that apply to a backend with `capabilities`, in [`Check::ALL`] order.
    pub fn applicable(capabilities: Capabilities) -> impl Iterator<Item = Check> {
        Check::ALL
            .into_iter()
            .filter(move |check| capabilities.missing(check.needs()).is_empty())
    }

    /// The check's function name, used as the trial name.
    pub fn name(self) -> &'static str {
        match self {
            Check::EnrollThenCollect => "enroll_then_collect_issues_a_verified_chain",
            Check::CollectBeforeIssuanceIsPending => "collect_before_issuance_is_pending",
            Check::CollectUnknownOrderIsNotFound => "collect_unknown_order_is_not_found",
            Check::RevokeIsIdempotent => "revoke_is_idempotent",
            Check::RenewIssuesANewCertificate => "renew_issues_a_new_certificate",
            Check::FindExistingOrder => "find_existing_order_finds_the_order",
            Check::FindExistingOrderSkipsKnownOrders => "find_existing_order_skips_known_orders",
            Check::CollectForAnotherKeyFails => "collect_for_another_key_fails_the_order",
        }
    }

    /// Runs the check against `backend`, whose certificates chain to `root_pem`.
    pub async fn run<B: CaBackend>(self, backend: &B, root_pem: &str) -> Result<()> {
        match self {
            Check::EnrollThenCollect => enroll_then_collect_issues_a_verified_chain(backend, root_pem).await,
            Check::CollectBeforeIssuanceIsPending => collect_before_issuance_is_pending(backend).await,
            Check::CollectUnknownOrderIsNotFound => collect_unknown_order_is_not_found(backend).await,
            Check::RevokeIsIdempotent => revoke_is_idempotent(backend).await,
            Check::RenewIssuesANewCertificate => renew_issues_a_new_certificate(backend, root_pem).await,
            Check::FindExistingOrder => find_existing_order_finds_the_order(backend).await,
            Check::FindExistingOrderSkipsKnownOrders => find_existing_order_skips_known_orders(backend).await,
            Check::CollectForAnotherKeyFails => collect_for_another_key_fails_the_order(backend).await,
        }
    }
}

/// A private key and the request for it.
pub struct TestOrder {
    /// The key (kept by the test, as the controller keeps it in a Secret).
    pub key: KeyPair,
    /// The request.
    pub request: EnrollRequest,
}

/// A request for `dns_names` (the first is also the common name) with a new P-256 key.
pub fn new_order(dns_names: &[&str]) -> Result<TestOrder> {
    new_order_with_key(dns_names, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

/// A request for `dns_names` signed with `key`.
pub fn new_order_with_key(dns_names: &[&str], key: KeyPair) -> Result<TestOrder> {
    let mut params = CertificateParams::new(dns_names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    let mut subject = DistinguishedName::new();
    if let Some(first) = dns_names.first() {
        subject.push(DnType::CommonName, *first);
    }
    params.distinguished_name = subject;
    let csr = params.serialize_request(&key)?;
    let request = EnrollRequest {
        csr_der: csr.der().to_vec(),
        common_name: dns_names.first().map(|s| (*s).to_owned()),
        dns_names: dns_names.iter().map(|s| (*s).to_owned()).collect(),
        lifetime: Some(Duration::from_secs(90 * 86_400)),
        ..EnrollRequest::default()
    };
    Ok(TestOrder { key, request })
}

/// Polls `collect` until the order is issued; returns the certificate and how many times the
/// backend answered `Pending` first. Fails on `Failed`, on errors, or after `max_polls`.
pub async fn collect_until_issued<B: CaBackend>(
    backend: &B,
    order: &OrderHandle,
    csr_der: &[u8],
    max_polls: u32,
) -> Result<(IssuedCertificate, u32)> {
    let mut pending = 0;
    for _ in 0..max_polls {
        match backend.collect(order, csr_der).await? {
            Collected::Issued(issued) => return Ok((issued, pending)),
            Collected::Pending { .. } => pending += 1,
            Collected::Failed { reason } => bail!("order {} failed: {reason}", order.id),
        }
    }
    bail!("order {} not issued after {max_polls} polls", order.id)
}

/// Polls `collect` until the order is issued or failed (returned as is); `Pending` after
/// `max_polls` polls.
pub async fn collect_until_settled<B: CaBackend>(
    backend: &B,
    order: &OrderHandle,
    csr_der: &[u8],
    max_polls: u32,
) -> Result<Collected> {
    let mut last = None;
    for _ in 0..max_polls {
        match backend.collect(order, csr_der).await? {
            pending @ Collected::Pending { .. } => last = Some(pending),
            settled => return Ok(settled),
        }
    }
    last.ok_or_else(|| anyhow::anyhow!("no poll made"))
}

/// Checks that `issued` is a valid chain up to `root_pem`: every certificate is signed by the
/// next, the last by the root, all are currently valid, and the leaf carries `key`.
pub fn verify_issued(issued: &IssuedCertificate, root_pem: &str, key: &KeyPair) -> Result<()> {
    let root_der = pem::parse(root_pem).context("root PEM")?.into_contents();
    let (_, root) = X509Certificate::from_der(&root_der).context("root DER")?;
    let mut ders = vec![issued.leaf_der.as_slice()];
    ders.extend(issued.chain_der.iter().map(Vec::as_slice));
    let parsed: Vec<X509Certificate<'_>> = ders
        .iter()
        .map(|d| X509Certificate::from_der(d).map(|(_, c)| c))
        .collect::<Result<_, _>>()?;
    for (i, cert) in parsed.iter().enumerate() {
        ensure!(
            cert.validity().is_valid(),
            "certificate {i} ({}) is not currently valid",
            cert.subject()
        );
        let issuer = parsed.get(i + 1).unwrap_or(&root);
        if i + 1 == parsed.len() && cert.subject() == root.subject() {
            // The chain ends with the root itself.
            ensure!(
                cert.public_key().raw == root.public_key().raw,
                "chain ends with a different root"
            );
            continue;
        }
        cert.verify_signature(Some(issuer.public_key()))
            .with_context(|| format!("{} is not signed by {}", cert.subject(), issuer.subject()))?;
    }
    ensure!(
        parsed[0].public_key().raw == key.subject_public_key_info().as_slice(),
        "the leaf's public key is not the CSR's"
    );
    Ok(())
}

/// The DNS names in the leaf's subjectAltName.
pub fn leaf_dns_names(issued: &IssuedCertificate) -> Result<Vec<String>> {
    let (_, leaf) = X509Certificate::from_der(&issued.leaf_der)?;
    let names = leaf
        .subject_alternative_name()?
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(names)
}

/// The leaf's serial number, lower-case hex.
pub fn leaf_serial(issued: &IssuedCertificate) -> Result<String> {
    let (_, leaf) = X509Certificate::from_der(&issued.leaf_der)?;
    Ok(leaf.raw_serial_as_string().replace(':', "").to_lowercase())
}

/// Enroll, then collect until issued: the chain verifies to `root_pem`, the leaf carries the
/// CSR's key and exactly the requested names.
pub async fn enroll_then_collect_issues_a_verified_chain<B: CaBackend>(
    backend: &B,
    root_pem: &str,
) -> Result<()> {
    let order = new_order(&["conformance.example.com", "www.conformance.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    let (issued, _) = collect_until_issued(backend, &handle, &order.request.csr_der, 50).await?;
    verify_issued(&issued, root_pem, &order.key)?;
    let mut names = leaf_dns_names(&issued)?;
    names.sort();
    ensure!(
        names == ["conformance.example.com", "www.conformance.example.com"],
        "leaf SANs are {names:?}"
    );
    Ok(())
}

/// The first collect of a fresh order is `Pending` (the backend must be slow enough to show it).
pub async fn collect_before_issuance_is_pending<B: CaBackend>(backend: &B) -> Result<()> {
    let order = new_order(&["pending.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    match backend.collect(&handle, &order.request.csr_der).await? {
        Collected::Pending { detail } => {
            ensure!(!detail.is_empty(), "pending without a detail message");
            Ok(())
        }
        other => bail!("first collect returned {other:?}, expected Pending"),
    }
}

/// Collecting an order the CA never saw is `NotFound`.
pub async fn collect_unknown_order_is_not_found<B: CaBackend>(backend: &B) -> Result<()> {
    let order = new_order(&["unknown.example.com"])?;
    let handle = OrderHandle {
        backend: backend.kind(),
        id: "987654321".into(),
        renew_id: None,
    };
    match backend.collect(&handle, &order.request.csr_der).await {
        Err(BackendError::NotFound { .. }) => Ok(()),
        other => bail!("collect of an unknown order returned {other:?}, expected NotFound"),
    }
}

/// Revoking twice succeeds both times, and a revoked order is no longer collectable.
pub async fn revoke_is_idempotent<B: CaBackend>(backend: &B) -> Result<()> {
    let order = new_order(&["revoke.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    collect_until_issued(backend, &handle, &order.request.csr_der, 50).await?;
    let target = RevokeTarget::Order(handle.clone());
    backend
        .revoke(&target, RevocationReason::Superseded)
        .await
        .context("first revoke")?;
    backend
        .revoke(&target, RevocationReason::Superseded)
        .await
        .context("second revoke must also succeed")?;
    match backend.collect(&handle, &order.request.csr_der).await? {
        Collected::Failed { reason } => {
            ensure!(
                reason.to_lowercase().contains("revoked"),
                "failure reason {reason:?} does not say revoked"
            );
            Ok(())
        }
        other => bail!("collect after revoke returned {other:?}, expected Failed"),
    }
}

/// Renewal with a new key ends, within a bounded number of calls, in a new certificate for the
/// new key, the way the controller drives it: the renewed order issues it; or `renew` answers
/// `Unsupported` and a fresh enrollment issues it; or the renewed order fails because the CA
/// renewed with the old CSR, and a fresh enrollment issues it.
pub async fn renew_issues_a_new_certificate<B: CaBackend>(backend: &B, root_pem: &str) -> Result<()> {
    let first = new_order(&["renew.example.com"])?;
    let handle = backend.enroll(&first.request).await?;
    let (old, _) = collect_until_issued(backend, &handle, &first.request.csr_der, 50).await?;
    let second = new_order(&["renew.example.com"])?;
    let csr = &second.request.csr_der;
    let new = match backend.renew(&handle, &second.request).await {
        Ok(renewed) => {
            ensure!(
                renewed.id != handle.id,
                "renewal returned the same order id {}",
                renewed.id
            );
            match collect_until_settled(backend, &renewed, csr, 50).await? {
                Collected::Issued(issued) => issued,
                Collected::Failed { reason } => {
                    ensure!(
                        reason.contains("different key"),
                        "renewed order {} failed for another reason: {reason}",
                        renewed.id
                    );
                    let fresh = backend.enroll(&second.request).await?;
                    collect_until_issued(backend, &fresh, csr, 50).await?.0
                }
                Collected::Pending { .. } => bail!("renewed order {} never settled", renewed.id),
            }
        }
        Err(BackendError::Unsupported { .. }) => {
            let fresh = backend.enroll(&second.request).await?;
            collect_until_issued(backend, &fresh, csr, 50).await?.0
        }
        Err(error) => return Err(error.into()),
    };
    verify_issued(&new, root_pem, &second.key)?;
    ensure!(
        leaf_serial(&new)? != leaf_serial(&old)?,
        "renewal returned the old certificate"
    );
    Ok(())
}

/// After an enroll whose response was lost, the order is found again by its CSR; a CSR that was
/// never ordered finds nothing.
pub async fn find_existing_order_finds_the_order<B: CaBackend>(backend: &B) -> Result<()> {
    let order = new_order(&["recover.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    let found = backend.find_existing_order(&order.request).await?;
    ensure!(
        found.as_ref().map(|h| &h.id) == Some(&handle.id),
        "found {found:?}, expected order {}",
        handle.id
    );
    let other = new_order(&["recover.example.com"])?;
    let none = backend.find_existing_order(&other.request).await?;
    ensure!(none.is_none(), "a CSR that was never ordered matched {none:?}");
    Ok(())
}

/// An order the caller already accounts for (`known_orders`) is never recovered.
pub async fn find_existing_order_skips_known_orders<B: CaBackend>(backend: &B) -> Result<()> {
    let mut order = new_order(&["known.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    order.request.known_orders = vec!["1".into(), handle.id.clone()];
    let found = backend.find_existing_order(&order.request).await?;
    ensure!(
        found.is_none(),
        "order {} is known to the caller, yet was recovered as {found:?}",
        handle.id
    );
    Ok(())
}

/// An issued order whose certificate does not carry the key being collected for (the CA did not
/// use the order's CSR) fails with a reason saying so, every time it is collected: it must not
/// look pending or malformed, or the caller would collect it forever.
pub async fn collect_for_another_key_fails_the_order<B: CaBackend>(backend: &B) -> Result<()> {
    let order = new_order(&["other-key.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    collect_until_issued(backend, &handle, &order.request.csr_der, 50).await?;
    let other = new_order(&["other-key.example.com"])?;
    for attempt in 1..=2 {
        match backend.collect(&handle, &other.request.csr_der).await {
            Ok(Collected::Failed { reason }) => ensure!(
                reason.contains("different key") && reason.contains(&handle.id),
                "collect {attempt}: the reason {reason:?} does not name the order and the key"
            ),
            other => bail!("collect {attempt} for another key returned {other:?}, expected Failed"),
        }
    }
    Ok(())
}
