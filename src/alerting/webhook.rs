//! TEMP
use super::{Notification, email::ChannelError};
use crate::{crd::v1alpha1::alert_config::WebhookFormat, pki::credentials::SecretString};
/// TEMP
pub struct WebhookSender;
impl WebhookSender {
    /// TEMP
    pub fn new(_u: SecretString, _f: WebhookFormat, _t: Option<SecretString>, _c: Option<&str>) -> Result<Self, ChannelError> { Ok(Self) }
    /// TEMP
    pub async fn send(&self, _n: &Notification) -> Result<(), ChannelError> { Ok(()) }
}
