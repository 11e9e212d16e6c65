//! Types shared by several kinds: references, conditions and the schema helpers that add the
//! Kubernetes list/map markers schemars cannot express on its own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A Go-style duration such as `2160h`, `90m` or `1h30m` (the format cert-manager and kubectl
/// use), as a regular expression escaped for a single-quoted CEL string literal.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Which kind of issuer a reference points at.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum IssuerKind {
    /// A namespaced `Issuer` in the referencing object's namespace.
    #[default]
    Issuer,
    /// A cluster-scoped `ClusterIssuer`.
    ClusterIssuer,
}

impl IssuerKind {
    /// The kind's name, as in `kind:` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issuer => "Issuer",
            Self::ClusterIssuer => "ClusterIssuer",
        }
    }
}

impl std::fmt::Display for IssuerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference from a namespaced object to the issuer that serves it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer or ClusterIssuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (default; looked up in the same namespace) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
}

/// A reference from a cluster-scoped object to an issuer. A namespaced `Issuer` must be named
/// together with its namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.kind != 'Issuer' || has(self.__namespace__)")
    .message("namespace is required when kind is Issuer"))]
pub struct ClusterScopedIssuerRef {
    /// Name of the Issuer or ClusterIssuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `ClusterIssuer` (default) or `Issuer`.
    #[serde(default = "ClusterScopedIssuerRef::default_kind")]
    pub kind: IssuerKind,
    /// Namespace of a namespaced `Issuer`; must be empty for a `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

impl ClusterScopedIssuerRef {
    fn default_kind() -> IssuerKind {
        IssuerKind::ClusterIssuer
    }
}

/// A key inside a Secret in the same namespace as the referencing object (for cluster-scoped
/// issuers: the operator's cluster resource namespace).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A key inside a Secret in an explicitly named namespace (used by cluster-scoped kinds).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A name/value pair, e.g. an SCM custom field.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameValue {
    /// The field's name as configured at the CA.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The field's value.
    #[schemars(length(max = 1024))]
    pub value: String,
}

/// Schema for `status.conditions`: a list-map keyed by `type`, so server-side apply merges
/// conditions one by one instead of replacing the whole list.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = <Vec<Condition> as JsonSchema>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

/// Schema for a Go-style duration string (see [`DURATION_PATTERN`]).
pub(crate) fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{DURATION_PATTERN}')"),
            "message": "must be a duration such as 2160h, 90m or 1h30m",
        }],
    })
}

/// Per-order domain control validation sent with an SCM enrollment (`dcvMode`, `dcvEmail`):
/// required by accounts whose DCV pre-validation is disabled, where each order carries its own
/// validation (`scm-dcv-domains.md` §4). Accounts that pre-validate domains (the
/// DomainValidation resource) leave it unset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.mode == 'EMAIL' ? has(self.email) : !has(self.email)")
    .message("email is required with mode EMAIL and only allowed with it"))]
pub struct EnrollmentDcv {
    /// SCM `dcvMode`: how the CA validates the order's domains.
    pub mode: super::domain_validation::DcvMethod,
    /// SCM `dcvEmail`: the approver address the CA mails (mode `EMAIL` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    pub email: Option<String>,
}
