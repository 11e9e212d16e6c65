//! `Certificate`: the desired X.509 certificate and the Secret it is written to. The surface
//! follows cert-manager's `Certificate` so users find what they know, plus revocation policy and
//! per-backend overrides.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    EnrollmentDcv, IssuerKind, IssuerRef, NameValue, SecretKeySelector, conditions_schema, duration_schema,
};

const AT_LEAST_ONE_NAME: &str = "has(self.commonName) || (has(self.dnsNames) && size(self.dnsNames) > 0) \
     || (has(self.ipAddresses) && size(self.ipAddresses) > 0) || (has(self.uris) && size(self.uris) > 0) \
     || (has(self.emailAddresses) && size(self.emailAddresses) > 0)";

/// Desired state of a Certificate.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "pki-operator.io",
    version = "v1alpha1",
    kind = "Certificate",
    namespaced,
    status = "CertificateStatus",
    shortname = "pkicert",
    shortname = "pkicerts",
    category = "pki",
    doc = "A Certificate asks the operator to obtain an X.509 certificate from an issuer, keep it renewed and store it in a Secret.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secretName"),
    printcolumn(name = "Issuer", type_ = "string", json_path = ".spec.issuerRef.name"),
    printcolumn(name = "Expiration", type_ = "string", json_path = ".status.notAfter"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = kube::core::Rule::new(AT_LEAST_ONE_NAME)
        .message("at least one of commonName, dnsNames, ipAddresses, uris or emailAddresses must be set"),
    validation = kube::core::Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))")
        .message("renewBefore and renewBeforePercentage are mutually exclusive"),
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// Name of the `kubernetes.io/tls` Secret the certificate and key are written to, in the
    /// Certificate's namespace. Immutable. The operator only writes a Secret it owns: an existing
    /// Secret not owned by this Certificate is left untouched (`Ready=False`, `SecretConflict`).
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("secretName is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The Issuer or ClusterIssuer that issues this certificate.
    pub issuer_ref: IssuerRef,
    /// Subject common name. Prefer `dnsNames`; most CAs copy the CN into the SANs anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub common_name: Option<String>,
    /// DNS subject alternative names (SCM allows at most 100 SANs per certificate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 253)))]
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 2, max = 45)))]
    pub ip_addresses: Vec<String>,
    /// URI subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 2048)))]
    pub uris: Vec<String>,
    /// Email (RFC 822) subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 3, max = 320)))]
    pub email_addresses: Vec<String>,
    /// Further subject attributes. Public CAs usually replace them with validated values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<X509Subject>,
    /// Requested lifetime (default `2160h`, 90 days). SCM maps it to the nearest profile term;
    /// the CA may issue a different lifetime and `status.notAfter` shows what was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub duration: Option<String>,
    /// Renew this long before `notAfter`. Mutually exclusive with `renewBeforePercentage`; when
    /// neither is set the certificate is renewed after two thirds of its lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub renew_before: Option<String>,
    /// Renew when this percentage of the lifetime remains (1-99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub renew_before_percentage: Option<i32>,
    /// Private key parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PrivateKeySpec>,
    /// Key usages and extended key usages requested (default `digital signature`,
    /// `key encipherment`, `server auth`). The CA's profile decides what is issued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub usages: Vec<KeyUsage>,
    /// Labels and annotations copied onto the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Extra keys written to the Secret besides `tls.crt`, `tls.key` and `ca.crt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub additional_output_formats: Vec<AdditionalOutputFormat>,
    /// Keystores written to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystores: Option<Keystores>,
    /// When the operator revokes certificates at the CA. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_policy: Option<RevocationPolicy>,
    /// Overrides for an SCM issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm: Option<CertificateScmOverrides>,
    /// Overrides for a Nexus issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexus: Option<CertificateNexusOverrides>,
}

