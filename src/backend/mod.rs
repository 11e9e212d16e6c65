//! Certificate authority backends behind one small, semantic interface.
//!
//! The operations are *ours* (enroll a CSR, collect an order, renew, revoke, find an order again
//! after a crash), not the vendors' REST endpoints, and errors are classified by what the caller
//! must do about them ([`BackendError::is_transient`], [`BackendError::retry_after`]). Backends
//! know nothing about Kubernetes: the controllers translate resources into [`EnrollRequest`]s.
//!
//! Issuance is asynchronous by contract: [`CaBackend::enroll`] places an order and returns its
//! handle at once; [`CaBackend::collect`] answers [`Collected::Pending`] until the CA issued.
//! `enroll` is never retried automatically by any backend: an order at a paid CA is money, and
//! a lost response is resolved with [`CaBackend::find_existing_order`], not with a second POST.

pub mod ca;
pub mod capability;
pub mod certmgmt;
pub mod http;
pub mod nexus;
pub mod retry;
pub mod scm;

use std::{fmt, time::Duration};

pub use self::capability::{Capabilities, Capability};

/// Which backend holds an order (recorded in Certificate status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Sectigo / InCommon Certificate Manager.
    Scm,
    /// Nexus Certificate Manager.
    Nexus,
    /// The local CA.
    Ca,
}

impl BackendKind {
    /// The lower-case name used in status and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scm => "scm",
            Self::Nexus => "nexus",
            Self::Ca => "ca",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to order: a CSR and the names and settings the CA needs besides it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrollRequest {
    /// The PKCS#10 request, DER.
    pub csr_der: Vec<u8>,
    /// Subject common name, when the certificate has one.
    pub common_name: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names (textual).
    pub ip_addresses: Vec<String>,
    /// Email subject alternative names.
    pub email_addresses: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// Requested lifetime.
    pub lifetime: Option<Duration>,
    /// Backend-specific overrides (profile, term, comments, custom fields).
    pub options: EnrollOptions,
    /// When the CSR was made: no order for it can be older. Crash recovery by search uses it to
    /// skip earlier certificates for a reused key.
    pub csr_created_at: Option<jiff::Timestamp>,
    /// Order ids the caller has already accounted for (delivered, failed or abandoned orders):
    /// [`CaBackend::find_existing_order`] never returns one of them, even when its CSR matches
    /// (a reused RSA or Ed25519 key yields a byte-identical CSR).
    pub known_orders: Vec<String>,
}

/// Per-request overrides of the issuer's defaults; a backend ignores what it does not use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrollOptions {
    /// SCM certificate profile id (`certType`).
    pub profile_id: Option<i64>,
    /// Term in days.
    pub term_days: Option<u32>,
    /// Comment stored with the order.
    pub comments: Option<String>,
    /// Custom fields, merged over the issuer's by name.
    pub custom_fields: Vec<(String, String)>,
    /// Nexus token procedure.
    pub token_procedure: Option<String>,
    /// SCM per-order domain control validation, replacing the issuer's.
    pub dcv: Option<OrderDcv>,
}

/// SCM per-order domain control validation (`dcvMode`, `dcvEmail`), for accounts with DCV
/// pre-validation disabled (`scm-dcv-domains.md` §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderDcv {
    /// `dcvMode`: `CNAME`, `EMAIL`, `HTTP`, `HTTPS` or `TXT`.
    pub mode: &'static str,
    /// `dcvEmail`: the approver address (mode `EMAIL`).
    pub email: Option<String>,
}

impl From<&crate::crd::v1alpha1::common::EnrollmentDcv> for OrderDcv {
    fn from(dcv: &crate::crd::v1alpha1::common::EnrollmentDcv) -> Self {
        use crate::crd::v1alpha1::domain_validation::DcvMethod;
        Self {
            mode: match dcv.mode {
                DcvMethod::HTTP => "HTTP",
                DcvMethod::HTTPS => "HTTPS",
                DcvMethod::CNAME => "CNAME",
                DcvMethod::TXT => "TXT",
                DcvMethod::EMAIL => "EMAIL",
            },
            email: dcv.email.clone(),
        }
    }
}

impl EnrollRequest {
    /// The SHA-256 of the DER CSR, lower-case hex: the identity of an issuance attempt.
    pub fn csr_sha256_hex(&self) -> String {
        crate::pki::chain::sha256_hex(&self.csr_der)
    }

    /// All subject alternative names as the CA's comma list expects them (DNS names first).
    pub fn all_sans(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .chain(&self.ip_addresses)
            .chain(&self.email_addresses)
            .chain(&self.uris)
            .cloned()
            .collect()
    }
}

/// A placed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderHandle {
    /// The backend that holds it.
    pub backend: BackendKind,
    /// The CA's id for the order (SCM `sslId`).
    pub id: String,
    /// SCM `renewId`, only returned by enroll.
    pub renew_id: Option<String>,
}

pub use crate::pki::chain::IssuedCertificate;

