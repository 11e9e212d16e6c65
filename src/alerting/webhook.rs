//! Alert delivery by webhook: one HTTP POST of a JSON payload ([`message::slack_payload`],
//! [`message::teams_payload`] or [`message::generic_payload`]) to a URL held in a Secret,
//! optionally with a bearer token. The URL is a credential (Slack and Teams webhook URLs are the
//! secret), so neither it nor the token appears in `Debug`, errors or logs: only its scheme and
//! host do.

use std::{fmt, time::Duration};

use reqwest::{
    Url,
    header::{AUTHORIZATION, HeaderValue},
};

use super::{Notification, email::ChannelError, message};
use crate::{crd::v1alpha1::alert_config::WebhookFormat, pki::credentials::SecretString};

/// How long connecting may take, and the whole request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on one POST, answer included; chat services answer in well under a second.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts alerts to one webhook. Cloning is cheap (one connection pool).
#[derive(Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
    url: Url,
    format: WebhookFormat,
    /// `Bearer <token>`, marked sensitive.
    authorization: Option<HeaderValue>,
    /// `scheme://host[:port]`: all of the URL an error may show.
    endpoint: String,
}

impl fmt::Debug for WebhookSender {
    // Hand-written: the URL's path and query and the token are credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("endpoint", &self.endpoint)
            .field("format", &self.format)
            .field("bearer_token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender posting `format` payloads to `url` (`http://` or `https://`), with
    /// `Authorization: Bearer <bearer_token>` when given, trusting the system roots plus the PEM
    /// `ca_bundle`. Plain `http://` is accepted for a receiver inside the cluster or on a trusted
    /// network (and the tests' loopback receiver); the URL and token then travel unencrypted.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the sender takes the secrets over so the caller keeps no copy"
    )]
    pub fn new(
        url: SecretString,
        format: WebhookFormat,
        bearer_token: Option<SecretString>,
        ca_bundle: Option<&str>,
    ) -> Result<Self, ChannelError> {
        // reqwest is built without a crypto provider of its own; kube's is ring too. Installing
        // twice is harmless (the second attempt reports the first one is already there).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |message: String| ChannelError::InvalidConfig { message };
        // The parse error is reqwest's own description; it never repeats the input.
        let url = Url::parse(url.expose().trim())
            .map_err(|e| invalid(format!("the webhook URL is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!(
                "the webhook URL must be http(s)://host/...; it is {}",
                endpoint(&url)
            )));
        }
        let authorization = bearer_token
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose().trim()))
                    .map_err(|_| invalid("the bearer token holds characters a header cannot carry".into()))?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("pki-operator/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(bundle) = ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(bundle.as_bytes())
                .map_err(|e| invalid(format!("caBundle is not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(invalid("caBundle holds no PEM certificate".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {}", describe(&e))))?;
        Ok(Self {
            endpoint: endpoint(&url),
            http,
            url,
            format,
            authorization,
        })
    }

    /// Posts `n`; any 2xx is a delivery.
    pub async fn send(&self, n: &Notification) -> Result<(), ChannelError> {
        let payload = match self.format {
            WebhookFormat::Generic => message::generic_payload(n),
            WebhookFormat::Slack => message::slack_payload(n),
            WebhookFormat::Teams => message::teams_payload(n),
        };
        let mut request = self.http.post(self.url.clone()).json(&payload);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let response = request.send().await.map_err(|e| ChannelError::Transport {
            endpoint: self.endpoint.clone(),
            message: describe(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(ChannelError::Http {
                endpoint: self.endpoint.clone(),
                status: status.as_u16(),
            })
        }
    }
}

/// `scheme://host[:port]`: the part of a webhook URL that is no secret.
fn endpoint(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// reqwest's error and its causes, without the URL reqwest would put first.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // The causes are hyper's, the socket's and rustls' words; a URL would only come from a
        // reqwest error nested inside, which is skipped for safety.
        if !cause_text.contains("://") && !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://hooks.slack.com/services/T000/B000/XXXXSECRETPATH";

    #[test]
    fn debug_and_errors_show_no_url_path_or_token() {
        let sender = WebhookSender::new(
            SecretString::new(URL),
            WebhookFormat::Slack,
            Some(SecretString::new("tok3n-secret")),
            None,
        )
        .unwrap();
        let debug = format!("{sender:?}");
        assert!(debug.contains("https://hooks.slack.com"), "{debug}");
        assert!(
            !debug.contains("XXXXSECRETPATH") && !debug.contains("tok3n"),
            "{debug}"
        );
        let error = ChannelError::Http {
            endpoint: sender.endpoint.clone(),
            status: 404,
        };
        assert_eq!(error.to_string(), "https://hooks.slack.com answered HTTP 404");
    }

    #[test]
    fn bad_urls_tokens_and_bundles_are_refused_without_echoing_them() {
        let new = |url: &str, token: Option<&str>, bundle: Option<&str>| {
            WebhookSender::new(
                SecretString::new(url),
                WebhookFormat::Generic,
                token.map(SecretString::new),
                bundle,
            )
            .unwrap_err()
        };
        let error = new("not a url SECRET", None, None);
        assert!(
            error.is_permanent() && !error.to_string().contains("SECRET"),
            "{error}"
        );
        let error = new("ftp://files.example.com/SECRET", None, None);
        assert!(error.to_string().contains("ftp://files.example.com"), "{error}");
        assert!(!error.to_string().contains("SECRET"), "{error}");
        let error = new(URL, Some("line\nbreak-SECRET"), None);
        assert!(!error.to_string().contains("SECRET"), "{error}");
        let error = new(URL, None, Some("no pem here"));
        assert!(error.to_string().contains("caBundle"), "{error}");
    }

    #[test]
    fn the_endpoint_keeps_scheme_host_and_port_only() {
        let url = Url::parse("https://user:pw@example.com:8443/a/b?token=x").unwrap();
        assert_eq!(endpoint(&url), "https://example.com:8443");
        let url = Url::parse("http://127.0.0.1/hook").unwrap();
        assert_eq!(endpoint(&url), "http://127.0.0.1");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_hides_the_path() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sender = WebhookSender::new(
            SecretString::new(format!("http://127.0.0.1:{port}/hooks/SECRETPATH")),
            WebhookFormat::Generic,
            Some(SecretString::new("tok3n")),
            None,
        )
        .unwrap();
        let n = Notification {
            alert_config: "a".into(),
            level: crate::crd::v1alpha1::alert_config::Level::INFO,
            subject: super::super::AlertSubject::Discovered {
                location: "l".into(),
                task: "ns/t".into(),
                issuer: "CN=x".into(),
            },
            common_name: None,
            dns_names: vec![],
            serial: None,
            not_after: None,
            days_left: Some(40),
            repeat: false,
        };
        let error = sender.send(&n).await.unwrap_err();
        let text = error.to_string();
        assert!(!error.is_permanent(), "{text}");
        assert!(
            text.starts_with(&format!(
                "cannot deliver to http://127.0.0.1:{port}: cannot connect"
            )),
            "{text}"
        );
        assert!(!text.contains("SECRETPATH") && !text.contains("tok3n"), "{text}");
    }
}
