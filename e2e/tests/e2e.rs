//! End-to-end tests against a real kube-apiserver. One control plane is started for the whole
//! run (and stopped afterwards, also when tests fail); tests run in parallel, each in its own
//! namespace or with its own Lease, and wait for conditions instead of sleeping.
//!
//! `cargo test -p pki-operator-e2e -- <filter>` runs a subset, like any libtest binary.

// This is a test binary with its own harness (`harness = false`), so clippy does not see it as
// test code: here a panic is a test failure, and a table of cases is long by nature.
#![allow(clippy::expect_used, clippy::too_many_lines)]

#[path = "e2e/hostile_ca.rs"]
mod hostile_ca;
#[path = "e2e/issuer_policy.rs"]
mod issuer_policy;
#[path = "e2e/nexus.rs"]
mod nexus;
#[path = "e2e/order_promises.rs"]
mod order_promises;
#[path = "e2e/secret_guard.rs"]
mod secret_guard;

use std::{
    sync::{LazyLock, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use libtest_mimic::{Arguments, Failed, Trial};
use pki_operator::crd::v1alpha1::{Certificate, Issuer};
use pki_operator_e2e::sim::scm::{Faults, ScmSimulator, ScmSimulatorConfig};
use pki_operator_e2e::{
    ControlPlane, Operator, TestNamespace, metric_value, random_suffix, repo_root, wait_for, work_dir,
};
use serde::Deserialize as _;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
});
static PLANE: OnceLock<ControlPlane> = OnceLock::new();

fn plane() -> &'static ControlPlane {
    PLANE.get().expect("control plane started in main")
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let trials = vec![
        trial(
            "control_plane_collects_garbage_signs_tokens_and_enforces_rbac",
            control_plane_works,
        ),
        trial("crds_and_examples_apply", crds_and_examples_apply),
        trial(
            "invalid_objects_are_rejected_naming_the_field",
            invalid_objects_are_rejected_naming_the_field,
        ),
        trial(
            "operator_becomes_ready_serves_metrics_and_watches_every_kind",
            operator_becomes_ready,
        ),
        trial(
            "standby_takes_over_when_the_leader_is_killed",
            standby_takes_over_when_the_leader_is_killed,
        ),
        trial(
            "operator_without_crds_exits_naming_the_missing_crd",
            operator_without_crds_exits,
        ),
        trial(
            "ca_certificate_becomes_ready_with_a_verified_secret",
            ca_certificate_becomes_ready,
        ),
        trial(
            "helm_chart_renders_applies_and_its_rbac_suffices",
            helm_chart_rbac_suffices,
        ),
        trial(
            "foreign_secret_is_never_modified",
            foreign_secret_is_never_modified,
        ),
        trial("steady_state_makes_no_writes", steady_state_makes_no_writes),
        trial(
            "scm_certificate_is_issued_through_one_pending_order",
            scm_certificate_issued_once,
        ),
        trial(
            "scm_crash_after_order_accepted_recovers_without_a_second_order",
            scm_crash_recovery,
        ),
        trial(
            "scm_renewal_rotates_the_key_and_revokes_the_superseded_certificate",
            scm_renewal,
        ),
        trial(
            "scm_revoke_on_delete_revokes_and_releases_the_finalizer",
            scm_revoke_on_delete,
        ),
        trial(
            "scm_invalid_credentials_are_reported_and_recover_when_fixed",
            scm_invalid_credentials,
        ),
        trial(
            "scm_tampered_secret_is_repaired_without_a_new_order",
            scm_tampered_secret_repaired,
        ),
        trial(
            "scm_backoff_recorded_in_status_survives_a_restart",
            scm_backoff_survives_a_restart,
        ),
        trial(
            "nexus_certificates_are_issued_with_both_signing_modes_and_revoked_on_delete",
            nexus::certificate_is_issued_and_revoked_on_delete,
        ),
        trial(
            "nexus_wrong_signer_and_foreign_client_certificate_are_reported",
            nexus::wrong_signer_and_foreign_client_certificate_are_reported,
        ),
        trial(
            "nexus_crash_after_issuance_recovers_by_search_without_a_second_issuance",
            nexus::crash_after_issuance_recovers_by_search,
        ),
        trial(
            "cluster_issuer_policy_refuses_before_any_ca_call",
            issuer_policy::cluster_issuer_policy_refuses_before_any_ca_call,
        ),
        trial(
            "orders_and_revocations_stay_with_the_issuer_that_placed_them",
            order_promises::orders_and_revocations_stay_with_the_issuer_that_placed_them,
        ),
        trial(
            "term_shorter_than_renew_before_renews_at_two_thirds_once_per_cycle",
            order_promises::term_shorter_than_renew_before_renews_at_two_thirds_once_per_cycle,
        ),
        trial(
            "reused_rsa_key_renews_into_a_new_certificate",
            order_promises::reused_rsa_key_renews_into_a_new_certificate,
        ),
        trial(
            "deleted_pending_key_abandons_the_order_and_revokes_it_once_issued",
            order_promises::deleted_pending_key_abandons_the_order_and_revokes_it_once_issued,
        ),
        trial(
            "failed_repair_backs_off_instead_of_ordering_again",
            order_promises::failed_repair_backs_off_instead_of_ordering_again,
        ),
        trial(
            "dropped_output_format_leaves_the_secret",
            order_promises::dropped_output_format_leaves_the_secret,
        ),
        trial(
            "namespace_deletion_never_hangs_on_revoke_on_delete",
            order_promises::namespace_deletion_never_hangs_on_revoke_on_delete,
        ),
        trial(
            "issuer_secret_label_guard_refuses_unlabelled_secrets_until_labelled",
            secret_guard::unlabelled_secret_is_refused_until_labelled,
        ),
        trial(
            "hostile_ca_endless_body_is_cut_off_and_the_operator_stays_up",
            hostile_ca::endless_body_is_cut_off_and_the_operator_stays_up,
        ),
        trial(
            "hostile_ca_redirect_is_not_followed",
            hostile_ca::redirect_is_not_followed,
        ),
    ];
    let listing = args.list;
    if !listing {
        let started = Instant::now();
        let setup = RUNTIME.block_on(async {
            let plane = ControlPlane::start(&work_dir("cluster")?).await?;
            install_crds(&plane)?;
            Ok::<_, anyhow::Error>(plane)
        });
        match setup {
            Ok(plane) => {
                let _ = PLANE.set(plane);
            }
            Err(error) => {
                eprintln!("e2e setup failed: {error:#}");
                return std::process::ExitCode::FAILURE;
            }
        }
        eprintln!("e2e setup took {:?}", started.elapsed());
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the control plane before exiting: statics are never dropped.
    if let Some(plane) = PLANE.get() {
        plane.stop();
    }
    conclusion.exit_code()
}

fn trial(name: &'static str, test: fn() -> Result<()>) -> Trial {
    Trial::test(name, move || test().map_err(|e| Failed::from(format!("{e:#}"))))
}

fn install_crds(plane: &ControlPlane) -> Result<()> {
    let crds = repo_root().join("crds");
    let out = plane.kubectl(&["apply", "-f", &crds.to_string_lossy()], None)?;
    ensure!(
        out.status.success(),
        "kubectl apply -f crds/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = plane.kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &crds.to_string_lossy(),
        ],
        None,
    )?;
    ensure!(
        out.status.success(),
        "CRDs not established: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn block_on<F: Future<Output = Result<()>>>(future: F) -> Result<()> {
    RUNTIME.block_on(future)
}

