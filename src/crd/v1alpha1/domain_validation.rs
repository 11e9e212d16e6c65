//! `DomainValidation` (cluster-scoped): proves control of a domain to the CA before certificates
//! for it can be issued. It is cluster-scoped because domain control is a fact about the CA
//! account, shared by every namespace: one validation per domain and issuer, not one per team.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ClusterScopedIssuerRef, NamespacedSecretKeySelector, conditions_schema, duration_schema,
};

/// Desired state of a DomainValidation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "pki-operator.io",
    version = "v1alpha1",
    kind = "DomainValidation",
    status = "DomainValidationStatus",
    shortname = "dv",
    shortname = "dcv",
    category = "pki",
    doc = "A DomainValidation proves control of a domain to a CA (SCM domain control validation) and keeps it valid.",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain"),
    printcolumn(name = "Method", type_ = "string", json_path = ".spec.method"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = kube::core::Rule::new("self.method != 'EMAIL' || has(self.email)")
        .message("email is required when method is EMAIL"),
    validation = kube::core::Rule::new("!has(self.solver) || !has(self.solver.http) || self.method in ['HTTP', 'HTTPS']")
        .message("solver.http can only be used with method HTTP or HTTPS"),
    validation = kube::core::Rule::new("!has(self.solver) || !has(self.solver.dns) || self.method in ['CNAME', 'TXT']")
        .message("solver.dns can only be used with method CNAME or TXT"),
    validation = kube::core::Rule::new("self.method == 'EMAIL' || has(self.solver)")
        .message("solver is required unless method is EMAIL"),
    validation = kube::core::Rule::new(
        "!has(self.solver) || !has(self.solver.dns) || !has(self.solver.dns.scmConnector) || self.method == 'CNAME'"
    ).message("solver.dns.scmConnector publishes CNAME records: it can only be used with method CNAME"),
)]
#[serde(rename_all = "camelCase")]
pub struct DomainValidationSpec {
    /// The domain to validate, e.g. `example.com`. Validating a domain covers its subdomains.
    #[x_kube(validation = kube::core::Rule::new(
        "self.matches('^(\\\\*\\\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)+[a-z]{2,63}$')"
    ).message("domain must be a lower-case DNS name such as example.com"))]
    #[schemars(length(min = 3, max = 253))]
    pub domain: String,
    /// The issuer whose CA account the domain is validated for.
    pub issuer_ref: ClusterScopedIssuerRef,
    /// Validation method: `HTTP`, `HTTPS`, `CNAME`, `TXT` or `EMAIL`.
    pub method: DcvMethod,
    /// For `EMAIL`: the address the CA sends the validation mail to; must be one of the addresses
    /// the CA allows for the domain (listed in `status.challenge.allowedEmails`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320))]
    pub email: Option<String>,
    /// How the challenge is answered. Not used for `EMAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver: Option<DcvSolver>,
    /// Start revalidation this long before the validation expires (default `720h`, 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub revalidate_before: Option<String>,
}

impl DcvMethod {
    /// The method as written in the spec (`HTTP`, `CNAME`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HTTP => "HTTP",
            Self::HTTPS => "HTTPS",
            Self::CNAME => "CNAME",
            Self::TXT => "TXT",
            Self::EMAIL => "EMAIL",
        }
    }
}

/// Domain control validation method (SCM `dcvMode`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[allow(clippy::upper_case_acronyms)] // the CA's own spelling of the methods
pub enum DcvMethod {
    /// A file served over `http://<domain>/.well-known/pki-validation/`.
    #[default]
    HTTP,
    /// A file served over `https://<domain>/.well-known/pki-validation/`.
    HTTPS,
    /// A CNAME record.
    CNAME,
    /// A TXT record.
    TXT,
    /// A mail to an allowed address of the domain, answered by a person.
    EMAIL,
}

/// How the operator answers a challenge: exactly one solver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.http), has(self.dns)].filter(x, x).size() == 1")
    .message("exactly one of http or dns must be set"))]
pub struct DcvSolver {
    /// Serve the validation file from the operator's HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSolver>,
    /// Publish the DNS record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSolver>,
}

/// HTTP(S) file solver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSolver {
    /// When set, the operator creates an Ingress routing the validation path to itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<HttpSolverIngress>,
}

/// Ingress created for the HTTP solver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSolverIngress {
    /// Namespace the Ingress is created in (the operator's Service must be reachable from it).
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// `ingressClassName` of the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
}

/// DNS record solver: exactly one provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.rfc2136), has(self.manual), has(self.scmConnector)].filter(x, x).size() == 1"
).message("exactly one of rfc2136, manual or scmConnector must be set"))]
pub struct DnsSolver {
    /// RFC 2136 dynamic update, authenticated with TSIG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136Solver>,
    /// Nobody publishes the record automatically: `status.challenge` shows what to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<ManualDnsSolver>,
    /// SCM's own DNS connector publishes the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm_connector: Option<ScmDnsConnector>,
}

/// RFC 2136 settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rfc2136Solver {
    /// Authoritative name server, `host:port` (port defaults to 53).
    #[schemars(length(min = 1, max = 261))]
    pub nameserver: String,
    /// The zone updated; defaults to the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub zone: Option<String>,
    /// TSIG key name.
    #[schemars(length(min = 1, max = 253))]
    pub tsig_key_name: String,
    /// TSIG algorithm (default `hmac-sha256`).
    #[serde(default)]
    pub tsig_algorithm: TsigAlgorithm,
    /// Base64 TSIG secret.
    pub tsig_secret_ref: NamespacedSecretKeySelector,
}

/// TSIG HMAC algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)] // RFC 8945 algorithm names
pub enum TsigAlgorithm {
    #[serde(rename = "hmac-sha256")]
    #[default]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

/// Manual DNS: no settings; the record to create appears in status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ManualDnsSolver {}

/// SCM DNS connector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScmDnsConnector {
    /// The connector's id in SCM (32 hex characters, SCM `dnsAgentUUID`). When unset, the
    /// account's only `CONNECTED` connector is used; with several, this must name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub connector_id: Option<String>,
    /// The DNS provider the connector updates (SCM `dnsProviderName`, e.g. `cloudflare`); must be
    /// one the connector lists. When unset and the connector lists exactly one, that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub provider: Option<String>,
}

/// Observed state of a DomainValidation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainValidationStatus {
    /// `Ready` is True while the domain is validated at the CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The challenge the CA issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<DcvChallenge>,
    /// The CA's validation status for the domain (e.g. `VALIDATED`, `NOT_VALIDATED`, `EXPIRED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_status: Option<String>,
    /// The CA's DCV order status (e.g. `NOT_INITIATED`, `SUBMITTED`, `AWAITING_SUBMIT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_status: Option<String>,
    /// When the domain was validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated_at: Option<Time>,
    /// When the validation expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the operator checks again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_time: Option<Time>,
}

/// What the CA asked for; only the fields of the chosen method are set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DcvChallenge {
    /// HTTP/HTTPS: URL the CA fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_url: Option<String>,
    /// HTTP/HTTPS: exact content of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_content: Option<String>,
    /// CNAME: record name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname_host: Option<String>,
    /// CNAME: record target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname_point: Option<String>,
    /// TXT: record name (`_pki-validation.<domain>.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txt_host: Option<String>,
    /// TXT: record value, exactly these characters as one TXT string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txt_value: Option<String>,
    /// EMAIL: the address the validation mail was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// EMAIL: the CA's reference number of the mail order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_reference: Option<String>,
    /// EMAIL: addresses the CA accepts for the domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allowed_emails: Vec<String>,
}