/// The state of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Collected {
    /// Not issued yet; ask again later.
    Pending {
        /// What the CA said, for status messages.
        detail: String,
    },
    /// Issued.
    Issued(IssuedCertificate),
    /// The CA will not issue this order (declined, rejected, invalid).
    Failed {
        /// Why, in the CA's words.
        reason: String,
    },
}

/// RFC 5280 revocation reasons the CAs accept (SCM allows 0, 1 and 3-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationReason {
    /// 0.
    Unspecified,
    /// 1.
    KeyCompromise,
    /// 3.
    AffiliationChanged,
    /// 4.
    Superseded,
    /// 5.
    CessationOfOperation,
}

impl RevocationReason {
    /// The RFC 5280 reason code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
        }
    }

    /// The RFC 5280 name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
        }
    }
}

/// Which certificate to revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeTarget {
    /// By order.
    Order(OrderHandle),
    /// By serial number (hex, any case, colons allowed).
    Serial(String),
}

/// A certificate profile the account may order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Profile id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Allowed terms in days.
    pub terms: Vec<u32>,
}

/// Errors by what the caller must do about them. Messages name the cause in the CA's words and
/// never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The order exists but is not ready (collect's "being processed").
    #[error("{backend} is still processing the request: {message}")]
    Pending {
        /// Backend.
        backend: BackendKind,
        /// The CA's message.
        message: String,
    },
    /// The CA refuses to issue until domain control is validated.
    #[error("{backend} requires domain control validation first: {message}")]
    DomainNotValidated {
        /// Backend.
        backend: BackendKind,
        /// The CA's message (names the domains).
        message: String,
    },
    /// Credentials are missing, wrong or lack a privilege.
    #[error("{backend} rejected the credentials: {message}")]
    Unauthorized {
        /// Backend.
        backend: BackendKind,
        /// The CA's message.
        message: String,
    },
    /// The request is wrong and will stay wrong (bad CSR, unknown profile, invalid term, ...).
    #[error("{backend} rejected the request: {message}")]
    InvalidRequest {
        /// Backend.
        backend: BackendKind,
        /// The CA's error code, when it sent one.
        code: Option<i64>,
        /// The CA's message.
        message: String,
    },
    /// The CA asks us to slow down.
    #[error("{backend} is rate limiting requests{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// Backend.
        backend: BackendKind,
        /// How long to wait, when the CA said.
        retry_after: Option<Duration>,
    },
    /// The order or certificate does not exist.
    #[error("{backend} has no {what}")]
    NotFound {
        /// Backend.
        backend: BackendKind,
        /// What was looked up.
        what: String,
    },
    /// The CA is unreachable, timed out or failed internally; retrying later may help.
    #[error("{backend} is unavailable: {message}")]
    Unavailable {
        /// Backend.
        backend: BackendKind,
        /// What happened.
        message: String,
    },
    /// The CA answered something we cannot interpret (malformed body, unexpected status).
    #[error("{backend} sent a malformed response to {operation}: {message}")]
    MalformedResponse {
        /// Backend.
        backend: BackendKind,
        /// Our operation.
        operation: &'static str,
        /// What was wrong (never the body, which may hold secrets).
        message: String,
    },
    /// The backend cannot do this.
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// Backend.
        backend: BackendKind,
        /// Our operation.
        operation: &'static str,
    },
    /// The issuer configuration cannot work (bad URL, unreadable CA bundle or client key).
    #[error("{backend} configuration is invalid: {message}")]
    Configuration {
        /// Backend.
        backend: BackendKind,
        /// What is wrong.
        message: String,
    },
}

impl BackendError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Pending { .. }
                | Self::RateLimited { .. }
                | Self::Unavailable { .. }
                | Self::MalformedResponse { .. }
        )
    }

    /// The CA's requested wait before the next call, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A bounded PascalCase name of the error kind, for condition reasons and metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Pending { .. } => "Pending",
            Self::DomainNotValidated { .. } => "DomainNotValidated",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::InvalidRequest { .. } => "InvalidRequest",
            Self::RateLimited { .. } => "RateLimited",
            Self::NotFound { .. } => "NotFound",
            Self::Unavailable { .. } => "Unavailable",
            Self::MalformedResponse { .. } => "MalformedResponse",
            Self::Unsupported { .. } => "Unsupported",
            Self::Configuration { .. } => "InvalidConfiguration",
        }
    }
}

