//! The troubleshooting text for each condition reason: one table that `kubectl pki
//! explain-reason` prints and that a test holds against README's `## Troubleshooting`, so the
//! two cannot drift apart.

/// `(reason, explanation)` for every reason README's Troubleshooting section explains, in the
/// order README gives them. The text is README's, shortened to what a terminal shows.
pub const REASONS: &[(&str, &str)] = &[
    (
        "IssuerNotReady",
        "The issuer is missing or not Ready; the message quotes the issuer's own condition, e.g. \
         `Unauthorized: scm rejected the credentials`. Fix the issuer's Secret: the issuer is \
         re-checked as soon as the Secret changes (every 15 s while failing, every 5 min when \
         Ready) and the Certificate, DomainValidation or DiscoveryTask follows.",
    ),
    (
        "ClusterIssuerDisabled",
        "The operator runs namespace-scoped (`--watch-namespaces`, the chart's `watchNamespaces`) \
         and serves no cluster-scoped kind, so a Certificate cannot use a ClusterIssuer. Point \
         `issuerRef` at an Issuer in the Certificate's own namespace (`kind: Issuer`), or run \
         the operator cluster-wide.",
    ),
    (
        "DeliveryFailed",
        "AlertConfig: a channel could not deliver; the message names each failing channel with \
         its last error and failure count (`status.channels` has the details). SMTP: check \
         smtpHost/smtpPort/security and the credentials Secret (keys `username`, `password`); \
         webhooks: the URL Secret and what the receiver answered. Deliveries are retried with \
         backoff (10 s doubling to 15 min); nothing is lost and nothing is sent twice.",
    ),
    (
        "Conflict",
        "AlertConfig: another (older) AlertConfig already syncs the same CertMgmt service, whose \
         levels are global. Remove `spec.certMgmt` from one of them.",
    ),
    (
        "CertMgmtSyncFailed",
        "AlertConfig: pushing levels or reading generated alerts failed; the message quotes the \
         service's answer (credentials Secret, `url`, `caBundle`). Other channels go on; the sync \
         is retried every minute.",
    ),
    (
        "TooManyAlerts",
        "AlertConfig: more than 10,000 alerts are active in its scope; the surplus is counted but \
         not notified. Narrow `scope` or split the AlertConfig.",
    ),
    (
        "DomainNotValidated",
        "A name is under a DomainValidation of the same issuer that is not validated yet, or the \
         CA refused the order (SCM -107/-737/-1137). No order is placed; the Certificate proceeds \
         by itself once the domain validates.",
    ),
    (
        "PolicyViolation",
        "The issuer's `spec.policy` does not allow what the Certificate asks for; the message \
         names the rule and the value. No order was placed. Change the Certificate or ask the \
         issuer's owner to widen the policy; it is checked again when either changes.",
    ),
    (
        "SecretNotLabelled",
        "Issuer: the operator runs with `--issuer-secret-label` and a referenced Secret lacks \
         that label. Someone trusted to vouch for the Secret adds it, e.g. `kubectl label secret \
         -n <ns> <name> pki-operator.io/issuer-secret=true`.",
    ),
    (
        "InvalidPolicy",
        "Issuer: a `spec.policy` entry can never match, e.g. a CIDR prefix longer than its \
         address (`10.0.0.0/40`); the message names the entry.",
    ),
    (
        "SecretNotFound",
        "Issuer: a Secret it references (credentials, client certificate, CA key pair) is missing \
         or lacks the key named in the message. Create it in the issuer's namespace (a \
         ClusterIssuer's: `--cluster-resource-namespace`); the issuer is re-checked as soon as \
         the Secret appears.",
    ),
    (
        "KeystorePasswordMissing",
        "`keystores.pkcs12.passwordSecretRef` names a Secret or key that does not exist in the \
         Certificate's namespace; create it (re-checked every 30 s).",
    ),
    (
        "VerificationFailed",
        "The CA's certificate does not match the spec (names) or its chain does not verify; \
         nothing is written to the Secret and the order is collected again after the backoff. \
         The CA profile usually rewrites names: align `dnsNames`/`commonName` with what it issues.",
    ),
    (
        "KeyError",
        "The key or CSR could not be made or read back (for example someone else's Secret named \
         `<name>-next-key`). The message says which; delete or rename that Secret.",
    ),
    (
        "Unsupported",
        "The issuer's backend cannot do what the resource asks (`ca` issues only; Nexus issues, \
         revokes and searches; SCM also renews by id, validates domains and discovers). Point \
         `issuerRef` at an issuer that can.",
    ),
    (
        "SecretConflict",
        "A Secret named `spec.secretName` exists and is not owned by the Certificate. Delete or \
         rename that Secret (or change `secretName`).",
    ),
    (
        "InvalidRequest",
        "The CA refused the order; the message is the CA's, with its error code. Waits until the \
         object changes.",
    ),
    (
        "Unauthorized",
        "The CA refused the credentials or they lack a privilege (Nexus `error -17`: the signing \
         Secret must hold a CM officer certificate the gateway trusts and that officer's key).",
    ),
    (
        "RateLimited",
        "The CA asked to slow down (Nexus -40, HTTP 429). Reads are retried within the call (up \
         to 6 attempts with jittered backoff); the Certificate then backs off.",
    ),
    (
        "Unavailable",
        "The CA is unreachable, timed out or answered 5xx; retried with backoff.",
    ),
    (
        "InvalidConfiguration",
        "The issuer's configuration cannot work with the CA (e.g. a redirect that is not \
         followed, an expired `ca` certificate, no client-certificate API path); the message \
         says what to change.",
    ),
    (
        "NotFound",
        "The CA has no such object (e.g. Nexus has no certificate with that serial number); \
         nothing was changed.",
    ),
    (
        "MalformedResponse",
        "The CA's answer could not be read, e.g. it exceeded 4 MiB: `url` probably points at a \
         web page or proxy rather than the CA's API.",
    ),
    (
        "KubernetesError",
        "An apiserver call failed (often RBAC); retried with backoff.",
    ),
    (
        "InvalidSpec",
        "The spec cannot be used by the operator (a timeout, budget or port that cannot be \
         read); the message names the field.",
    ),
    (
        "InvalidObject",
        "This version of the operator cannot read the object; it waits until the object changes.",
    ),
    (
        "IssuerChanged",
        "`spec.issuerRef` changed: the certificate is re-issued from the new issuer. The old one \
         is revoked through the old issuer only with `revocationPolicy.superseded: Revoke`.",
    ),
    (
        "OrderFailed",
        "The CA declined, rejected or invalidated the order (the message quotes it), or \
         delivered a certificate for another key. After the backoff a fresh enrollment with a \
         new key is placed. Fix the cause at the CA or in the spec (a spec change resets the \
         backoff).",
    ),
    (
        "CertificateExpired",
        "The CA delivered an expired certificate; nothing is written and the order ends (a fresh \
         enrollment follows the backoff).",
    ),
    (
        "CertificateNotYetValid",
        "The CA delivered a certificate that is not valid yet; it is collected again after the \
         backoff. Check the clocks: 5 minutes of skew are tolerated.",
    ),
    (
        "SameCertificateReturned",
        "The CA delivered the certificate the Secret already holds; the order ends and a fresh \
         enrollment follows the backoff.",
    ),
    (
        "KeyMismatch",
        "The CA delivered a certificate for another key; nothing is written, the order ends and \
         a fresh enrollment follows the backoff.",
    ),
    (
        "RepairFailed",
        "The Secret is damaged and the CA cannot give the order back. The operator backs off \
         instead of ordering: annotate the Certificate with `pki-operator.io/renew=$(date +%s)` \
         (or run `kubectl pki renew <name>`) to order a new certificate.",
    ),
];

