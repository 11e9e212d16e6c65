//! Alert email over SMTP (lettre, tokio + rustls with ring): the connection settings of an
//! AlertConfig's `channels.email`, a sender built once from them, and [`ChannelError`], the error
//! every delivery channel (email and [`super::webhook`]) reports: it classifies failures as
//! permanent (fix the configuration) or transient (retry), and its text never holds a password,
//! token or webhook URL, so it can go into status, Events and logs as it is.

use std::{fmt, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        self,
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};

use super::{Notification, message};
use crate::{crd::v1alpha1::alert_config::SmtpSecurity, pki::credentials::SecretString};

/// How long connecting and each SMTP command may take. A relay that answers slower than this is
/// treated as down; the controller retries with backoff.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// The bound on one whole delivery (connect, TLS, AUTH, envelope, data, quit): several commands
/// that each take just under [`SMTP_TIMEOUT`] must not hold a reconcile for minutes.
const SEND_DEADLINE: Duration = Duration::from_secs(60);

/// Why a notification could not be delivered on a channel. `Display` names the endpoint by host
/// (and port) only: never a password, bearer token or webhook URL path, which embeds credentials.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The channel's settings cannot work (bad address, bad CA bundle, bad URL): permanent.
    #[error("invalid channel configuration: {message}")]
    InvalidConfig {
        /// What is wrong, naming the offending value when it is no secret.
        message: String,
    },
    /// The endpoint could not be reached or the connection broke (refused, timeout, TLS): transient.
    #[error("cannot deliver to {endpoint}: {message}")]
    Transport {
        /// `host:port` of the SMTP server, or `scheme://host[:port]` of the webhook.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The SMTP server refused the message or the login with a reply code.
    #[error("{endpoint} rejected the message with SMTP {code}: {message}")]
    Rejected {
        /// `host:port` of the SMTP server.
        endpoint: String,
        /// The SMTP reply code (4xx transient, 5xx permanent).
        code: u16,
        /// The server's explanation.
        message: String,
    },
    /// The webhook answered with a non-2xx HTTP status.
    #[error("{endpoint} answered HTTP {status}")]
    Http {
        /// `scheme://host[:port]` of the webhook.
        endpoint: String,
        /// The status code.
        status: u16,
    },
}

impl ChannelError {
    /// True when retrying cannot help until someone changes the configuration: invalid settings,
    /// an SMTP 5xx, or an HTTP 4xx other than 408 (timeout) and 429 (rate limited). Everything
    /// else is transient: unreachable, HTTP 5xx, SMTP 4xx, and TLS failures too (lettre does not
    /// tell an untrusted certificate from a handshake cut short, and a retry costs little).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidConfig { .. } => true,
            Self::Transport { .. } => false,
            Self::Rejected { code, .. } => *code >= 500,
            Self::Http { status, .. } => (400..500).contains(status) && !matches!(status, 408 | 429),
        }
    }
}

/// Where and how alert email is sent: an AlertConfig's `channels.email` with its credentials
/// read from the Secret.
#[derive(Clone, Debug)]
pub struct EmailSettings {
    /// SMTP server host name (or IP address).
    pub host: String,
    /// SMTP server port; [`default_port`] when the AlertConfig names none.
    pub port: u16,
    /// STARTTLS (required), implicit TLS, or none.
    pub security: SmtpSecurity,
    /// `(username, password)` for SMTP AUTH; none: no AUTH.
    pub credentials: Option<(String, SecretString)>,
    /// Sender address (`alerts@example.com` or `PKI <alerts@example.com>`).
    pub from: String,
    /// Recipient addresses.
    pub to: Vec<String>,
    /// PEM CAs trusted for the server's certificate in addition to the system roots.
    pub ca_bundle: Option<String>,
}

/// The conventional port of a security mode: 587 (submission with STARTTLS), 465 (implicit TLS),
/// 25 (plain relay).
pub fn default_port(security: SmtpSecurity) -> u16 {
    match security {
        SmtpSecurity::StartTLS => 587,
        SmtpSecurity::TLS => 465,
        SmtpSecurity::None => 25,
    }
}

/// Sends alert email over one SMTP configuration. Build it once per configuration; each
/// [`EmailSender::send`] opens its own connection (alerts are rare, a pool would idle).
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `host:port`, for error messages.
    endpoint: String,
}

