//! Sectigo Certificate Manager (and InCommon Certificate Manager) behind [`CaBackend`].
//!
//! Choices the spec (`shared/spec/scm-ssl.md`) leaves open, and what we do:
//! - **Renewal uses `renewById`** (spec §3.20): it returns the new `sslId`, so the new order is
//!   persisted at once. `renew/{renewId}` answers 204 without an id and would need a search.
//!   InCommon's `renewById` documents no `csr` at all and renews "using the same CSR" (004,
//!   spec §5), so a renewal with a new key is a new enrollment there: `renew` answers
//!   `Unsupported` and the controller enrolls. Should a CA renew with the initial CSR anyway,
//!   the renewed order's certificate carries the old key and `collect` fails that order.
//! - **Collect asks for `x509`** (PEM chain) but accepts any encoding (spec §3.11, §7 item 5);
//!   the leaf is the certificate carrying the CSR's key, whatever the order.
//! - **Pending** is HTTP 400 with code 0, -1400, -183 or -109 (spec §3.11 recommendation), and on
//!   collect also the table's "not issued yet" codes -130 "SSL state is not 'ISSUED'" and -103
//!   "Certificate has not been collected yet"; we then read the order's status so
//!   declined/rejected orders stop polling instead of spinning.
//! - **An issued order without our key** (no certificate in the collected set carries the CSR's
//!   public key, e.g. a CA that renewed with the initial CSR) is `Failed`: it can never become
//!   the certificate we asked for, so it is not collected again.
//! - **Crash recovery** lists orders by common name (or first SAN) and organisation and compares
//!   each one's `csrDetails.sha256Hash` with our CSR (spec §6.4), newest first across all pages:
//!   the list order is undocumented, so the first page tells which end holds the newest
//!   `sslId`s and the walk starts there. It stops at orders placed before the CSR was made (less
//!   a day: `requested` is a date without zone), and skips orders the caller already knows and
//!   orders in a terminal status, which will never be issued.
//! - **InCommon** differs in the certificate-login prefix (`/private/ssl/v1` in 004, but
//!   `/private/api/ssl/v1` in 001 for the same host: the client tries both, see `client`),
//!   collect's path style (`collect/{id}/{format}`), the enroll fields
//!   `numberServers`/`serverType`, and revoke bodies with only `reason` (spec §5).

pub mod client;
pub mod dcv;
pub mod discovery;
mod model;

use std::{collections::HashSet, sync::Arc, time::Duration};

use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;

use self::{
    client::{ApiFamily, CallError, ScmHttp},
    model::{
        CustomField, Details, EnrollBody, EnrollResponse, ListItem, ProfileDto, RenewByIdBody,
        RenewByIdResponse, ReplaceBody, RevokeBody,
    },
};
use super::{
    BackendError, BackendKind, CaBackend, Capabilities, Capability, Collected, EnrollRequest, OrderDcv,
    OrderHandle, Profile, RevocationReason, RevokeTarget, http,
    retry::{Idempotency, RetryPolicy},
};
use crate::pki::{chain, credentials::SecretString};

const KIND: BackendKind = BackendKind::Scm;
/// Orders examined (one details call each) at most when recovering an order after a crash.
const MAX_RECOVERY_CANDIDATES: usize = 500;
/// List requests at most when recovering an order after a crash.
const MAX_RECOVERY_PAGES: usize = 100;
const LIST_PAGE_SIZE: usize = 50;
/// How much earlier than the CSR's creation an order for it may look: details date orders by
/// day in the CA's unknown time zone (spec §3.6, §7 item 11).
const RECOVERY_DATE_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
/// Codes collect answers for an order that is not issued yet besides the usual pending ones
/// (spec §1.5 "Collect" and "State" groups, §3.11 candidates).
const COLLECT_NOT_ISSUED_CODES: [i64; 2] = [-130, -103];

/// Which product the URL points at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScmFlavor {
    /// Sectigo Certificate Manager.
    #[default]
    Sectigo,
    /// InCommon Certificate Manager.
    InCommon,
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum ScmAuth {
    /// `login` + `password` headers.
    Password {
        /// Administrator login.
        login: String,
        /// Password.
        password: SecretString,
    },
    /// TLS client certificate + `login` header on the `/private` prefix.
    ClientCertificate {
        /// Administrator login.
        login: String,
        /// PEM certificate followed by its PEM private key.
        identity_pem: SecretString,
    },
}

