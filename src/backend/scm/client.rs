//! The HTTP layer of the SCM client: one `reqwest` client (rustls, timeouts, optional client
//! certificate and CA bundle), the authentication headers, retries of idempotent requests, and
//! decoding of SCM's `{code, description}` error bodies. Bodies are read up to
//! [`MAX_RESPONSE_BYTES`] and redirects are not followed (see [`crate::backend::http`]). It logs
//! endpoint names and statuses, never headers or bodies.

use std::sync::Arc;

use reqwest::{
    Method, StatusCode,
    header::{HeaderMap, HeaderName, HeaderValue},
};
use serde::Serialize;
use tokio::sync::OnceCell;

use super::{ScmAuth, ScmConfig, ScmFlavor, model::ErrorBody};
use crate::backend::{
    BackendError, BackendKind,
    http::{self, MAX_RESPONSE_BYTES},
    retry::{Backoff, Idempotency, RetryPolicy, parse_retry_after},
};

const KIND: BackendKind = BackendKind::Scm;

/// A failed call: either SCM answered with an error body, or the call failed for a reason that
/// is already classified.
#[derive(Debug)]
pub enum CallError {
    /// SCM answered `status` with `{code, description}`.
    Api {
        /// HTTP status.
        status: StatusCode,
        /// SCM error code.
        code: i64,
        /// SCM message.
        description: String,
    },
    /// Classified already (transport, rate limit, server error, ...).
    Backend(BackendError),
}

/// A successful response.
#[derive(Debug)]
pub struct Reply {
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: bytes::Bytes,
}

/// An SCM REST API family: the `{name}/v{n}` after `/api` that every path of the family
/// shares. Every family the specs document that the operator has a use for, deprecated versions
/// (discovery v2) left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiFamily {
    /// SSL certificates (`scm-ssl.md`).
    SslV1,
    /// SSL import, extended (`scm-ssl.md` §3.25).
    SslV2,
    /// Domain control validation (`scm-dcv-domains.md` §3).
    DcvV1,
    /// Domain control validation status, preferred (`scm-dcv-domains.md` §3.2).
    DcvV2,
    /// Domains and delegations (`scm-dcv-domains.md` §5).
    DomainV1,
    /// DNS connectors (`scm-dcv-domains.md` §6).
    ConnectorV1,
    /// Discovery assignment rules, buckets, operations and Azure tasks
    /// (`scm-discovery-alerts.md` §2.1, §2.7-§2.9).
    DiscoveryV1,
    /// Discovery tasks: list, start, delete (`scm-discovery-alerts.md` §2.1).
    DiscoveryV3,
    /// Discovery tasks: create, update, get (`scm-discovery-alerts.md` §2.1).
    DiscoveryV4,
    /// JSON reports (`scm-discovery-alerts.md` §4.2, `scm-dcv-domains.md` §7).
    ReportV1,
    /// CSV report stream (`scm-discovery-alerts.md` §4.1).
    ReportV2,
    /// Notifications (`scm-discovery-alerts.md` §3).
    NotificationV1,
    /// Network discovery agents (`scm-discovery-alerts.md` §5).
    AgentV1,
}

impl ApiFamily {
    /// Every family.
    pub const ALL: [ApiFamily; 13] = [
        ApiFamily::SslV1,
        ApiFamily::SslV2,
        ApiFamily::DcvV1,
        ApiFamily::DcvV2,
        ApiFamily::DomainV1,
        ApiFamily::ConnectorV1,
        ApiFamily::DiscoveryV1,
        ApiFamily::DiscoveryV3,
        ApiFamily::DiscoveryV4,
        ApiFamily::ReportV1,
        ApiFamily::ReportV2,
        ApiFamily::NotificationV1,
        ApiFamily::AgentV1,
    ];

    /// The family's path after `/api`, e.g. `dcv/v2`.
    pub fn path(self) -> &'static str {
        match self {
            Self::SslV1 => "ssl/v1",
            Self::SslV2 => "ssl/v2",
            Self::DcvV1 => "dcv/v1",
            Self::DcvV2 => "dcv/v2",
            Self::DomainV1 => "domain/v1",
            Self::ConnectorV1 => "connector/v1",
            Self::DiscoveryV1 => "discovery/v1",
            Self::DiscoveryV3 => "discovery/v3",
            Self::DiscoveryV4 => "discovery/v4",
            Self::ReportV1 => "report/v1",
            Self::ReportV2 => "report/v2",
            Self::NotificationV1 => "notification/v1",
            Self::AgentV1 => "agent/v1",
        }
    }
}

/// How the client logs in, as far as URLs are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginStyle {
    /// `login` + `password` headers on `/api/…`.
    Password,
    /// A TLS client certificate + `login` header on `/private/…`.
    ClientCertificate,
}

