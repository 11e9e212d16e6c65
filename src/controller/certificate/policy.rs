//! The issuer policy (`spec.policy` of an Issuer or ClusterIssuer): which namespaces may use the
//! issuer and which names their Certificates may request. Pure: the Certificate reconciler calls
//! [`check`] after resolving the issuer and before any CA call, and reports a [`PolicyViolation`]
//! as `Ready=False reason=PolicyViolation`; the issuer reconciler calls [`validate`] so a policy
//! entry the schema could not reject (a CIDR prefix too long for its address) shows on the issuer.
//!
//! Every rule fails closed: a requested value that cannot be parsed, or a policy entry that
//! cannot be, matches nothing.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::{crd::v1alpha1::issuer::IssuerPolicy, pki::csr::CsrSubject};

/// Which list of `spec.policy` refused a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyRule {
    /// `policy.namespaces`.
    Namespaces,
    /// `policy.dnsNames`.
    DnsNames,
    /// `policy.ipAddresses`.
    IpAddresses,
    /// `policy.uris`.
    Uris,
    /// `policy.emailAddresses`.
    EmailAddresses,
}

impl PolicyRule {
    /// The field name as written in the issuer's spec.
    pub fn field(self) -> &'static str {
        match self {
            Self::Namespaces => "namespaces",
            Self::DnsNames => "dnsNames",
            Self::IpAddresses => "ipAddresses",
            Self::Uris => "uris",
            Self::EmailAddresses => "emailAddresses",
        }
    }
}

/// A Certificate asks for something its issuer's policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyViolation {
    /// The policy list that refused.
    pub rule: PolicyRule,
    /// What was refused: `namespace` or the Certificate field (`dnsNames`, `commonName`, ...).
    pub field: &'static str,
    /// The refused value.
    pub value: String,
    /// Why the value could not even be compared, when that is the reason.
    pub detail: Option<&'static str>,
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "issuer policy.{} does not allow {} {:?}",
            self.rule.field(),
            self.field,
            self.value
        )?;
        if let Some(detail) = self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// A policy entry the operator cannot use (the schema rejects most of these already).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy.{}: {entry:?} {reason}", .rule.field())]