/// The control plane is a real one: owner-referenced objects are garbage-collected, namespaces
/// finish deleting, service-account tokens are signed and authenticate, and RBAC denies what the
/// account was not granted.
fn control_plane_works() -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "plane").await?;
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let owner: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "owner"}}))?;
        let owner = config_maps.create(&PostParams::default(), &owner).await?;
        let child: Secret = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "child", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
            ]}}),
        )?;
        secrets.create(&PostParams::default(), &child).await?;
        config_maps
            .delete("owner", &kube::api::DeleteParams::default())
            .await?;
        wait_gone(
            &secrets,
            "child",
            "the garbage collector to delete the owned Secret",
        )
        .await?;

        // A token for the namespace's default service account (created by the service-account
        // controller) authenticates, and RBAC forbids reading Secrets with it.
        let token = wait_for(
            "a signed service-account token",
            Duration::from_secs(30),
            || async {
                let out = plane()
                    .kubectl(&["create", "token", "default", "-n", &ns.name], None)
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            },
        )
        .await?;
        let as_sa = |args: &[&str]| plane().kubectl_with_token(&token, args);
        let whoami = as_sa(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])?;
        let user = String::from_utf8_lossy(&whoami.stdout);
        ensure!(
            user == format!("system:serviceaccount:{}:default", ns.name),
            "token authenticated as {user:?}: {}",
            String::from_utf8_lossy(&whoami.stderr)
        );
        let denied = as_sa(&["get", "secrets", "-n", &ns.name])?;
        let stderr = String::from_utf8_lossy(&denied.stderr);
        ensure!(
            !denied.status.success() && stderr.contains("Forbidden"),
            "RBAC did not deny: {stderr}"
        );

        // Namespaces finish deleting (the namespace controller empties them).
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .delete(&ns.name, &kube::api::DeleteParams::default())
            .await?;
        wait_gone(&namespaces, &ns.name, "the namespace to be deleted").await
    })
}

/// `kubectl apply -f crds/` succeeds (again, idempotently) and every example applies cleanly and
/// is stored by the apiserver.
fn crds_and_examples_apply() -> Result<()> {
    block_on(async {
        install_crds(plane())?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "examples").await?;
        let examples = repo_root().join("examples");
        let out = plane().kubectl(
            &["apply", "-n", &ns.name, "-f", &examples.to_string_lossy()],
            None,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "kubectl apply -f examples/ failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut documents = 0;
        let mut cluster_scoped_created = Vec::new();
        for entry in std::fs::read_dir(&examples)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue; // examples/demo/ holds the demo's templates
            }
            let text = std::fs::read_to_string(path)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
                if value.is_null() {
                    continue;
                }
                documents += 1;
                let object: DynamicObject = serde_json::from_value(value)?;
                let types = object.types.clone().context("example without apiVersion/kind")?;
                let (group, version) = types
                    .api_version
                    .split_once('/')
                    .unwrap_or(("", &types.api_version));
                let gvk = GroupVersionKind::gvk(group, version, &types.kind);
                let resource = ApiResource::from_gvk(&gvk);
                let name = object.metadata.name.clone().context("example without a name")?;
                let cluster_scoped = matches!(
                    types.kind.as_str(),
                    "ClusterIssuer" | "DomainValidation" | "AlertConfig"
                );
                let api: Api<DynamicObject> = if cluster_scoped {
                    Api::all_with(client.clone(), &resource)
                } else {
                    Api::namespaced_with(client.clone(), &ns.name, &resource)
                };
                api.get(&name)
                    .await
                    .with_context(|| format!("{} {name} was not stored", types.kind))?;
                if cluster_scoped {
                    cluster_scoped_created.push((api, name));
                }
            }
        }
        let kinds = [
            "Issuer",
            "ClusterIssuer",
            "Certificate",
            "DomainValidation",
            "DiscoveryTask",
            "AlertConfig",
        ];
        for kind in kinds {
            ensure!(
                stdout.contains(&format!("{}.pki-operator.io/", kind.to_lowercase())),
                "no example of {kind}"
            );
        }
        ensure!(
            documents >= 12,
            "expected a minimal and a full example per kind, found {documents} documents"
        );
        // The category lists every kind at once.
        let out = plane().kubectl(&["get", "pki", "-n", &ns.name, "-o", "name"], None)?;
        ensure!(
            out.status.success(),
            "kubectl get pki failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8_lossy(&out.stdout);
        ensure!(
            listed.contains("certificate.pki-operator.io/web"),
            "kubectl get pki missed Certificates:\n{listed}"
        );
        // Printer columns: the Certificate table shows readiness, Secret, issuer and expiry.
        let out = plane().kubectl(&["get", "pkicert", "-n", &ns.name], None)?;
        let table = String::from_utf8_lossy(&out.stdout);
        let header = table.lines().next().unwrap_or_default();
        for column in ["NAME", "READY", "SECRET", "ISSUER", "EXPIRATION", "AGE"] {
            ensure!(
                header.split_whitespace().any(|c| c == column),
                "no {column} column in:\n{table}"
            );
        }
        ensure!(
            table
                .lines()
                .any(|l| l.starts_with("web ") && l.contains("web-tls") && l.contains("demo-ca")),
            "row for web missing:\n{table}"
        );

        // Cluster-scoped objects outlive the namespace; remove the ones this test made.
        for (api, name) in cluster_scoped_created {
            api.delete(&name, &kube::api::DeleteParams::default()).await?;
        }
        Ok(())
    })
}

/// One invalid object and what the apiserver must say about it.
struct InvalidCase {
    name: &'static str,
    object: serde_json::Value,
    /// Substrings of the rejection message: the field path and the rule's message.
    expect: &'static [&'static str],
}

fn pki(kind: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut object = serde_json::json!({"apiVersion": "pki-operator.io/v1alpha1", "kind": kind, "metadata": {"name": name}});
    object["spec"] = spec;
    object
}

