//! The HTTP layer of the Nexus client: one `reqwest` client with the officer's TLS identity, the
//! three request encodings (query, form, multipart), the `{error, msg}` envelope decoded by its
//! JSON code rather than the HTTP status (errors come back as 500, the `-19` challenge as 200),
//! the caller-signing round trip, and bounded retries. Bodies are read up to
//! [`MAX_RESPONSE_BYTES`] and redirects are not followed (see [`crate::backend::http`]). It logs
//! endpoint names, statuses and error codes, never bodies, `dataToSign` or signatures.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use reqwest::{
    Method, StatusCode,
    header::{ACCEPT, CONTENT_TYPE, HeaderMap},
};

use super::{
    NexusConfig,
    model::{CertificateError, Envelope},
    signing::OfficerSigner,
};
use crate::backend::{
    BackendError, BackendKind,
    http::{self, MAX_RESPONSE_BYTES},
    retry::{Backoff, Idempotency, RetryPolicy, parse_retry_after},
};

const KIND: BackendKind = BackendKind::Nexus;

/// How a request carries its fields (spec §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Query string (every GET).
    Query,
    /// `application/x-www-form-urlencoded` (revoke, reinstate).
    Form,
    /// `multipart/form-data` (issuance).
    Multipart,
}

/// One query parameter, form field or multipart part.
#[derive(Clone, Debug)]
pub struct Field {
    /// Name.
    pub name: &'static str,
    /// Value (text; binary parts are sent base64-encoded, as the spec's working client does).
    pub value: String,
    /// Part `Content-Type` (multipart only).
    pub content_type: Option<&'static str>,
}

impl Field {
    /// A plain field.
    pub fn new(name: &'static str, value: impl Into<String>) -> Self {
        Self {
            name,
            value: value.into(),
            content_type: None,
        }
    }
}

/// A request, built once and re-sent unchanged after a `-19` challenge: the signature covers
/// the fields, so the re-send must carry exactly the same ones (spec §12).
#[derive(Clone, Debug)]
pub struct Request {
    /// Operation name for logs.
    pub endpoint: &'static str,
    /// Method.
    pub method: Method,
    /// Path below the base URL, e.g. `/certificates/pkcs10`.
    pub path: String,
    /// How `fields` travel.
    pub encoding: Encoding,
    /// The fields, in order.
    pub fields: Vec<Field>,
    /// `Accept` header.
    pub accept: Option<String>,
    /// Whether repeating the request after an unknown outcome is harmless.
    pub idempotency: Idempotency,
}

/// A successful answer.
#[derive(Debug)]
pub enum Answer {
    /// A JSON body whose `error` is 0.
    Json(Bytes),
    /// A binary result (certificate, chain, PKCS#7).
    Binary(Bytes),
}

/// A failed call: CM answered with an error code, or the failure is already classified.
#[derive(Debug)]
pub enum CallError {
    /// CM's `{error, msg, errors}`.
    Api {
        /// `error`.
        code: i64,
        /// `msg`.
        msg: String,
        /// `errors[]` of revoke and reinstate.
        errors: Vec<CertificateError>,
    },
    /// Classified already (transport, rate limit, server error, configuration, ...).
    Backend(BackendError),
}

impl From<BackendError> for CallError {
    fn from(error: BackendError) -> Self {
        Self::Backend(error)
    }
}

/// What one exchange produced.
enum Outcome {
    Answer(Answer),
    /// `-19`: the base64 `dataToSign`.
    Challenge(String),
}

/// The Nexus HTTP client.
#[derive(Clone, Debug)]
pub struct NexusHttp {
    http: reqwest::Client,
    /// `https://host:port/basePath`, no trailing slash.
    base: String,
    signer: Option<Arc<OfficerSigner>>,
    retry: RetryPolicy,
}

