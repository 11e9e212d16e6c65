//! Discovery: certificates found wherever they are deployed, not only the ones this operator
//! issued. [`analysis`] reads a certificate and summarises a run, [`tls_probe`] reads live TLS
//! endpoints, [`schedule`] says when a task runs, and [`inventory`] holds what the last runs
//! found for the metrics and AlertConfig. The DiscoveryTask controller drives them.

pub mod analysis;
pub mod inventory;
pub mod schedule;
pub mod tls_probe;
