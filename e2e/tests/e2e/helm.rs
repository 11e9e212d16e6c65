//! End-to-end tests of the Helm chart: it lints and renders with default and full values, the
//! apiserver accepts what it renders, its values schema rejects bad values naming them, an
//! uninstall keeps the CRDs and users' resources, and its RBAC is all the operator needs.

use std::{path::PathBuf, process::Output, time::Duration};

use anyhow::{Context as _, Result, ensure};
use libtest_mimic::Trial;
use pki_operator_e2e::{Operator, TestNamespace, repo_root, work_dir};

use crate::support::{
    apply, block_on, ca_issuer, certificate_yaml, is_ready, plane, trial, wait_certificate,
};

/// The CRDs the chart ships (its `files/crds/`, generated like `crds/`).
const CRDS: [&str; 6] = [
    "alertconfigs.pki-operator.io",
    "certificates.pki-operator.io",
    "clusterissuers.pki-operator.io",
    "discoverytasks.pki-operator.io",
    "domainvalidations.pki-operator.io",
    "issuers.pki-operator.io",
];

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "helm_chart_renders_applies_and_its_rbac_suffices",
            helm_chart_rbac_suffices,
        ),
        trial(
            "helm_chart_lints_and_renders_with_default_and_full_values",
            helm_chart_renders_default_and_full_values,
        ),
        trial(
            "helm_chart_manifests_pass_a_server_side_dry_run",
            helm_chart_server_dry_run,
        ),
        trial(
            "helm_chart_schema_rejects_invalid_values_naming_them",
            helm_chart_rejects_invalid_values,
        ),
        trial(
            "helm_uninstall_keeps_the_crds_and_certificates",
            helm_uninstall_keeps_crds_and_certificates,
        ),
    ]
}

/// The helm binary (`make` builds it; `make e2e` passes it as `PKI_E2E_HELM`).
fn helm_binary() -> Result<String> {
    std::env::var("PKI_E2E_HELM").context("PKI_E2E_HELM is not set; run the e2e tests with `make e2e`")
}

pub(crate) fn chart() -> PathBuf {
    repo_root().join("charts/pki-operator")
}

/// Runs helm with `args`, its state (cache, config, data) in `dir` rather than `$HOME`.
pub(crate) fn helm(dir: &std::path::Path, args: &[&str]) -> Result<Output> {
    let home = dir.join("helm-home");
    Ok(std::process::Command::new(helm_binary()?)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()?)
}

/// `helm <args>`'s stdout; its stderr and stdout in the error when it fails.
pub(crate) fn helm_ok(dir: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = helm(dir, args)?;
    ensure!(
        out.status.success(),
        "helm {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The `kind:` of every document in a rendered stream.
fn kinds(rendered: &str) -> Vec<&str> {
    rendered
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::trim)
        .collect()
}

/// The writes the issuing test does not make through the operator, made with the chart's service
/// account token the way the operator makes them: server-side apply creating the HTTP solver's
/// Ingress and `ExternalName` Service and the `AlertConfig` sent-record `ConfigMap`, then deleting
/// the route. Apply of a new object needs `create` as well as `patch`.
fn writes_the_operator_makes_are_allowed(dir: &std::path::Path, token: &str, namespace: &str) -> Result<()> {
    let objects = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: rbac-record, namespace: {namespace}}}
data: {{record: ""}}
---
apiVersion: v1
kind: Service
metadata: {{name: rbac-route, namespace: {namespace}}}
spec:
  type: ExternalName
  externalName: pki-operator-solver.{namespace}.svc
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: rbac-route, namespace: {namespace}}}
spec:
  rules:
    - host: rbac.example.com
      http:
        paths:
          - path: /.well-known/pki-validation/x.txt
            pathType: Exact
            backend: {{service: {{name: rbac-route, port: {{number: 80}}}}}}