impl LoginStyle {
    /// The style of `auth`.
    pub fn of(auth: &ScmAuth) -> Self {
        match auth {
            ScmAuth::Password { .. } => Self::Password,
            ScmAuth::ClientCertificate { .. } => Self::ClientCertificate,
        }
    }
}

/// The base URLs of `family` on `host` (`https://host`, no trailing slash), in the order they
/// are tried: the one place the `/private` rule lives. Certificate login puts `/private` before
/// `/api` for every family (`scm-ssl.md` §1.1, `scm-dcv-domains.md` §1.1,
/// `scm-discovery-alerts.md` §1). For InCommon's `ssl/v1` the seeds disagree about the same
/// host: 004 (InCommon's own document, SSL only) writes `/private/ssl/v1`, 001
/// `/private/api/ssl/v1`; both are returned, 004's first. 004 documents no other family, so
/// those follow 001.
pub fn api_bases(host: &str, login: LoginStyle, flavor: ScmFlavor, family: ApiFamily) -> Vec<String> {
    let api = family.path();
    match (login, flavor, family) {
        (LoginStyle::Password, ..) => vec![format!("{host}/api/{api}")],
        (LoginStyle::ClientCertificate, ScmFlavor::InCommon, ApiFamily::SslV1) => {
            vec![
                format!("{host}/private/{api}"),
                format!("{host}/private/api/{api}"),
            ]
        }
        (LoginStyle::ClientCertificate, ..) => vec![format!("{host}/private/api/{api}")],
    }
}

/// The SCM HTTP client.
#[derive(Clone, Debug)]
pub struct ScmHttp {
    http: reqwest::Client,
    /// `https://host`, without a trailing slash.
    host: Arc<str>,
    login: LoginStyle,
    flavor: ScmFlavor,
    /// The one of several candidate bases that answered; shared by clones. Only `ssl/v1` under
    /// InCommon's certificate login has several (see [`api_bases`]).
    detected_base: Arc<OnceCell<String>>,
    auth_headers: HeaderMap,
    retry: RetryPolicy,
}

/// [`ScmHttp`] addressing one [`ApiFamily`].
#[derive(Clone, Copy, Debug)]
pub struct Api<'a> {
    http: &'a ScmHttp,
    family: ApiFamily,
}

impl ScmHttp {
    /// Builds the client for `config`.
    pub fn new(config: &ScmConfig) -> Result<Self, BackendError> {
        // rustls needs a process-wide crypto provider; kube uses ring too. Installing twice is
        // harmless (the second attempt reports the first one is already there).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |message: String| BackendError::Configuration {
            backend: KIND,
            message,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("pki-operator/", env!("CARGO_PKG_VERSION")))
            .https_only(true)
            .redirect(http::no_redirects());
        if let Some(bundle) = &config.ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(bundle.as_bytes())
                .map_err(|e| invalid(format!("caBundle is not a PEM certificate bundle: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let host = config.base_url.trim_end_matches('/');
        if !host.starts_with("https://") {
            return Err(invalid(format!("url {host:?} must start with https://")));
        }
        let mut auth_headers = HeaderMap::new();
        let header = |value: &str, sensitive: bool| {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid("credentials contain characters not allowed in HTTP headers".into()))?;
            value.set_sensitive(sensitive);
            Ok::<_, BackendError>(value)
        };
        auth_headers.insert(
            HeaderName::from_static("customeruri"),
            header(&config.customer_uri, false)?,
        );
        match &config.auth {
            ScmAuth::Password { login, password } => {
                auth_headers.insert(HeaderName::from_static("login"), header(login, true)?);
                auth_headers.insert(
                    HeaderName::from_static("password"),
                    header(password.expose(), true)?,
                );
            }
            ScmAuth::ClientCertificate { login, identity_pem } => {
                let identity =
                    reqwest::Identity::from_pem(identity_pem.expose().as_bytes()).map_err(|_| {
                        invalid(
                            "the client certificate Secret does not hold a PEM certificate and key".into(),
                        )
                    })?;
                builder = builder.identity(identity);
                auth_headers.insert(HeaderName::from_static("login"), header(login, true)?);
            }
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            host: host.into(),
            login: LoginStyle::of(&config.auth),
            flavor: config.flavor,
            detected_base: Arc::new(OnceCell::new()),
            auth_headers,
            retry: config.retry,
        })
    }

    /// The client addressing `family`.
    pub fn api(&self, family: ApiFamily) -> Api<'_> {
        Api { http: self, family }
    }
}

