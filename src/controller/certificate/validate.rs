//! Pure validation: a Certificate's spec becomes a [`ValidatedCertificate`] or an error message
//! a user can act on (`Ready=False`, reason `InvalidSpec`). The CRD schema already rejects most
//! mistakes; this step is the authority for what the schema cannot say.

use std::time::Duration;

use crate::{
    backend::{EnrollOptions, RevocationReason},
    crd::v1alpha1::certificate::{
        CertificateSpec, PrivateKeyAlgorithm, PrivateKeyEncoding, RevocationAction,
        RevocationReason as SpecReason, RotationPolicy,
    },
    pki::{
        csr::CsrSubject,
        key::{KeyAlgorithm, KeyEncoding},
    },
};

/// Default lifetime: 90 days.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(90 * 86_400);
/// Shortest lifetime we accept; shorter ones would renew continuously.
pub const MIN_DURATION: Duration = Duration::from_secs(60);

/// When to renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewBefore {
    /// This long before `notAfter`.
    Duration(Duration),
    /// When this percentage of the lifetime remains.
    Percentage(u8),
}

/// A Certificate spec that has passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedCertificate {
    /// Output Secret.
    pub secret_name: String,
    /// CSR content.
    pub subject: CsrSubject,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Key encoding in `tls.key`.
    pub key_encoding: KeyEncoding,
    /// Reuse the key on renewal.
    pub reuse_key: bool,
    /// Requested lifetime.
    pub duration: Duration,
    /// Renewal point.
    pub renew_before: RenewBefore,
    /// Backend overrides.
    pub options: EnrollOptions,
    /// Revoke on delete, with this reason.
    pub revoke_on_delete: Option<RevocationReason>,
    /// Revoke the superseded certificate after renewal.
    pub revoke_superseded: bool,
}

/// Parses a Go-style duration (`2160h`, `1h30m`, `90m`, `45s`, `1.5h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as 2160h or 1h30m"))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(format!("{text:?} has unknown unit {unit:?}; use h, m or s")),
        };
        total += value * seconds;
        rest = next;
    }
    if !total.is_finite() || total > 1e10 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Validates a spec: each group of fields in its own function, in the order a user reads them.
pub fn validate(spec: &CertificateSpec) -> Result<ValidatedCertificate, String> {
    let subject = subject(spec)?;
    let duration = match &spec.duration {
        Some(text) => parse_duration(text).map_err(|e| format!("duration: {e}"))?,
        None => DEFAULT_DURATION,
    };
    if duration < MIN_DURATION {
        return Err(format!(
            "duration: {duration:?} is shorter than the minimum of 1m"
        ));
    }
    let renew_before = renew_before(spec, duration)?;
    let key = spec.private_key.clone().unwrap_or_default();
    let key_algorithm = key_algorithm(&key)?;
    let key_encoding = match key.encoding {
        PrivateKeyEncoding::PKCS1 => KeyEncoding::Pkcs1,
        PrivateKeyEncoding::PKCS8 => KeyEncoding::Pkcs8,
    };
    let scm = spec.scm.clone().unwrap_or_default();
    let options = EnrollOptions {
        profile_id: scm.profile_id,
        term_days: scm.term.and_then(|t| u32::try_from(t).ok()),
        comments: scm.comments,
        custom_fields: scm.custom_fields.into_iter().map(|f| (f.name, f.value)).collect(),
        token_procedure: spec.nexus.as_ref().and_then(|n| n.token_procedure.clone()),
        dcv: scm.dcv.as_ref().map(Into::into),
    };
    let policy = spec.revocation_policy.clone().unwrap_or_default();
    Ok(ValidatedCertificate {
        secret_name: spec.secret_name.clone(),
        subject,
        key_algorithm,
        key_encoding,
        reuse_key: key.rotation_policy == RotationPolicy::Never,
        duration,
        renew_before,
        options,
        revoke_on_delete: (policy.on_delete == RevocationAction::Revoke)
            .then_some(revocation_reason(policy.on_delete_reason)),
        revoke_superseded: policy.superseded == RevocationAction::Revoke,
    })
}

/// The names and subject the CSR carries; at least one name, IPs that parse.
fn subject(spec: &CertificateSpec) -> Result<CsrSubject, String> {
    let has_name = spec.common_name.is_some()
        || !spec.dns_names.is_empty()
        || !spec.ip_addresses.is_empty()
        || !spec.uris.is_empty()
        || !spec.email_addresses.is_empty();
    if !has_name {
        return Err(
            "at least one of commonName, dnsNames, ipAddresses, uris or emailAddresses must be set".into(),
        );
    }
    for ip in &spec.ip_addresses {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| format!("ipAddresses: {ip:?} is not an IP address"))?;
    }
    let mut subject = CsrSubject {
        common_name: spec.common_name.clone(),
        dns_names: spec.dns_names.clone(),
        ip_addresses: spec.ip_addresses.clone(),
        uris: spec.uris.clone(),
        email_addresses: spec.email_addresses.clone(),
        ..CsrSubject::default()
    };
    if let Some(s) = &spec.subject {
        subject.organizations.clone_from(&s.organizations);
        subject.organizational_units.clone_from(&s.organizational_units);
        subject.countries.clone_from(&s.countries);
        subject.provinces.clone_from(&s.provinces);
        subject.localities.clone_from(&s.localities);
    }
    Ok(subject)
}