/// Subject attributes beyond the common name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct X509Subject {
    /// Organizations (O).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 64)))]
    pub organizations: Vec<String>,
    /// Organizational units (OU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 64)))]
    pub organizational_units: Vec<String>,
    /// Two-letter country codes (C).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 2, max = 2)))]
    pub countries: Vec<String>,
    /// States or provinces (ST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 128)))]
    pub provinces: Vec<String>,
    /// Localities (L).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 128)))]
    pub localities: Vec<String>,
    /// Street addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 128)))]
    pub street_addresses: Vec<String>,
    /// Postal codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 40)))]
    pub postal_codes: Vec<String>,
    /// Subject serial number attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub serial_number: Option<String>,
}

/// Private key algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PrivateKeyAlgorithm {
    /// RSA (sizes 2048, 3072, 4096; default 2048).
    RSA,
    /// ECDSA (curve P-256 or P-384 by size 256 or 384; default 256).
    #[default]
    ECDSA,
    /// Ed25519 (no size), where the CA accepts it.
    Ed25519,
}

/// How the private key is encoded in `tls.key`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PrivateKeyEncoding {
    /// `RSA PRIVATE KEY` / `EC PRIVATE KEY` (default; Ed25519 is always PKCS#8).
    #[default]
    PKCS1,
    /// `PRIVATE KEY`.
    PKCS8,
}

/// Whether a renewal generates a new key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RotationPolicy {
    /// A new key for every issuance (default).
    #[default]
    Always,
    /// Keep the existing key across renewals.
    Never,
}

/// Private key parameters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.size) || (self.algorithm == 'RSA' && self.size in [2048, 3072, 4096]) \
     || (self.algorithm == 'ECDSA' && self.size in [256, 384])"
).message("size must be 2048, 3072 or 4096 for RSA, 256 or 384 for ECDSA, and unset for Ed25519"))]
pub struct PrivateKeySpec {
    /// `RSA`, `ECDSA` (default) or `Ed25519`.
    #[serde(default)]
    pub algorithm: PrivateKeyAlgorithm,
    /// Key size in bits (RSA) or curve size (ECDSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i32>,
    /// `PKCS1` (default) or `PKCS8`.
    #[serde(default)]
    pub encoding: PrivateKeyEncoding,
    /// `Always` (default) or `Never`.
    #[serde(default)]
    pub rotation_policy: RotationPolicy,
}

/// A key usage or extended key usage, spelled as in cert-manager.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)] // the variant names are the X.509 usage names
pub enum KeyUsage {
    #[serde(rename = "digital signature")]
    DigitalSignature,
    #[serde(rename = "content commitment")]
    ContentCommitment,
    #[serde(rename = "key encipherment")]
    KeyEncipherment,
    #[serde(rename = "data encipherment")]
    DataEncipherment,
    #[serde(rename = "key agreement")]
    KeyAgreement,
    #[serde(rename = "server auth")]
    ServerAuth,
    #[serde(rename = "client auth")]
    ClientAuth,
    #[serde(rename = "code signing")]
    CodeSigning,
    #[serde(rename = "email protection")]
    EmailProtection,
    #[serde(rename = "timestamping")]
    Timestamping,
    #[serde(rename = "ocsp signing")]
    OcspSigning,
}

/// Labels and annotations for the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Extra Secret output format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OutputFormatType {
    /// `tls-combined.pem`: key followed by the certificate chain.
    CombinedPEM,
    /// `key.der`: the private key as DER.
    DER,
}

/// One additional output format.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalOutputFormat {
    /// `CombinedPEM` or `DER`.
    #[serde(rename = "type")]
    pub format: OutputFormatType,
}

/// Keystores written next to the PEM files.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Keystores {
    /// A PKCS#12 keystore (`keystore.p12`, plus `truststore.p12` with the CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs12: Option<Pkcs12Keystore>,
}

/// PKCS#12 keystore settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pkcs12Keystore {
    /// Write the keystore.
    pub create: bool,
    /// The keystore password, from a Secret in the Certificate's namespace.
    pub password_secret_ref: SecretKeySelector,
}

/// What happens to an old certificate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RevocationAction {
    /// Leave it valid until it expires (default).
    #[default]
    Retain,
    /// Revoke it at the CA.
    Revoke,
}

/// RFC 5280 revocation reason.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)] // the RFC 5280 reason names
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    #[default]
    CessationOfOperation,
}