"#
    );
    let file = dir.join("operator-writes.yaml");
    std::fs::write(&file, objects)?;
    let file = file.to_string_lossy();
    for args in [
        vec![
            "apply",
            "--server-side",
            "--field-manager",
            "pki-operator",
            "-f",
            &*file,
        ],
        vec![
            "delete",
            "-n",
            namespace,
            "ingress/rbac-route",
            "service/rbac-route",
        ],
    ] {
        let out = plane().kubectl_with_token(token, &args)?;
        ensure!(
            out.status.success(),
            "the chart's ServiceAccount cannot `kubectl {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Verbs the chart used to grant and the operator's code never uses are denied.
fn verbs_the_operator_never_uses_are_not_granted(namespace: &str) -> Result<()> {
    let user = format!("system:serviceaccount:{namespace}:pki-operator");
    for (verb, resource) in [
        ("update", "secrets"),
        ("update", "certificates.pki-operator.io"),
        ("patch", "issuers.pki-operator.io"),
        ("update", "certificates.pki-operator.io/status"),
        ("create", "events"),
    ] {
        let out = plane().kubectl(
            &["auth", "can-i", verb, resource, "-n", namespace, "--as", &user],
            None,
        )?;
        let answer = String::from_utf8_lossy(&out.stdout);
        ensure!(
            answer.trim() == "no",
            "the chart grants {verb} on {resource}, which the operator never uses: {answer}"
        );
    }
    Ok(())
}

/// `helm lint` passes with the default values and with `ci/full-values.yaml` (every optional
/// feature on); `helm template` renders both, the defaults with the CRDs annotated to be kept and
/// a Pod Disruption Budget (two replicas), the full values with every optional object.
fn helm_chart_renders_default_and_full_values() -> Result<()> {
    let dir = work_dir("helm-render")?;
    let chart = chart();
    let chart = chart.to_string_lossy();
    let full = repo_root().join("charts/pki-operator/ci/full-values.yaml");
    let full = full.to_string_lossy();
    helm_ok(&dir, &["lint", "--strict", &chart])?;
    helm_ok(&dir, &["lint", "--strict", &chart, "-f", &full])?;

    let default = helm_ok(&dir, &["template", "rel", &chart, "--namespace", "pki"])?;
    let found = kinds(&default);
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        ensure!(found.contains(&kind), "default render lacks a {kind}: {found:?}");
    }
    for kind in ["ServiceMonitor", "NetworkPolicy", "PrometheusRule", "ConfigMap"] {
        ensure!(!found.contains(&kind), "default render has an optional {kind}");
    }
    let crds = found.iter().filter(|k| **k == "CustomResourceDefinition").count();
    ensure!(crds == CRDS.len(), "{crds} CRDs rendered, not {}", CRDS.len());
    let kept = default.matches("helm.sh/resource-policy: keep").count();
    ensure!(
        kept == CRDS.len(),
        "{kept} objects annotated resource-policy keep, not the {crds} CRDs"
    );
    ensure!(
        default.contains("topologyKey: kubernetes.io/hostname")
            && default.contains("terminationGracePeriodSeconds: 30"),
        "default render lacks the hostname spread or the grace period:\n{default}"
    );
    // Readiness is /livez: the leader-only /readyz would make every pod but the leader
    // unavailable, so a rollout could never replace it nor a drain evict it.
    ensure!(
        default.contains("readinessProbe:\n            httpGet: {path: /livez, port: admin}"),
        "the pods' readiness is not /livez:\n{default}"
    );

    let rendered = helm_ok(
        &dir,
        &["template", "rel", &chart, "--namespace", "pki", "-f", &full],
    )?;
    let found = kinds(&rendered);
    for kind in [
        "CustomResourceDefinition",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
        "PrometheusRule",
        "ConfigMap",
    ] {
        ensure!(found.contains(&kind), "full render lacks a {kind}: {found:?}");
    }
    ensure!(
        !rendered.contains("helm.sh/resource-policy"),
        "crds.keep=false still annotates resource-policy keep"
    );
    for expected in [
        "priorityClassName: \"system-cluster-critical\"",
        "- name: regcred",
        "\"--dcv-recheck-interval=3600\"",
        "name: HTTPS_PROXY",
        "--log-format=text",
        "--max-concurrent-reconciles=4",
        "topologyKey: topology.kubernetes.io/zone",
        "- --watch-namespaces=pki,pki-apps",
    ] {
        ensure!(rendered.contains(expected), "full render lacks {expected:?}");
    }
    let pruned_never = rendered
        .matches("  annotations:\n    argocd.argoproj.io/sync-options: Prune=false\n")
        .count();
    ensure!(
        pruned_never == CRDS.len(),
        "{pruned_never} CRDs carry crds.annotations, not {}",
        CRDS.len()
    );
    // Namespace-scoped mode (full values watch pki and pki-apps): a Role and RoleBinding in
    // each, no ClusterRole.
    ensure!(
        !found.contains(&"ClusterRole") && !found.contains(&"ClusterRoleBinding"),
        "watchNamespaces still renders cluster-wide RBAC: {found:?}"
    );
    // Nor the HTTP solver, which serves DomainValidations (cluster-scoped, not served).
    for solver in [
        "name: rel-pki-operator-solver",
        "--solver-service",
        "{port: solver",
    ] {
        ensure!(
            !rendered.contains(solver),
            "namespace-scoped mode renders {solver:?}"
        );
    }
    ensure!(
        default.contains("name: rel-pki-operator-solver"),
        "the default render lacks the solver Service"
    );
    for namespace in ["pki", "pki-apps"] {
        let in_namespace = rendered
            .split("\n---\n")
            .filter(|doc| doc.contains(&format!("\n  namespace: {namespace}\n")))
            .filter(|doc| doc.contains("\nkind: Role\n") || doc.contains("\nkind: RoleBinding\n"))
            .count();
        ensure!(
            in_namespace == 2,
            "{in_namespace} Role/RoleBinding objects in {namespace}, not 2"
        );
    }

    // crds.enabled=false renders no CRD; one replica no PodDisruptionBudget.
    let bare = helm_ok(
        &dir,
        &[
            "template",
            "rel",
            &chart,
            "--set",
            "crds.enabled=false",
            "--set",
            "replicaCount=1",
        ],
    )?;
    let found = kinds(&bare);
    ensure!(
        !found.contains(&"CustomResourceDefinition") && !found.contains(&"PodDisruptionBudget"),
        "crds.enabled=false, replicaCount=1 rendered {found:?}"
    );
    Ok(())
}

/// The rendered manifests, default values and full values, pass `kubectl apply --dry-run=server`
/// against the local control plane (schema validation of every object, admission included). The
/// full values' `ServiceMonitor` and `PrometheusRule` are left out: their monitoring.coreos.com CRDs
/// belong to the Prometheus Operator, which the local control plane does not have.
fn helm_chart_server_dry_run() -> Result<()> {
    block_on(async {
        let dir = work_dir("helm-dry-run")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "helm-dry").await?;
        let chart = chart();
        let chart = chart.to_string_lossy();
        let full = repo_root().join("charts/pki-operator/ci/full-values.yaml");
        let full = full.to_string_lossy();
        let default = helm_ok(&dir, &["template", "dry", &chart, "--namespace", &ns.name])?;
        let namespaces = [
            format!("watchNamespaces={{{}}}", ns.name),
            format!("serviceMonitor.namespace={}", ns.name),
            format!("prometheusRule.namespace={}", ns.name),
            format!("grafanaDashboard.namespace={}", ns.name),
        ];
        let mut args = vec!["template", "dry", &*chart, "--namespace", &ns.name, "-f", &*full];
        for set in &namespaces {
            args.extend(["--set", set.as_str()]);
        }
        let full = helm_ok(&dir, &args)?;
        let full: Vec<&str> = full
            .split("\n---\n")
            .filter(|doc| !doc.contains("apiVersion: monitoring.coreos.com/"))
            .collect();
        for (name, manifests) in [("default", default), ("full", full.join("\n---\n"))] {
            let out = plane().kubectl(
                &["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"],
                Some(&manifests),
            )?;
            ensure!(
                out.status.success(),
                "server dry run of the {name} values' manifests: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let applied = String::from_utf8_lossy(&out.stdout);
            ensure!(
                applied.contains("deployment.apps/dry-pki-operator") && applied.contains("(server dry run)"),
                "the {name} dry run did not cover the Deployment:\n{applied}"
            );
        }
        Ok(())
    })
}

/// Values files the schema must reject, each with the value its message must name.
const INVALID_VALUES: [(&str, &str); 8] = [
    ("logFormat: xml\n", "logFormat"),
    ("replicaCount: -1\n", "replicaCount"),
    ("replicas: 2\n", "replicas"),
    ("image:\n  pullPolicy: Sometimes\n", "pullPolicy"),
    ("maxConcurrentReconciles: many\n", "maxConcurrentReconciles"),
    ("adminPort: 70000\n", "adminPort"),
    ("crds:\n  keep: \"yes\"\n", "keep"),
    ("watchNamespaces: [team-a, Team_B]\n", "watchNamespaces"),
];

/// Each invalid values file makes `helm template` and `helm lint` fail with a message naming the
/// value, so a typo or a wrong type fails at install instead of being ignored. A grace period
/// shorter than the lease, which JSON schema cannot compare, fails `helm template` from the
/// chart's own check (`helm lint` only reports a template's `fail` as INFO).
fn helm_chart_rejects_invalid_values() -> Result<()> {
    let dir = work_dir("helm-invalid")?;
    let chart = chart();
    let chart = chart.to_string_lossy();
    let cases = INVALID_VALUES
        .iter()
        .map(|(values, key)| (*values, *key, true))
        .chain([(
            "terminationGracePeriodSeconds: 5\n",
            "terminationGracePeriodSeconds",
            false,
        )]);
    for (i, (values, key, lint)) in cases.enumerate() {
        let file = dir.join(format!("invalid-{i}.yaml"));
        std::fs::write(&file, values)?;
        let file = file.to_string_lossy();
        let template = ["template", "rel", &*chart, "-f", &*file];
        let linted = ["lint", &*chart, "-f", &*file];
        let commands: &[&[&str]] = if lint { &[&template, &linted] } else { &[&template] };
        for args in commands {
            let out = helm(&dir, args)?;
            let message = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
            ensure!(
                !out.status.success(),
                "helm {} accepted {values:?}:\n{message}",
                args[0]
            );
            ensure!(
                message.contains(key),
                "helm {} rejected {values:?} without naming {key}:\n{message}",
                args[0]
            );
        }
    }
    Ok(())
}

/// `helm install` into the local control plane, a Certificate created, `helm uninstall`: with
/// `crds.keep=true` (the default) the CRDs and the Certificate are still there, while the
/// release's other objects are gone. The control plane's CRDs were applied by the test harness,
/// so they are first labelled and annotated as the release's, which lets helm adopt them; the
/// other tests keep using them throughout.
fn helm_uninstall_keeps_crds_and_certificates() -> Result<()> {
    block_on(async {
        let dir = work_dir("helm-uninstall")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "helm-keep").await?;
        let release = format!("keep-{}", pki_operator_e2e::random_suffix());
        let kubeconfig = plane().kubeconfig().to_string_lossy().into_owned();
        let chart = chart();
        let chart = chart.to_string_lossy();
        for crd in CRDS {
            plane().kubectl_ok(
                &[
                    "label",
                    "--overwrite",
                    "crd",
                    crd,
                    "app.kubernetes.io/managed-by=Helm",
                ],
                None,
            )?;
            plane().kubectl_ok(
                &[
                    "annotate",
                    "--overwrite",
                    "crd",
                    crd,
                    &format!("meta.helm.sh/release-name={release}"),
                    &format!("meta.helm.sh/release-namespace={}", ns.name),
                ],
                None,
            )?;
        }
        helm_ok(
            &dir,
            &[
                "install",
                &release,
                &chart,
                "--kubeconfig",
                &kubeconfig,
                "--namespace",
                &ns.name,
                "--set",
                "replicaCount=1",
            ],
        )?;
        let deployment = format!("deployment/{release}-pki-operator");
        plane().kubectl_ok(&["get", "-n", &ns.name, &deployment], None)?;
        for crd in CRDS {
            let annotations = plane().kubectl_ok(
                &["get", "crd", crd, "-o", "jsonpath={.metadata.annotations}"],
                None,
            )?;
            ensure!(
                annotations.contains("\"helm.sh/resource-policy\":\"keep\""),
                "the installed CRD {crd} is not annotated to be kept: {annotations}"
            );
        }
        apply(&ns.name, &certificate_yaml("kept", "nobody", ""))?;

        let out = helm_ok(
            &dir,
            &[
                "uninstall",
                &release,
                "--kubeconfig",
                &kubeconfig,
                "--namespace",
                &ns.name,
            ],
        )?;
        ensure!(
            out.contains("uninstalled") && out.contains("kept due to the resource policy"),
            "helm uninstall said: {out}"
        );
        let gone = plane().kubectl(&["get", "-n", &ns.name, &deployment], None)?;
        ensure!(
            !gone.status.success(),
            "the uninstalled release's Deployment is still there"
        );
        for crd in CRDS {
            plane().kubectl_ok(&["get", "crd", crd], None)?;
        }
        plane().kubectl_ok(&["get", "-n", &ns.name, "certificate", "kept"], None)?;
        // README's "remove everything" selects the chart's CRDs by this label (not run here: the
        // other tests share the CRDs).
        let labelled = plane().kubectl_ok(
            &[
                "get",
                "crd",
                "-l",
                "app.kubernetes.io/name=pki-operator",
                "-o",
                "name",
            ],
            None,
        )?;
        for crd in CRDS {
            ensure!(
                labelled.contains(crd),
                "the kept CRD {crd} lacks the label README deletes by: {labelled}"
            );
        }
        Ok(())
    })
}

