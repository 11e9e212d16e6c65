//! End-to-end tests against a real kube-apiserver. One control plane is started for the whole
//! run (and stopped afterwards, also when tests fail); tests run in parallel, each in its own
//! namespace or with its own Lease, and wait for conditions instead of sleeping.
//!
//! The tests live in one module per area (`e2e/`), each listing its trials in `trials()`; the
//! test functions are private, so one left out of its list is an unused function, which
//! `clippy -D warnings` refuses. Shared helpers are in `e2e/support.rs`.
//!
//! `cargo test -p pki-operator-e2e -- <filter>` runs a subset, like any libtest binary.

// This is a test binary with its own harness (`harness = false`), so clippy does not see it as
// test code: here a panic is a test failure, and a table of cases is long by nature.
#![allow(clippy::expect_used, clippy::too_many_lines)]

#[path = "e2e/alerting.rs"]
mod alerting;
#[path = "e2e/audit.rs"]
mod audit;
#[path = "e2e/ca.rs"]
mod ca;
#[path = "e2e/control_plane.rs"]
mod control_plane;
#[path = "e2e/discovery.rs"]
mod discovery;
#[path = "e2e/domain_validation.rs"]
mod domain_validation;
#[path = "e2e/helm.rs"]
mod helm;
#[path = "e2e/hostile_ca.rs"]
mod hostile_ca;
#[path = "e2e/issuer_policy.rs"]
mod issuer_policy;
#[path = "e2e/kubectl_plugin.rs"]
mod kubectl_plugin;
#[path = "e2e/namespace_scoped.rs"]
mod namespace_scoped;
#[path = "e2e/nexus.rs"]
mod nexus;
#[path = "e2e/operator_lifecycle.rs"]
mod operator_lifecycle;
#[path = "e2e/order_promises.rs"]
mod order_promises;
#[path = "e2e/readme.rs"]
mod readme;
#[path = "e2e/scm.rs"]
mod scm;
#[path = "e2e/secret_guard.rs"]
mod secret_guard;
#[path = "e2e/support.rs"]
mod support;
#[path = "e2e/unusable_issuers.rs"]
mod unusable_issuers;

use std::time::Instant;

use libtest_mimic::Arguments;

/// Every trial of the binary, in the order they are listed.
fn all_trials() -> Vec<libtest_mimic::Trial> {
    [
        control_plane::trials(),
        operator_lifecycle::trials(),
        ca::trials(),
        audit::trials(),
        helm::trials(),
        namespace_scoped::trials(),
        scm::trials(),
        nexus::trials(),
        issuer_policy::trials(),
        order_promises::trials(),
        secret_guard::trials(),
        hostile_ca::trials(),
        unusable_issuers::trials(),
        domain_validation::trials(),
        discovery::trials(),
        alerting::trials(),
        kubectl_plugin::trials(),
        readme::trials(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The names of every trial (the README ledger checks the trials it names exist).
pub fn trial_names() -> Vec<String> {
    all_trials().iter().map(|t| t.name().to_owned()).collect()
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let trials = all_trials();
    if !args.list {
        let started = Instant::now();
        if let Err(error) = support::start_plane() {
            eprintln!("e2e setup failed: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
        eprintln!("e2e setup took {:?}", started.elapsed());
    }
    let conclusion = libtest_mimic::run(&args, trials);
    support::stop_plane();
    conclusion.exit_code()
}