fn invalid_cases() -> Vec<InvalidCase> {
    use serde_json::json;
    let schedule = json!({"interval": "1h"});
    vec![
        InvalidCase {
            name: "issuer with two backends",
            object: pki(
                "Issuer",
                "two-backends",
                json!({"ca": {"secretName": "a"}, "nexus": {"url": "https://pgwy", "clientCertificateSecretName": "b"}}),
            ),
            expect: &["spec", "exactly one of scm, nexus or ca must be set"],
        },
        InvalidCase {
            name: "issuer with a namespace policy",
            object: pki(
                "Issuer",
                "namespace-policy",
                json!({"ca": {"secretName": "a"}, "policy": {"namespaces": ["team-a"]}}),
            ),
            expect: &[
                "spec.policy",
                "namespaces is only for ClusterIssuers: an Issuer serves only its own namespace",
            ],
        },
        InvalidCase {
            name: "cluster issuer policy with an inner wildcard",
            object: pki(
                "ClusterIssuer",
                "inner-wildcard-policy",
                json!({"ca": {"secretName": "a"}, "policy": {"dnsNames": ["example.com", "a.*.example.com"]}}),
            ),
            expect: &[
                "spec.policy.dnsNames[1]",
                "must be a DNS name, optionally starting with *. (one label) or **. (any depth)",
            ],
        },
        InvalidCase {
            name: "cluster issuer policy with a malformed CIDR",
            object: pki(
                "ClusterIssuer",
                "bad-cidr-policy",
                json!({"ca": {"secretName": "a"}, "policy": {"ipAddresses": ["10.0.0.0/33"]}}),
            ),
            expect: &[
                "spec.policy.ipAddresses[0]",
                "must be an IP address or a CIDR range",
            ],
        },
        InvalidCase {
            name: "cluster issuer policy with ** inside a URI",
            object: pki(
                "ClusterIssuer",
                "inner-double-star-policy",
                json!({"ca": {"secretName": "a"}, "policy": {"uris": ["spiffe://cluster.local/**/sa"]}}),
            ),
            expect: &[
                "spec.policy.uris[0]",
                "must be a URI with a scheme; ** only as a final /**",
            ],
        },
        InvalidCase {
            name: "cluster issuer policy with a namespace that is no name or prefix",
            object: pki(
                "ClusterIssuer",
                "bad-namespace-policy",
                json!({"ca": {"secretName": "a"}, "policy": {"namespaces": ["Team_A"]}}),
            ),
            expect: &[
                "spec.policy.namespaces[0]",
                "must be a namespace name or a prefix ending in * such as team-*",
            ],
        },
        InvalidCase {
            name: "cluster issuer policy with a wildcard mailbox",
            object: pki(
                "ClusterIssuer",
                "wildcard-mailbox-policy",
                json!({"ca": {"secretName": "a"}, "policy": {"emailAddresses": ["ops@*.example.com"]}}),
            ),
            expect: &[
                "spec.policy.emailAddresses[0]",
                "must be an email address, a domain, or *.domain / **.domain",
            ],
        },
        InvalidCase {
            name: "cluster issuer without a backend",
            object: pki("ClusterIssuer", "no-backend", json!({})),
            expect: &["spec", "exactly one of scm, nexus or ca must be set"],
        },
        InvalidCase {
            name: "certificate without any name",
            object: pki(
                "Certificate",
                "no-names",
                json!({"secretName": "s", "issuerRef": {"name": "ca"}}),
            ),
            expect: &[
                "spec",
                "at least one of commonName, dnsNames, ipAddresses, uris or emailAddresses must be set",
            ],
        },
        InvalidCase {
            name: "certificate with both renewBefore fields",
            object: pki(
                "Certificate",
                "both-renew",
                json!({"secretName": "s", "issuerRef": {"name": "ca"}, "dnsNames": ["a.example.com"], "renewBefore": "24h", "renewBeforePercentage": 30}),
            ),
            expect: &[
                "spec",
                "renewBefore and renewBeforePercentage are mutually exclusive",
            ],
        },
        InvalidCase {
            name: "certificate with an ECDSA key of RSA size",
            object: pki(
                "Certificate",
                "bad-key",
                json!({"secretName": "s", "issuerRef": {"name": "ca"}, "dnsNames": ["a.example.com"], "privateKey": {"algorithm": "ECDSA", "size": 2048}}),
            ),
            expect: &[
                "spec.privateKey",
                "size must be 2048, 3072 or 4096 for RSA, 256 or 384 for ECDSA",
            ],
        },
        InvalidCase {
            name: "certificate with a malformed duration",
            object: pki(
                "Certificate",
                "bad-duration",
                json!({"secretName": "s", "issuerRef": {"name": "ca"}, "dnsNames": ["a.example.com"], "duration": "90 days"}),
            ),
            expect: &["spec.duration", "must be a duration such as 2160h"],
        },
        InvalidCase {
            name: "domain validation EMAIL without email",
            object: pki(
                "DomainValidation",
                "email-without-address",
                json!({"domain": "example.com", "issuerRef": {"name": "sectigo"}, "method": "EMAIL"}),
            ),
            expect: &["spec", "email is required when method is EMAIL"],
        },
        InvalidCase {
            name: "domain validation with an unknown method",
            object: pki(
                "DomainValidation",
                "bad-method",
                json!({"domain": "example.com", "issuerRef": {"name": "sectigo"}, "method": "FAX"}),
            ),
            expect: &["spec.method", "Unsupported value: \"FAX\""],
        },
        InvalidCase {
            name: "alert config with a duplicate level",
            object: pki(
                "AlertConfig",
                "duplicate-level",
                json!({"levels": [{"level": "WARN", "remainingDays": 30}, {"level": "WARN", "remainingDays": 10}]}),
            ),
            expect: &[
                "spec.levels",
                "each level (INFO, WARN, HIGH, ERROR) may appear at most once",
            ],
        },
        InvalidCase {
            name: "alert config with an unknown level",
            object: pki(
                "AlertConfig",
                "unknown-level",
                json!({"levels": [{"level": "CRITICAL", "remainingDays": 1}]}),
            ),
            expect: &[
                "spec.levels[0].level",
                "Unsupported value: \"CRITICAL\"",
                "\"INFO\", \"WARN\", \"HIGH\", \"ERROR\"",
            ],
        },
        InvalidCase {
            name: "discovery task with an invalid CIDR",
            object: pki(
                "DiscoveryTask",
                "bad-cidr",
                json!({"schedule": schedule, "cluster": {"endpoints": {"ranges": [{"cidr": "10.0.0.300/24", "ports": [443]}]}}}),
            ),
            expect: &[
                "spec.cluster.endpoints.ranges[0].cidr",
                "cidr must be a CIDR such as 10.0.0.0/24",
            ],
        },
        InvalidCase {
            name: "discovery task with port 0",
            object: pki(
                "DiscoveryTask",
                "port-zero",
                json!({"schedule": schedule, "cluster": {"endpoints": {"ports": [0]}}}),
            ),
            expect: &[
                "spec.cluster.endpoints.ports[0]",
                "should be greater than or equal to 1",
            ],
        },
        InvalidCase {
            name: "discovery task with port 70000",
            object: pki(
                "DiscoveryTask",
                "port-70000",
                json!({"schedule": schedule, "scm": {"issuerRef": {"name": "s"}, "agent": "a", "bucketId": "b", "ranges": [{"cidr": "10.0.0.0/24", "ports": [70000]}]}}),
            ),
            expect: &[
                "spec.scm.ranges[0].ports[0]",
                "should be less than or equal to 65535",
            ],
        },
        InvalidCase {
            name: "discovery task with a malformed cron schedule",
            object: pki(
                "DiscoveryTask",
                "bad-cron",
                json!({"schedule": {"cron": "every night"}, "cluster": {"secrets": true}}),
            ),
            expect: &["spec.schedule.cron", "cron must have five fields"],
        },
        InvalidCase {
            name: "discovery task with both cron and interval",
            object: pki(
                "DiscoveryTask",
                "two-schedules",
                json!({"schedule": {"cron": "0 3 * * *", "interval": "1h"}, "cluster": {"secrets": true}}),
            ),
            expect: &["spec.schedule", "exactly one of cron or interval must be set"],
        },
        InvalidCase {
            name: "discovery task with a too short interval",
            object: pki(
                "DiscoveryTask",
                "short-interval",
                json!({"schedule": {"interval": "10s"}, "cluster": {"secrets": true}}),
            ),
            expect: &[
                "spec.schedule.interval",
                "interval must be a duration of at least 1m",
            ],
        },
    ]
}

async fn create_dynamic(
    client: &Client,
    namespace: &str,
    object: &serde_json::Value,
) -> Result<(), kube::Error> {
    let object: DynamicObject = serde_json::from_value(object.clone()).expect("test object is well-formed");
    let types = object.types.clone().expect("test object has a kind");
    let gvk = GroupVersionKind::gvk("pki-operator.io", "v1alpha1", &types.kind);
    let resource = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = if matches!(
        types.kind.as_str(),
        "ClusterIssuer" | "DomainValidation" | "AlertConfig"
    ) {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    };
    api.create(&PostParams::default(), &object).await.map(|_| ())
}

