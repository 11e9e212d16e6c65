//! What a backend can do, declared up front ([`CaBackend::capabilities`]), so that a resource
//! asking an issuer for something it cannot do is refused at validation, before any CA call,
//! instead of failing (or, worse, silently doing nothing) halfway through.
//!
//! [`CaBackend::capabilities`]: super::CaBackend::capabilities

use std::fmt;

use super::{BackendError, BackendKind};

/// One thing a backend may be able to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Order and collect a certificate for a CSR ([`super::CaBackend::enroll`] and `collect`).
    Issue,
    /// Renew an existing order by its id at the CA, with a new CSR ([`super::CaBackend::renew`]),
    /// rather than ordering afresh.
    Renew,
    /// Revoke a certificate at the CA so that relying parties learn of it (CRL or OCSP).
    Revoke,
    /// Domain control validation for the account (SCM's DCV API).
    DomainValidation,
    /// Discovery scans of networks for deployed certificates (SCM's discovery API).
    Discovery,
    /// Searching the CA's certificates by subject or serial.
    CertificateSearch,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 6] = [
        Capability::Issue,
        Capability::Renew,
        Capability::Revoke,
        Capability::DomainValidation,
        Capability::Discovery,
        Capability::CertificateSearch,
    ];

    /// What the capability does, as a noun phrase for messages ("scm does not support …").
    pub fn operation(self) -> &'static str {
        match self {
            Self::Issue => "certificate issuance",
            Self::Renew => "renewal of an order by its id",
            Self::Revoke => "revocation",
            Self::DomainValidation => "domain control validation",
            Self::Discovery => "certificate discovery",
            Self::CertificateSearch => "certificate search",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Capability`]s: a bit set, `Copy` and cheap to compare.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    /// The empty set.
    pub const NONE: Capabilities = Capabilities(0);

    /// The set of `capabilities`.
    pub const fn of(capabilities: &[Capability]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < capabilities.len() {
            bits |= capabilities[i].bit();
            i += 1;
        }
        Self(bits)
    }

    /// This set plus `capability`.
    #[must_use]
    pub const fn with(self, capability: Capability) -> Self {
        Self(self.0 | capability.bit())
    }

    /// This set without `capability`.
    #[must_use]
    pub const fn without(self, capability: Capability) -> Self {
        Self(self.0 & !capability.bit())
    }

    /// Whether `capability` is in the set.
    pub const fn contains(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// The capabilities of `needed` this set lacks.
    #[must_use]
    pub const fn missing(self, needed: Capabilities) -> Capabilities {
        Self(needed.0 & !self.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Capability::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// `Ok` when every capability of `needed` is in the set; otherwise
    /// [`BackendError::Unsupported`] naming the first one missing (in [`Capability::ALL`]
    /// order), so a caller can refuse a resource before any CA call.
    pub fn require(self, backend: BackendKind, needed: Capabilities) -> Result<(), BackendError> {
        match self.missing(needed).iter().next() {
            None => Ok(()),
            Some(missing) => Err(BackendError::Unsupported {
                backend,
                operation: missing.operation(),
            }),
        }
    }
}

impl From<Capability> for Capabilities {
    fn from(capability: Capability) -> Self {
        Self(capability.bit())
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Capabilities {
    /// The operations, comma-separated (`none` for the empty set).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, capability) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(capability.operation())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Capability::*, *};

    #[test]
    fn every_capability_has_its_own_bit() {
        let all: Capabilities = Capability::ALL.into_iter().collect();
        assert_eq!(all.iter().collect::<Vec<_>>(), Capability::ALL);
        for capability in Capability::ALL {
            let only = Capabilities::from(capability);
            assert_eq!(only.iter().collect::<Vec<_>>(), [capability]);
            assert!(!all.without(capability).contains(capability));
            assert_eq!(all.without(capability).with(capability), all);
        }
    }

    #[test]
    fn missing_is_what_is_needed_and_absent() {
        let have = Capabilities::of(&[Issue, Revoke]);
        assert!(have.contains(Issue) && have.contains(Revoke) && !have.contains(Renew));
        assert_eq!(
            have.missing(Capabilities::of(&[Issue, Renew, Discovery])),
            Capabilities::of(&[Renew, Discovery])
        );
        assert!(have.missing(Capabilities::of(&[Revoke])).is_empty());
        assert!(have.missing(Capabilities::NONE).is_empty());
    }

    #[test]
    fn require_names_the_first_missing_capability() {
        let have = Capabilities::of(&[Issue]);
        assert!(have.require(BackendKind::Ca, Issue.into()).is_ok());
        match have.require(BackendKind::Ca, Capabilities::of(&[Discovery, Revoke, Issue])) {
            Err(error @ BackendError::Unsupported { .. }) => {
                assert_eq!(error.category(), "Unsupported");
                assert_eq!(error.to_string(), "ca does not support revocation");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sets_print_as_operations() {
        assert_eq!(Capabilities::NONE.to_string(), "none");
        assert_eq!(
            Capabilities::of(&[Revoke, Issue]).to_string(),
            "certificate issuance, revocation"
        );
        assert_eq!(format!("{:?}", Capabilities::of(&[Issue])), "{Issue}");
    }
}
