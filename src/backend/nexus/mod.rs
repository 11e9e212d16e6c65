//! Nexus Certificate Manager behind [`CaBackend`], through the Protocol Gateway (PGWY) REST API:
//! mutual TLS with a CM officer's certificate, write requests signed by the gateway (VRO) or by
//! us (the `-19` challenge answered with a CMS signature, see [`signing`]).
//!
//! Choices the spec (`shared/spec/nexus-cm.md`) leaves open, and what we do:
//! - **Issuance is synchronous** (§7.7): the POST returns the certificate but no `certid`.
//!   `enroll` issues, then resolves the `certid` by searching the leaf's serial (§12 "robust
//!   path") and returns it as the order id; `collect` downloads the chain by `certid` with
//!   `pem-certificate-chain;depth=0`. Should CM not have indexed the certificate yet (§12
//!   "(inferred) indexing may lag"), the order id is `serial:<hex>` and `collect` answers
//!   `Pending` until the search finds it.
//! - **Crash recovery** (§12): certificates with the request's common name and a notBefore in
//!   the last [`NexusConfig::recovery_window`] (and not before the CSR was made, less an hour
//!   for clock skew and backdating), not revoked, are downloaded one by one and compared by
//!   public key with the CSR; CM has no CSR hash to search by.
//! - **Renewal** is a new issuance (§12: there is no renew endpoint).
//! - **Revocation** treats per-certificate `901` (already revoked) and `907` (missing) as done.
//!   A revocation by serial whose search finds no certificate is `NotFound`, never success:
//!   nothing was revoked.
//! - **Serials** are searched the way CM prints them in the example (lower-case hex without
//!   leading zeros, §4 "inferred"), and when that finds nothing, as the hex of the DER integer
//!   (even length, a leading `00` when the high bit is set): "hex format" (§9.1) does not say
//!   which. Hits are compared after normalising both sides (case, separators, leading zeros).
//! - **A certificate without our key** (the download carries no certificate with the CSR's
//!   public key) fails its order instead of being collected again.
//! - **Readiness** lists the token procedures (§8); a configured procedure must be among them,
//!   by name or by `procid`. Issuance sends the procedure's name, which `procname` takes
//!   ("Name of token procedure").
//! - Request date-times are RFC 3339 UTC with whole seconds (§4); `validfrom` is the time of
//!   the request and `validto` adds the requested lifetime.

mod client;
mod model;
pub mod signing;

use std::{sync::Arc, time::Duration};

use tokio::sync::OnceCell;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use der::{Decode as _, Encode as _};
use reqwest::Method;

use self::{
    client::{Answer, CallError, Encoding, Field, NexusHttp, Request},
    model::{CertificateDetails, CertificateError, CertificateList, JsonCertificate, ProcedureList},
    signing::OfficerSigner,
};
use super::{
    BackendError, BackendKind, CaBackend, Capabilities, Capability, Collected, EnrollRequest, OrderHandle,
    Profile, RevocationReason, RevokeTarget,
    retry::{Idempotency, RetryPolicy},
};
use crate::pki::{chain, credentials::SecretString};

const KIND: BackendKind = BackendKind::Nexus;
/// Certificates one search page asks for (`searchLimit`); CM caps it at `certsearch.maxhits`.
const PAGE_SIZE: usize = 50;
/// Certificates examined at most when recovering an issuance after a crash.
const MAX_RECOVERY_CANDIDATES: usize = 200;
/// How much earlier than the CSR's creation crash recovery still looks: clocks of operator,
/// apiserver and CA disagree, and a token procedure may backdate notBefore.
const CLOCK_SKEW_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(3600);
/// Order ids of certificates CM has not indexed yet carry this prefix before the serial.
const SERIAL_ID_PREFIX: &str = "serial:";
/// Per-certificate revocation codes that mean the goal is reached (spec §5.2).
const ALREADY_REVOKED: i64 = 901;
const CERTIFICATE_MISSING: i64 = 907;

/// The officer that signs write requests in caller-signing mode.
#[derive(Clone, Debug)]
pub struct NexusSigner {
    /// Officer certificate PEM, optionally followed by its chain.
    pub certificate_chain_pem: String,
    /// Its private key PEM.
    pub key_pem: SecretString,
}

/// Everything the Nexus backend needs; built from an issuer's spec and Secrets by the controller.
#[derive(Clone, Debug)]
pub struct NexusConfig {
    /// `https://host:port/basePath`, e.g. `https://pgwy.example.com:8444/pgwy/api`.
    pub base_url: String,
    /// The officer's TLS client certificate (PEM, chain allowed) followed by its key.
    pub identity_pem: SecretString,
    /// `Some` signs `-19` challenges (caller signing); `None` expects the gateway to sign (VRO).
    pub signer: Option<NexusSigner>,
    /// Default token procedure (`procname`); `None` leaves it to the gateway's default.
    pub token_procedure: Option<String>,
    /// Extra trusted CAs for the gateway's TLS certificate (PEM).
    pub ca_bundle_pem: Option<String>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Retry limits for each call.
    pub retry: RetryPolicy,
    /// Searches for a fresh certificate's `certid` before `enroll` settles for a serial id.
    pub index_attempts: u32,
    /// The wait before the second search; doubled for each further one.
    pub index_wait: Duration,
    /// How far back crash recovery looks for a certificate issued for the CSR.
    pub recovery_window: Duration,
}

