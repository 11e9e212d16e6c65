//! A wrapper for credentials and key material that cannot end up in logs: its `Debug` prints a
//! placeholder, it has no `Display` and no `Serialize`, and reading it takes an explicit call.

use std::fmt;

/// A secret string (password, private key PEM, token).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = SecretString::new("hunter2");
        assert_eq!(format!("{secret:?}"), "SecretString(<redacted>)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(SecretString(<redacted>))");
        assert_eq!(secret.expose(), "hunter2");
    }
}