/// A kubeconfig holding only a token of ServiceAccount `account` in `namespace`, from the
/// TokenRequest API (`kubectl create token`), and the token.
pub(crate) fn service_account_kubeconfig(
    dir: &std::path::Path,
    namespace: &str,
    account: &str,
) -> Result<(PathBuf, String)> {
    let out = plane().kubectl(&["create", "token", account, "-n", namespace], None)?;
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
    let kubeconfig = dir.join(format!("{account}-kubeconfig"));
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
    });
    std::fs::write(&kubeconfig, serde_json::to_string(&config)?)?;
    Ok((kubeconfig, token))
}

/// The chart lints and renders with helm, every object it renders is accepted by the apiserver,
/// and an operator running as the chart's service account (a token, no admin certificate) with only
/// the chart's RBAC issues a Certificate.
fn helm_chart_rbac_suffices() -> Result<()> {
    block_on(async {
        let helm = helm_binary()?;
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
            // The control plane has the CRDs already (from crds/), shared by every test.
            .args([
                "template",
                "pki-operator",
                "--namespace",
                &ns.name,
                "--set",
                "crds.enabled=false",
            ])
            .arg(&chart)
            .output()?;
        ensure!(
            rendered.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        apply(&ns.name, &String::from_utf8(rendered.stdout)?)?;

        let (kubeconfig, token) = service_account_kubeconfig(&dir, &ns.name, "pki-operator")?;
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
        writes_the_operator_makes_are_allowed(&dir, &token, &ns.name)?;
        verbs_the_operator_never_uses_are_not_granted(&ns.name)?;
        Ok(())
    })
}