/// Each invalid object is refused by the apiserver with a 422 naming the field and the rule.
fn invalid_objects_are_rejected_naming_the_field() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "invalid").await?;
        let mut failures = Vec::new();
        for case in invalid_cases() {
            match create_dynamic(&client, &ns.name, &case.object).await {
                Ok(()) => failures.push(format!("{}: was accepted", case.name)),
                Err(kube::Error::Api(status)) => {
                    let missing: Vec<_> = case
                        .expect
                        .iter()
                        .filter(|e| !status.message.contains(*e))
                        .collect();
                    if status.code != 422 || !missing.is_empty() {
                        failures.push(format!(
                            "{}: code {} message {:?} lacks {missing:?}",
                            case.name, status.code, status.message
                        ));
                    }
                }
                Err(other) => failures.push(format!("{}: unexpected error {other}", case.name)),
            }
        }

        // secretName is immutable: create a valid Certificate, then try to change it.
        let valid = pki(
            "Certificate",
            "immutable",
            serde_json::json!({"secretName": "first", "issuerRef": {"name": "ca"}, "dnsNames": ["a.example.com"]}),
        );
        create_dynamic(&client, &ns.name, &valid).await?;
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "pki-operator.io",
            "v1alpha1",
            "Certificate",
        ));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
        let patch = serde_json::json!({"spec": {"secretName": "second"}});
        match api
            .patch("immutable", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => failures.push("changing secretName: was accepted".into()),
            Err(kube::Error::Api(status))
                if status.code == 422
                    && status.message.contains("spec.secretName")
                    && status.message.contains("secretName is immutable") => {}
            Err(other) => failures.push(format!("changing secretName: unexpected error {other}")),
        }
        // Other fields stay mutable.
        let patch = serde_json::json!({"spec": {"dnsNames": ["b.example.com"]}});
        api.patch("immutable", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("changing dnsNames must be allowed")?;

        if failures.is_empty() {
            Ok(())
        } else {
            bail!("{} case(s) failed:\n{}", failures.len(), failures.join("\n"))
        }
    })
}

/// The operator starts, `/readyz` turns 200 after the caches synced, `/metrics` serves, logs are
/// JSON when asked, and every controller reconciles objects of its kind.
fn operator_becomes_ready() -> Result<()> {
    block_on(async {
        let dir = work_dir("ready")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "ready").await?;
        let operator = Operator::start(
            plane(),
            &dir,
            "operator",
            &["--log-format", "json", "--namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let (status, body) = operator.get("/livez").await.context("/livez does not answer")?;
        ensure!(status == 200 && body == "ok", "/livez answered {status} {body:?}");

        // Objects of every kind, created after startup, reach their controller.
        let examples = repo_root().join("examples");
        for file in [
            "certificate-minimal.yaml",
            "issuer-ca.yaml",
            "clusterissuer-incommon.yaml",
            "domainvalidation-email.yaml",
            "discoverytask-minimal.yaml",
            "alertconfig-minimal.yaml",
        ] {
            let text = std::fs::read_to_string(examples.join(file))?;
            let suffix = random_suffix();
            // Unique names for the cluster-scoped ones, so parallel tests do not collide.
            let text = text
                .replace("name: incommon\n", &format!("name: incommon-{suffix}\n"))
                .replace("name: shop-example-com\n", &format!("name: shop-{suffix}\n"))
                .replace("name: default\n", &format!("name: default-{suffix}\n"));
            let out = plane().kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&text))?;
            ensure!(
                out.status.success(),
                "applying {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let controllers = [
            "certificate",
            "issuer",
            "cluster_issuer",
            "domain_validation",
            "discovery_task",
            "alert_config",
        ];
        let metrics = wait_for(
            "every controller to reconcile its kind",
            Duration::from_secs(30),
            || async {
                let (status, body) = operator.get("/metrics").await?;
                let all = status == 200
                    && controllers.iter().all(|c| {
                        let sample = format!(
                            r#"pki_operator_reconciliations_total{{controller="{c}",outcome="success"}}"#
                        );
                        metric_value(&body, &sample).is_some_and(|v| v >= 1.0)
                    });
                all.then_some(body)
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", operator.log_text()))?;
        ensure!(
            metric_value(&metrics, "pki_operator_ready").is_some_and(|v| (v - 1.0).abs() < f64::EPSILON),
            "ready gauge not 1:\n{metrics}"
        );
        ensure!(
            metrics.contains("# TYPE pki_operator_reconcile_duration_seconds histogram"),
            "no histogram:\n{metrics}"
        );

        let log = operator.log_text();
        let first = log.lines().next().context("operator logged nothing")?;
        let line: serde_json::Value =
            serde_json::from_str(first).with_context(|| format!("log line is not JSON: {first}"))?;
        ensure!(
            line.get("level").is_some() && line.get("message").is_some() || line.get("fields").is_some(),
            "unexpected JSON log shape: {first}"
        );
        Ok(())
    })
}

/// Two replicas with leader election: exactly one is ready; SIGKILL the leader and the standby
/// takes the Lease and becomes ready; SIGTERM the new leader and it exits 0, releasing the Lease
/// to a third replica at once.
fn standby_takes_over_when_the_leader_is_killed() -> Result<()> {
    block_on(async {
        let dir = work_dir("leader")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "leader").await?;
        let lease_name = format!("pki-operator-e2e-{}", random_suffix());
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
        let start = |id: &str| {
            Operator::start(
                plane(),
                &dir,
                id,
                &[
                    "--namespace",
                    &ns.name,
                    "--leader-election=true",
                    "--leader-election-namespace",
                    &ns.name,
                    "--leader-election-lease",
                    &lease_name,
                    "--lease-duration",
                    "10",
                    "--identity",
                    id,
                ],
            )
        };
        let holder = |leases: Api<Lease>, lease_name: String| async move {
            leases
                .get_opt(&lease_name)
                .await
                .ok()
                .flatten()?
                .spec?
                .holder_identity
        };

        let mut a = start("replica-a")?;
        a.wait_ready(Duration::from_secs(60)).await?;
        let mut b = start("replica-b")?;
        let first = wait_for("replica-a to hold the Lease", Duration::from_secs(20), || {
            holder(leases.clone(), lease_name.clone())
        })
        .await?;
        ensure!(first == "replica-a", "Lease held by {first}, expected replica-a");
        // The standby is alive but not ready while the leader holds the Lease.
        wait_for("replica-b admin server", Duration::from_secs(30), || async {
            b.get("/livez").await.map(|_| ())
        })
        .await?;
        let (status, _) = b.get("/readyz").await.context("standby /readyz")?;
        ensure!(status == 503, "standby answered /readyz {status}, expected 503");

        let killed = Instant::now();
        a.kill();
        let second = wait_for("replica-b to take the Lease", Duration::from_secs(30), || {
            let get = holder(leases.clone(), lease_name.clone());
            async move { get.await.filter(|h| h == "replica-b") }
        })
        .await?;
        b.wait_ready(Duration::from_secs(30)).await?;
        let takeover = killed.elapsed();
        eprintln!("takeover after SIGKILL: {takeover:?} (lease duration 10s)");
        ensure!(second == "replica-b");
        ensure!(takeover < Duration::from_secs(20), "takeover took {takeover:?}");
        let lease = leases.get(&lease_name).await?;
        ensure!(
            lease.spec.and_then(|s| s.lease_transitions) >= Some(1),
            "leaseTransitions not incremented"
        );

        // Graceful shutdown: SIGTERM releases the Lease; a new standby takes it without waiting
        // for expiry.
        let c = start("replica-c")?;
        wait_for("replica-c admin server", Duration::from_secs(30), || async {
            c.get("/livez").await.map(|_| ())
        })
        .await?;
        let terminated = Instant::now();
        pki_operator_e2e::signal(b.pid(), "TERM");
        let status = b.wait_exit(Duration::from_secs(20)).await?;
        ensure!(
            status.success(),
            "replica-b exited with {status} after SIGTERM:\n{}",
            b.log_text()
        );
        ensure!(
            b.log_text().contains("released leadership"),
            "replica-b did not release the Lease:\n{}",
            b.log_text()
        );
        wait_for(
            "replica-c to take the released Lease",
            Duration::from_secs(20),
            || {
                let get = holder(leases.clone(), lease_name.clone());
                async move { get.await.filter(|h| h == "replica-c") }
            },
        )
        .await?;
        c.wait_ready(Duration::from_secs(30)).await?;
        eprintln!("takeover after SIGTERM: {:?}", terminated.elapsed());
        Ok(())
    })
}

/// Against a control plane without our CRDs the operator exits non-zero naming the CRD.
fn operator_without_crds_exits() -> Result<()> {
    block_on(async {
        let dir = work_dir("no-crds")?;
        let bare = ControlPlane::start(&dir.join("cluster")).await?;
        let mut operator = Operator::start(&bare, &dir, "operator", &[])?;
        let status = operator.wait_exit(Duration::from_secs(60)).await?;
        let log = operator.log_text();
        ensure!(
            !status.success(),
            "operator exited successfully without CRDs:\n{log}"
        );
        ensure!(
            log.contains("certificates.pki-operator.io"),
            "exit message does not name the CRD:\n{log}"
        );
        ensure!(
            log.contains("kubectl apply -f crds/"),
            "exit message does not say how to install:\n{log}"
        );
        Ok(())
    })
}

// ---- Certificates ------------------------------------------------------------------------

/// A self-signed P-256 CA: `(cert PEM, key PEM)`.
fn apply(namespace: &str, yaml: &str) -> Result<()> {
    let out = plane().kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml))?;
    ensure!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Creates the CA Secret and a `ca` Issuer named `name` in `namespace`; returns the CA PEM.