impl NexusHttp {
    /// Builds the client for `config`; `signer` answers `-19` challenges (caller signing).
    pub fn new(config: &NexusConfig, signer: Option<Arc<OfficerSigner>>) -> Result<Self, BackendError> {
        // rustls needs a process-wide crypto provider; kube uses ring too. Installing twice is
        // harmless (the second attempt reports the first one is already there).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |message: String| BackendError::Configuration {
            backend: KIND,
            message,
        };
        let base = config.base_url.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            return Err(invalid(format!("url {base:?} must start with https://")));
        }
        let identity =
            reqwest::Identity::from_pem(config.identity_pem.expose().as_bytes()).map_err(|_| {
                invalid("the client certificate Secret does not hold a PEM certificate and its key".into())
            })?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("pki-operator/", env!("CARGO_PKG_VERSION")))
            .https_only(true)
            .redirect(http::no_redirects())
            .identity(identity);
        if let Some(bundle) = &config.ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(bundle.as_bytes())
                .map_err(|e| invalid(format!("caBundle is not a PEM certificate bundle: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            signer,
            retry: config.retry,
        })
    }

    /// Sends `request`; a `-19` challenge is answered by signing `dataToSign` and sending the
    /// same request again with `signature`. Failures are repeated as [`retry_decision`] allows,
    /// all attempts of the call counted against one budget; a signed request that CM refused
    /// before running it (`-40`, `-12`) starts over with a fresh challenge, since the data to sign
    /// may carry a time.
    pub async fn send(&self, request: &Request) -> Result<Answer, CallError> {
        let mut backoff = Backoff::new(self.retry);
        loop {
            let data_to_sign = match self.send_with_retries(request, None, &mut backoff).await? {
                Outcome::Answer(answer) => return Ok(answer),
                Outcome::Challenge(data) => data,
            };
            let signature = self.sign(request.endpoint, &data_to_sign)?;
            let attempt = backoff.attempt();
            let failure = match self.exchange(request, Some(&signature), attempt).await {
                Ok(Outcome::Answer(answer)) => return Ok(answer),
                Ok(Outcome::Challenge(_)) => {
                    return Err(BackendError::Unauthorized {
                        backend: KIND,
                        message: format!(
                            "{}: the gateway asked for a signature again after a signed request \
                             (error -19); the signer is not accepted as a CM officer",
                            request.endpoint
                        ),
                    }
                    .into());
                }
                Err(failure) => failure,
            };
            if !self.wait_to_retry(request, &failure, &mut backoff, attempt).await {
                return Err(failure);
            }
        }
    }

    /// Signs the base64 `dataToSign` as the officer; the base64 of the CMS `SignedData`.
    fn sign(&self, endpoint: &'static str, data_to_sign: &str) -> Result<String, CallError> {
        let Some(signer) = &self.signer else {
            return Err(BackendError::Configuration {
                backend: KIND,
                message: format!(
                    "{endpoint}: the gateway asks the caller to sign (error -19) but the issuer's \
                     signingMode is Server; set signingMode: Caller"
                ),
            }
            .into());
        };
        // Line breaks are tolerated, as some servers wrap base64 (spec §3.2).
        let compact: String = data_to_sign.chars().filter(|c| !c.is_whitespace()).collect();
        let raw = STANDARD
            .decode(compact)
            .map_err(|_| BackendError::MalformedResponse {
                backend: KIND,
                operation: endpoint,
                message: "dataToSign is not base64".into(),
            })?;
        let signature = signer.sign(&raw).map_err(|e| BackendError::Configuration {
            backend: KIND,
            message: e.to_string(),
        })?;
        tracing::debug!(backend = "nexus", endpoint, "signed the request");
        Ok(STANDARD.encode(signature))
    }

    async fn send_with_retries(
        &self,
        request: &Request,
        signature: Option<&str>,
        backoff: &mut Backoff,
    ) -> Result<Outcome, CallError> {
        loop {
            let attempt = backoff.attempt();
            let failure = match self.exchange(request, signature, attempt).await {
                Ok(outcome) => return Ok(outcome),
                Err(failure) => failure,
            };
            if !self.wait_to_retry(request, &failure, backoff, attempt).await {
                return Err(failure);
            }
        }
    }

    /// Waits before repeating `request` after `failure` and returns true, or returns false when
    /// it must not be repeated (or the attempts are used up).
    async fn wait_to_retry(
        &self,
        request: &Request,
        failure: &CallError,
        backoff: &mut Backoff,
        attempt: u32,
    ) -> bool {
        let (retry_after, may_retry) = retry_decision(failure, request.idempotency);
        let waitable = retry_after.is_none_or(|wait| backoff.may_wait(wait));
        if !(may_retry && waitable && backoff.can_retry()) {
            return false;
        }
        let wait = backoff.next_wait(retry_after);
        tracing::debug!(
            backend = "nexus",
            endpoint = request.endpoint,
            attempt,
            wait_ms = wait.as_millis(),
            "retrying"
        );
        tokio::time::sleep(wait).await;
        true
    }

    /// One HTTP round trip.
    async fn exchange(
        &self,
        request: &Request,
        signature: Option<&str>,
        attempt: u32,
    ) -> Result<Outcome, CallError> {
        let endpoint = request.endpoint;
        let mut fields = request.fields.clone();
        if let Some(signature) = signature {
            fields.push(Field {
                name: "signature",
                value: signature.to_owned(),
                content_type: Some("application/octet-stream"),
            });
        }
        let mut url = format!("{}{}", self.base, request.path);
        let mut builder = match request.encoding {
            Encoding::Query => {
                if !fields.is_empty() {
                    url.push('?');
                    url.push_str(&query_string(&fields));
                }
                self.http.request(request.method.clone(), &url)
            }
            Encoding::Form => self
                .http
                .request(request.method.clone(), &url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                // Spec §3.2: base64 `+`, `/` and `=` must be percent-encoded in a form body.
                .body(query_string(&fields)),
            Encoding::Multipart => {
                let boundary = format!("pki-operator-{:016x}", fastrand::u64(..));
                self.http
                    .request(request.method.clone(), &url)
                    .header(CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
                    .body(multipart_body(&fields, &boundary))
            }
        };
        if let Some(accept) = &request.accept {
            builder = builder.header(ACCEPT, accept);
        }
        let response = builder
            .send()
            .await
            .map_err(|error| transport_error(endpoint, attempt, &error))?;
        let status = response.status();
        if status.is_redirection() {
            tracing::debug!(
                backend = "nexus",
                endpoint,
                attempt,
                status = status.as_u16(),
                "redirect"
            );
            return Err(
                http::redirect_error(KIND, endpoint, status, response.headers(), response.url()).into(),
            );
        }
        let headers = response.headers().clone();
        let body = http::read_body(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| {
                CallError::Backend(
                    error.into_backend(KIND, endpoint, |error| transport_error(endpoint, attempt, &error)),
                )
            })?;
        decode(endpoint, attempt, status, &headers, body)
    }
}

/// Whether a failure may be repeated and how long CM asked us to wait. Requests whose outcome
/// is unknown are repeated only when idempotent; `-40`, `-12` and HTTP 429 prove the request was
/// refused before it ran, so even an issuance may be sent again after them.
fn retry_decision(failure: &CallError, idempotency: Idempotency) -> (Option<Duration>, bool) {
    let idempotent = idempotency == Idempotency::Idempotent;
    match failure {
        CallError::Api { code: -40 | -12, .. } => (None, true),
        CallError::Backend(BackendError::RateLimited { retry_after, .. }) => (*retry_after, true),
        CallError::Api { code: -18, .. } | CallError::Backend(BackendError::Unavailable { .. }) => {
            (None, idempotent)
        }
        CallError::Api { .. } | CallError::Backend(_) => (None, false),
    }
}

/// Turns a response into an outcome by the JSON `error` code first, the HTTP status second.
fn decode(
    endpoint: &'static str,
    attempt: u32,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Outcome, CallError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    // Certificates come as DER (0x30) or PEM ('-'); the envelope is JSON whatever its label.
    let looks_json =
        content_type.contains("json") || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let envelope = looks_json
        .then(|| serde_json::from_slice::<Envelope>(&body))
        .and_then(Result::ok)
        .and_then(|envelope| envelope.error.map(|code| (code, envelope)));
    if let Some((code, envelope)) = envelope {
        tracing::debug!(
            backend = "nexus",
            endpoint,
            attempt,
            status = status.as_u16(),
            code,
            "response"
        );
        return match code {
            0 if status.is_success() => Ok(Outcome::Answer(Answer::Json(body))),
            -19 => envelope
                .data_to_sign
                .filter(|data| !data.trim().is_empty())
                .map(Outcome::Challenge)
                .ok_or_else(|| {
                    BackendError::MalformedResponse {
                        backend: KIND,
                        operation: endpoint,
                        message: "error -19 without dataToSign".into(),
                    }
                    .into()
                }),
            0 => Err(BackendError::MalformedResponse {
                backend: KIND,
                operation: endpoint,
                message: format!("HTTP {} with error 0", status.as_u16()),
            }
            .into()),
            code => Err(CallError::Api {
                code,
                msg: envelope.msg.trim().to_owned(),
                errors: envelope.errors,
            }),
        };
    }
    tracing::debug!(
        backend = "nexus",
        endpoint,
        attempt,
        status = status.as_u16(),
        "response"
    );
    if status == StatusCode::OK {
        if looks_json {
            // JSON without the envelope's `error`: not CM's answer (a proxy's, perhaps).
            return Err(BackendError::MalformedResponse {
                backend: KIND,
                operation: endpoint,
                message: "HTTP 200 with JSON that is not the CM envelope".into(),
            }
            .into());
        }
        return Ok(Outcome::Answer(Answer::Binary(body)));
    }
    let http = status.as_u16();
    // Not the JSON envelope: Tomcat or a proxy answered (spec §4 "(inferred) Also handle plain
    // Tomcat 4xx/5xx HTML bodies").
    Err(match status {
        StatusCode::TOO_MANY_REQUESTS => BackendError::RateLimited {
            backend: KIND,
            retry_after: parse_retry_after(headers),
        },
        s if s.is_server_error() => BackendError::Unavailable {
            backend: KIND,
            message: format!("{endpoint} answered HTTP {http}"),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => BackendError::Unauthorized {
            backend: KIND,
            message: format!("{endpoint} answered HTTP {http}; the officer certificate is not accepted"),
        },
        StatusCode::NOT_FOUND => BackendError::Configuration {
            backend: KIND,
            message: format!(
                "{endpoint} answered HTTP 404: check that url includes the gateway's base path, e.g. \
                 https://host:8444/pgwy/api"
            ),
        },
        _ => BackendError::MalformedResponse {
            backend: KIND,
            operation: endpoint,
            message: format!("HTTP {http} without the CM error envelope"),
        },
    }
    .into())
}

/// Classifies a failed round trip; a TLS refusal names its side and the fix.
fn transport_error(endpoint: &'static str, attempt: u32, error: &reqwest::Error) -> BackendError {
    tracing::debug!(backend = "nexus", endpoint, attempt, error = %causes(error), "request failed");
    if let Some(tls) = rustls_error(error) {
        use rustls::{AlertDescription as Alert, Error as Tls};
        return match tls {
            Tls::AlertReceived(
                alert @ (Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::AccessDenied
                | Alert::CertificateRequired),
            ) => BackendError::Unauthorized {
                backend: KIND,
                message: format!(
                    "the gateway refused the TLS client certificate (TLS alert {alert:?}); the client \
                     certificate Secret must hold a CM officer certificate issued by a CA the gateway trusts"
                ),
            },
            Tls::InvalidCertificate(reason) => BackendError::Configuration {
                backend: KIND,
                message: format!(
                    "the gateway's TLS certificate is not trusted ({reason:?}); set caBundle to the CA \
                     that issued it"
                ),
            },
            other => BackendError::Unavailable {
                backend: KIND,
                message: format!("{endpoint}: TLS failure: {other}"),
            },
        };
    }
    let message = if error.is_timeout() {
        "request timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        // The connection broke before a full response arrived: for a POST the CA may or may not
        // have acted on it.
        "the connection failed before a response arrived"
    };
    BackendError::Unavailable {
        backend: KIND,
        message: format!("{endpoint}: {message}"),
    }
}

/// The causes of a reqwest error without its own message, which names the URL (and the URL may
/// carry search filters).
fn causes(error: &reqwest::Error) -> String {
    let mut text = String::from(if error.is_timeout() {
        "timeout"
    } else {
        "request error"
    });
    let mut current = std::error::Error::source(error);
    while let Some(cause) = current {
        let _ = write!(text, ": {cause}");
        current = cause.source();
    }
    text
}

/// The rustls error somewhere in `error`'s causes. `io::Error` hides a wrapped error from
/// `source()`, so it is unwrapped explicitly.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && let Some(tls) = rustls_error(inner)
    {
        return Some(tls);
    }
    error.source().and_then(rustls_error)
}

/// `name=value&...` with every byte outside RFC 3986's unreserved set percent-encoded: spaces
/// become `%20`, not `+` (spec §4 for the `issuer` filter), and base64 survives a form body.
pub fn query_string(fields: &[Field]) -> String {
    let mut out = String::new();
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        http::percent_encode(field.name, &mut out);
        out.push('=');
        http::percent_encode(&field.value, &mut out);
    }
    out
}