/// When the operator revokes certificates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationPolicy {
    /// `Revoke` the current certificate when the Certificate is deleted (a finalizer holds the
    /// deletion until the CA confirmed or the `pki-operator.io/skip-revoke` annotation is set).
    #[serde(default)]
    pub on_delete: RevocationAction,
    /// Reason given when revoking on delete (default `CessationOfOperation`).
    #[serde(default)]
    pub on_delete_reason: RevocationReason,
    /// `Revoke` the previous certificate (reason `Superseded`) after a renewal succeeded.
    #[serde(default)]
    pub superseded: RevocationAction,
}

/// Per-certificate SCM settings overriding the issuer's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateScmOverrides {
    /// Certificate profile id (SCM `certType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub profile_id: Option<i64>,
    /// Term in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub term: Option<i32>,
    /// Comment recorded with the request (at most 1024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comments: Option<String>,
    /// Custom fields, merged over the issuer's by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub custom_fields: Vec<NameValue>,
    /// Per-order domain control validation (SCM `dcvMode`/`dcvEmail`), replacing the issuer's
    /// `spec.scm.dcv`; only for accounts with DCV pre-validation disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcv: Option<EnrollmentDcv>,
}

/// Per-certificate Nexus settings overriding the issuer's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateNexusOverrides {
    /// Token procedure (`procname`) used for issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub token_procedure: Option<String>,
}

/// Observed state of a Certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// `Ready` (the Secret holds a valid certificate matching the spec) and `Issuing` (an
    /// issuance is in progress).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Start of the current certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// End of the current certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// When the operator will renew the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// Serial number of the current certificate, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Number of certificates issued for this resource so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The order at the CA for the issuance in progress or last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<CertificateOrder>,
    /// Name of the Secret holding the private key and CSR of the issuance in progress (written
    /// before the order is placed, so a crash never loses the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_private_key_secret_name: Option<String>,
    /// Consecutive failed issuance attempts; drives the backoff and resets on success or spec change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_issuance_attempts: Option<i32>,
    /// When the last issuance attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Why the last issuance attempt failed (bounded like condition messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_message: Option<String>,
    /// The order of the certificate still in the Secret while `order` is a newer issuance in
    /// progress: revoked as superseded (when asked) or on delete, through the issuer that placed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_order: Option<CertificateOrder>,
    /// Orders that can no longer be delivered (their pending private key was deleted). The
    /// operator revokes each once it is issued, or reports that it could not; at most 10 are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub abandoned_orders: Vec<CertificateOrder>,
    /// When the operator last tried to revoke the abandoned orders (it tries every minute for
    /// the first hour of an order, then every 15 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned_orders_checked_at: Option<Time>,
}

/// An order placed at the CA.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateOrder {
    /// Backend that holds the order: `scm`, `nexus` or `ca`.
    pub backend: String,
    /// The CA's order id (SCM `sslId`; Nexus `certid`).
    pub id: String,
    /// SCM `renewId`, used to renew this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_id: Option<String>,
    /// Order state as last seen: `Pending`, `Issued`, `Failed` or `Revoked`.
    pub state: String,
    /// When the order was placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<Time>,
    /// SHA-256 of the DER CSR, hex; identifies the order again after a crash.
    pub csr_sha256: String,
    /// The issuer that placed the order. The order is collected, renewed and revoked only
    /// through this issuer (and only while it is the same object, by uid); changing
    /// `spec.issuerRef` starts a new issuance from the new issuer. Absent on orders recorded by
    /// operator versions 0.1.x, which are never revoked or renewed by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<OrderIssuer>,
    /// Serial number (hex) of the certificate delivered from this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
}

/// The issuer an order was placed with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderIssuer {
    /// `Issuer` or `ClusterIssuer`.
    pub kind: IssuerKind,
    /// Namespace of an `Issuer`; empty for a `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the issuer.
    pub name: String,
    /// `metadata.uid` of the issuer object: a deleted and re-created issuer of the same name may
    /// point at another CA account, so it does not inherit the order.
    pub uid: String,
}
