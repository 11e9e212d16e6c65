//! `Issuer` (namespaced) and `ClusterIssuer` (cluster-scoped): how to reach one certificate
//! authority. Both kinds share the backend types; they differ only in scope and in where their
//! Secret references resolve (an Issuer's own namespace; for a ClusterIssuer the operator's
//! cluster resource namespace, `--cluster-resource-namespace`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::common::{EnrollmentDcv, NameValue, conditions_schema, duration_schema};

const EXACTLY_ONE_BACKEND: &str = "[has(self.scm), has(self.nexus), has(self.ca)].filter(x, x).size() == 1";
const EXACTLY_ONE_BACKEND_MESSAGE: &str = "exactly one of scm, nexus or ca must be set";

/// Desired state of an Issuer: exactly one backend.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "pki-operator.io",
    version = "v1alpha1",
    kind = "Issuer",
    namespaced,
    status = "IssuerStatus",
    shortname = "pkiissuer",
    category = "pki",
    doc = "An Issuer tells the operator how to reach one certificate authority for Certificates in its namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new(EXACTLY_ONE_BACKEND).message(EXACTLY_ONE_BACKEND_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// Sectigo Certificate Manager (SCM) or InCommon Certificate Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm: Option<ScmIssuer>,
    /// Nexus Certificate Manager through its Protocol Gateway REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexus: Option<NexusIssuer>,
    /// A local CA whose key pair is stored in a Secret; certificates are signed in the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaIssuer>,
    /// Which names Certificates may request from this issuer; a Certificate asking for anything
    /// else is `Ready=False reason=PolicyViolation` and the CA is never called. Useful when the
    /// Issuer is created by a cluster administrator and the namespace's users may only create
    /// Certificates. `namespaces` is ClusterIssuer-only: an Issuer serves its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("!has(self.namespaces)")
        .message("namespaces is only for ClusterIssuers: an Issuer serves only its own namespace"))]
    pub policy: Option<IssuerPolicy>,
}

impl IssuerSpec {
    /// The name policy Certificates are checked against before any CA call (see
    /// `controller::certificate::policy::check`).
    pub fn policy(&self) -> Option<&IssuerPolicy> {
        self.policy.as_ref()
    }
}

/// Desired state of a ClusterIssuer: exactly one backend. Secret references resolve in the
/// operator's cluster resource namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "pki-operator.io",
    version = "v1alpha1",
    kind = "ClusterIssuer",
    status = "IssuerStatus",
    shortname = "pkiclusterissuer",
    category = "pki",
    doc = "A ClusterIssuer tells the operator how to reach one certificate authority for Certificates in any namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new(EXACTLY_ONE_BACKEND).message(EXACTLY_ONE_BACKEND_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct ClusterIssuerSpec {
    /// Sectigo Certificate Manager (SCM) or InCommon Certificate Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm: Option<ScmIssuer>,
    /// Nexus Certificate Manager through its Protocol Gateway REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexus: Option<NexusIssuer>,
    /// A local CA whose key pair is stored in a Secret; certificates are signed in the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaIssuer>,
    /// Which namespaces may use this ClusterIssuer and which names their Certificates may
    /// request. A Certificate outside the policy is `Ready=False reason=PolicyViolation` and the
    /// CA is never called. Without a policy every namespace may request any name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<IssuerPolicy>,
}

impl ClusterIssuerSpec {
    /// The namespace and name policy Certificates are checked against before any CA call (see
    /// `controller::certificate::policy::check`).
    pub fn policy(&self) -> Option<&IssuerPolicy> {
        self.policy.as_ref()
    }
}

/// Restrictions on who may use an issuer and which names they may request. Every list is
/// optional: an absent list allows everything of its kind, an empty list (`[]`) allows nothing
/// of its kind. DNS names and email domains compare case-insensitively.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerPolicy {
    /// Namespaces whose Certificates may use this ClusterIssuer: names (`team-a`) or prefixes
    /// ending in `*` (`team-*`). ClusterIssuer only; rejected on an Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "policy_namespaces_schema")]
    pub namespaces: Option<Vec<String>>,
    /// DNS names that may be requested (in `dnsNames`, and `commonName` when it looks like a
    /// host name): exact names (`example.com`), `*.example.com` for exactly one label below
    /// `example.com` (not `example.com` itself, not `a.b.example.com`), or `**.example.com` for
    /// any depth below it. A requested wildcard such as `*.example.com` needs a pattern that
    /// covers every name it stands for (`*.example.com` or `**.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "policy_dns_names_schema")]
    pub dns_names: Option<Vec<String>>,
    /// IP addresses that may be requested (in `ipAddresses`, and `commonName` when it is an IP
    /// address): single addresses (`192.0.2.7`) or CIDR ranges (`10.0.0.0/8`,
    /// `2001:db8::/32`). IPv4 ranges do not match IPv4-mapped IPv6 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "policy_ip_addresses_schema")]
    pub ip_addresses: Option<Vec<String>>,
    /// URIs that may be requested: exact URIs, patterns where `*` stands for one or more
    /// characters other than `/`, `\`, `:`, `?`, `#`, `@` and `*`
    /// (`spiffe://cluster.local/ns/*/sa/web`), or prefixes ending in `/**`
    /// (`spiffe://cluster.local/ns/team-a/**`). Compared case-sensitively. Requested URIs with
    /// `.` or `..` path segments are refused when this list is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "policy_uris_schema")]
    pub uris: Option<Vec<String>>,
    /// Email addresses that may be requested (in `emailAddresses`, and `commonName` when it
    /// contains `@`): whole addresses (`ops@example.com`), domains (`example.com`: any mailbox
    /// there), or `*.example.com` / `**.example.com` for mailboxes in subdomains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "policy_email_addresses_schema")]
    pub email_addresses: Option<Vec<String>>,
}