fn ca_issuer(namespace: &str, name: &str) -> Result<String> {
    let (cert, key) = pki_operator_e2e::self_signed_ca(&format!("{name} test CA"))?;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "stringData": {"tls.crt": cert, "tls.key": key},
    });
    apply(namespace, &serde_json::to_string(&secret)?)?;
    apply(
        namespace,
        &format!(
            "apiVersion: pki-operator.io/v1alpha1\nkind: Issuer\nmetadata: {{name: {name}}}\nspec: {{ca: {{secretName: {name}}}}}\n"
        ),
    )?;
    Ok(cert)
}

async fn wait_certificate(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Certificate) -> bool,
) -> Result<Certificate> {
    let api: Api<Certificate> = Api::namespaced(client.clone(), namespace);
    let result = wait_for(what, timeout, || async {
        api.get_opt(name).await.ok().flatten().filter(|c| check(c))
    })
    .await;
    if result.is_err() {
        let last = api.get_opt(name).await.ok().flatten().and_then(|c| c.status);
        return result.with_context(|| format!("last status of {name}: {last:#?}"));
    }
    result
}

/// Waits until `name` no longer exists in `api`.
async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(what, Duration::from_secs(60), || async {
        api.get_opt(name)
            .await
            .ok()
            .and_then(|found| found.is_none().then_some(()))
    })
    .await
}

fn condition(cert: &Certificate, type_: &str) -> Option<(String, String, String)> {
    cert.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is_ready(cert: &Certificate) -> bool {
    condition(cert, "Ready").is_some_and(|(status, ..)| status == "True")
}

fn secret_text(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret has no {key}"))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// Checks a TLS Secret: key matches the leaf, the chain verifies to `root_pem`, names equal `dns`.
fn verify_tls_secret(
    secret: &k8s_openapi::api::core::v1::Secret,
    root_pem: &str,
    dns: &[&str],
) -> Result<()> {
    use pki_operator::pki::{inspect, key::PrivateKey};
    ensure!(
        secret.type_.as_deref() == Some("kubernetes.io/tls"),
        "Secret type {:?}",
        secret.type_
    );
    let chain = pki_operator::pki::chain::parse_certificates(secret_text(secret, "tls.crt")?.as_bytes())?;
    let ders: Vec<Vec<u8>> = chain.iter().map(der::Encode::to_der).collect::<Result<_, _>>()?;
    let (leaf, intermediates) = ders.split_first().context("empty tls.crt")?;
    let info = inspect::inspect(leaf)?;
    let key = PrivateKey::from_pem(&secret_text(secret, "tls.key")?)?;
    ensure!(
        key.public_key_der()? == info.public_key_der,
        "tls.key does not match the certificate"
    );
    let root = pki_operator::pki::chain::parse_certificates(root_pem.as_bytes())?;
    let mut full = intermediates.to_vec();
    full.push(der::Encode::to_der(&root[0])?);
    inspect::verify_chain(leaf, &full)?;
    let ca = secret_text(secret, "ca.crt")?;
    ensure!(ca.trim() == root_pem.trim(), "ca.crt is not the issuer's root");
    let mut names = info.dns_names.clone();
    names.sort();
    let mut wanted: Vec<String> = dns.iter().map(|s| (*s).to_owned()).collect();
    wanted.sort();
    ensure!(names == wanted, "certificate names {names:?}, spec {wanted:?}");
    Ok(())
}

/// A `ca` Issuer and Certificates with different keys and formats become Ready; each Secret's
/// key matches its leaf, the chain verifies to the CA, the names equal the spec, and the printer
/// columns show it.
fn ca_certificate_becomes_ready() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let dir = work_dir("ca-ready")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "ca-ready").await?;
        let root = ca_issuer(&ns.name, "local-ca")?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(
            &ns.name,
            r"
apiVersion: pki-operator.io/v1alpha1
kind: Certificate
metadata: {name: ecdsa}
spec:
  secretName: ecdsa-tls
  issuerRef: {name: local-ca}
  commonName: ecdsa.example.com
  dnsNames: [ecdsa.example.com, www.ecdsa.example.com]
---
apiVersion: pki-operator.io/v1alpha1
kind: Certificate
metadata: {name: rsa}
spec:
  secretName: rsa-tls
  issuerRef: {name: local-ca}
  dnsNames: [rsa.example.com]
  privateKey: {algorithm: RSA, size: 2048, encoding: PKCS8}
  additionalOutputFormats: [{type: CombinedPEM}, {type: DER}]
  secretTemplate: {labels: {team: payments}, annotations: {owner: payments}}
  keystores: {pkcs12: {create: true, passwordSecretRef: {name: keystore-password, key: password}}}
---
apiVersion: v1
kind: Secret
metadata: {name: keystore-password}
stringData: {password: changeit}
",
        )?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        for (name, secret_name, dns) in [
            (
                "ecdsa",
                "ecdsa-tls",
                vec!["ecdsa.example.com", "www.ecdsa.example.com"],
            ),
            ("rsa", "rsa-tls", vec!["rsa.example.com"]),
        ] {
            let cert = wait_certificate(
                &client,
                &ns.name,
                name,
                "Certificate Ready",
                Duration::from_secs(60),
                is_ready,
            )
            .await
            .with_context(|| operator.log_text())?;
            let status = cert.status.clone().unwrap_or_default();
            ensure!(
                status.not_after.is_some() && status.serial_number.is_some() && status.revision == Some(1),
                "status {status:?}"
            );
            let secret = secrets.get(secret_name).await?;
            verify_tls_secret(&secret, &root, &dns)?;
            let annotations = secret.metadata.annotations.clone().unwrap_or_default();
            ensure!(
                annotations.get("pki-operator.io/serial-number") == status.serial_number.as_ref(),
                "serial annotation"
            );
        }
        let rsa = secrets.get("rsa-tls").await?;
        ensure!(
            secret_text(&rsa, "tls.key")?.starts_with("-----BEGIN PRIVATE KEY-----"),
            "PKCS#8 requested"
        );
        ensure!(
            secret_text(&rsa, "tls-combined.pem")?.contains("PRIVATE KEY-----"),
            "CombinedPEM missing"
        );
        ensure!(
            rsa.data.as_ref().is_some_and(|d| d.contains_key("key.der")),
            "DER output missing"
        );
        let keystore = rsa
            .data
            .as_ref()
            .and_then(|d| d.get("keystore.p12"))
            .context("keystore.p12 missing")?;
        let store = p12_keystore::KeyStore::from_pkcs12(
            &keystore.0,
            "changeit",
            p12_keystore::Pkcs12ImportPolicy::default(),
        )
        .context("keystore.p12 does not open with the password")?;
        let (_, chain) = store
            .private_key_chain()
            .context("keystore.p12 has no key entry")?;
        let tls_key = pki_operator::pki::key::PrivateKey::from_pem(&secret_text(&rsa, "tls.key")?)?;
        ensure!(
            chain.key().as_der() == tls_key.pkcs8_der(),
            "keystore key differs from tls.key"
        );
        ensure!(
            rsa.data
                .as_ref()
                .is_some_and(|d| d.contains_key("truststore.p12")),
            "truststore.p12 missing"
        );
        ensure!(
            rsa.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str)
                == Some("payments"),
            "template labels"
        );
        let ecdsa = secrets.get("ecdsa-tls").await?;
        ensure!(
            secret_text(&ecdsa, "tls.key")?.starts_with("-----BEGIN EC PRIVATE KEY-----"),
            "PKCS#1/SEC1 by default"
        );
        let out = plane().kubectl(&["get", "pkicert", "-n", &ns.name], None)?;
        let table = String::from_utf8_lossy(&out.stdout);
        let row = table
            .lines()
            .find(|l| l.starts_with("ecdsa "))
            .context("no row")?;
        ensure!(
            row.contains("True") && row.contains("ecdsa-tls") && row.contains("local-ca"),
            "printer columns: {table}"
        );
        Ok(())
    })
}

