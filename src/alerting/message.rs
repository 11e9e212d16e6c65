//! TEMP
use super::Notification;
/// TEMP
pub fn email_subject(n: &Notification) -> String { format!("{:?}", n.level) }
