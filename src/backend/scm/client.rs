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

/// The SCM HTTP client.
#[derive(Clone, Debug)]
pub struct ScmHttp {
    http: reqwest::Client,
    /// `https://host[/private]/api/ssl/v1`, or for InCommon's client-certificate login the two
    /// documented spellings in the order they are tried (see [`ScmHttp::ssl_base`]).
    ssl_bases: Arc<[String]>,
    /// The one of several `ssl_bases` that answered; shared by clones.
    detected_base: Arc<OnceCell<String>>,
    auth_headers: HeaderMap,
    retry: RetryPolicy,
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
        let base = config.base_url.trim_end_matches('/');
        if !base.starts_with("https://") {
            return Err(invalid(format!("url {base:?} must start with https://")));
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
        let ssl_bases: Vec<String> = match &config.auth {
            ScmAuth::Password { login, password } => {
                auth_headers.insert(HeaderName::from_static("login"), header(login, true)?);
                auth_headers.insert(
                    HeaderName::from_static("password"),
                    header(password.expose(), true)?,
                );
                vec![format!("{base}/api/ssl/v1")]
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
                // Spec §1.1/§5: certificate login uses the `/private` prefix. For InCommon the
                // seeds disagree about the same host: 004 (InCommon's own document) writes
                // `/private/ssl/v1`, 001 `/private/api/ssl/v1`. Both are tried, 004's first.
                match config.flavor {
                    ScmFlavor::Sectigo => vec![format!("{base}/private/api/ssl/v1")],
                    ScmFlavor::InCommon => vec![
                        format!("{base}/private/ssl/v1"),
                        format!("{base}/private/api/ssl/v1"),
                    ],
                }
            }
        };
        let http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            ssl_bases: ssl_bases.into(),
            detected_base: Arc::new(OnceCell::new()),
            auth_headers,
            retry: config.retry,
        })
    }

    /// Sends one API call to `path` (relative to the SSL base, e.g. `/enroll`), repeating it only
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
        let url = format!("{}{path}", self.ssl_base().await.map_err(CallError::Backend)?);
        let mut backoff = Backoff::new(self.retry);
        loop {
            let attempt = backoff.attempt();
            let mut request = self
                .http
                .request(method.clone(), &url)
                .headers(self.auth_headers.clone())
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
    /// The SSL API base: the only candidate, or the first of several whose `GET /types` is
    /// answered with anything but 404, detected once (normally by the issuer check) and then
    /// remembered.
    async fn ssl_base(&self) -> Result<&str, BackendError> {
        if let [only] = &*self.ssl_bases {
            return Ok(only);
        }
        self.detected_base
            .get_or_try_init(|| self.detect_base())
            .await
            .map(String::as_str)
    }

    async fn detect_base(&self) -> Result<String, BackendError> {
        for base in self.ssl_bases.iter() {
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
                self.ssl_bases
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