/// A Secret the Certificate does not own is left byte-for-byte untouched, and the condition
/// says why.
fn foreign_secret_is_never_modified() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let dir = work_dir("conflict")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "conflict").await?;
        ca_issuer(&ns.name, "local-ca")?;
        apply(
            &ns.name,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: taken}\nstringData: {tls.crt: precious, note: do-not-touch}\n",
        )?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let before = secrets.get("taken").await?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(
            &ns.name,
            "apiVersion: pki-operator.io/v1alpha1\nkind: Certificate\nmetadata: {name: grabby}\nspec: {secretName: taken, issuerRef: {name: local-ca}, dnsNames: [grabby.example.com]}\n",
        )?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "grabby",
            "Ready=False SecretConflict",
            Duration::from_secs(60),
            |c| condition(c, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "SecretConflict"),
        )
        .await
        .with_context(|| operator.log_text())?;
        let (_, _, message) = condition(&cert, "Ready").context("no Ready condition")?;
        ensure!(
            message.contains("taken") && message.contains("not owned"),
            "message {message:?}"
        );
        let after = secrets.get("taken").await?;
        ensure!(after.data == before.data, "the Secret's data changed");
        ensure!(
            after.metadata.resource_version == before.metadata.resource_version,
            "the Secret was written to"
        );
        ensure!(
            after.metadata.owner_references.is_none(),
            "the Secret gained an owner"
        );
        Ok(())
    })
}

/// Writes to the apiserver in `namespace` recorded in the audit log at or after `since`
/// (RFC 3339), excluding the test's own kubectl.
fn audited_writes(namespace: &str, since: &str) -> Result<Vec<String>> {
    let log = std::fs::read_to_string(plane().dir().join("audit.log"))?;
    let mut writes = Vec::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let ns = event["objectRef"]["namespace"].as_str().unwrap_or_default();
        let at = event["requestReceivedTimestamp"].as_str().unwrap_or_default();
        let agent = event["userAgent"].as_str().unwrap_or_default();
        if ns == namespace && at >= since && !agent.starts_with("kubectl") {
            writes.push(format!(
                "{} {} {}",
                event["verb"], event["objectRef"]["resource"], event["objectRef"]["name"]
            ));
        }
    }
    Ok(writes)
}

/// Once Ready, the operator writes nothing more for the Certificate for two minutes.
fn steady_state_makes_no_writes() -> Result<()> {
    block_on(async {
        let dir = work_dir("steady")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "steady").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let sim = ScmSimulator::start(ScmSimulatorConfig::default()).await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate_yaml("calm", "local-ca", ""))?;
        apply(&ns.name, &certificate_yaml("quiet", "sectigo", ""))?;
        for name in ["calm", "quiet"] {
            wait_certificate(
                &client,
                &ns.name,
                name,
                "Ready",
                Duration::from_secs(60),
                is_ready,
            )
            .await?;
        }
        // Let the writes that made them Ready and their watch echoes settle, then watch a
        // 2-minute window: no API writes in the namespace, no calls to the CA.
        let settle_until = Instant::now() + Duration::from_secs(5);
        wait_for("settle", Duration::from_secs(10), || async {
            (Instant::now() >= settle_until).then_some(())
        })
        .await?;
        let since = jiff::Timestamp::now().to_string();
        let ca_requests_before: u64 = sim.stats().requests.values().sum();
        let window_end = Instant::now() + Duration::from_secs(120);
        wait_for("the 2-minute window", Duration::from_secs(130), || async {
            (Instant::now() >= window_end).then_some(())
        })
        .await?;
        let writes = audited_writes(&ns.name, &since)?;
        ensure!(
            writes.is_empty(),
            "the operator wrote {} time(s) in steady state: {writes:?}",
            writes.len()
        );
        let ca_requests_after: u64 = sim.stats().requests.values().sum();
        ensure!(
            ca_requests_after == ca_requests_before,
            "the operator called the CA {} time(s) in steady state: {:?}",
            ca_requests_after - ca_requests_before,
            sim.stats().requests
        );
        let (status, metrics) = operator.get("/metrics").await.context("metrics")?;
        ensure!(
            status == 200 && metrics.contains("pki_operator_reconciliations_total"),
            "metrics unavailable"
        );
        Ok(())
    })
}

// ---- SCM ---------------------------------------------------------------------------------

const SCM_PASSWORD: &str = "sim-password-123";

/// A namespace with an SCM simulator, an SCM Issuer `sectigo` for it, and a Ready operator
/// watching the namespace.
struct ScmScene {
    client: Client,
    ns: TestNamespace,
    sim: ScmSimulator,
    operator: Operator,
}

impl ScmScene {
    async fn start(name: &str, config: ScmSimulatorConfig, password: &str) -> Result<Self> {
        let dir = work_dir(name)?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, name).await?;
        let sim = ScmSimulator::start(config).await?;
        scm_issuer(&ns.name, "sectigo", &sim, password)?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        Ok(Self {
            client,
            ns,
            sim,
            operator,
        })
    }
}

/// A password Secret and an SCM Issuer pointing at `sim`, polling every second.
fn scm_issuer(namespace: &str, name: &str, sim: &ScmSimulator, password: &str) -> Result<()> {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-credentials")},
        "stringData": {"login": "api-admin", "password": password},
    });
    apply(namespace, &serde_json::to_string(&secret)?)?;
    let issuer = serde_json::json!({
        "apiVersion": "pki-operator.io/v1alpha1", "kind": "Issuer",
        "metadata": {"name": name},
        "spec": {"scm": {
            "url": sim.base_url(), "customerUri": "cst-sim",
            "auth": {"password": {"secretName": format!("{name}-credentials")}},
            "orgId": 8932, "certType": 5153, "caBundle": sim.tls_ca_pem(), "pollInterval": "1s",
        }},
    });
    apply(namespace, &serde_json::to_string(&issuer)?)
}

fn certificate_yaml(name: &str, issuer: &str, extra: &str) -> String {
    format!(
        "apiVersion: pki-operator.io/v1alpha1\nkind: Certificate\nmetadata: {{name: {name}}}\nspec:\n  secretName: {name}-tls\n  issuerRef: {{name: {issuer}}}\n  dnsNames: [{name}.example.com]\n{extra}"
    )
}

fn total_orders(sim: &ScmSimulator) -> u32 {
    sim.stats().orders_per_csr.values().sum()
}