impl NexusConfig {
    /// A configuration with default timeouts and retries and the gateway signing (VRO).
    pub fn new(base_url: impl Into<String>, identity_pem: SecretString) -> Self {
        Self {
            base_url: base_url.into(),
            identity_pem,
            signer: None,
            token_procedure: None,
            ca_bundle_pem: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            index_attempts: 3,
            index_wait: Duration::from_millis(500),
            recovery_window: Duration::from_secs(30 * 86_400),
        }
    }
}

/// A token procedure the officer may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Procedure {
    /// `procid`.
    pub id: String,
    /// `name`, what issuance's `procname` takes.
    pub name: String,
}

/// Filters of `GET /certificates` (spec §7.1) that we use; they combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateQuery {
    /// `subjectCommonName`.
    pub common_name: Option<String>,
    /// `certificateSerialNumber` (hex; normalised before sending).
    pub serial_number: Option<String>,
    /// `issuer`, an RFC 1779 DN.
    pub issuer: Option<String>,
    /// `validFromTimeFrom`: notBefore after this.
    pub valid_from_after: Option<jiff::Timestamp>,
    /// `validToTimeFrom`: notAfter after this.
    pub valid_to_after: Option<jiff::Timestamp>,
    /// `validToTimeTo`: notAfter before this.
    pub valid_to_before: Option<jiff::Timestamp>,
    /// `isNotRevoked=true`.
    pub not_revoked: bool,
    /// Send `serial_number` exactly as given instead of normalised (CMs may store other
    /// spellings; see [`serial_spellings`]).
    pub serial_verbatim: bool,
}

impl CertificateQuery {
    fn fields(&self) -> Vec<Field> {
        let mut fields = Vec::new();
        let mut text = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                fields.push(Field::new(name, value));
            }
        };
        text("subjectCommonName", self.common_name.clone());
        text(
            "certificateSerialNumber",
            self.serial_number.as_deref().map(|serial| {
                if self.serial_verbatim {
                    serial.to_owned()
                } else {
                    normalize_serial(serial)
                }
            }),
        );
        text("issuer", self.issuer.clone());
        text("validFromTimeFrom", self.valid_from_after.map(wire_time));
        text("validToTimeFrom", self.valid_to_after.map(wire_time));
        text("validToTimeTo", self.valid_to_before.map(wire_time));
        if self.not_revoked {
            fields.push(Field::new("isNotRevoked", "true"));
        }
        fields
    }
}

/// A certificate as CM lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexusCertificate {
    /// CM's id.
    pub certid: String,
    /// `active`, `revoked`, ...
    pub status: String,
    /// X.509 serial, lower-case hex without leading zeros.
    pub serial_number: Option<String>,
    /// Subject as CM renders it.
    pub subject: Option<String>,
    /// notBefore.
    pub not_before: Option<jiff::Timestamp>,
    /// notAfter.
    pub not_after: Option<jiff::Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<jiff::Timestamp>,
}

impl NexusCertificate {
    /// Whether CM reports it revoked (or on hold).
    pub fn is_revoked(&self) -> bool {
        self.status.eq_ignore_ascii_case("revoked") || self.revoked_at.is_some()
    }
}

impl From<JsonCertificate> for NexusCertificate {
    fn from(json: JsonCertificate) -> Self {
        Self {
            certid: json.certid,
            status: json.status,
            serial_number: json.certificateserialnumber.as_deref().map(normalize_serial),
            subject: json.subject,
            not_before: json.validfrom,
            not_after: json.validto,
            revoked_at: json.revocationtime,
        }
    }
}

/// What `download` asks for with `Accept` (spec §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownloadFormat {
    /// `application/pkix-cert`: the certificate alone, DER.
    Der,
    /// `application/pkcs7-mime`.
    Pkcs7,
    /// `application/pem-certificate-chain;depth=N`: 0 is the whole chain, N the first N.
    PemChain {
        /// Certificates from the leaf upwards; 0 for all.
        depth: u32,
    },
}

impl DownloadFormat {
    fn accept(self) -> String {
        match self {
            Self::Der => "application/pkix-cert".into(),
            Self::Pkcs7 => "application/pkcs7-mime".into(),
            Self::PemChain { depth } => format!("application/pem-certificate-chain;depth={depth}"),
        }
    }
}