impl Api<'_> {
    /// Sends one API call to `path` (relative to the family's base, e.g. `/enroll`), repeating it only
    /// if it is idempotent. `endpoint` names the call in logs.
    pub async fn call(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + Sync)>,
        idempotency: Idempotency,
    ) -> Result<Reply, CallError> {
        let http = self.http;
        let url = format!(
            "{}{path}",
            http.base(self.family).await.map_err(CallError::Backend)?
        );
        let mut backoff = Backoff::new(http.retry);
        loop {
            let attempt = backoff.attempt();
            let mut request = http
                .http
                .request(method.clone(), &url)
                .headers(http.auth_headers.clone())
                .query(query);
            if let Some(body) = body {
                request = request.json(body);
            }
            let outcome = request.send().await;
            let retryable = idempotency == Idempotency::Idempotent && backoff.can_retry();
            let (error, retry_after) = match outcome {
                Err(error) => {
                    let message = if error.is_timeout() {
                        "request timed out".to_owned()
                    } else if error.is_connect() {
                        "cannot connect".to_owned()
                    } else {
                        // The connection broke before a full response arrived: for a POST the
                        // CA may or may not have acted on it.
                        "the connection failed before a response arrived".to_owned()
                    };
                    tracing::debug!(backend = "scm", endpoint, attempt, error = %error.without_url(), "request failed");
                    (
                        BackendError::Unavailable {
                            backend: KIND,
                            message: format!("{endpoint}: {message}"),
                        },
                        None,
                    )
                }
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(
                        backend = "scm",
                        endpoint,
                        attempt,
                        status = status.as_u16(),
                        "response"
                    );
                    let (headers, body) = read_reply(endpoint, response).await?;
                    if status.is_success() {
                        return Ok(Reply { headers, body });
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let retry_after = parse_retry_after(&headers);
                        if retryable && retry_after.is_none_or(|wait| backoff.may_wait(wait)) {
                            (
                                BackendError::RateLimited {
                                    backend: KIND,
                                    retry_after,
                                },
                                retry_after,
                            )
                        } else {
                            return Err(CallError::Backend(BackendError::RateLimited {
                                backend: KIND,
                                retry_after,
                            }));
                        }
                    } else if status.is_server_error() {
                        let message = format!("{endpoint} answered HTTP {}", status.as_u16());
                        (
                            BackendError::Unavailable {
                                backend: KIND,
                                message,
                            },
                            None,
                        )
                    } else {
                        return Err(decode_error(status, &body));
                    }
                }
            };
            if !retryable {
                return Err(CallError::Backend(error));
            }
            let wait = backoff.next_wait(retry_after);
            tracing::debug!(
                backend = "scm",
                endpoint,
                attempt,
                wait_ms = wait.as_millis(),
                "retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

impl ScmHttp {
    /// The base URL of `family`: its only candidate, or the first of several whose `GET /types`
    /// is answered with anything but 404, detected once (normally by the issuer check) and then
    /// remembered.
    async fn base(&self, family: ApiFamily) -> Result<String, BackendError> {
        let mut candidates = api_bases(&self.host, self.login, self.flavor, family);
        if candidates.len() == 1 {
            return Ok(candidates.swap_remove(0));
        }
        // Only ssl/v1 has several spellings (a test holds api_bases to that), so one cell and
        // its `/types` probe serve.
        self.detected_base
            .get_or_try_init(|| self.detect_base(&candidates))
            .await
            .cloned()
    }

    async fn detect_base(&self, candidates: &[String]) -> Result<String, BackendError> {
        for base in candidates {
            // Any answer but 404 (even 401) proves the path exists; the real call follows.
            let response = self
                .http
                .get(format!("{base}/types"))
                .headers(self.auth_headers.clone())
                .send()
                .await
                .map_err(|error| {
                    tracing::debug!(backend = "scm", error = %error.without_url(), "base path probe failed");
                    BackendError::Unavailable {
                        backend: KIND,
                        message: "types: cannot reach the API to find its base path".into(),
                    }
                })?;
            let status = response.status();
            let path = base_path(base);
            tracing::debug!(backend = "scm", path, status = status.as_u16(), "base path probe");
            if status != StatusCode::NOT_FOUND {
                return Ok(base.clone());
            }
        }
        Err(BackendError::Configuration {
            backend: KIND,
            message: format!(
                "no client-certificate API path answers on this host (tried {})",
                candidates
                    .iter()
                    .map(|base| base_path(base))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        })
    }
}

/// The path part of a base URL (`https://host/private/ssl/v1` → `/private/ssl/v1`).
fn base_path(base: &str) -> &str {
    let without_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    without_scheme
        .find('/')
        .map_or("/", |slash| &without_scheme[slash..])
}

/// The headers and body of a response that is not a redirect, the body read up to
/// [`MAX_RESPONSE_BYTES`].
async fn read_reply(
    endpoint: &'static str,
    response: reqwest::Response,
) -> Result<(HeaderMap, bytes::Bytes), CallError> {
    let status = response.status();
    if status.is_redirection() {
        return Err(CallError::Backend(http::redirect_error(
            KIND,
            endpoint,
            status,
            response.headers(),
            response.url(),
        )));
    }
    let headers = response.headers().clone();
    let body = http::read_body(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|error| {
            CallError::Backend(error.into_backend(KIND, endpoint, |_| BackendError::Unavailable {
                backend: KIND,
                message: format!("{endpoint}: the response body was cut off"),
            }))
        })?;
    Ok((headers, body))
}

/// Decodes a 4xx error body; a body that is not SCM's JSON still yields a classified error.
fn decode_error(status: StatusCode, body: &[u8]) -> CallError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => CallError::Api {
            status,
            code: error.code,
            description: error.description.unwrap_or_default().trim().to_owned(),
        },
        Err(_) if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN => CallError::Api {
            status,
            code: 0,
            description: format!("HTTP {}", status.as_u16()),
        },
        Err(_) => CallError::Backend(BackendError::MalformedResponse {
            backend: KIND,
            operation: "error decoding",
            message: format!("HTTP {} without an SCM error body", status.as_u16()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "https://scm.example";

    #[test]
    fn password_login_uses_api_for_every_family() {
        for flavor in [ScmFlavor::Sectigo, ScmFlavor::InCommon] {
            for family in ApiFamily::ALL {
                assert_eq!(
                    api_bases(HOST, LoginStyle::Password, flavor, family),
                    [format!("{HOST}/api/{}", family.path())],
                    "{flavor:?} {family:?}"
                );
            }
        }
        assert_eq!(
            api_bases(HOST, LoginStyle::Password, ScmFlavor::Sectigo, ApiFamily::DcvV2),
            ["https://scm.example/api/dcv/v2"]
        );
    }

    #[test]
    fn certificate_login_puts_private_before_api_for_every_family() {
        let certificate = LoginStyle::ClientCertificate;
        for family in ApiFamily::ALL {
            assert_eq!(
                api_bases(HOST, certificate, ScmFlavor::Sectigo, family),
                [format!("{HOST}/private/api/{}", family.path())],
                "{family:?}"
            );
        }
        assert_eq!(
            api_bases(HOST, certificate, ScmFlavor::Sectigo, ApiFamily::DiscoveryV4),
            ["https://scm.example/private/api/discovery/v4"]
        );
        assert_eq!(
            api_bases(HOST, certificate, ScmFlavor::InCommon, ApiFamily::NotificationV1),
            ["https://scm.example/private/api/notification/v1"]
        );
    }

    #[test]
    fn incommon_certificate_login_tries_both_ssl_spellings_and_no_other_family_has_two() {
        assert_eq!(
            api_bases(
                HOST,
                LoginStyle::ClientCertificate,
                ScmFlavor::InCommon,
                ApiFamily::SslV1
            ),
            [
                "https://scm.example/private/ssl/v1",
                "https://scm.example/private/api/ssl/v1"
            ]
        );
        // ScmHttp keeps one detection cell probed with ssl/v1's `/types`: that only works
        // while ssl/v1 is the one family with several candidates.
        for login in [LoginStyle::Password, LoginStyle::ClientCertificate] {
            for flavor in [ScmFlavor::Sectigo, ScmFlavor::InCommon] {
                for family in ApiFamily::ALL {
                    let several = api_bases(HOST, login, flavor, family).len() > 1;
                    assert_eq!(
                        several,
                        (login, flavor, family)
                            == (
                                LoginStyle::ClientCertificate,
                                ScmFlavor::InCommon,
                                ApiFamily::SslV1
                            ),
                        "{login:?} {flavor:?} {family:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn family_paths_are_distinct_name_and_version() {
        let mut paths: Vec<&str> = ApiFamily::ALL.iter().map(|f| f.path()).collect();
        for path in &paths {
            let (name, version) = path.split_once('/').unwrap();
            assert!(!name.is_empty() && version.starts_with('v'), "{path}");
        }
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ApiFamily::ALL.len());
    }

    #[test]
    fn base_paths_are_named_without_the_host() {
        assert_eq!(
            base_path("https://h.example:8443/private/ssl/v1"),
            "/private/ssl/v1"
        );
        assert_eq!(base_path("https://h.example"), "/");
    }

    #[test]
    fn error_bodies_are_decoded_or_classified() {
        match decode_error(
            StatusCode::BAD_REQUEST,
            br#"{"code":-1400,"description":"The request is being processed by Sectigo."}"#,
        ) {
            CallError::Api {
                code, description, ..
            } => {
                assert_eq!(code, -1400);
                assert_eq!(description, "The request is being processed by Sectigo.");
            }
            other @ CallError::Backend(_) => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_error(StatusCode::BAD_REQUEST, b"<html>oops</html>"),
            CallError::Backend(BackendError::MalformedResponse { .. })
        ));
        assert!(matches!(
            decode_error(StatusCode::UNAUTHORIZED, b""),
            CallError::Api { .. }
        ));
    }
}