pub struct InvalidPolicy {
    /// The list holding the entry.
    pub rule: PolicyRule,
    /// The entry.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a Certificate in `namespace` asking for `subject` against `policy`.
///
/// Each list restricts only its own kind of name; an absent list allows everything of its kind
/// and an empty one nothing. The common name is checked by the rule for what it looks like: an
/// IP address by `ipAddresses`, something with `@` by `emailAddresses`, something with a URI
/// scheme by `uris`, text with inner whitespace (a person's or a service's name) by none, and
/// anything else by `dnsNames`, because CAs copy a host-like common name into the SANs.
pub fn check(policy: &IssuerPolicy, namespace: &str, subject: &CsrSubject) -> Result<(), PolicyViolation> {
    if let Some(allowed) = &policy.namespaces
        && !allowed.iter().any(|p| namespace_matches(p, namespace))
    {
        return Err(violation(PolicyRule::Namespaces, "namespace", namespace, None));
    }
    for name in &subject.dns_names {
        check_one(policy, PolicyRule::DnsNames, "dnsNames", name)?;
    }
    for ip in &subject.ip_addresses {
        check_one(policy, PolicyRule::IpAddresses, "ipAddresses", ip)?;
    }
    for uri in &subject.uris {
        check_one(policy, PolicyRule::Uris, "uris", uri)?;
    }
    for email in &subject.email_addresses {
        check_one(policy, PolicyRule::EmailAddresses, "emailAddresses", email)?;
    }
    if let Some(common_name) = &subject.common_name
        && let Some(rule) = common_name_rule(common_name)
    {
        check_one(policy, rule, "commonName", common_name)?;
    }
    Ok(())
}

/// [`check`] for an issuer that may have no policy (then everything is allowed).
pub fn check_optional(
    policy: Option<&IssuerPolicy>,
    namespace: &str,
    subject: &CsrSubject,
) -> Result<(), PolicyViolation> {
    policy.map_or(Ok(()), |policy| check(policy, namespace, subject))
}

/// Finds the first entry of `policy` that can never match (the issuer reports it).
pub fn validate(policy: &IssuerPolicy) -> Result<(), InvalidPolicy> {
    let invalid = |rule, entry: &String, reason| InvalidPolicy {
        rule,
        entry: entry.clone(),
        reason,
    };
    for entry in policy.ip_addresses.iter().flatten() {
        if parse_cidr(entry).is_none() {
            return Err(invalid(
                PolicyRule::IpAddresses,
                entry,
                "is not an IP address or a CIDR range with a prefix length that fits the address",
            ));
        }
    }
    for entry in policy.dns_names.iter().flatten() {
        if !valid_dns_pattern(entry) {
            return Err(invalid(
                PolicyRule::DnsNames,
                entry,
                "is not a DNS name optionally starting with *. or **.",
            ));
        }
    }
    for entry in policy.email_addresses.iter().flatten() {
        let domain =
            entry.rsplit_once('@').map_or(
                entry.as_str(),
                |(local, domain)| {
                    if local.is_empty() { "" } else { domain }
                },
            );
        let wildcard_with_mailbox = entry.contains('@') && domain.starts_with('*');
        if wildcard_with_mailbox || !valid_dns_pattern(domain) {
            return Err(invalid(
                PolicyRule::EmailAddresses,
                entry,
                "is not an email address, a domain, or *.domain / **.domain",
            ));
        }
    }
    for entry in policy.uris.iter().flatten() {
        let body = entry.strip_suffix("/**").unwrap_or(entry);
        if uri_scheme(entry).is_none() || body.contains("**") {
            return Err(invalid(
                PolicyRule::Uris,
                entry,
                "is not a URI with a scheme, with ** only as a final /**",
            ));
        }
    }
    Ok(())
}

fn violation(
    rule: PolicyRule,
    field: &'static str,
    value: &str,
    detail: Option<&'static str>,
) -> PolicyViolation {
    PolicyViolation {
        rule,
        field,
        value: value.to_owned(),
        detail,
    }
}

/// Checks one requested `value` against the list `rule` names, if that list is set.
fn check_one(
    policy: &IssuerPolicy,
    rule: PolicyRule,
    field: &'static str,
    value: &str,
) -> Result<(), PolicyViolation> {
    let allowed = match rule {
        PolicyRule::Namespaces => &policy.namespaces,
        PolicyRule::DnsNames => &policy.dns_names,
        PolicyRule::IpAddresses => &policy.ip_addresses,
        PolicyRule::Uris => &policy.uris,
        PolicyRule::EmailAddresses => &policy.email_addresses,
    };
    let Some(allowed) = allowed else {
        return Ok(());
    };
    let outcome = match rule {
        PolicyRule::Namespaces => Ok(allowed.iter().any(|p| namespace_matches(p, value))),
        PolicyRule::DnsNames => requested_dns_name(value)
            .map(|name| allowed.iter().any(|p| dns_matches(p, &name)))
            .ok_or("not a valid DNS name; a wildcard must be the whole leftmost label"),
        PolicyRule::IpAddresses => value
            .trim()
            .parse::<IpAddr>()
            .map(|ip| allowed.iter().any(|p| ip_matches(p, ip)))
            .map_err(|_| "not an IP address"),
        PolicyRule::Uris => {
            if has_dot_segment(value) {
                Err("URIs with . or .. path segments are refused")
            } else {
                Ok(allowed.iter().any(|p| uri_matches(p, value)))
            }
        }
        PolicyRule::EmailAddresses => requested_email(value)
            .map(|(local, domain)| allowed.iter().any(|p| email_matches(p, local, &domain)))
            .ok_or("not an email address"),
    };
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(violation(rule, field, value, None)),
        Err(detail) => Err(violation(rule, field, value, Some(detail))),
    }
}