/// The Nexus backend.
#[derive(Clone, Debug)]
pub struct NexusBackend {
    config: Arc<NexusConfig>,
    http: NexusHttp,
    /// The token procedures, listed once (by the check or the first issuance naming one).
    procedure_list: Arc<OnceCell<Vec<Procedure>>>,
}

impl NexusBackend {
    /// Builds the backend; fails only on configuration errors (URL, CA bundle, client identity,
    /// a signing key that is unreadable or not the signing certificate's).
    pub fn new(config: NexusConfig) -> Result<Self, BackendError> {
        let signer = config
            .signer
            .as_ref()
            .map(|s| OfficerSigner::from_pem(&s.certificate_chain_pem, &s.key_pem))
            .transpose()
            .map_err(|e| BackendError::Configuration {
                backend: KIND,
                message: e.to_string(),
            })?
            .map(Arc::new);
        let http = NexusHttp::new(&config, signer)?;
        Ok(Self {
            config: Arc::new(config),
            http,
            procedure_list: Arc::new(OnceCell::new()),
        })
    }

    /// `GET /procedures`: the token procedures the officer may use.
    pub async fn procedures(&self) -> Result<Vec<Procedure>, BackendError> {
        let request = get("procedures", "/procedures".into(), Vec::new(), None);
        let body = match self.http.send(&request).await {
            Ok(answer) => json_body(answer, "procedures")?,
            Err(CallError::Api { code: -1, msg, .. }) => {
                return Err(BackendError::Configuration {
                    backend: KIND,
                    message: format!(
                        "the gateway lists no token procedures for this officer: {msg} (error -1)"
                    ),
                });
            }
            Err(e) => return Err(classify(e, "procedures")),
        };
        let list: ProcedureList = parse_json(&body, "procedures")?;
        Ok(list
            .procedures
            .into_iter()
            .map(|p| Procedure {
                id: p.procid,
                name: p.name,
            })
            .collect())
    }

    /// `GET /certificates`, page by page, until `max` certificates or the last hit.
    pub async fn search(
        &self,
        query: &CertificateQuery,
        max: usize,
    ) -> Result<Vec<NexusCertificate>, BackendError> {
        let mut found = Vec::new();
        let mut offset = 0_usize;
        while found.len() < max {
            let mut fields = query.fields();
            fields.push(Field::new(
                "searchLimit",
                PAGE_SIZE.min(max - found.len()).to_string(),
            ));
            fields.push(Field::new("searchOffset", offset.to_string()));
            let request = get("listCertificates", "/certificates".into(), fields, None);
            let answer = match self.http.send(&request).await {
                Ok(answer) => answer,
                Err(CallError::Api { code: -14, msg, .. })
                    if msg.to_ascii_lowercase().contains("too many hits") =>
                {
                    return Err(BackendError::InvalidRequest {
                        backend: KIND,
                        code: Some(-14),
                        message: "the certificate search matches more than certsearch.maxhits; narrow it"
                            .into(),
                    });
                }
                Err(e) => return Err(classify(e, "listCertificates")),
            };
            let page: CertificateList =
                parse_json(&json_body(answer, "listCertificates")?, "listCertificates")?;
            let received = page.certificates.len();
            offset += received;
            found.extend(page.certificates.into_iter().map(NexusCertificate::from));
            let total = page
                .search_hits
                .and_then(|hits| usize::try_from(hits).ok())
                .unwrap_or(offset);
            if received == 0 || offset >= total {
                break;
            }
        }
        found.truncate(max);
        Ok(found)
    }

    /// `GET /certificates/{certid}/details`.
    pub async fn details(&self, certid: &str) -> Result<NexusCertificate, BackendError> {
        let request = get(
            "details",
            format!("/certificates/{}/details", path_segment(certid)?),
            Vec::new(),
            None,
        );
        let answer = self
            .http
            .send(&request)
            .await
            .map_err(|e| not_found_or(e, certid, "details"))?;
        let details: CertificateDetails = parse_json(&json_body(answer, "details")?, "details")?;
        Ok(details.certificate.into())
    }

    /// `GET /certificates/{certid}/download` in `format`.
    pub async fn download(&self, certid: &str, format: DownloadFormat) -> Result<Bytes, BackendError> {
        let request = get(
            "download",
            format!("/certificates/{}/download", path_segment(certid)?),
            Vec::new(),
            Some(format.accept()),
        );
        match self
            .http
            .send(&request)
            .await
            .map_err(|e| not_found_or(e, certid, "download"))?
        {
            Answer::Binary(body) => Ok(body),
            Answer::Json(_) => Err(BackendError::MalformedResponse {
                backend: KIND,
                operation: "download",
                message: "a JSON answer without a certificate".into(),
            }),
        }
    }