fn multipart_body(fields: &[Field], boundary: &str) -> Vec<u8> {
    let mut body = String::new();
    for field in fields {
        let _ = write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n",
            field.name
        );
        if let Some(content_type) = field.content_type {
            let _ = write!(body, "Content-Type: {content_type}\r\n");
        }
        let _ = write!(body, "\r\n{}\r\n", field.value);
    }
    let _ = write!(body, "--{boundary}--\r\n");
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers
    }

    #[test]
    fn the_json_code_decides_not_the_status() {
        let challenge = decode(
            "issue",
            1,
            StatusCode::OK,
            &json_headers(),
            Bytes::from_static(br#"{"error":-19,"msg":"Sign request and send again","dataToSign":"MAA="}"#),
        );
        assert!(matches!(challenge, Ok(Outcome::Challenge(data)) if data == "MAA="));
        let not_found = decode(
            "details",
            1,
            StatusCode::INTERNAL_SERVER_ERROR,
            &json_headers(),
            Bytes::from_static(br#"{"error":-14,"msg":"No certificate found"}"#),
        );
        assert!(
            matches!(not_found, Err(CallError::Api { code: -14, ref msg, .. }) if msg == "No certificate found")
        );
        let rate_limited = decode(
            "list",
            1,
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            Bytes::from_static(br#" {"error":-40,"msg":"Too many requests"}"#),
        );
        assert!(matches!(rate_limited, Err(CallError::Api { code: -40, .. })));
        let html = decode(
            "list",
            1,
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            Bytes::from_static(b"<html>Bad Gateway</html>"),
        );
        assert!(matches!(
            html,
            Err(CallError::Backend(BackendError::Unavailable { .. }))
        ));
        let wrong_path = decode("list", 1, StatusCode::NOT_FOUND, &HeaderMap::new(), Bytes::new());
        assert!(matches!(
            wrong_path,
            Err(CallError::Backend(BackendError::Configuration { .. }))
        ));
        let garbage = decode(
            "list",
            1,
            StatusCode::OK,
            &json_headers(),
            Bytes::from_static(b"{not json"),
        );
        assert!(matches!(
            garbage,
            Err(CallError::Backend(BackendError::MalformedResponse { .. }))
        ));
    }

    #[test]
    fn issuance_is_repeated_only_after_a_proven_refusal() {
        let api = |code| CallError::Api {
            code,
            msg: String::new(),
            errors: Vec::new(),
        };
        let unavailable = CallError::Backend(BackendError::Unavailable {
            backend: KIND,
            message: String::new(),
        });
        assert!(retry_decision(&api(-40), Idempotency::Once).1);
        assert!(retry_decision(&api(-12), Idempotency::Once).1);
        assert!(!retry_decision(&api(-18), Idempotency::Once).1);
        assert!(retry_decision(&api(-18), Idempotency::Idempotent).1);
        assert!(!retry_decision(&unavailable, Idempotency::Once).1);
        assert!(retry_decision(&unavailable, Idempotency::Idempotent).1);
        assert!(!retry_decision(&api(-14), Idempotency::Idempotent).1);
        assert!(!retry_decision(&api(-17), Idempotency::Idempotent).1);
    }

    #[test]
    fn form_and_query_values_are_percent_encoded() {
        let fields = [
            Field::new("issuer", "cn=Example CM CA,o=Example CM,c=SE"),
            Field::new("signature", "ab+/c="),
        ];
        assert_eq!(
            query_string(&fields),
            "issuer=cn%3DExample%20CM%20CA%2Co%3DExample%20CM%2Cc%3DSE&signature=ab%2B%2Fc%3D"
        );
    }

    #[test]
    fn multipart_parts_carry_their_content_type() {
        let fields = [
            Field {
                name: "pkcs10",
                value: "MIIB".into(),
                content_type: Some("application/pkcs10"),
            },
            Field::new("procname", "TLS Server"),
        ];
        let body = String::from_utf8(multipart_body(&fields, "b1")).unwrap();
        assert_eq!(
            body,
            "--b1\r\nContent-Disposition: form-data; name=\"pkcs10\"\r\nContent-Type: application/pkcs10\r\n\r\nMIIB\r\n\
             --b1\r\nContent-Disposition: form-data; name=\"procname\"\r\n\r\nTLS Server\r\n--b1--\r\n"
        );
    }
}