/// Which rule governs a common name, or `None` for free text that names no host.
fn common_name_rule(common_name: &str) -> Option<PolicyRule> {
    let trimmed = common_name.trim();
    if trimmed.parse::<IpAddr>().is_ok() {
        Some(PolicyRule::IpAddresses)
    } else if trimmed.chars().any(char::is_whitespace) {
        None
    } else if trimmed.contains('@') {
        Some(PolicyRule::EmailAddresses)
    } else if uri_scheme(trimmed).is_some() {
        Some(PolicyRule::Uris)
    } else {
        Some(PolicyRule::DnsNames)
    }
}

fn namespace_matches(pattern: &str, namespace: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => !prefix.is_empty() && namespace.len() > prefix.len() && namespace.starts_with(prefix),
        None => pattern == namespace,
    }
}

/// Lower case without one trailing dot: DNS names compare case-insensitively and `a.com.` is
/// `a.com`.
fn normalize_dns(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A requested DNS name, normalised, if it is one: labels of letters, digits, `-` and `_`, and
/// at most a leading `*` label.
fn requested_dns_name(name: &str) -> Option<String> {
    let name = normalize_dns(name);
    let rest = name.strip_prefix("*.").unwrap_or(&name);
    (!rest.is_empty() && rest.split('.').all(valid_label)).then_some(name)
}

fn valid_dns_pattern(pattern: &str) -> bool {
    let pattern = normalize_dns(pattern);
    let rest = pattern
        .strip_prefix("**.")
        .or_else(|| pattern.strip_prefix("*."))
        .unwrap_or(&pattern);
    !rest.is_empty() && rest.split('.').all(valid_label)
}

/// Whether the DNS `pattern` covers the (normalised, valid) requested `name`. A requested
/// wildcard is covered only by a pattern covering every name it stands for.
fn dns_matches(pattern: &str, name: &str) -> bool {
    if !valid_dns_pattern(pattern) {
        return false;
    }
    let pattern = normalize_dns(pattern);
    if let Some(suffix) = pattern.strip_prefix("**.") {
        // Any number (at least one) of labels below `suffix`.
        name.strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|head| !head.is_empty())
    } else if let Some(suffix) = pattern.strip_prefix("*.") {
        // Exactly one label below `suffix`; that label may be the requested wildcard `*`.
        name.strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| label == "*" || valid_label(label))
    } else {
        pattern == name
    }
}

/// An address and prefix length; a single address is a full-length prefix.
fn parse_cidr(entry: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = match entry.trim().split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry.trim(), None),
    };
    let address: IpAddr = address.parse().ok()?;
    let full = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().ok()?,
        Some(_) => return None,
        None => full,
    };
    (prefix <= full).then_some((address, prefix))
}

/// Whether `ip` lies in the range `entry`. The families must agree: an IPv4 range does not
/// cover IPv4-mapped IPv6 addresses (the CSR would carry 16 bytes, not the 4 the range names).
fn ip_matches(entry: &str, ip: IpAddr) -> bool {
    let Some((network, prefix)) = parse_cidr(entry) else {
        return false;
    };
    match (network, ip) {
        (IpAddr::V4(network), IpAddr::V4(ip)) => same_prefix_v4(network, ip, prefix),
        (IpAddr::V6(network), IpAddr::V6(ip)) => same_prefix_v6(network, ip, prefix),
        _ => false,
    }
}

fn same_prefix_v4(network: Ipv4Addr, ip: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(network) & mask == u32::from(ip) & mask
}

fn same_prefix_v6(network: Ipv6Addr, ip: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(network) & mask == u128::from(ip) & mask
}

/// The scheme of `uri` (`scheme:` with a letter first), if it has one.
fn uri_scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphabetic()
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
    .then_some(scheme)
}