/// `renewBefore` | `renewBeforePercentage`, default two thirds of the lifetime.
fn renew_before(spec: &CertificateSpec, duration: Duration) -> Result<RenewBefore, String> {
    match (&spec.renew_before, spec.renew_before_percentage) {
        (Some(_), Some(_)) => Err("renewBefore and renewBeforePercentage are mutually exclusive".into()),
        (Some(text), None) => {
            let before = parse_duration(text).map_err(|e| format!("renewBefore: {e}"))?;
            if before >= duration {
                return Err(format!(
                    "renewBefore ({text}) must be shorter than the duration ({duration:?})"
                ));
            }
            Ok(RenewBefore::Duration(before))
        }
        (None, Some(percent)) => Ok(RenewBefore::Percentage(
            u8::try_from(percent)
                .ok()
                .filter(|p| (1..=99).contains(p))
                .ok_or("renewBeforePercentage must be 1-99")?,
        )),
        // Renew after two thirds of the lifetime, as cert-manager does.
        (None, None) => Ok(RenewBefore::Percentage(33)),
    }
}

/// The key algorithm and size.
fn key_algorithm(key: &crate::crd::v1alpha1::certificate::PrivateKeySpec) -> Result<KeyAlgorithm, String> {
    match (key.algorithm, key.size) {
        (PrivateKeyAlgorithm::RSA, None) => Ok(KeyAlgorithm::Rsa(2048)),
        (PrivateKeyAlgorithm::RSA, Some(size @ (2048 | 3072 | 4096))) => {
            Ok(KeyAlgorithm::Rsa(size.unsigned_abs()))
        }
        (PrivateKeyAlgorithm::ECDSA, None | Some(256)) => Ok(KeyAlgorithm::EcdsaP256),
        (PrivateKeyAlgorithm::ECDSA, Some(384)) => Ok(KeyAlgorithm::EcdsaP384),
        (PrivateKeyAlgorithm::Ed25519, None) => Ok(KeyAlgorithm::Ed25519),
        (algorithm, Some(size)) => Err(format!("privateKey.size {size} is not valid for {algorithm:?}")),
    }
}

fn revocation_reason(reason: SpecReason) -> RevocationReason {
    match reason {
        SpecReason::Unspecified => RevocationReason::Unspecified,
        SpecReason::KeyCompromise => RevocationReason::KeyCompromise,
        SpecReason::AffiliationChanged => RevocationReason::AffiliationChanged,
        SpecReason::Superseded => RevocationReason::Superseded,
        SpecReason::CessationOfOperation => RevocationReason::CessationOfOperation,
    }
}

/// When a certificate is renewed, and whether `renewBefore` had to be overridden.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// Unix seconds.
    pub at: i64,
    /// `renewBefore` is not shorter than the lifetime the CA actually issued (SCM picks the
    /// profile's term, which can be shorter than `duration`), so the renewal falls back to two
    /// thirds of that lifetime. Renewing at `notBefore` instead would order a certificate per
    /// reconcile — at a paid CA, an order per second.
    pub renew_before_too_long: bool,
}

impl ValidatedCertificate {
    /// When a certificate valid from `not_before` to `not_after` (Unix seconds) is renewed.
    pub fn renewal(&self, not_before: i64, not_after: i64) -> Renewal {
        let lifetime = (not_after - not_before).max(0);
        let two_thirds = Renewal {
            at: not_before + lifetime * 2 / 3,
            renew_before_too_long: true,
        };
        match self.renew_before {
            RenewBefore::Duration(d) => {
                let before = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if before >= lifetime {
                    two_thirds
                } else {
                    Renewal {
                        at: not_after - before,
                        renew_before_too_long: false,
                    }
                }
            }
            RenewBefore::Percentage(p) => Renewal {
                at: not_after - lifetime * i64::from(p) / 100,
                renew_before_too_long: false,
            },
        }
    }

    /// Unix seconds of [`Self::renewal`].
    pub fn renewal_time(&self, not_before: i64, not_after: i64) -> i64 {
        self.renewal(not_before, not_after).at
    }

    /// A fingerprint of everything that goes into the CSR; a pending key whose CSR was built
    /// for another spec is discarded. The encoding is spelled out field by field (never a
    /// `Debug` rendering, which may change with any refactoring or toolchain) so an operator
    /// upgrade cannot invalidate the pending keys of orders in flight.
    pub fn csr_fingerprint(&self) -> String {
        let s = &self.subject;
        let lists: [(&str, &[String]); 9] = [
            ("o", &s.organizations),
            ("ou", &s.organizational_units),
            ("c", &s.countries),
            ("st", &s.provinces),
            ("l", &s.localities),
            ("dns", &s.dns_names),
            ("ip", &s.ip_addresses),
            ("uri", &s.uris),
            ("email", &s.email_addresses),
        ];
        // One line per field; values are JSON strings, so no value can forge a separator.
        let quoted = |v: &str| serde_json::Value::String(v.to_owned()).to_string();
        let mut lines = vec![
            "csr-fingerprint/v1".to_owned(),
            format!("cn={}", s.common_name.as_deref().map(quoted).unwrap_or_default()),
        ];
        for (name, values) in lists {
            let joined: Vec<String> = values.iter().map(|v| quoted(v)).collect();
            lines.push(format!("{name}=[{}]", joined.join(",")));
        }
        lines.push(format!("key={}", self.key_algorithm));
        let text = lines.join("\n") + "\n";
        crate::pki::chain::sha256_hex(text.as_bytes())
    }

