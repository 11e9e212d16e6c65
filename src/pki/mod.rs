//! Key and certificate handling that needs no Kubernetes and no network: private keys, CSRs,
//! and checks of issued certificates before they are written anywhere.

pub mod chain;
pub mod credentials;
pub mod csr;
pub mod inspect;
pub mod key;
pub mod pkcs12;
pub mod trust_anchor;