/// Most entries a policy list may hold; the check is linear in it and CEL cost scales with it.
const POLICY_MAX_ITEMS: u32 = 64;

/// A DNS name pattern (as a CEL single-quoted regex): optional leading `*.` or `**.`, then
/// labels of letters, digits, `-` and `_`.
const DNS_PATTERN: &str =
    r"(\\*\\*?\\.)?([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?\\.)*[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?";
/// The same without the wildcard prefix.
const DOMAIN_PATTERN: &str =
    r"([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?\\.)*[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?";

/// Schema of one policy list: bounded, each entry validated by a CEL `rule` with `message`.
fn policy_list_schema(max_length: u32, rule: &str, message: &str) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": POLICY_MAX_ITEMS,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": max_length,
            "x-kubernetes-validations": [{"rule": rule, "message": message}],
        },
    })
}

fn policy_namespaces_schema(_: &mut SchemaGenerator) -> Schema {
    policy_list_schema(
        63,
        r"self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') || self.matches('^[a-z0-9][-a-z0-9]*\\*$')",
        "must be a namespace name or a prefix ending in * such as team-*",
    )
}

fn policy_dns_names_schema(_: &mut SchemaGenerator) -> Schema {
    policy_list_schema(
        253,
        &format!("self.matches('^{DNS_PATTERN}$')"),
        "must be a DNS name, optionally starting with *. (one label) or **. (any depth)",
    )
}

fn policy_ip_addresses_schema(_: &mut SchemaGenerator) -> Schema {
    policy_list_schema(
        64,
        "isIP(self) || isCIDR(self)",
        "must be an IP address or a CIDR range such as 10.0.0.0/8 or 2001:db8::/32",
    )
}

fn policy_uris_schema(_: &mut SchemaGenerator) -> Schema {
    policy_list_schema(
        2048,
        r"self.matches('^[A-Za-z][-A-Za-z0-9+.]*:([^*\\s]|\\*[^*\\s])*\\*?(/\\*\\*)?$')",
        "must be a URI with a scheme; ** only as a final /**",
    )
}

fn policy_email_addresses_schema(_: &mut SchemaGenerator) -> Schema {
    policy_list_schema(
        320,
        &format!(r"self.matches('^([^@\\s*]+@{DOMAIN_PATTERN}|{DNS_PATTERN})$')"),
        "must be an email address, a domain, or *.domain / **.domain",
    )
}

/// Which product answers at `url`. They share one API; InCommon differs in a few paths and fields.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ScmFlavor {
    /// Sectigo Certificate Manager.
    #[default]
    Sectigo,
    /// InCommon Certificate Manager (the SCM variant sold to research and education).
    InCommon,
}

