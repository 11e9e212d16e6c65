//! End-to-end tests of the control plane itself and of the CRDs: the apiserver the other tests
//! rely on is a real one, the CRDs and every example apply, and invalid objects are refused
//! naming the field.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use libtest_mimic::Trial;
use pki_operator_e2e::{TestNamespace, repo_root, wait_for};
use serde::Deserialize as _;

use crate::support::{block_on, install_crds, plane, trial, wait_gone};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "control_plane_collects_garbage_signs_tokens_and_enforces_rbac",
            control_plane_works,
        ),
        trial("crds_and_examples_apply", crds_and_examples_apply),
        trial(
            "invalid_objects_are_rejected_naming_the_field",
            invalid_objects_are_rejected_naming_the_field,
        ),
    ]
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