/// Whether the path of `uri` has a `.` or `..` segment (also percent-encoded), which could
/// climb out of a prefix the policy allows once the URI is normalised.
fn has_dot_segment(uri: &str) -> bool {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    uri[..end].split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// What a single `*` in a URI pattern may stand for: not a separator of URI parts, so it can
/// never reach into another segment, the query, the fragment, the port or user info.
fn uri_star_char(c: u8) -> bool {
    c.is_ascii_graphic() && !matches!(c, b'/' | b'\\' | b':' | b'?' | b'#' | b'@' | b'*')
}

/// Whether the URI `pattern` (exact text, `*` = one or more [`uri_star_char`]s, a final `/**` =
/// anything after the `/`) matches `uri`. Compared byte by byte, case-sensitively.
fn uri_matches(pattern: &str, uri: &str) -> bool {
    if uri_scheme(pattern).is_none() {
        return false;
    }
    let (body, prefix) = match pattern.strip_suffix("**") {
        Some(body) if body.ends_with('/') => (body, true),
        Some(_) => return false,
        None => (pattern, false),
    };
    if body.contains("**") {
        return false;
    }
    let (pattern, text) = (body.as_bytes(), uri.as_bytes());
    // reachable[j]: the pattern so far matches text[..j]. After a `*` it may also end anywhere
    // further along a run of star characters. One row per pattern byte: O(pattern × text).
    let mut reachable = vec![false; text.len() + 1];
    reachable[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        for j in 0..text.len() {
            if !reachable[j] {
                continue;
            }
            if p == b'*' {
                let mut k = j;
                while k < text.len() && uri_star_char(text[k]) {
                    k += 1;
                    next[k] = true;
                }
            } else if text[j] == p {
                next[j + 1] = true;
            }
        }
        reachable = next;
    }
    if prefix {
        reachable.iter().any(|&r| r)
    } else {
        reachable[text.len()]
    }
}

/// A requested email address split at its last `@` (the domain cannot contain one), with the
/// domain normalised.
fn requested_email(email: &str) -> Option<(&str, String)> {
    let (local, domain) = email.trim().rsplit_once('@')?;
    let domain = normalize_dns(domain);
    (!local.is_empty() && !domain.is_empty() && domain.split('.').all(valid_label)).then_some((local, domain))
}

/// Whether the email `pattern` (a whole address, a domain, or `*.`/`**.` + domain) allows the
/// mailbox `local@domain`. Local parts compare exactly, domains case-insensitively.
fn email_matches(pattern: &str, local: &str, domain: &str) -> bool {
    match pattern.trim().rsplit_once('@') {
        Some((pattern_local, pattern_domain)) => {
            pattern_local == local && !pattern_domain.contains('*') && dns_matches(pattern_domain, domain)
        }
        None => dns_matches(pattern, domain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every caller fills one of the optional policy lists with it.
    #[allow(clippy::unnecessary_wraps)]
    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| (*s).to_owned()).collect())
    }

    fn dns(names: &[&str]) -> CsrSubject {
        CsrSubject {
            dns_names: names.iter().map(|s| (*s).to_owned()).collect(),
            ..CsrSubject::default()
        }
    }

    fn dns_policy(patterns: &[&str]) -> IssuerPolicy {
        IssuerPolicy {
            dns_names: list(patterns),
            ..IssuerPolicy::default()
        }
    }

    fn everything() -> CsrSubject {
        CsrSubject {
            common_name: Some("web.example.com".into()),
            organizations: vec!["Example".into()],
            dns_names: vec!["web.example.com".into(), "*.apps.example.com".into()],
            ip_addresses: vec!["192.0.2.7".into(), "2001:db8::1".into()],
            uris: vec!["spiffe://cluster.local/ns/team-a/sa/web".into()],
            email_addresses: vec!["ops@example.com".into()],
            ..CsrSubject::default()
        }
    }

    #[test]
    fn empty_policy_allows_everything() {
        assert_eq!(check(&IssuerPolicy::default(), "any", &everything()), Ok(()));
        assert_eq!(check_optional(None, "any", &everything()), Ok(()));
        assert_eq!(validate(&IssuerPolicy::default()), Ok(()));
    }

    #[test]
    fn an_empty_list_allows_nothing_of_its_kind_only() {
        let policy = IssuerPolicy {
            ip_addresses: list(&[]),
            ..IssuerPolicy::default()
        };
        assert_eq!(check(&policy, "a", &dns(&["anything.example.org"])), Ok(()));
        let with_ip = CsrSubject {
            ip_addresses: vec!["10.0.0.1".into()],
            ..CsrSubject::default()
        };
        let error = check(&policy, "a", &with_ip).unwrap_err();
        assert_eq!(error.rule, PolicyRule::IpAddresses);
        assert_eq!(error.value, "10.0.0.1");
    }

    #[test]
    fn namespaces_are_allowed_by_name_or_prefix() {
        let policy = IssuerPolicy {
            namespaces: list(&["payments", "team-*"]),
            ..IssuerPolicy::default()
        };
        for allowed in ["payments", "team-a", "team-blue"] {
            assert_eq!(check(&policy, allowed, &everything()), Ok(()), "{allowed}");
        }
        for denied in ["payments-dev", "team-", "team", "other", "", "xteam-a"] {
            let error = check(&policy, denied, &everything()).unwrap_err();
            assert_eq!(error.rule, PolicyRule::Namespaces, "{denied}");
            assert_eq!(error.value, denied);
        }
        assert_eq!(
            check(&policy, "other", &everything()).unwrap_err().to_string(),
            r#"issuer policy.namespaces does not allow namespace "other""#
        );
    }

    #[test]
    fn exact_dns_names_compare_case_insensitively_and_ignore_a_trailing_dot() {
        let policy = dns_policy(&["Web.Example.com"]);
        for allowed in ["web.example.com", "WEB.EXAMPLE.COM", "web.example.com."] {
            assert_eq!(check(&policy, "a", &dns(&[allowed])), Ok(()), "{allowed}");
        }
        for denied in [
            "example.com",
            "a.web.example.com",
            "web.example.co",
            "webexample.com",
        ] {
            assert!(check(&policy, "a", &dns(&[denied])).is_err(), "{denied}");
        }
    }

    #[test]
    fn single_wildcard_matches_exactly_one_label_and_not_the_apex() {
        let policy = dns_policy(&["*.example.com"]);
        for allowed in [
            "a.example.com",
            "A-1.Example.COM",
            "*.example.com",
            "_acme.example.com",
        ] {
            assert_eq!(check(&policy, "a", &dns(&[allowed])), Ok(()), "{allowed}");
        }
        for denied in [
            "example.com",
            "a.b.example.com",
            "*.b.example.com",
            "aexample.com",
            "a.example.com.evil.org",
            "a.example.org",
        ] {
            let error = check(&policy, "a", &dns(&[denied])).unwrap_err();
            assert_eq!(
                (error.rule, error.field, error.value.as_str()),
                (PolicyRule::DnsNames, "dnsNames", denied)
            );
        }
        // The apex needs its own entry.
        let with_apex = dns_policy(&["*.example.com", "example.com"]);
        assert_eq!(
            check(&with_apex, "a", &dns(&["example.com", "x.example.com"])),
            Ok(())
        );
    }

    #[test]
    fn double_wildcard_matches_any_depth_below_but_not_the_apex() {
        let policy = dns_policy(&["**.example.com"]);
        for allowed in [
            "a.example.com",
            "a.b.c.example.com",
            "*.b.example.com",
            "*.example.com",
        ] {
            assert_eq!(check(&policy, "a", &dns(&[allowed])), Ok(()), "{allowed}");
        }
        for denied in ["example.com", "badexample.com", "a.example.com.evil.org"] {
            assert!(check(&policy, "a", &dns(&[denied])).is_err(), "{denied}");
        }
    }

    #[test]
    fn a_requested_wildcard_needs_a_pattern_covering_all_it_stands_for() {
        let policy = dns_policy(&["a.example.com", "b.example.com"]);
        assert!(check(&policy, "a", &dns(&["*.example.com"])).is_err());
        // Partial or inner wildcards are refused outright, whatever the policy.
        let broad = dns_policy(&["**.example.com"]);
        for odd in [
            "a*.example.com",
            "a.*.example.com",
            "**.example.com",
            "a..example.com",
            ".example.com",
        ] {
            let error = check(&broad, "a", &dns(&[odd])).unwrap_err();
            assert!(error.detail.is_some(), "{odd}");
            assert!(error.to_string().contains(odd), "{error}");
        }
    }

    #[test]
    fn every_dns_name_is_checked_and_the_first_offender_is_named() {
        let policy = dns_policy(&["*.example.com"]);
        let error = check(&policy, "a", &dns(&["ok.example.com", "evil.org", "also.bad"])).unwrap_err();
        assert_eq!(error.value, "evil.org");
        assert_eq!(
            error.to_string(),
            r#"issuer policy.dnsNames does not allow dnsNames "evil.org""#
        );
    }

    fn ips(addresses: &[&str]) -> CsrSubject {
        CsrSubject {
            ip_addresses: addresses.iter().map(|s| (*s).to_owned()).collect(),
            ..CsrSubject::default()
        }
    }

    #[test]
    fn ip_addresses_inside_the_ranges_are_allowed() {
        let policy = IssuerPolicy {
            ip_addresses: list(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "198.51.100.0/31"]),
            ..IssuerPolicy::default()
        };
        for allowed in [
            "10.0.0.0",
            "10.255.255.255",
            "192.0.2.7",
            "2001:db8::1",
            "2001:DB8:ffff::",
            "198.51.100.1",
        ] {
            assert_eq!(check(&policy, "a", &ips(&[allowed])), Ok(()), "{allowed}");
        }
        for denied in [
            "11.0.0.0",
            "9.255.255.255",
            "192.0.2.8",
            "2001:db9::1",
            "198.51.100.2",
            "::ffff:10.0.0.1",
        ] {
            let error = check(&policy, "a", &ips(&[denied])).unwrap_err();
            assert_eq!(
                (error.rule, error.value.as_str(), error.detail),
                (PolicyRule::IpAddresses, denied, None)
            );
        }
        let error = check(&policy, "a", &ips(&["10.0.0.300"])).unwrap_err();
        assert_eq!(error.detail, Some("not an IP address"));
    }

    #[test]
    fn ip_range_edges_zero_and_full_prefixes() {
        let any_v4 = IssuerPolicy {
            ip_addresses: list(&["0.0.0.0/0"]),
            ..IssuerPolicy::default()
        };
        assert_eq!(check(&any_v4, "a", &ips(&["203.0.113.9"])), Ok(()));
        assert!(
            check(&any_v4, "a", &ips(&["::1"])).is_err(),
            "families must agree"
        );
        let any_v6 = IssuerPolicy {
            ip_addresses: list(&["::/0"]),
            ..IssuerPolicy::default()
        };
        assert_eq!(check(&any_v6, "a", &ips(&["fe80::1", "::ffff:10.0.0.1"])), Ok(()));
        let host = IssuerPolicy {
            ip_addresses: list(&["2001:db8::1/128", "192.0.2.1/32"]),
            ..IssuerPolicy::default()
        };
        assert_eq!(check(&host, "a", &ips(&["2001:db8::1", "192.0.2.1"])), Ok(()));
        assert!(check(&host, "a", &ips(&["2001:db8::2"])).is_err());
        // An unusable entry matches nothing (and `validate` reports it).
        let broken = IssuerPolicy {
            ip_addresses: list(&["10.0.0.0/33", "10.0.0.0/", "nonsense"]),
            ..IssuerPolicy::default()
        };
        assert!(check(&broken, "a", &ips(&["10.0.0.1"])).is_err());
    }

    fn uris(values: &[&str]) -> CsrSubject {
        CsrSubject {
            uris: values.iter().map(|s| (*s).to_owned()).collect(),
            ..CsrSubject::default()
        }
    }

    #[test]
    fn uris_match_exactly_by_star_within_a_segment_or_by_prefix() {
        let policy = IssuerPolicy {
            uris: list(&[
                "https://example.com/callback",
                "spiffe://cluster.local/ns/*/sa/web",
                "spiffe://cluster.local/ns/team-a/**",
                "urn:example:*",
            ]),
            ..IssuerPolicy::default()
        };
        for allowed in [
            "https://example.com/callback",
            "spiffe://cluster.local/ns/team-b/sa/web",
            "spiffe://cluster.local/ns/team-a/",
            "spiffe://cluster.local/ns/team-a/sa/any/depth",
            "urn:example:thing",
        ] {
            assert_eq!(check(&policy, "a", &uris(&[allowed])), Ok(()), "{allowed}");
        }
        for denied in [
            "https://example.com/callback/more",
            "HTTPS://example.com/callback",
            "spiffe://cluster.local/ns//sa/web",
            "spiffe://cluster.local/ns/a/b/sa/web",
            "spiffe://cluster.local/ns/team-a",
            "spiffe://cluster.local/ns/team-ab/x",
            "spiffe://cluster.local/ns/x?y/sa/web",
            "spiffe://cluster.local/ns/x@evil/sa/web",
            "urn:example:thing:more",
            "urn:example:",
        ] {
            let error = check(&policy, "a", &uris(&[denied])).unwrap_err();
            assert_eq!((error.rule, error.value.as_str()), (PolicyRule::Uris, denied));
        }
    }

    #[test]
    fn uris_with_dot_segments_are_refused() {
        let policy = IssuerPolicy {
            uris: list(&["spiffe://cluster.local/ns/team-a/**"]),
            ..IssuerPolicy::default()
        };
        for climbing in [
            "spiffe://cluster.local/ns/team-a/../team-b/sa/x",
            "spiffe://cluster.local/ns/team-a/%2E%2e/team-b",
            "spiffe://cluster.local/ns/team-a/./x",
            "spiffe://cluster.local/ns/team-a/..",
        ] {
            let error = check(&policy, "a", &uris(&[climbing])).unwrap_err();
            assert!(error.detail.is_some_and(|d| d.contains("..")), "{climbing}");
        }
        // Dots inside a segment, or in the query, are fine.
        assert_eq!(
            check(
                &policy,
                "a",
                &uris(&["spiffe://cluster.local/ns/team-a/sa/web.v2?x=../y"])
            ),
            Ok(())
        );
    }

    #[test]
    fn a_star_in_the_authority_cannot_reach_another_host() {
        let policy = IssuerPolicy {
            uris: list(&["https://*.example.com/"]),
            ..IssuerPolicy::default()
        };
        assert_eq!(check(&policy, "a", &uris(&["https://api.example.com/"])), Ok(()));
        for denied in [
            "https://evil.org/.example.com/",
            "https://evil.org?.example.com/",
            "https://evil.org#.example.com/",
            "https://evil.org\\.example.com/",
            "https://user@evil.example.com/",
            "https://evil.org:1.example.com/",
        ] {
            assert!(check(&policy, "a", &uris(&[denied])).is_err(), "{denied}");
        }
    }

    fn emails(values: &[&str]) -> CsrSubject {
        CsrSubject {
            email_addresses: values.iter().map(|s| (*s).to_owned()).collect(),
            ..CsrSubject::default()
        }
    }

    #[test]
    fn emails_are_allowed_by_domain_subdomain_or_whole_address() {
        let policy = IssuerPolicy {
            email_addresses: list(&["example.com", "*.corp.example.org", "ops@example.net"]),
            ..IssuerPolicy::default()
        };
        for allowed in [
            "anyone@example.com",
            "Anyone@EXAMPLE.COM",
            "a@eu.corp.example.org",
            "ops@example.net",
            "ops@Example.NET",
        ] {
            assert_eq!(check(&policy, "a", &emails(&[allowed])), Ok(()), "{allowed}");
        }
        for denied in [
            "a@sub.example.com",
            "a@corp.example.org",
            "a@x.y.corp.example.org",
            "dev@example.net",
            "Ops@example.net",
            "a@example.com@evil.org",
            "a@evil.org",
        ] {
            let error = check(&policy, "a", &emails(&[denied])).unwrap_err();
            assert_eq!(
                (error.rule, error.value.as_str(), error.detail),
                (PolicyRule::EmailAddresses, denied, None)
            );
        }
        for malformed in ["no-at-sign", "@example.com", "a@"] {
            let error = check(&policy, "a", &emails(&[malformed])).unwrap_err();
            assert_eq!(error.detail, Some("not an email address"), "{malformed}");
        }
    }

    #[test]
    fn the_common_name_is_checked_by_the_rule_for_what_it_looks_like() {
        let policy = IssuerPolicy {
            dns_names: list(&["*.example.com"]),
            ip_addresses: list(&["10.0.0.0/8"]),
            uris: list(&["spiffe://cluster.local/**"]),
            email_addresses: list(&["example.com"]),
            ..IssuerPolicy::default()
        };
        let cn = |name: &str| CsrSubject {
            common_name: Some(name.into()),
            ..CsrSubject::default()
        };
        for allowed in [
            "web.example.com",
            "10.1.2.3",
            "spiffe://cluster.local/web",
            "ops@example.com",
            "Payments Service",
        ] {
            assert_eq!(check(&policy, "a", &cn(allowed)), Ok(()), "{allowed}");
        }
        for (denied, rule) in [
            ("bank.com", PolicyRule::DnsNames),
            ("localhost", PolicyRule::DnsNames),
            (" bank.com ", PolicyRule::DnsNames),
            ("11.1.2.3", PolicyRule::IpAddresses),
            ("https://bank.com", PolicyRule::Uris),
            ("ops@bank.com", PolicyRule::EmailAddresses),
        ] {
            let error = check(&policy, "a", &cn(denied)).unwrap_err();
            assert_eq!((error.rule, error.field), (rule, "commonName"), "{denied}");
        }
        // A rule that is not set does not constrain the common name.
        assert_eq!(check(&IssuerPolicy::default(), "a", &cn("bank.com")), Ok(()));
    }

    #[test]
    fn validate_names_the_unusable_entry() {
        let cases = [
            (
                IssuerPolicy {
                    ip_addresses: list(&["10.0.0.0/8", "10.0.0.0/40"]),
                    ..IssuerPolicy::default()
                },
                PolicyRule::IpAddresses,
                "10.0.0.0/40",
            ),
            (
                dns_policy(&["a.*.example.com"]),
                PolicyRule::DnsNames,
                "a.*.example.com",
            ),
            (
                IssuerPolicy {
                    email_addresses: list(&["ops@*.example.com"]),
                    ..IssuerPolicy::default()
                },
                PolicyRule::EmailAddresses,
                "ops@*.example.com",
            ),
            (
                IssuerPolicy {
                    uris: list(&["spiffe://x/**/y"]),
                    ..IssuerPolicy::default()
                },
                PolicyRule::Uris,
                "spiffe://x/**/y",
            ),
            (
                IssuerPolicy {
                    uris: list(&["no-scheme"]),
                    ..IssuerPolicy::default()
                },
                PolicyRule::Uris,
                "no-scheme",
            ),
        ];
        for (policy, rule, entry) in cases {
            let error = validate(&policy).unwrap_err();
            assert_eq!((error.rule, error.entry.as_str()), (rule, entry));
            assert!(error.to_string().contains(entry), "{error}");
        }
        let good = IssuerPolicy {
            namespaces: list(&["team-*"]),
            dns_names: list(&["example.com", "*.example.com", "**.example.org"]),
            ip_addresses: list(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]),
            uris: list(&["spiffe://cluster.local/ns/*/sa/web", "spiffe://x/**"]),
            email_addresses: list(&["example.com", "ops@example.net", "*.example.org"]),
        };
        assert_eq!(validate(&good), Ok(()));
    }
}