impl fmt::Debug for EmailSender {
    // Hand-written: the transport holds the SMTP credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSender")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

impl EmailSender {
    /// A sender for `settings`; fails with [`ChannelError::InvalidConfig`] naming the address or
    /// setting that cannot work.
    pub fn new(settings: EmailSettings) -> Result<Self, ChannelError> {
        let invalid = |message: String| ChannelError::InvalidConfig { message };
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| invalid(format!("from address {:?} is not valid: {e}", settings.from)))?;
        if settings.to.is_empty() {
            return Err(invalid("no recipient (to) address".into()));
        }
        let to = settings
            .to
            .iter()
            .map(|address| {
                address
                    .parse::<Mailbox>()
                    .map_err(|e| invalid(format!("to address {address:?} is not valid: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if settings.host.trim().is_empty() {
            return Err(invalid("the SMTP host is empty".into()));
        }
        let tls = tls(&settings)?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((username, password)) = settings.credentials {
            builder = builder.credentials(Credentials::new(username, password.expose().to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            to,
            endpoint: format!("{}:{}", settings.host, settings.port),
        })
    }

    /// Sends `n` to every recipient in one message: `multipart/alternative` with the plain-text
    /// and HTML bodies of [`message`].
    pub async fn send(&self, n: &Notification) -> Result<(), ChannelError> {
        let email = self.compose(n)?;
        match tokio::time::timeout(SEND_DEADLINE, self.transport.send(email)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(self.classify(&error)),
            Err(_) => Err(ChannelError::Transport {
                endpoint: self.endpoint.clone(),
                message: format!("no answer within {}s", SEND_DEADLINE.as_secs()),
            }),
        }
    }

    fn compose(&self, n: &Notification) -> Result<Message, ChannelError> {
        // A Message-ID (random, at this host's name): relays and spam filters expect one, and
        // lettre adds it only when asked.
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(message::email_subject(n))
            .message_id(None);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                message::email_text(n),
                message::email_html(n),
            ))
            .map_err(|e| ChannelError::InvalidConfig {
                message: format!("cannot build the email: {e}"),
            })
    }

    /// Maps lettre's error: a reply code is a rejection, anything else a transport failure.
    fn classify(&self, error: &smtp::Error) -> ChannelError {
        let endpoint = self.endpoint.clone();
        // lettre's text is its kind plus the source (an I/O error, rustls' reason or the server's
        // reply); it never holds the credentials, which go out only inside AUTH.
        let message = error.to_string();
        match error.status() {
            Some(code) => ChannelError::Rejected {
                endpoint,
                code: code.into(),
                message,
            },
            None => ChannelError::Transport { endpoint, message },
        }
    }
}

/// lettre's TLS mode for `settings`: STARTTLS required (never silently plain), implicit TLS, or
/// none; trusting the platform's roots plus the `ca_bundle`.
fn tls(settings: &EmailSettings) -> Result<Tls, ChannelError> {
    if settings.security == SmtpSecurity::None {
        return Ok(Tls::None);
    }
    let mut parameters = TlsParameters::builder(settings.host.clone());
    if let Some(bundle) = &settings.ca_bundle {
        let certificate =
            Certificate::from_pem(bundle.as_bytes()).map_err(|e| ChannelError::InvalidConfig {
                message: format!("caBundle is not a PEM certificate bundle: {e}"),
            })?;
        parameters = parameters.add_root_certificate(certificate);
    }
    // lettre verifies with rustls and the crypto provider installed for the process (ring, as
    // for kube and reqwest); install it in case nothing else did yet.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parameters = parameters
        .build_rustls()
        .map_err(|e| ChannelError::InvalidConfig {
            message: format!("cannot set up TLS for {}: {e}", settings.host),
        })?;
    Ok(match settings.security {
        SmtpSecurity::TLS => Tls::Wrapper(parameters),
        _ => Tls::Required(parameters),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EmailSettings {
        EmailSettings {
            host: "smtp.example.com".into(),
            port: 587,
            security: SmtpSecurity::StartTLS,
            credentials: Some(("alerts".into(), SecretString::new("hunter2-smtp"))),
            from: "PKI alerts <alerts@example.com>".into(),
            to: vec!["ops@example.com".into(), "sec@example.com".into()],
            ca_bundle: None,
        }
    }

    #[test]
    fn the_default_ports_follow_the_security_mode() {
        assert_eq!(default_port(SmtpSecurity::StartTLS), 587);
        assert_eq!(default_port(SmtpSecurity::TLS), 465);
        assert_eq!(default_port(SmtpSecurity::None), 25);
    }

    #[test]
    fn bad_addresses_are_named() {
        let error = EmailSender::new(EmailSettings {
            to: vec!["ops@example.com".into(), "not an address".into()],
            ..settings()
        })
        .unwrap_err();
        assert!(error.is_permanent());
        assert!(error.to_string().contains("\"not an address\""), "{error}");
        let error = EmailSender::new(EmailSettings {
            from: "@".into(),
            ..settings()
        })
        .unwrap_err();
        assert!(error.to_string().contains("from address \"@\""), "{error}");
        let error = EmailSender::new(EmailSettings {
            to: vec![],
            ..settings()
        })
        .unwrap_err();
        assert!(matches!(error, ChannelError::InvalidConfig { .. }));
    }

    #[test]
    fn a_ca_bundle_that_is_no_pem_is_refused() {
        let error = EmailSender::new(EmailSettings {
            ca_bundle: Some("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into()),
            ..settings()
        })
        .unwrap_err();
        assert!(error.to_string().contains("caBundle"), "{error}");
    }

    #[test]
    fn every_security_mode_builds_and_debug_hides_the_password() {
        for security in [SmtpSecurity::StartTLS, SmtpSecurity::TLS, SmtpSecurity::None] {
            let sender = EmailSender::new(EmailSettings {
                security,
                ..settings()
            })
            .unwrap();
            let debug = format!("{sender:?} {:?}", settings());
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("smtp.example.com:587"), "{debug}");
        }
    }

    #[test]
    fn smtp_4xx_is_transient_and_5xx_permanent() {
        let rejected = |code| ChannelError::Rejected {
            endpoint: "smtp:25".into(),
            code,
            message: String::new(),
        };
        assert!(!rejected(451).is_permanent());
        assert!(rejected(550).is_permanent());
        let http = |status| ChannelError::Http {
            endpoint: "https://hooks.example.com".into(),
            status,
        };
        assert!(http(400).is_permanent() && http(404).is_permanent() && http(401).is_permanent());
        assert!(!http(408).is_permanent() && !http(429).is_permanent() && !http(500).is_permanent());
        let transport = ChannelError::Transport {
            endpoint: "smtp:25".into(),
            message: String::new(),
        };
        assert!(!transport.is_permanent());
    }
}
