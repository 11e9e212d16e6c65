//! TEMP
use super::Notification;
use crate::{crd::v1alpha1::alert_config::SmtpSecurity, pki::credentials::SecretString};
/// TEMP
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct ChannelError;
/// TEMP
pub struct EmailSettings { pub host: String, pub port: u16, pub security: SmtpSecurity, pub credentials: Option<(String, SecretString)>, pub from: String, pub to: Vec<String>, pub ca_bundle: Option<String> }
/// TEMP
pub struct EmailSender;
impl EmailSender {
    /// TEMP
    pub fn new(_s: EmailSettings) -> Result<Self, ChannelError> { Ok(Self) }
    /// TEMP
    pub async fn send(&self, _n: &Notification) -> Result<(), ChannelError> { Ok(()) }
}