    /// The fingerprint operator versions 0.1.x wrote (a `Debug` rendering). Still
    /// accepted when reading a pending key, so orders in flight survive the upgrade.
    pub fn legacy_csr_fingerprint(&self) -> String {
        crate::pki::chain::sha256_hex(format!("{:?}|{}", self.subject, self.key_algorithm).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::v1alpha1::{certificate::PrivateKeySpec, common::IssuerRef};

    fn spec() -> CertificateSpec {
        CertificateSpec {
            secret_name: "s".into(),
            issuer_ref: IssuerRef {
                name: "ca".into(),
                ..IssuerRef::default()
            },
            dns_names: vec!["a.example.com".into()],
            ..CertificateSpec::default()
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2160h").unwrap(), Duration::from_secs(2160 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("90 days").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_are_ecdsa_90_days_renewed_at_two_thirds() {
        let v = validate(&spec()).unwrap();
        assert_eq!(v.key_algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(v.duration, DEFAULT_DURATION);
        assert_eq!(v.renewal_time(0, 90), 61);
        assert!(!v.reuse_key);
        assert_eq!(v.revoke_on_delete, None);
    }

    #[test]
    fn renew_before_moves_the_renewal_time() {
        let mut s = spec();
        s.duration = Some("3m".into());
        s.renew_before = Some("1m".into());
        let v = validate(&s).unwrap();
        assert_eq!(v.renewal_time(1000, 1180), 1120);
        s.renew_before = Some("3m".into());
        assert!(validate(&s).unwrap_err().contains("renewBefore"));
    }

    #[test]
    fn renew_before_not_shorter_than_the_issued_lifetime_renews_at_two_thirds() {
        // The CA issued 90 s although 90 days were asked for and renewBefore is 30 days.
        let mut s = spec();
        s.duration = Some("2160h".into());
        s.renew_before = Some("720h".into());
        let v = validate(&s).unwrap();
        let renewal = v.renewal(1000, 1090);
        assert_eq!(renewal.at, 1060, "two thirds of the issued 90 s, not notBefore");
        assert!(renewal.renew_before_too_long);
        assert!(
            renewal.at > 1000,
            "renewing at notBefore would order again at once"
        );
        // A lifetime longer than renewBefore keeps the user's choice.
        let renewal = v.renewal(0, 90 * 86_400);
        assert_eq!(renewal.at, 60 * 86_400);
        assert!(!renewal.renew_before_too_long);
    }

    #[test]
    fn csr_fingerprint_is_a_stable_encoding() {
        let mut s = spec();
        s.common_name = Some("shop".into());
        s.dns_names = vec!["a.example.com".into(), "b.example.com".into()];
        let v = validate(&s).unwrap();
        // Pinned: a change of this value invalidates every pending key in every cluster on
        // upgrade (and their orders would be searched for again). Change the encoding only
        // with a new version tag and keep reading the old one.
        assert_eq!(
            v.csr_fingerprint(),
            crate::pki::chain::sha256_hex(
                b"csr-fingerprint/v1\ncn=\"shop\"\no=[]\nou=[]\nc=[]\nst=[]\nl=[]\ndns=[\"a.example.com\",\"b.example.com\"]\nip=[]\nuri=[]\nemail=[]\nkey=ECDSA-P256\n"
            )
        );
        // Values cannot forge separators: one name with a comma is not two names.
        let mut forged = s.clone();
        forged.dns_names = vec!["a.example.com\",\"b.example.com".into()];
        assert_ne!(validate(&forged).unwrap().csr_fingerprint(), v.csr_fingerprint());
        assert_ne!(v.csr_fingerprint(), v.legacy_csr_fingerprint());
    }

    #[test]
    fn invalid_specs_say_what_is_wrong() {
        let mut s = spec();
        s.dns_names.clear();
        assert!(validate(&s).unwrap_err().contains("at least one of"));
        let mut s = spec();
        s.private_key = Some(PrivateKeySpec {
            algorithm: PrivateKeyAlgorithm::ECDSA,
            size: Some(2048),
            ..PrivateKeySpec::default()
        });
        assert!(validate(&s).unwrap_err().contains("privateKey.size 2048"));
        let mut s = spec();
        s.ip_addresses = vec!["999.1.1.1".into()];
        assert!(validate(&s).unwrap_err().contains("ipAddresses"));
        let mut s = spec();
        s.duration = Some("30s".into());
        assert!(validate(&s).unwrap_err().contains("minimum"));
    }
}
