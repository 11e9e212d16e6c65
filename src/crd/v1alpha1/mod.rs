//! API version `pki-operator.io/v1alpha1`: every kind the operator serves, one file per kind.

// kube's `printcolumn(...)` repeats `type_ = ...` once per column, which this lint mistakes
// for the same attribute given twice.
#![allow(clippy::duplicated_attributes)]

pub mod alert_config;
pub mod certificate;
pub mod common;
pub mod discovery_task;
pub mod domain_validation;
pub mod issuer;

pub use alert_config::{AlertConfig, AlertConfigSpec, AlertConfigStatus};
pub use certificate::{Certificate, CertificateSpec, CertificateStatus};
pub use discovery_task::{DiscoveryTask, DiscoveryTaskSpec, DiscoveryTaskStatus};
pub use domain_validation::{DomainValidation, DomainValidationSpec, DomainValidationStatus};
pub use issuer::{ClusterIssuer, ClusterIssuerSpec, Issuer, IssuerSpec, IssuerStatus};
