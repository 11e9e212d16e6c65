//! Key and certificate handling that needs no Kubernetes and no network: private keys, CSRs,
//! and checks of issued certificates before they are written anywhere.
//!
//! Two X.509 parsers, on purpose, each where the other cannot serve:
//! - `x509-cert` (from the `RustCrypto` project) where CMS is involved: the only maintained CMS
//!   implementation (`cms`) reads the PKCS#7 collections SCM and InCommon return ([`chain`])
//!   and builds the `SignedData` Nexus requires of caller-signed requests; both speak
//!   `x509-cert` types, so the chain assembled from them stays in those types.
//! - `x509-parser` for inspecting and verifying ([`inspect`], [`csr`], [`trust_anchor`], the
//!   `ca` backend): it verifies signatures (its `verify` feature) and is what `rcgen` loads a CA
//!   certificate with; `x509-cert` verifies nothing.
//!
//! Both parse the same DER, so a certificate moves between them as bytes, never as a type.

pub mod chain;
pub mod credentials;
pub mod csr;
pub mod inspect;
pub mod key;
pub mod pkcs12;
pub mod trust_anchor;