/// Connection to Sectigo Certificate Manager or InCommon Certificate Manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScmIssuer {
    /// Base URL of the instance without the API path, e.g. `https://cert-manager.com` or
    /// `https://hard.cert-manager.com`. Must use HTTPS.
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('https://')").message("url must start with https://"))]
    #[schemars(length(min = 9, max = 2048))]
    pub url: String,
    /// `Sectigo` (default) or `InCommon`.
    #[serde(default)]
    pub flavor: ScmFlavor,
    /// The customer URI part sent in the `customerUri` header, e.g. `InCommon` or `cst255`.
    #[schemars(length(min = 1, max = 256))]
    pub customer_uri: String,
    /// How the operator authenticates as an SCM administrator.
    pub auth: ScmAuth,
    /// Organization (or department) id certificates are requested for.
    #[schemars(range(min = 1))]
    pub org_id: i64,
    /// Default certificate profile id (SCM `certType`); a Certificate may override it with
    /// `spec.scm.profileId`.
    #[schemars(range(min = 1))]
    pub cert_type: i64,
    /// Default term in days. When unset, the shortest term of the profile that covers the
    /// Certificate's `duration` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub term: Option<i32>,
    /// Email address(es) notified by SCM about the request, comma separated (SCM
    /// `externalRequester`, at most 512 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub external_requester: Option<String>,
    /// Comment recorded with every request (at most 1024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comments: Option<String>,
    /// Custom fields sent with every request; mandatory fields of the profile must be listed here
    /// or on the Certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub custom_fields: Vec<NameValue>,
    /// Per-order domain control validation sent with every enrollment and renewal (SCM
    /// `dcvMode`/`dcvEmail`); only for accounts with DCV pre-validation disabled. A Certificate
    /// may override it with `spec.scm.dcv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcv: Option<EnrollmentDcv>,
    /// PEM bundle of CAs trusted for the SCM API endpoint, in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
    /// How often a pending order is polled (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub poll_interval: Option<String>,
}

/// SCM administrator authentication: exactly one method.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.password) != has(self.clientCertificate)")
    .message("exactly one of password or clientCertificate must be set"))]
pub struct ScmAuth {
    /// Login and password in a Secret (keys `login` and `password` unless overridden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<ScmPasswordAuth>,
    /// Client certificate login: a `kubernetes.io/tls` Secret issued by the SCM instance; requests
    /// go to the `/private` API prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ScmClientCertificateAuth>,
}

/// Login/password authentication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScmPasswordAuth {
    /// Name of the Secret holding the credentials.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the login name in the Secret (default `login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub login_key: Option<String>,
    /// Key of the password in the Secret (default `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: Option<String>,
}

/// Client certificate authentication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScmClientCertificateAuth {
    /// The administrator's login name, sent in the `login` header.
    #[schemars(length(min = 1, max = 256))]
    pub login: String,
    /// Name of a `kubernetes.io/tls` Secret with the client certificate and key.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Who signs write requests to Nexus CM.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NexusSigningMode {
    /// The caller signs: the operator answers error `-19` by signing `dataToSign` as CMS
    /// SignedData with the officer key. This is Nexus' default configuration.
    #[default]
    Caller,
    /// The Protocol Gateway signs as a Virtual Registration Officer (VRO).
    Server,
}

/// Connection to Nexus Certificate Manager's Protocol Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NexusIssuer {
    /// Base URL including the base path, e.g. `https://pgwy.example.com:8444/pgwy/api`.
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('https://')").message("url must start with https://"))]
    #[schemars(length(min = 9, max = 2048))]
    pub url: String,
    /// Name of a `kubernetes.io/tls` Secret with the CM officer's client certificate (`tls.crt`,
    /// optionally followed by its chain) and key (`tls.key`) for mutual TLS. In `Caller` mode
    /// without `signingSecretName` this officer also signs requests.
    #[schemars(length(min = 1, max = 253))]
    pub client_certificate_secret_name: String,
    /// `Caller` (default) or `Server` (VRO).
    #[serde(default)]
    pub signing_mode: NexusSigningMode,
    /// Name of a `kubernetes.io/tls` Secret whose officer signs requests in `Caller` mode, when
    /// it is not the client certificate's officer: `tls.crt` is the officer certificate
    /// (optionally followed by its chain), `tls.key` its RSA or ECDSA P-256 key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub signing_secret_name: Option<String>,
    /// Token procedure (`procname`) used for issuance unless a Certificate overrides it. When unset,
    /// the gateway's configured default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub token_procedure: Option<String>,
    /// PEM bundle of CAs trusted for the gateway's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
}

/// A CA key pair kept in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaIssuer {
    /// Name of a `kubernetes.io/tls` Secret whose `tls.crt` is a CA certificate (optionally
    /// followed by its chain) and whose `tls.key` is the matching private key.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Observed state of an Issuer or ClusterIssuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    /// `Ready` is True after a cheap authenticated call to the CA succeeded (SCM: list profiles;
    /// Nexus: list procedures; ca: the key pair parses and is a CA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the CA was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// The issuer's trust anchors and intermediates with their validation result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub trust_anchors: Vec<TrustAnchor>,
}

/// A CA certificate of the issuer and the result of validating it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustAnchor {
    /// Subject distinguished name.
    pub subject: String,
    /// Subject key identifier, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_key_id: Option<String>,
    /// End of validity (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// Validation code from the CA certificate taxonomy: 0 valid, 2003 expired, 2004 not yet
    /// valid, 2012 key usage mismatch, 2013 chain invalid, 2014 invalid self-signed, ...
    pub validation: i32,
    /// Human-readable meaning of `validation`.
    pub validation_message: String,
}