    /// `POST /certificates/revoke` with RFC 5280 reason `reason`; certificates already revoked
    /// or missing count as revoked.
    pub async fn revoke_certificates(&self, certids: &[String], reason: u8) -> Result<(), BackendError> {
        let mut fields: Vec<Field> = certids
            .iter()
            .map(|id| Field::new("certid", id.clone()))
            .collect();
        fields.push(Field::new("reason", reason.to_string()));
        let request = write(
            "revoke",
            "/certificates/revoke",
            Encoding::Form,
            fields,
            Idempotency::Idempotent,
        );
        match self.http.send(&request).await {
            Ok(_) => Ok(()),
            Err(CallError::Api { errors, .. }) if !errors.is_empty() => {
                per_certificate(errors, &[ALREADY_REVOKED, CERTIFICATE_MISSING])
            }
            Err(e) => Err(classify(e, "revoke")),
        }
    }

    /// `POST /certificates/reinstate`: takes certificates off hold (reason 6).
    pub async fn reinstate(&self, certids: &[String]) -> Result<(), BackendError> {
        let fields = certids
            .iter()
            .map(|id| Field::new("certid", id.clone()))
            .collect();
        let request = write(
            "reinstate",
            "/certificates/reinstate",
            Encoding::Form,
            fields,
            Idempotency::Idempotent,
        );
        match self.http.send(&request).await {
            Ok(_) => Ok(()),
            Err(CallError::Api { errors, .. }) if !errors.is_empty() => per_certificate(errors, &[]),
            Err(e) => Err(classify(e, "reinstate")),
        }
    }