/// SCM with a processing delay: while pending, status shows the order id and `Issuing=True`;
/// then Ready with a verified Secret, and the simulator counts exactly one order.
fn scm_certificate_issued_once() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start(
            "scm-once",
            ScmSimulatorConfig {
                pending_collects: 4,
                ..ScmSimulatorConfig::default()
            },
            SCM_PASSWORD,
        )
        .await?;
        apply(&ns.name, &certificate_yaml("shop", "sectigo", ""))?;
        let pending = wait_certificate(
            &client,
            &ns.name,
            "shop",
            "a pending order in status",
            Duration::from_secs(60),
            |c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.order.as_ref())
                    .is_some_and(|o| o.state == "Pending")
                    && condition(c, "Issuing").is_some_and(|(s, ..)| s == "True")
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        let order = pending.status.and_then(|s| s.order).context("order")?;
        ensure!(order.backend == "scm" && !order.id.is_empty(), "order {order:?}");
        let ready = wait_certificate(
            &client,
            &ns.name,
            "shop",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get("shop-tls")
            .await?;
        verify_tls_secret(&secret, &sim.issuing_root_pem(), &["shop.example.com"])?;
        ensure!(
            ready
                .status
                .and_then(|s| s.order)
                .is_some_and(|o| o.id == order.id && o.state == "Issued")
        );
        let stats = sim.stats();
        ensure!(
            total_orders(&sim) == 1,
            "the simulator counted orders {:?}",
            stats.orders_per_csr
        );
        ensure!(
            stats.requests.get("enroll") == Some(&1),
            "enroll requests {:?}",
            stats.requests
        );
        Ok(())
    })
}

/// The operator is killed right after the simulator accepted the order (its response never
/// arrived); after a restart the Certificate becomes Ready and there is still exactly one order.
fn scm_crash_recovery() -> Result<()> {
    block_on(async {
        let dir = work_dir("scm-crash")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "scm-crash").await?;
        let sim = ScmSimulator::start(ScmSimulatorConfig::default()).await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        sim.set_faults(Faults {
            drop_after_enroll: 1,
            ..Faults::default()
        });
        let mut first = Operator::start(plane(), &dir, "operator-1", &["--namespace", &ns.name])?;
        first.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate_yaml("crashy", "sectigo", ""))?;
        wait_for(
            "the simulator to accept the order",
            Duration::from_secs(60),
            || async { (total_orders(&sim) == 1).then_some(()) },
        )
        .await
        .with_context(|| first.log_text())?;
        first.kill();
        sim.set_faults(Faults::default());
        let second = Operator::start(plane(), &dir, "operator-2", &["--namespace", &ns.name])?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "crashy",
            "Ready after restart",
            Duration::from_secs(90),
            is_ready,
        )
        .await
        .with_context(|| second.log_text())?;
        let stats = sim.stats();
        ensure!(
            total_orders(&sim) == 1,
            "expected exactly one order, the simulator counted {:?}",
            stats.orders_per_csr
        );
        ensure!(
            stats.requests.get("enroll") == Some(&1),
            "enroll requests {:?}",
            stats.requests
        );
        let only = stats.orders.first().context("no order")?;
        let order = cert.status.and_then(|s| s.order).context("no order in status")?;
        ensure!(
            order.id == only.ssl_id.to_string(),
            "status order {} is not the simulator's {}",
            order.id,
            only.ssl_id
        );
        Ok(())
    })
}

/// A 3-minute certificate renewed at two thirds of its life: new key, new serial, new Secret,
/// and the superseded serial revoked at the simulator.
fn scm_renewal() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start(
            "scm-renew",
            ScmSimulatorConfig {
                certificate_lifetime: Some(Duration::from_secs(180)),
                ..ScmSimulatorConfig::default()
            },
            SCM_PASSWORD,
        )
        .await?;
        apply(
            &ns.name,
            &certificate_yaml(
                "rotating",
                "sectigo",
                "  duration: 3m\n  revocationPolicy: {superseded: Revoke}\n",
            ),
        )?;
        let first = wait_certificate(
            &client,
            &ns.name,
            "rotating",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await?;
        let first_serial = first
            .status
            .as_ref()
            .and_then(|s| s.serial_number.clone())
            .context("serial")?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let first_key = secret_text(&secrets.get("rotating-tls").await?, "tls.key")?;
        let renewed = wait_certificate(
            &client,
            &ns.name,
            "rotating",
            "revision 2",
            Duration::from_secs(200),
            |c| c.status.as_ref().and_then(|s| s.revision) == Some(2) && is_ready(c),
        )
        .await
        .with_context(|| operator.log_text())?;
        let second_serial = renewed
            .status
            .as_ref()
            .and_then(|s| s.serial_number.clone())
            .context("serial")?;
        ensure!(second_serial != first_serial, "the serial did not change");
        let secret = secrets.get("rotating-tls").await?;
        ensure!(
            secret_text(&secret, "tls.key")? != first_key,
            "the key was not rotated"
        );
        verify_tls_secret(&secret, &sim.issuing_root_pem(), &["rotating.example.com"])?;
        let revoked = wait_for(
            "the superseded certificate to be revoked",
            Duration::from_secs(30),
            || async {
                sim.stats()
                    .orders
                    .into_iter()
                    .find(|o| {
                        o.serial_number
                            .as_deref()
                            .map(|s| s.replace(':', "").to_lowercase())
                            == Some(first_serial.clone())
                    })
                    .filter(|o| o.status == "Revoked")
            },
        )
        .await?;
        ensure!(revoked.status == "Revoked");
        Ok(())
    })
}

/// Deleting a Certificate with revoke-on-delete revokes it at the simulator, removes the
/// finalizer, and the Secret is garbage-collected.
fn scm_revoke_on_delete() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("scm-delete", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        apply(
            &ns.name,
            &certificate_yaml(
                "doomed",
                "sectigo",
                "  revocationPolicy: {onDelete: Revoke, onDeleteReason: CessationOfOperation}\n",
            ),
        )?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "doomed",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await?;
        ensure!(
            cert.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == "pki-operator.io/revoke-on-delete")),
            "no finalizer"
        );
        let order_id = cert.status.and_then(|s| s.order).context("order")?.id;
        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        certs
            .delete("doomed", &kube::api::DeleteParams::default())
            .await?;
        wait_gone(&certs, "doomed", "the Certificate to be gone")
            .await
            .with_context(|| operator.log_text())?;
        let order = sim
            .stats()
            .orders
            .into_iter()
            .find(|o| o.ssl_id.to_string() == order_id)
            .context("order gone")?;
        ensure!(order.status == "Revoked", "order status {}", order.status);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        wait_gone(&secrets, "doomed-tls", "the Secret to be garbage-collected").await?;
        Ok(())
    })
}

/// A wrong password: the Issuer is Ready=False with an actionable message, the Certificate says
/// its issuer is not ready and why; fixing the Secret recovers both without manual steps.
fn scm_invalid_credentials() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("scm-creds", ScmSimulatorConfig::default(), "wrong-password").await?;
        apply(&ns.name, &certificate_yaml("blocked", "sectigo", ""))?;
        let issuers: Api<Issuer> = Api::namespaced(client.clone(), &ns.name);
        let issuer = wait_for(
            "Issuer Ready=False Unauthorized",
            Duration::from_secs(60),
            || async {
                issuers.get_opt("sectigo").await.ok().flatten().filter(|i| {
                    i.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "Unauthorized")
                    })
                })
            },
        )
        .await?;
        let message = issuer
            .status
            .map(|s| s.conditions[0].message.clone())
            .unwrap_or_default();
        ensure!(
            message.contains("credentials") && message.contains("Unknown user"),
            "issuer message {message:?}"
        );
        ensure!(
            !message.contains("wrong-password"),
            "the password leaked into status"
        );
        let cert = wait_certificate(
            &client,
            &ns.name,
            "blocked",
            "Certificate reports the issuer",
            Duration::from_secs(60),
            |c| {
                condition(c, "Ready").is_some_and(|(s, r, m)| {
                    s == "False" && r == "IssuerNotReady" && m.contains("Unknown user")
                })
            },
        )
        .await?;
        ensure!(
            cert.status.and_then(|s| s.order).is_none(),
            "an order was placed with bad credentials"
        );
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        wait_certificate(
            &client,
            &ns.name,
            "blocked",
            "Ready after fixing the Secret",
            Duration::from_secs(90),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(total_orders(&sim) == 1, "orders {:?}", sim.stats().orders_per_csr);
        Ok(())
    })
}

