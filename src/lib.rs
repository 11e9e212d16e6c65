//! pki-operator: a Kubernetes operator that issues, renews, revokes, discovers and watches
//! certificates from enterprise CAs (Sectigo / InCommon Certificate Manager, Nexus Certificate
//! Manager) and a local CA.
//!
//! The binary in `main.rs` only wires these modules together:
//! - [`crd`]: the API types and generated CRD manifests;
//! - [`backend`]: the certificate authorities (SCM/InCommon today), free of Kubernetes types;
//! - [`pki`]: keys, CSRs and certificate checks;
//! - [`controller`]: one controller per kind, started by [`controller::run`];
//! - [`startup`]: checks made before any controller starts (CRDs installed);
//! - [`leader`]: Lease-based leader election for HA deployments;
//! - [`admin`], [`metrics`], [`telemetry`]: health endpoints, Prometheus metrics and logging;
//! - [`config`]: flags and environment;
//! - [`cli`]: the `kubectl pki` plugin (`src/bin/kubectl-pki.rs`), with [`reasons`] the
//!   troubleshooting text it shares with README.

pub mod admin;
pub mod alerting;
pub mod backend;
pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod leader;
pub mod metrics;
pub mod pki;
pub mod reasons;
pub mod secret;
pub mod solver;
pub mod startup;
pub mod telemetry;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "pki-operator";
