//! Alerting without Kubernetes: where a certificate stands against the levels of an AlertConfig
//! ([`levels`]), what an alert says ([`message`]) and how it reaches people ([`email`],
//! [`webhook`]). The AlertConfig controller (`controller::alert_config`) decides *when* to send
//! and keeps the record of what was sent.

pub mod email;
pub mod message;
pub mod webhook;

use jiff::Timestamp;

use crate::crd::v1alpha1::alert_config::Level;

/// What an alert is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertSubject {
    /// A Certificate this operator manages.
    Certificate {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// `Kind/name` (or `Issuer/namespace/name`) of the issuer that issued it.
        issuer: String,
        /// The Secret holding it.
        secret_name: String,
    },
    /// A certificate a DiscoveryTask found.
    Discovered {
        /// `host:port`, `namespace/secret` or the CA's id.
        location: String,
        /// `namespace/name` of the DiscoveryTask.
        task: String,
        /// Issuer distinguished name.
        issuer: String,
    },
    /// A discovery target that has not been readable for too long.
    Host {
        /// The target (`host:port`, ...).
        target: String,
        /// `namespace/name` of the DiscoveryTask.
        task: String,
        /// Why the last run could not read it.
        reason: String,
        /// Since when it has been unreachable.
        unreachable_since: Timestamp,
    },
}

/// One notification: an alert at one level, ready to be rendered for any channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Name of the AlertConfig raising it.
    pub alert_config: String,
    /// Severity.
    pub level: Level,
    /// What it is about.
    pub subject: AlertSubject,
    /// The certificate's subject common name, if any.
    pub common_name: Option<String>,
    /// The certificate's DNS names (at most a few are shown).
    pub dns_names: Vec<String>,
    /// Serial number, lower-case hex.
    pub serial: Option<String>,
    /// End of validity.
    pub not_after: Option<Timestamp>,
    /// Whole days of validity left (negative when expired).
    pub days_left: Option<i64>,
    /// True when this repeats an alert already sent at this level (`repeatInterval`).
    pub repeat: bool,
}