/// The operations every CA backend offers. Optional capabilities default to
/// [`BackendError::Unsupported`].
pub trait CaBackend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// What this backend (in its configured flavour) can do. A resource needing a capability
    /// outside this set is refused before any CA call ([`Capabilities::require`]).
    fn capabilities(&self) -> Capabilities;

    /// A cheap authenticated call proving the issuer works; returns the orderable profiles.
    fn check(&self) -> impl Future<Output = Result<Vec<Profile>, BackendError>> + Send;

    /// Places an order for `request`. Never retried internally.
    fn enroll(
        &self,
        request: &EnrollRequest,
    ) -> impl Future<Output = Result<OrderHandle, BackendError>> + Send;

    /// Asks for the state of an order placed for the CSR `csr_der`. An issued certificate comes
    /// back as the certificate carrying the CSR's key plus its issuer chain. An order the CA
    /// issued without any certificate carrying that key (it did not use this order's CSR, e.g.
    /// a renewal made with the initial CSR) is [`Collected::Failed`]: collecting it again would
    /// never produce the certificate, so the caller enrolls afresh.
    fn collect(
        &self,
        order: &OrderHandle,
        csr_der: &[u8],
    ) -> impl Future<Output = Result<Collected, BackendError>> + Send;

    /// Orders a renewal of `order` with the new CSR in `request`; returns the new order.
    ///
    /// A backend whose CA can only renew with the order's original CSR (so not with a new key)
    /// answers [`BackendError::Unsupported`] without contacting the CA; the controller then
    /// falls back to [`CaBackend::enroll`] with the new CSR.
    fn renew(
        &self,
        order: &OrderHandle,
        request: &EnrollRequest,
    ) -> impl Future<Output = Result<OrderHandle, BackendError>> + Send;

    /// Replaces the certificate of `order` with one for the new CSR in `request`.
    fn replace(
        &self,
        order: &OrderHandle,
        request: &EnrollRequest,
        reason: &str,
    ) -> impl Future<Output = Result<OrderHandle, BackendError>> + Send {
        let _ = (order, request, reason);
        let kind = self.kind();
        async move {
            Err(BackendError::Unsupported {
                backend: kind,
                operation: "replace",
            })
        }
    }

    /// Revokes a certificate. Revoking an already revoked certificate succeeds.
    fn revoke(
        &self,
        target: &RevokeTarget,
        reason: RevocationReason,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Finds the order placed for exactly this CSR, if any (crash recovery). Never returns an
    /// order listed in [`EnrollRequest::known_orders`], nor one the CA will never issue
    /// (declined, rejected, revoked, ...).
    fn find_existing_order(
        &self,
        request: &EnrollRequest,
    ) -> impl Future<Output = Result<Option<OrderHandle>, BackendError>> + Send;
}

/// The backend an issuer resolves to: one enum, so callers need no trait objects.
#[derive(Debug)]
pub enum Backend {
    /// Sectigo / InCommon Certificate Manager.
    Scm(scm::ScmBackend),
    /// Nexus Certificate Manager.
    Nexus(nexus::NexusBackend),
    /// The local CA.
    Ca(ca::CaIssuerBackend),
}

impl Backend {
    /// Whether issuance is local, synchronous and free (the `ca` backend): there is no order at
    /// a CA to lose or pay twice for, so the controller needs neither the persisted pending key
    /// nor the "order placed" status write before collecting.
    pub fn signs_locally(&self) -> bool {
        matches!(self, Self::Ca(_))
    }
}

/// Calls `$call` on whichever backend `$backend` holds, bound to `$inner`: the one place that
/// lists the variants, so a new trait method costs one line, not an arm per backend.
macro_rules! dispatch {
    ($backend:expr, $inner:ident => $call:expr) => {
        match $backend {
            Backend::Scm($inner) => $call,
            Backend::Nexus($inner) => $call,
            Backend::Ca($inner) => $call,
        }
    };
}

impl CaBackend for Backend {
    fn kind(&self) -> BackendKind {
        dispatch!(self, b => b.kind())
    }

    fn capabilities(&self) -> Capabilities {
        dispatch!(self, b => b.capabilities())
    }

    async fn check(&self) -> Result<Vec<Profile>, BackendError> {
        dispatch!(self, b => b.check().await)
    }

    async fn enroll(&self, request: &EnrollRequest) -> Result<OrderHandle, BackendError> {
        dispatch!(self, b => b.enroll(request).await)
    }

    async fn collect(&self, order: &OrderHandle, csr_der: &[u8]) -> Result<Collected, BackendError> {
        dispatch!(self, b => b.collect(order, csr_der).await)
    }

    async fn renew(&self, order: &OrderHandle, request: &EnrollRequest) -> Result<OrderHandle, BackendError> {
        dispatch!(self, b => b.renew(order, request).await)
    }

    async fn replace(
        &self,
        order: &OrderHandle,
        request: &EnrollRequest,
        reason: &str,
    ) -> Result<OrderHandle, BackendError> {
        dispatch!(self, b => b.replace(order, request, reason).await)
    }

    async fn revoke(&self, target: &RevokeTarget, reason: RevocationReason) -> Result<(), BackendError> {
        dispatch!(self, b => b.revoke(target, reason).await)
    }

    async fn find_existing_order(
        &self,
        request: &EnrollRequest,
    ) -> Result<Option<OrderHandle>, BackendError> {
        dispatch!(self, b => b.find_existing_order(request).await)
    }
}