/// The explanation of `reason`, if README's Troubleshooting explains it.
pub fn explain(reason: &str) -> Option<&'static str> {
    REASONS
        .iter()
        .find(|(name, _)| *name == reason)
        .map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn troubleshooting() -> String {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap_or_default();
        let start = readme.find("\n## Troubleshooting").unwrap_or(readme.len());
        let rest = &readme[start..];
        let end = rest[1..].find("\n## ").map_or(rest.len(), |i| i + 1);
        rest[..end].to_owned()
    }

    /// Whether `word` occurs in `text` delimited by non-identifier characters.
    fn has_word(text: &str, word: &str) -> bool {
        text.match_indices(word).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + word.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    }

    #[test]
    fn every_reason_in_the_table_is_in_readme_troubleshooting() {
        let section = troubleshooting();
        assert!(section.len() > 1000, "README has a Troubleshooting section");
        for (reason, _) in REASONS {
            assert!(
                has_word(&section, reason),
                "{reason} is not in README's Troubleshooting"
            );
        }
    }

    #[test]
    fn every_reason_readme_troubleshooting_names_is_in_the_table() {
        let section = troubleshooting();
        let named: Vec<&str> = section
            .split("reason=")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or_default()
            })
            .collect();
        assert!(named.len() > 10, "README names reasons as reason=...: {named:?}");
        for reason in named {
            assert!(
                explain(reason).is_some(),
                "README's reason={reason} is not in REASONS"
            );
        }
    }

    #[test]
    fn reasons_are_unique_and_explained() {
        for (i, (reason, text)) in REASONS.iter().enumerate() {
            assert!(!text.is_empty());
            assert!(REASONS[..i].iter().all(|(r, _)| r != reason), "{reason} twice");
        }
        assert_eq!(explain("Nope"), None);
    }
}