    /// `POST /certificates/pkcs10`; returns the leaf (DER) carrying the CSR's key. Sent once:
    /// a lost answer is recovered by [`CaBackend::find_existing_order`].
    async fn issue(&self, request: &EnrollRequest) -> Result<Vec<u8>, BackendError> {
        let mut fields = vec![Field {
            name: "pkcs10",
            value: STANDARD.encode(&request.csr_der),
            content_type: Some("application/pkcs10"),
        }];
        if let Some(procedure) = request
            .options
            .token_procedure
            .as_ref()
            .or(self.config.token_procedure.as_ref())
        {
            fields.push(Field::new("procname", self.procedure_name(procedure).await));
        }
        if let Some(lifetime) = request.lifetime {
            let from = jiff::Timestamp::now();
            let to = from
                .checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::MAX))
                .map_err(|_| BackendError::InvalidRequest {
                    backend: KIND,
                    code: None,
                    message: "the requested lifetime is too long".into(),
                })?;
            fields.push(Field::new("validfrom", wire_time(from)));
            fields.push(Field::new("validto", wire_time(to)));
        }
        let mut call = write(
            "issuePkcs10",
            "/certificates/pkcs10",
            Encoding::Multipart,
            fields,
            Idempotency::Once,
        );
        call.accept = Some("application/pem-certificate-chain".into());
        let body = match self.http.send(&call).await.map_err(|e| classify(e, "issue"))? {
            Answer::Binary(body) => body,
            Answer::Json(_) => {
                return Err(BackendError::MalformedResponse {
                    backend: KIND,
                    operation: "issue",
                    message: "a JSON answer without a certificate".into(),
                });
            }
        };
        let key = csr_key(&request.csr_der)?;
        let issued = chain::parse_certificates(&body)
            .and_then(|certificates| chain::assemble(certificates, &key))
            .map_err(|e| BackendError::MalformedResponse {
                backend: KIND,
                operation: "issue",
                message: e.to_string(),
            })?;
        Ok(issued.leaf_der)
    }

    /// The name `procname` takes for a procedure configured by name or by `procid`; the value as
    /// given when it is neither or the procedures cannot be listed (CM then decides).
    async fn procedure_name(&self, wanted: &str) -> String {
        let procedures = match self.procedure_list.get_or_try_init(|| self.procedures()).await {
            Ok(procedures) => procedures,
            Err(error) => {
                tracing::debug!(backend = "nexus", %error, "cannot list token procedures; sending procname as configured");
                return wanted.to_owned();
            }
        };
        find_procedure(procedures, wanted).map_or_else(|| wanted.to_owned(), |p| p.name.clone())
    }

    /// Certificates whose serial is `serial` (any spelling): searched as CM's example prints
    /// serials, then as the DER integer's hex when that differs and the first found nothing.
    async fn search_serial(&self, serial: &str) -> Result<Vec<NexusCertificate>, BackendError> {
        let wanted = normalize_serial(serial);
        for spelling in serial_spellings(serial) {
            let query = CertificateQuery {
                serial_number: Some(spelling),
                serial_verbatim: true,
                ..CertificateQuery::default()
            };
            let hits: Vec<NexusCertificate> = self
                .search(&query, PAGE_SIZE)
                .await?
                .into_iter()
                .filter(|c| c.serial_number.as_deref() == Some(wanted.as_str()))
                .collect();
            if !hits.is_empty() {
                return Ok(hits);
            }
        }
        Ok(Vec::new())
    }

    /// The `certid` of the certificate with `serial` that carries `public_key`, searching up to
    /// `attempts` times while CM may still be indexing it.
    async fn certid_of_serial(
        &self,
        serial: &str,
        public_key: &[u8],
        attempts: u32,
    ) -> Result<Option<String>, BackendError> {
        let mut wait = self.config.index_wait;
        for attempt in 1..=attempts.max(1) {
            let hits = self.search_serial(serial).await?;
            // Two CAs behind one CM may share a serial: the public key decides, even for a single
            // hit (ours may not be indexed yet while another CA's is).
            for hit in &hits {
                if self.carries_key(&hit.certid, public_key).await? {
                    return Ok(Some(hit.certid.clone()));
                }
            }
            if attempt < attempts {
                tracing::debug!(backend = "nexus", serial, attempt, "certificate not indexed yet");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        Ok(None)
    }

    /// Whether certificate `certid` carries `public_key` (DER SPKI); a missing one does not.
    async fn carries_key(&self, certid: &str, public_key: &[u8]) -> Result<bool, BackendError> {
        let der = match self.download(certid, DownloadFormat::Der).await {
            Ok(der) => der,
            Err(BackendError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(chain::parse_certificates(&der)
            .ok()
            .and_then(|certificates| certificates.into_iter().next())
            .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
            .is_some_and(|spki| spki == public_key))
    }

    /// The `certid` an order id stands for, or `None` while CM has not indexed it.
    async fn resolve(&self, order_id: &str, public_key: &[u8]) -> Result<Option<String>, BackendError> {
        match order_id.strip_prefix(SERIAL_ID_PREFIX) {
            Some(serial) => self.certid_of_serial(serial, public_key, 1).await,
            None => Ok(Some(order_id.to_owned())),
        }
    }
}

impl CaBackend for NexusBackend {
    fn kind(&self) -> BackendKind {
        KIND
    }

    /// Issuance, revocation and search (`GET /certificates`, §7.1). CM has no renew endpoint
    /// (§12: `renew` is a new issuance), and no domain validation or discovery API.
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Issue,
            Capability::Revoke,
            Capability::CertificateSearch,
        ])
    }

    async fn check(&self) -> Result<Vec<Profile>, BackendError> {
        let procedures = self.procedures().await?;
        if procedures.is_empty() {
            return Err(BackendError::Configuration {
                backend: KIND,
                message: "the gateway lists no token procedures for this officer".into(),
            });
        }
        // Issuance sends `procname`, which takes the procedure's name (spec §8); a configured
        // `procid` is accepted and translated to its name.
        if let Some(wanted) = &self.config.token_procedure
            && find_procedure(&procedures, wanted).is_none()
        {
            let listed: Vec<&str> = procedures.iter().map(|p| p.name.as_str()).collect();
            return Err(BackendError::Configuration {
                backend: KIND,
                message: format!(
                    "token procedure {wanted:?} is not available to the officer; the gateway lists {listed:?}"
                ),
            });
        }
        let _ = self.procedure_list.set(procedures.clone());
        Ok(procedures
            .into_iter()
            .map(|p| Profile {
                id: p.id,
                name: p.name,
                terms: Vec::new(),
            })
            .collect())
    }

    async fn enroll(&self, request: &EnrollRequest) -> Result<OrderHandle, BackendError> {
        let leaf = self.issue(request).await?;
        let serial = leaf_serial(&leaf)?;
        let key = csr_key(&request.csr_der)?;
        // The certificate exists now: whatever the search says, an order id comes back, so the
        // controller records it and never issues again for this CSR.
        let id = match self
            .certid_of_serial(&serial, &key, self.config.index_attempts)
            .await
        {
            Ok(Some(certid)) => certid,
            Ok(None) => format!("{SERIAL_ID_PREFIX}{serial}"),
            Err(error) => {
                tracing::warn!(backend = "nexus", serial, %error, "cannot look up the certid of a new certificate yet");
                format!("{SERIAL_ID_PREFIX}{serial}")
            }
        };
        tracing::info!(backend = "nexus", certid = %id, serial, "certificate issued");
        Ok(OrderHandle {
            backend: KIND,
            id,
            renew_id: None,
        })
    }

    async fn collect(&self, order: &OrderHandle, csr_der: &[u8]) -> Result<Collected, BackendError> {
        let key = csr_key(csr_der)?;
        let Some(certid) = self.resolve(&order.id, &key).await? else {
            return Ok(Collected::Pending {
                detail: format!("Certificate Manager has not indexed certificate {} yet", order.id),
            });
        };
        let details = self.details(&certid).await?;
        if details.is_revoked() {
            return Ok(Collected::Failed {
                reason: format!("certificate {certid} is revoked"),
            });
        }
        let body = self
            .download(&certid, DownloadFormat::PemChain { depth: 0 })
            .await?;
        let malformed = |e: chain::ChainError| BackendError::MalformedResponse {
            backend: KIND,
            operation: "collect",
            message: e.to_string(),
        };
        let certificates = chain::parse_certificates(&body).map_err(malformed)?;
        match chain::assemble(certificates, &key) {
            Ok(issued) => Ok(Collected::Issued(issued)),
            Err(chain::ChainError::NoLeafForKey(_)) => Ok(Collected::Failed {
                reason: format!(
                    "order {} was issued for a different key (the CA did not use this order's CSR)",
                    order.id
                ),
            }),
            Err(error) => Err(malformed(error)),
        }
    }

    async fn renew(
        &self,
        _order: &OrderHandle,
        request: &EnrollRequest,
    ) -> Result<OrderHandle, BackendError> {
        // Spec §12: CM has no renew, rekey or reissue endpoint; a renewal is a new issuance.
        self.enroll(request).await
    }

    async fn revoke(&self, target: &RevokeTarget, reason: RevocationReason) -> Result<(), BackendError> {
        let certids = match target {
            RevokeTarget::Order(order) => match order.id.strip_prefix(SERIAL_ID_PREFIX) {
                None => vec![order.id.clone()],
                Some(serial) => self.certids_of_serial(serial).await?,
            },
            RevokeTarget::Serial(serial) => self.certids_of_serial(serial).await?,
        };
        match certids.as_slice() {
            // Nothing was revoked: the serial is wrong, or CM has not indexed the certificate
            // yet. (A certid that CM answers 907 for is another matter: see revoke_certificates.)
            [] => Err(BackendError::NotFound {
                backend: KIND,
                what: match target {
                    RevokeTarget::Order(order) => format!("certificate for order {}", order.id),
                    RevokeTarget::Serial(serial) => format!("certificate with serial number {serial}"),
                },
            }),
            [_] => self.revoke_certificates(&certids, reason.code()).await,
            // A serial is unique per CA, not per CM: never revoke a certificate of another CA.
            several => Err(BackendError::InvalidRequest {
                backend: KIND,
                code: None,
                message: format!(
                    "{} certificates in Certificate Manager have this serial number; revoke the right one \
                     by its certid",
                    several.len()
                ),
            }),
        }
    }

    async fn find_existing_order(
        &self,
        request: &EnrollRequest,
    ) -> Result<Option<OrderHandle>, BackendError> {
        let key = csr_key(&request.csr_der)?;
        let window_start = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(self.config.recovery_window).unwrap_or_default())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        // A reused key also carries the earlier certificates: only one issued after the CSR was
        // made can be its order. We send `validfrom` = the request time, so notBefore follows
        // it, give or take the margin.
        let csr_start = request
            .csr_created_at
            .and_then(|created| created.checked_sub(CLOCK_SKEW_MARGIN).ok());
        let since = csr_start.map_or(window_start, |start| start.max(window_start));
        let query = CertificateQuery {
            common_name: request.common_name.clone(),
            valid_from_after: Some(since),
            // A revoked certificate cannot be delivered, so it is not the order to resume.
            not_revoked: true,
            ..CertificateQuery::default()
        };
        let mut candidates = self.search(&query, MAX_RECOVERY_CANDIDATES).await?;
        // The certificate we lost is among the newest.
        candidates.sort_by_key(|c| std::cmp::Reverse(c.not_before));
        for candidate in candidates {
            let known = request.known_orders.iter().any(|known| {
                *known == candidate.certid
                    || known.strip_prefix(SERIAL_ID_PREFIX).is_some_and(|serial| {
                        candidate.serial_number.as_deref() == Some(normalize_serial(serial).as_str())
                    })
            });
            if known {
                continue;
            }
            if self.carries_key(&candidate.certid, &key).await? {
                return Ok(Some(OrderHandle {
                    backend: KIND,
                    id: candidate.certid,
                    renew_id: None,
                }));
            }
        }
        Ok(None)
    }
}