/// The CA fails every order, so failures back off (5 s, 10 s, 20 s, ...). The operator is killed
/// after the third failure and restarted while the CA recovers: the new one honours the backoff
/// recorded in status (no order before `lastFailureTime` + 80 % of the third wait) instead of
/// retrying at once, then issues with one order.
fn scm_backoff_survives_a_restart() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            mut operator,
        } = ScmScene::start("scm-backoff", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        sim.set_faults(Faults {
            server_error_rate: 1.0,
            endpoints: Some(vec!["enroll".into()]),
            ..Faults::default()
        });
        apply(&ns.name, &certificate_yaml("patient", "sectigo", ""))?;
        let failing = wait_certificate(
            &client,
            &ns.name,
            "patient",
            "three failed attempts",
            Duration::from_secs(90),
            |c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.failed_issuance_attempts)
                    .is_some_and(|a| a >= 3)
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        operator.kill();
        let enrolls = sim.stats().requests.get("enroll").copied().unwrap_or(0);
        let status = failing.status.context("no status")?;
        let attempts = status.failed_issuance_attempts.context("no attempt count")?;
        let failed_at = status.last_failure_time.context("no failure time")?.0;
        // backoff(attempts) is 5 s doubling per attempt, capped at 10 min, with ±20 % jitter.
        let base = (5 * 2_i64.pow(u32::try_from(attempts - 1)?)).min(600);
        // lastFailureTime has whole seconds: allow one.
        let earliest = failed_at + jiff::SignedDuration::from_millis(base * 800 - 1000);
        let restarted = jiff::Timestamp::now();
        let second = Operator::start(
            plane(),
            &work_dir("scm-backoff")?,
            "operator-2",
            &["--namespace", &ns.name],
        )?;
        // The CA recovers at once, so only the recorded backoff can delay the next order.
        sim.set_faults(Faults::default());
        wait_for("the next order attempt", Duration::from_secs(120), || async {
            (sim.stats().requests.get("enroll").copied().unwrap_or(0) > enrolls).then_some(())
        })
        .await
        .with_context(|| second.log_text())?;
        let retried = jiff::Timestamp::now();
        ensure!(
            retried >= earliest,
            "attempt {} came at {retried}, before {earliest} (failure {attempts} at {failed_at}, restart at {restarted})",
            attempts + 1
        );
        wait_certificate(
            &client,
            &ns.name,
            "patient",
            "Ready once the CA recovers",
            Duration::from_secs(120),
            is_ready,
        )
        .await
        .with_context(|| second.log_text())?;
        ensure!(total_orders(&sim) == 1, "orders {:?}", sim.stats().orders_per_csr);
        Ok(())
    })
}

/// Someone overwrites `tls.crt`: the operator rewrites the Secret from the existing order with
/// the key it still holds, without placing a second order.
fn scm_tampered_secret_repaired() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("scm-tamper", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        apply(&ns.name, &certificate_yaml("fragile", "sectigo", ""))?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "fragile",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await?;
        let serial = cert.status.and_then(|s| s.serial_number).context("serial")?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let key_before = secret_text(&secrets.get("fragile-tls").await?, "tls.key")?;
        let patch = r#"{"stringData":{"tls.crt":"tampered"}}"#;
        let out = plane().kubectl(
            &[
                "patch",
                "secret",
                "fragile-tls",
                "-n",
                &ns.name,
                "--type=merge",
                "-p",
                patch,
            ],
            None,
        )?;
        ensure!(
            out.status.success(),
            "patch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let repaired = wait_for("the Secret to be repaired", Duration::from_secs(60), || async {
            let secret = secrets.get_opt("fragile-tls").await.ok().flatten()?;
            secret_text(&secret, "tls.crt")
                .ok()
                .filter(|t| t.contains("BEGIN CERTIFICATE"))
                .map(|_| secret)
        })
        .await
        .with_context(|| operator.log_text())?;
        verify_tls_secret(&repaired, &sim.issuing_root_pem(), &["fragile.example.com"])?;
        ensure!(
            secret_text(&repaired, "tls.key")? == key_before,
            "the key changed: a new certificate was issued"
        );
        let after = wait_certificate(
            &client,
            &ns.name,
            "fragile",
            "Ready",
            Duration::from_secs(30),
            is_ready,
        )
        .await?;
        ensure!(
            after.status.as_ref().and_then(|s| s.serial_number.clone()) == Some(serial),
            "serial changed"
        );
        ensure!(
            after.status.and_then(|s| s.revision) == Some(1),
            "revision changed"
        );
        ensure!(
            total_orders(&sim) == 1,
            "a second order was placed: {:?}",
            sim.stats().orders_per_csr
        );
        Ok(())
    })
}

// ---- Helm chart ----------------------------------------------------------------------------

/// The chart lints and renders with helm, every object it renders is accepted by the apiserver,
/// and an operator running as the chart's service account (a token, no admin certificate) with only
/// the chart's RBAC issues a Certificate.
fn helm_chart_rbac_suffices() -> Result<()> {
    block_on(async {
        let helm = std::env::var("PKI_E2E_HELM")
            .context("PKI_E2E_HELM is not set; run the e2e tests with `make e2e`")?;
        let dir = work_dir("helm")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "helm").await?;
        let chart = repo_root().join("charts/pki-operator");
        let lint = std::process::Command::new(&helm)
            .arg("lint")
            .arg(&chart)
            .output()?;
        ensure!(
            lint.status.success(),
            "helm lint failed: {}",
            String::from_utf8_lossy(&lint.stdout)
        );
        let rendered = std::process::Command::new(&helm)
            .args(["template", "pki-operator", "--namespace", &ns.name, "--skip-crds"])
            .arg(&chart)
            .output()?;
        ensure!(
            rendered.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        apply(&ns.name, &String::from_utf8(rendered.stdout)?)?;

        // A kubeconfig holding only the ServiceAccount's token.
        let out = plane().kubectl(&["create", "token", "pki-operator", "-n", &ns.name], None)?;
        ensure!(
            out.status.success(),
            "create token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout)?.trim().to_owned();
        let admin = std::fs::read_to_string(plane().kubeconfig())?;
        let server = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .context("server")?;
        let ca = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
            .context("ca")?;
        let kubeconfig = dir.join("sa-kubeconfig");
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
        });
        std::fs::write(&kubeconfig, serde_json::to_string(&config)?)?;

        ca_issuer(&ns.name, "local-ca")?;
        let args = [
            "--namespace",
            ns.name.as_str(),
            "--leader-election=true",
            "--leader-election-namespace",
            ns.name.as_str(),
            "--cluster-resource-namespace",
            ns.name.as_str(),
        ];
        let operator = Operator::start_with_kubeconfig(&kubeconfig, &dir, "operator", &args)?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate_yaml("rbac", "local-ca", ""))?;
        wait_certificate(
            &client,
            &ns.name,
            "rbac",
            "Ready with the chart's RBAC",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let log = operator.log_text();
        ensure!(
            !log.to_lowercase().contains("forbidden"),
            "the operator hit RBAC denials:\n{log}"
        );
        Ok(())
    })
}