/// Everything the SCM backend needs; built from an issuer's spec and Secrets by the controller.
#[derive(Clone, Debug)]
pub struct ScmConfig {
    /// `https://host` without the API path.
    pub base_url: String,
    /// Sectigo or InCommon.
    pub flavor: ScmFlavor,
    /// `customerUri` header value.
    pub customer_uri: String,
    /// Credentials.
    pub auth: ScmAuth,
    /// Organization id.
    pub org_id: i64,
    /// Default profile (`certType`).
    pub cert_type: i64,
    /// Default term in days.
    pub term_days: Option<u32>,
    /// `externalRequester`.
    pub external_requester: Option<String>,
    /// Default comment.
    pub comments: Option<String>,
    /// Default custom fields.
    pub custom_fields: Vec<(String, String)>,
    /// Default per-order DCV (`dcvMode`/`dcvEmail`).
    pub dcv: Option<OrderDcv>,
    /// Extra trusted CAs for the API endpoint (PEM).
    pub ca_bundle_pem: Option<String>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Retry limits for idempotent calls.
    pub retry: RetryPolicy,
}

impl ScmConfig {
    /// A configuration with default timeouts and retries.
    pub fn new(
        base_url: impl Into<String>,
        customer_uri: impl Into<String>,
        auth: ScmAuth,
        org_id: i64,
        cert_type: i64,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            flavor: ScmFlavor::Sectigo,
            customer_uri: customer_uri.into(),
            auth,
            org_id,
            cert_type,
            term_days: None,
            external_requester: None,
            comments: None,
            custom_fields: Vec::new(),
            dcv: None,
            ca_bundle_pem: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// The SCM backend.
#[derive(Clone, Debug)]
pub struct ScmBackend {
    config: Arc<ScmConfig>,
    http: ScmHttp,
    profiles: Arc<OnceCell<Vec<Profile>>>,
}

impl ScmBackend {
    /// Builds the backend; fails only on configuration errors (bad URL, CA bundle or client key).
    pub fn new(config: ScmConfig) -> Result<Self, BackendError> {
        let http = ScmHttp::new(&config)?;
        Ok(Self {
            config: Arc::new(config),
            http,
            profiles: Arc::new(OnceCell::new()),
        })
    }

    async fn profiles(&self) -> Result<Vec<Profile>, BackendError> {
        let reply = self
            .http
            .api(ApiFamily::SslV1)
            .call(
                "types",
                Method::GET,
                "/types",
                &[],
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|e| classify(e, "types"))?;
        let dtos: Vec<ProfileDto> = parse_json(&reply.body, "list profiles")?;
        Ok(dtos
            .into_iter()
            .map(|p| Profile {
                id: p.id,
                name: p.name,
                terms: p.terms,
            })
            .collect())
    }

    /// The term for a request: explicit override, the issuer default, or the shortest profile
    /// term covering the requested lifetime (the longest one if none covers it).
    async fn term_for(&self, request: &EnrollRequest, profile_id: i64) -> Result<u32, BackendError> {
        if let Some(term) = request.options.term_days.or(self.config.term_days) {
            return Ok(term);
        }
        let profiles = self.profiles.get_or_try_init(|| self.profiles()).await?;
        let profile = profiles
            .iter()
            .find(|p| p.id == profile_id.to_string())
            .ok_or_else(|| BackendError::InvalidRequest {
                backend: KIND,
                code: Some(-39),
                message: format!("certificate profile {profile_id} is not available to this account"),
            })?;
        let mut terms = profile.terms.clone();
        terms.sort_unstable();
        let wanted = request.lifetime.map_or(0, |d| d.as_secs().div_ceil(86_400));
        terms
            .iter()
            .copied()
            .find(|t| u64::from(*t) >= wanted)
            .or_else(|| terms.last().copied())
            .ok_or_else(|| BackendError::InvalidRequest {
                backend: KIND,
                code: Some(-36),
                message: format!("certificate profile {profile_id} lists no terms"),
            })
    }

    /// The per-order DCV an order carries: the Certificate's, else the issuer's.
    fn order_dcv<'a>(&'a self, request: &'a EnrollRequest) -> Option<&'a OrderDcv> {
        request.options.dcv.as_ref().or(self.config.dcv.as_ref())
    }

    fn custom_fields(&self, request: &EnrollRequest) -> Vec<CustomField> {
        let mut fields: Vec<CustomField> = self
            .config
            .custom_fields
            .iter()
            .map(|(name, value)| CustomField {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        for (name, value) in &request.options.custom_fields {
            match fields.iter_mut().find(|f| &f.name == name) {
                Some(field) => field.value.clone_from(value),
                None => fields.push(CustomField {
                    name: name.clone(),
                    value: value.clone(),
                }),
            }
        }
        fields
    }

    async fn details(&self, ssl_id: &str) -> Result<Details, BackendError> {
        let reply = self
            .http
            .api(ApiFamily::SslV1)
            .call(
                "details",
                Method::GET,
                &format!("/{}", order_segment(ssl_id)?),
                &[],
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|e| classify(e, "details"))?;
        parse_json(&reply.body, "certificate details")
    }

    /// One page of order ids matching `filters`, and the total count SCM reports.
    async fn list_page(
        &self,
        filters: &[(&str, String)],
        position: usize,
    ) -> Result<(Vec<i64>, usize), BackendError> {
        let mut query = filters.to_vec();
        query.push(("size", LIST_PAGE_SIZE.to_string()));
        query.push(("position", position.to_string()));
        let reply = self
            .http
            .api(ApiFamily::SslV1)
            .call(
                "list",
                Method::GET,
                "",
                &query,
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
            .map_err(|e| classify(e, "list"))?;
        let items: Vec<ListItem> = parse_json(&reply.body, "list certificates")?;
        let total = reply
            .headers
            .get("X-Total-Count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(position + items.len());
        Ok((items.into_iter().map(|i| i.ssl_id).collect(), total))
    }
}

fn pem_csr(csr_der: &[u8]) -> Result<String, BackendError> {
    pem_rfc7468::encode_string("CERTIFICATE REQUEST", pem_rfc7468::LineEnding::LF, csr_der).map_err(|e| {
        BackendError::InvalidRequest {
            backend: KIND,
            code: None,
            message: format!("cannot PEM-encode the CSR: {e}"),
        }
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    operation: &'static str,
) -> Result<T, BackendError> {
    serde_json::from_slice(body).map_err(|e| BackendError::MalformedResponse {
        backend: KIND,
        operation,
        // serde's message names the field and position, never echoes the body.
        message: e.to_string(),
    })
}

/// Error codes meaning "the certificate is not ready yet" on collect (spec §3.11).
fn is_pending_code(code: i64, description: &str) -> bool {
    matches!(code, -1400 | -183 | -109)
        || (code == 0 && description.to_ascii_lowercase().contains("being processed"))
}

/// Maps a failed call to our error kinds (spec §1.5's grouping).
fn classify(error: CallError, operation: &'static str) -> BackendError {
    let (status, code, description) = match error {
        CallError::Backend(e) => return e,
        CallError::Api {
            status,
            code,
            description,
        } => (status, code, description),
    };
    let message = if description.is_empty() {
        format!("{operation} failed with HTTP {} (code {code})", status.as_u16())
    } else {
        format!("{description} (code {code})")
    };
    if status == StatusCode::UNAUTHORIZED || matches!(code, -16 | -970) {
        return BackendError::Unauthorized {
            backend: KIND,
            message,
        };
    }
    if status == StatusCode::FORBIDDEN || matches!(code, -3 | -25 | -37 | -226) {
        return BackendError::Unauthorized {
            backend: KIND,
            message: format!("missing privilege: {message}"),
        };
    }
    if is_pending_code(code, &description) {
        return BackendError::Pending {
            backend: KIND,
            message,
        };
    }
    match code {
        -107 | -737 | -1137 => BackendError::DomainNotValidated {
            backend: KIND,
            message,
        },
        -124 | -5101 => BackendError::NotFound {
            backend: KIND,
            what: format!("certificate for {operation}: {message}"),
        },
        // Internal errors and "try again later" (spec §1.5 "Transient").
        -2 | -65 | -129 | -140 | -195 => BackendError::Unavailable {
            backend: KIND,
            message,
        },
        _ if status == StatusCode::NOT_FOUND => BackendError::NotFound {
            backend: KIND,
            what: format!("resource for {operation}: {message}"),
        },
        _ => BackendError::InvalidRequest {
            backend: KIND,
            code: Some(code),
            message,
        },
    }
}

/// Statuses after which an order will never be issued (spec §1.8).
fn is_terminal_failure(status: &str) -> bool {
    matches!(
        status,
        "Declined" | "Rejected" | "Invalid" | "Revoked" | "Expired" | "Replaced"
    )
}

impl CaBackend for ScmBackend {
    fn kind(&self) -> BackendKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        flavor_capabilities(self.config.flavor)
    }

    async fn check(&self) -> Result<Vec<Profile>, BackendError> {
        let profiles = self.profiles().await?;
        let _ = self.profiles.set(profiles.clone());
        Ok(profiles)
    }

    async fn enroll(&self, request: &EnrollRequest) -> Result<OrderHandle, BackendError> {
        let profile_id = request.options.profile_id.unwrap_or(self.config.cert_type);
        let term = self.term_for(request, profile_id).await?;
        let incommon = self.config.flavor == ScmFlavor::InCommon;
        let body = EnrollBody {
            org_id: self.config.org_id,
            csr: pem_csr(&request.csr_der)?,
            subj_alt_names: request.all_sans().join(","),
            cert_type: profile_id,
            term,
            comments: request
                .options
                .comments
                .clone()
                .or_else(|| self.config.comments.clone()),
            custom_fields: self.custom_fields(request),
            external_requester: self.config.external_requester.clone(),
            // InCommon (spec §5): licences must be positive; -1 is server type OTHER.
            number_servers: incommon.then_some(1),
            server_type: incommon.then_some(-1),
            dcv_mode: self.order_dcv(request).map(|dcv| dcv.mode),
            dcv_email: self.order_dcv(request).and_then(|dcv| dcv.email.clone()),
        };
        // Never retried: a lost response is resolved by find_existing_order.
        let reply = self
            .http
            .api(ApiFamily::SslV1)
            .call(
                "enroll",
                Method::POST,
                "/enroll",
                &[],
                Some(&body),
                Idempotency::Once,
            )
            .await
            .map_err(|e| classify(e, "enroll"))?;
        let created: EnrollResponse = parse_json(&reply.body, "enroll")?;
        Ok(OrderHandle {
            backend: KIND,
            id: created.ssl_id.to_string(),
            renew_id: created.renew_id,
        })
    }

    async fn collect(&self, order: &OrderHandle, csr_der: &[u8]) -> Result<Collected, BackendError> {
        let (path, query) = match self.config.flavor {
            ScmFlavor::Sectigo => (
                format!("/collect/{}", order_segment(&order.id)?),
                vec![("format", "x509".to_owned())],
            ),
            ScmFlavor::InCommon => (format!("/collect/{}/x509", order_segment(&order.id)?), vec![]),
        };
        let reply = match self
            .http
            .api(ApiFamily::SslV1)
            .call(
                "collect",
                Method::GET,
                &path,
                &query,
                None::<&()>,
                Idempotency::Idempotent,
            )
            .await
        {
            Ok(reply) => reply,
            Err(CallError::Api {
                code: -110,
                description,
                ..
            }) => {
                return Ok(Collected::Failed {
                    reason: format!("{description} (code -110)"),
                });
            }
            Err(CallError::Api {
                code, description, ..
            }) if is_pending_code(code, &description) || COLLECT_NOT_ISSUED_CODES.contains(&code) => {
                // "Not collectable" and "state is not ISSUED" also describe declined orders: ask
                // for the status.
                let details = self.details(&order.id).await?;
                let status = details.status.unwrap_or_default();
                return if is_terminal_failure(&status) {
                    Ok(Collected::Failed {
                        reason: format!("order {} is {status}", order.id),
                    })
                } else {
                    Ok(Collected::Pending {
                        detail: format!("{description} (code {code})"),
                    })
                };
            }
            Err(error) => return Err(classify(error, "collect")),
        };
        let malformed = |e: chain::ChainError| BackendError::MalformedResponse {
            backend: KIND,
            operation: "collect",
            message: e.to_string(),
        };
        let certificates = chain::parse_certificates(&reply.body).map_err(malformed)?;
        let key = chain::csr_public_key(csr_der).map_err(|e| BackendError::InvalidRequest {
            backend: KIND,
            code: None,
            message: e.to_string(),
        })?;
        match chain::assemble(certificates, &key) {
            Ok(issued) => Ok(Collected::Issued(issued)),
            Err(chain::ChainError::NoLeafForKey(_)) => Ok(Collected::Failed {
                reason: issued_for_another_key(&order.id),
            }),
            Err(error) => Err(malformed(error)),
        }
    }

    /// Renews with `renewById` and the new CSR. InCommon answers `Unsupported` without a
    /// request: its `renewById` documents no CSR and renews "using the same CSR" (seed 004), so a
    /// new key needs a new enrollment, which the controller falls back to.
    async fn renew(&self, order: &OrderHandle, request: &EnrollRequest) -> Result<OrderHandle, BackendError> {
        if self.config.flavor == ScmFlavor::InCommon {
            return Err(BackendError::Unsupported {
                backend: KIND,
                operation: "renewal with a new key (InCommon renews with the original CSR)",
            });
        }
        let body = RenewByIdBody {
            csr: pem_csr(&request.csr_der)?,
            dcv_mode: self.order_dcv(request).map(|dcv| dcv.mode),
            dcv_email: self.order_dcv(request).and_then(|dcv| dcv.email.clone()),
        };
        let reply = self
            .http
            .api(ApiFamily::SslV1)
            .call(
                "renewById",
                Method::POST,
                &format!("/renewById/{}", order_segment(&order.id)?),
                &[],
                Some(&body),
                Idempotency::Once,
            )
            .await
            .map_err(|e| classify(e, "renew"))?;
        let renewed: RenewByIdResponse = parse_json(&reply.body, "renew")?;
        Ok(OrderHandle {
            backend: KIND,
            id: renewed.ssl_id.to_string(),
            renew_id: None,
        })
    }

    async fn replace(
        &self,
        order: &OrderHandle,
        request: &EnrollRequest,
        reason: &str,
    ) -> Result<OrderHandle, BackendError> {
        let body = ReplaceBody {
            csr: pem_csr(&request.csr_der)?,
            reason: reason.chars().take(512).collect(),
            common_name: request.common_name.clone(),
            subject_alternative_names: request.all_sans(),
        };
        self.http
            .api(ApiFamily::SslV1)
            .call(
                "replace",
                Method::POST,
                &format!("/replace/{}", order_segment(&order.id)?),
                &[],
                Some(&body),
                Idempotency::Once,
            )
            .await
            .map_err(|e| classify(e, "replace"))?;
        // Spec §3.22: 204 and the same sslId re-enters issuance with the new CSR.
        Ok(order.clone())
    }

    async fn revoke(&self, target: &RevokeTarget, reason: RevocationReason) -> Result<(), BackendError> {
        let body = RevokeBody {
            // InCommon documents only `reason` (spec §5).
            reason_code: (self.config.flavor == ScmFlavor::Sectigo).then_some(reason.code()),
            reason: format!("revoked by pki-operator: {}", reason.name()),
        };
        let (endpoint, path) = match target {
            RevokeTarget::Order(order) => ("revoke", format!("/revoke/{}", order_segment(&order.id)?)),
            RevokeTarget::Serial(serial) => (
                "revokeBySerial",
                format!(
                    "/revoke/serial/{}",
                    http::path_segment(KIND, "serial number", &colon_serial(serial))?
                ),
            ),
        };
        // Revocation is idempotent at the CA (a second call answers -159), so it may be retried.
        match self
            .http
            .api(ApiFamily::SslV1)
            .call(
                endpoint,
                Method::POST,
                &path,
                &[],
                Some(&body),
                Idempotency::Idempotent,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Api {
                code: -159,
                description,
                ..
            }) if description.to_ascii_lowercase().contains("revoked") => Ok(()),
            // Spec §3.16: "Only issued certificates could be revoked." The order may still be
            // issued later (an abandoned order is revoked once it is): not a permanent refusal.
            Err(CallError::Api {
                code: -102,
                description,
                ..
            }) => Err(BackendError::Pending {
                backend: KIND,
                message: format!("{description} (code -102)"),
            }),
            Err(error) => Err(classify(error, "revoke")),
        }
    }

    async fn find_existing_order(
        &self,
        request: &EnrollRequest,
    ) -> Result<Option<OrderHandle>, BackendError> {
        let wanted = request.csr_sha256_hex();
        let mut filters = vec![("orgId", self.config.org_id.to_string())];
        match (&request.common_name, request.dns_names.first()) {
            (Some(cn), _) => filters.push(("commonName", cn.clone())),
            (None, Some(san)) => filters.push(("subjectAlternativeName", san.clone())),
            (None, None) => {}
        }
        // No order for the CSR can be dated before the CSR was made.
        let window_start = request
            .csr_created_at
            .and_then(|created| created.checked_sub(RECOVERY_DATE_MARGIN).ok())
            .map(|start| start.to_zoned(jiff::tz::TimeZone::UTC).date());
        let (first, total) = self.list_page(&filters, 0).await?;
        let mut seen = HashSet::new();
        let mut examined = 0_usize;
        let positions = page_positions(&first, total);
        let every_page = positions.len() >= total.div_ceil(first.len().max(1));
        for position in positions {
            let ids = if position == 0 {
                first.clone()
            } else {
                self.list_page(&filters, position).await?.0
            };
            let mut ids = ids;
            ids.sort_unstable_by(|a, b| b.cmp(a));
            for id in ids {
                let id_text = id.to_string();
                if !seen.insert(id) || request.known_orders.contains(&id_text) {
                    continue;
                }
                if examined >= MAX_RECOVERY_CANDIDATES {
                    // Not having looked at every order of the window is not "no order": saying
                    // so would let the caller order a second time.
                    return Err(recovery_gave_up(examined));
                }
                examined += 1;
                let details = self.details(&id_text).await?;
                if let (Some(start), Some(placed)) = (window_start, details.requested_date())
                    && placed < start
                {
                    // Newest first: every order after this one is older still.
                    return Ok(None);
                }
                if details.status.as_deref().is_some_and(is_terminal_failure) {
                    // Never issued, so not an order to resume: a new enrollment is due.
                    continue;
                }
                let hash = details.csr.and_then(|c| c.sha256_hash).unwrap_or_default();
                if hash.eq_ignore_ascii_case(&wanted) {
                    return Ok(Some(OrderHandle {
                        backend: KIND,
                        id: id_text,
                        renew_id: None,
                    }));
                }
            }
        }
        if every_page {
            Ok(None)
        } else {
            Err(recovery_gave_up(examined))
        }
    }
}

/// What SCM offers in `flavor`: issuance, revocation, certificate search (the filtered list,
/// spec §3.4), domain control validation (`/api/dcv`, `/api/domain`) and discovery
/// (`/api/discovery`) everywhere, since InCommon Certificate Manager "exposes the same API"
/// (spec `scm-ssl.md` scope note; seed 004 documents only an SSL subset and no other family).
/// Renewal by id with a new key only on Sectigo: InCommon's `renewById` reuses the original CSR
/// (seed 004, spec §5), so there a renewal is a new enrollment.
fn flavor_capabilities(flavor: ScmFlavor) -> Capabilities {
    let everywhere = Capabilities::of(&[
        Capability::Issue,
        Capability::Revoke,
        Capability::CertificateSearch,
        Capability::DomainValidation,
        Capability::Discovery,
    ]);
    match flavor {
        ScmFlavor::Sectigo => everywhere.with(Capability::Renew),
        ScmFlavor::InCommon => everywhere,
    }
}

/// Order recovery stopped at its bounds before it could rule out an order for the CSR.
fn recovery_gave_up(examined: usize) -> BackendError {
    BackendError::Unavailable {
        backend: KIND,
        message: format!(
            "order recovery examined {examined} orders within its bounds without reaching the time the CSR was made; \
             not ordering again, since an order for this CSR may exist (retried with backoff)"
        ),
    }
}

/// The failure reason of an issued order none of whose certificates carries the CSR's key.
fn issued_for_another_key(order_id: &str) -> String {
    format!("order {order_id} was issued for a different key (the CA did not use this order's CSR)")
}

/// The list positions to read, newest orders first, given the first page and the total.
///
/// Inferred (spec §3.4): the list order is undocumented; `sslId`s grow with time, so a first
/// page in descending order means the newest come first, otherwise they come last and the walk
/// goes backwards from the last page. Pages are as long as the first one (the server's cap).
fn page_positions(first: &[i64], total: usize) -> Vec<usize> {
    let step = first.len();
    if step == 0 {
        return Vec::new();
    }
    let pages = total.max(step).div_ceil(step);
    let mut positions: Vec<usize> = (0..pages).map(|page| page * step).collect();
    let newest_first = step < 2 || first[0] > first[step - 1];
    if !newest_first {
        positions.reverse();
    }
    positions.truncate(MAX_RECOVERY_PAGES);
    positions
}

/// An order id (from status, which anyone allowed to write it controls) as a URL path segment.
fn order_segment(id: &str) -> Result<String, BackendError> {
    http::path_segment(KIND, "order id", id)
}

/// SCM writes serials as colon-separated upper-case hex (spec §3.17).
fn colon_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    padded
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: i64, description: &str) -> CallError {
        CallError::Api {
            status: StatusCode::from_u16(status).unwrap(),
            code,
            description: description.into(),
        }
    }

    #[test]
    fn documented_codes_map_to_kinds() {
        let cases: &[(u16, i64, &str, &str)] = &[
            (401, -16, "Unknown user", "Unauthorized"),
            (400, -970, "Incorrect login credentials.", "Unauthorized"),
            (
                400,
                -1400,
                "The request is being processed by Sectigo.",
                "Pending",
            ),
            (400, 0, "Being processed by Sectigo", "Pending"),
            (400, -183, "Certificate is not collectable.", "Pending"),
            (
                400,
                -109,
                "Certificate is not available now, please try again later.",
                "Pending",
            ),
            (
                400,
                -107,
                "Domain Control Validation is either incomplete or expired for a.example.com.",
                "DomainNotValidated",
            ),
            (
                400,
                -1137,
                "The domain(s) a.example.com have not been validated under the DCV procedure.",
                "DomainNotValidated",
            ),
            (
                400,
                -11,
                "The CSR uses an unsupported algorithm!",
                "InvalidRequest",
            ),
            (
                400,
                -36,
                "The validity period (term) is invalid for this certificate profile.",
                "InvalidRequest",
            ),
            (400, -124, "Wrong SSL certificate id 5.", "NotFound"),
            (
                400,
                -195,
                "CA is not available now. Please try again later.",
                "Unavailable",
            ),
        ];
        for (status, code, description, kind) in cases {
            let error = classify(api(*status, *code, description), "enroll");
            assert_eq!(error.category(), *kind, "{code}");
            assert!(
                error.to_string().contains(description),
                "message {error} must name the cause"
            );
        }
    }

    #[test]
    fn only_waiting_kinds_are_transient() {
        assert!(classify(api(400, -1400, "x"), "collect").is_transient());
        assert!(!classify(api(401, -16, "Unknown user"), "types").is_transient());
        assert!(!classify(api(400, -11, "bad"), "enroll").is_transient());
    }

    #[test]
    fn recovery_walks_pages_from_the_newest_end() {
        // One page: read once.
        assert_eq!(page_positions(&[3, 1, 2], 3), [0]);
        // Newest first (descending ids): forwards.
        assert_eq!(page_positions(&[9, 8], 5), [0, 2, 4]);
        // Oldest first (ascending ids): the last page first, back to the first.
        assert_eq!(page_positions(&[1, 2], 5), [4, 2, 0]);
        assert!(page_positions(&[], 0).is_empty());
        // Bounded.
        assert_eq!(page_positions(&[1, 2], 10_000).len(), MAX_RECOVERY_PAGES);
        assert_eq!(page_positions(&[1, 2], 10_000)[0], 9_998);
    }

    #[test]
    fn only_sectigo_renews_by_id_and_both_flavours_share_the_rest() {
        let sectigo = flavor_capabilities(ScmFlavor::Sectigo);
        let incommon = flavor_capabilities(ScmFlavor::InCommon);
        assert!(sectigo.contains(Capability::Renew));
        assert!(!incommon.contains(Capability::Renew));
        assert_eq!(sectigo.without(Capability::Renew), incommon);
        for capability in [
            Capability::Issue,
            Capability::Revoke,
            Capability::DomainValidation,
            Capability::Discovery,
            Capability::CertificateSearch,
        ] {
            assert!(incommon.contains(capability), "{capability:?}");
        }
    }

    #[test]
    fn serials_are_written_the_scm_way() {
        assert_eq!(colon_serial("a93ec061"), "A9:3E:C0:61");
        assert_eq!(colon_serial("A9:3e:C0:6"), "0A:93:EC:06");
    }
}