impl NexusBackend {
    /// Every `certid` CM lists for `serial` (normally one).
    async fn certids_of_serial(&self, serial: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .search_serial(serial)
            .await?
            .into_iter()
            .map(|c| c.certid)
            .collect())
    }
}

fn get(endpoint: &'static str, path: String, fields: Vec<Field>, accept: Option<String>) -> Request {
    Request {
        endpoint,
        method: Method::GET,
        path,
        encoding: Encoding::Query,
        fields,
        accept: accept.or_else(|| Some("application/json".into())),
        idempotency: Idempotency::Idempotent,
    }
}

fn write(
    endpoint: &'static str,
    path: &str,
    encoding: Encoding,
    fields: Vec<Field>,
    idempotency: Idempotency,
) -> Request {
    Request {
        endpoint,
        method: Method::POST,
        path: path.to_owned(),
        encoding,
        fields,
        accept: Some("application/json".into()),
        idempotency,
    }
}

fn json_body(answer: Answer, operation: &'static str) -> Result<Bytes, BackendError> {
    match answer {
        Answer::Json(body) => Ok(body),
        Answer::Binary(_) => Err(BackendError::MalformedResponse {
            backend: KIND,
            operation,
            message: "a binary answer where JSON was expected".into(),
        }),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    operation: &'static str,
) -> Result<T, BackendError> {
    serde_json::from_slice(body).map_err(|e| BackendError::MalformedResponse {
        backend: KIND,
        operation,
        // serde names the field and position; it quotes at most one scalar of the wrong type.
        message: e.to_string(),
    })
}

/// Maps CM's error codes (spec §5.1) to our kinds.
fn classify(error: CallError, operation: &'static str) -> BackendError {
    let (code, msg) = match error {
        CallError::Backend(e) => return e,
        CallError::Api { code, msg, .. } => (code, msg),
    };
    let message = if msg.is_empty() {
        format!("{operation} failed (error {code})")
    } else {
        format!("{msg} (error {code})")
    };
    match code {
        -15 => BackendError::Unauthorized {
            backend: KIND,
            message: format!("the officer lacks a role the gateway requires: {message}"),
        },
        -17 => BackendError::Unauthorized {
            backend: KIND,
            message: format!(
                "the gateway refused the request signature: {message}; the signing Secret must hold a CM \
                 officer certificate and its key"
            ),
        },
        -40 => BackendError::RateLimited {
            backend: KIND,
            retry_after: None,
        },
        -12 | -18 => BackendError::Unavailable {
            backend: KIND,
            message,
        },
        _ => BackendError::InvalidRequest {
            backend: KIND,
            code: Some(code),
            message,
        },
    }
}

/// `-14 "No certificate found"` (spec §7.3) as `NotFound`, anything else classified.
fn not_found_or(error: CallError, certid: &str, operation: &'static str) -> BackendError {
    match error {
        CallError::Api { code: -14, msg, .. }
            if msg.to_ascii_lowercase().contains("no certificate found") =>
        {
            BackendError::NotFound {
                backend: KIND,
                what: format!("certificate {certid}"),
            }
        }
        other => classify(other, operation),
    }
}

/// The outcome of a revoke or reinstate from its `errors[]`: codes in `done` are successes.
fn per_certificate(errors: Vec<CertificateError>, done: &[i64]) -> Result<(), BackendError> {
    let failures: Vec<CertificateError> = errors
        .into_iter()
        .filter(|e| !done.contains(&e.errorcode))
        .collect();
    let Some(first) = failures.first() else {
        return Ok(());
    };
    let message = failures
        .iter()
        .map(|e| {
            format!(
                "certificate {}: {} (code {})",
                e.certid.as_deref().unwrap_or("?"),
                e.errormessage.as_deref().unwrap_or("no message"),
                e.errorcode
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(match first.errorcode {
        // Access denied, incorrect password, request not signed, not visible from domain.
        902 | 903 | 908 | 909 => BackendError::Unauthorized {
            backend: KIND,
            message,
        },
        code => BackendError::InvalidRequest {
            backend: KIND,
            code: Some(code),
            message,
        },
    })
}

fn csr_key(csr_der: &[u8]) -> Result<Vec<u8>, BackendError> {
    chain::csr_public_key(csr_der).map_err(|e| BackendError::InvalidRequest {
        backend: KIND,
        code: None,
        message: e.to_string(),
    })
}

fn leaf_serial(leaf_der: &[u8]) -> Result<String, BackendError> {
    let leaf = x509_cert::Certificate::from_der(leaf_der).map_err(|e| BackendError::MalformedResponse {
        backend: KIND,
        operation: "issue",
        message: e.to_string(),
    })?;
    Ok(normalize_serial(&chain::hex(
        leaf.tbs_certificate.serial_number.as_bytes(),
    )))
}

/// The procedure `wanted` names, by name first, then by `procid`.
fn find_procedure<'a>(procedures: &'a [Procedure], wanted: &str) -> Option<&'a Procedure> {
    procedures
        .iter()
        .find(|p| p.name == wanted)
        .or_else(|| procedures.iter().find(|p| p.id == wanted))
}

/// The spellings a CM may store `serial` in, the example's first: lower-case hex without leading
/// zeros, then the DER integer's bytes (when different). Both lower case: a CM that compares
/// serials case-sensitively prints them like the example.
pub fn serial_spellings(serial: &str) -> Vec<String> {
    let minimal = normalize_serial(serial);
    let mut der = if minimal.len() % 2 == 1 {
        format!("0{minimal}")
    } else {
        minimal.clone()
    };
    // DER integers are signed: a leading byte with the high bit set gets a 00 byte before it.
    if der.starts_with(['8', '9', 'a', 'b', 'c', 'd', 'e', 'f']) {
        der.insert_str(0, "00");
    }
    if der == minimal {
        vec![minimal]
    } else {
        vec![minimal, der]
    }
}

/// Lower-case hex without separators or leading zeros, as CM prints serials (spec §4, §12).
pub fn normalize_serial(serial: &str) -> String {
    let digits: String = serial
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// RFC 3339 UTC with whole seconds, e.g. `2026-05-11T15:30:00Z` (spec §4).
fn wire_time(at: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(at.as_second())
        .unwrap_or(at)
        .to_string()
}

fn path_segment(certid: &str) -> Result<String, BackendError> {
    crate::backend::http::path_segment(KIND, "certificate id", certid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised_like_cm_prints_them() {
        assert_eq!(normalize_serial("00:A1:b2"), "a1b2");
        assert_eq!(
            normalize_serial("31E96265E40B809CFFA3862B073AE98B"),
            "31e96265e40b809cffa3862b073ae98b"
        );
        assert_eq!(normalize_serial("00"), "0");
    }

    #[test]
    fn serials_are_searched_in_every_plausible_spelling() {
        assert_eq!(serial_spellings("00:A1:B2"), ["a1b2", "00a1b2"]);
        assert_eq!(serial_spellings("0x1"), ["1", "01"]);
        assert_eq!(serial_spellings("31E9"), ["31e9"]);
        assert_eq!(serial_spellings("abc"), ["abc", "0abc"]);
        assert_eq!(serial_spellings("7abc"), ["7abc"]);
    }

    #[test]
    fn procedures_are_found_by_name_or_procid() {
        let procedures = [
            Procedure {
                id: "t-tls-server".into(),
                name: "TLS Server".into(),
            },
            Procedure {
                id: "TLS Server".into(),
                name: "Other".into(),
            },
        ];
        assert_eq!(
            find_procedure(&procedures, "t-tls-server").map(|p| p.name.as_str()),
            Some("TLS Server")
        );
        // A name wins over a procid spelled the same.
        assert_eq!(
            find_procedure(&procedures, "TLS Server").map(|p| p.name.as_str()),
            Some("TLS Server")
        );
        assert!(find_procedure(&procedures, "nope").is_none());
    }

    #[test]
    fn request_times_have_whole_seconds_and_z() {
        let at = jiff::Timestamp::from_millisecond(1_778_513_400_123).unwrap();
        assert_eq!(wire_time(at), "2026-05-11T15:30:00Z");
    }

    #[test]
    fn query_fields_use_the_documented_names() {
        let query = CertificateQuery {
            common_name: Some("www.example.com".into()),
            serial_number: Some("00:AB".into()),
            valid_from_after: Some(jiff::Timestamp::from_second(1_778_513_400).unwrap()),
            not_revoked: true,
            ..CertificateQuery::default()
        };
        let rendered = client::query_string(&query.fields());
        assert_eq!(
            rendered,
            "subjectCommonName=www.example.com&certificateSerialNumber=ab&validFromTimeFrom=2026-05-11T15%3A30%3A00Z&isNotRevoked=true"
        );
    }

    #[test]
    fn revocation_outcomes_count_already_revoked_and_missing_as_done() {
        let error = |certid: &str, errorcode| CertificateError {
            certid: Some(certid.into()),
            errorcode,
            errormessage: Some("x".into()),
        };
        assert!(per_certificate(vec![error("1", 901), error("2", 907)], &[901, 907]).is_ok());
        assert!(matches!(
            per_certificate(vec![error("1", 901), error("2", 909)], &[901, 907]),
            Err(BackendError::Unauthorized { message, .. }) if message.contains("certificate 2") && message.contains("909")
        ));
        assert!(matches!(
            per_certificate(vec![error("3", 911)], &[901, 907]),
            Err(BackendError::InvalidRequest { code: Some(911), .. })
        ));
    }

    #[test]
    fn error_codes_map_to_kinds() {
        let api = |code, msg: &str| CallError::Api {
            code,
            msg: msg.into(),
            errors: Vec::new(),
        };
        assert!(matches!(
            classify(api(-15, ""), "x"),
            BackendError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify(api(-17, "Bad signature"), "x"),
            BackendError::Unauthorized { message, .. } if message.contains("Bad signature (error -17)")
        ));
        assert!(matches!(
            classify(api(-40, ""), "x"),
            BackendError::RateLimited { .. }
        ));
        assert!(matches!(
            classify(api(-18, ""), "x"),
            BackendError::Unavailable { .. }
        ));
        assert!(matches!(
            classify(api(-12, ""), "x"),
            BackendError::Unavailable { .. }
        ));
        assert!(matches!(
            classify(api(-8, "Encoding error"), "x"),
            BackendError::InvalidRequest { code: Some(-8), .. }
        ));
        assert!(matches!(
            not_found_or(api(-14, "No certificate found"), "10003", "details"),
            BackendError::NotFound { what, .. } if what == "certificate 10003"
        ));
        assert!(matches!(
            not_found_or(api(-14, "Code -14, Internal bad request"), "10003", "details"),
            BackendError::InvalidRequest { code: Some(-14), .. }
        ));
    }
}
