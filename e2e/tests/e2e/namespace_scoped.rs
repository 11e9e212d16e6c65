//! Namespace-scoped mode end to end: the chart installed with `watchNamespaces: [a, b]`, the
//! operator running as the chart's ServiceAccount with the chart's arguments, Certificates
//! issued in both namespaces, a ClusterIssuer refused with a reason, and the identity denied
//! everywhere else.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::{Api, api::PostParams};
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::{Certificate, DiscoveryTask};
use pki_operator_e2e::{Operator, TestNamespace, wait_for, work_dir};

use crate::helm::{chart, helm_ok, service_account_kubeconfig};
use crate::support::{
    apply, block_on, ca_issuer, certificate_yaml, condition, is_ready, plane, trial, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![trial(
        "namespace_scoped_install_serves_its_namespaces_and_may_read_nothing_else",
        namespace_scoped_install,
    )]
}

/// `helm install --set watchNamespaces={a,b}` into the local control plane (CRDs left to the
/// harness), then the operator as the chart's ServiceAccount — a TokenRequest token and
/// nothing else — with the arguments the chart's Deployment passes: a Certificate in each
/// watched namespace becomes Ready; one naming a ClusterIssuer is `Ready=False
/// ClusterIssuerDisabled`; one in a third namespace is never touched; a DiscoveryTask reads its
/// namespace and refuses the third by name; the release grants no
/// cluster-wide role, and the identity is forbidden to read a Secret in the third namespace
/// (a SubjectAccessReview and a real request) while allowed in the watched ones.
fn namespace_scoped_install() -> Result<()> {
    block_on(async {
        let dir = work_dir("namespace-scoped")?;
        let client = plane().client().await?;
        let release_ns = TestNamespace::create(&client, "scoped-ops").await?;
        let team_a = TestNamespace::create(&client, "scoped-a").await?;
        let team_b = TestNamespace::create(&client, "scoped-b").await?;
        let other = TestNamespace::create(&client, "scoped-other").await?;
        let release = format!("scoped-{}", pki_operator_e2e::random_suffix());
        let kubeconfig = plane().kubeconfig().to_string_lossy().into_owned();
        let chart = chart();
        let watched = format!("watchNamespaces={{{},{}}}", team_a.name, team_b.name);
        let installed = helm_ok(
            &dir,
            &[
                "install",
                &release,
                &*chart.to_string_lossy(),
                "--kubeconfig",
                &kubeconfig,
                "--namespace",
                &release_ns.name,
                "--set",
                "crds.enabled=false",
                "--set",
                "replicaCount=1",
                "--set",
                &watched,
            ],
        )?;
        ensure!(
            installed.contains("Namespace-scoped mode"),
            "NOTES do not explain the mode:\n{installed}"
        );

        // No cluster-wide role: everything is granted by Roles in the watched namespaces.
        let instance = format!("app.kubernetes.io/instance={release}");
        for kind in ["clusterrole", "clusterrolebinding"] {
            let found = plane().kubectl_ok(&["get", kind, "-l", &instance, "-o", "name"], None)?;
            ensure!(found.trim().is_empty(), "the release made a {kind}: {found}");
        }
        let account = format!("{release}-pki-operator");
        let deployment = plane().kubectl_ok(
            &[
                "get",
                "deployment",
                &account,
                "-n",
                &release_ns.name,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].args}",
            ],
            None,
        )?;
        let chart_args: Vec<String> = serde_json::from_str(&deployment)?;
        let scope_arg = format!("--watch-namespaces={},{}", team_a.name, team_b.name);
        ensure!(
            chart_args.contains(&scope_arg),
            "the Deployment does not pass {scope_arg}: {chart_args:?}"
        );

        let (sa_kubeconfig, token) = service_account_kubeconfig(&dir, &release_ns.name, &account)?;
        for ns in [&team_a.name, &team_b.name, &other.name] {
            ca_issuer(ns, "team-ca")?;
        }
        // What the chart's pod would run with: its arguments (addresses made local) and
        // POD_NAMESPACE, the release namespace, for the Lease.
        let mut args: Vec<String> = chart_args
            .iter()
            .filter(|a| !a.starts_with("--admin-address") && !a.starts_with("--solver-address"))
            .cloned()
            .collect();
        args.push(format!("--leader-election-namespace={}", release_ns.name));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let operator = Operator::start_with_kubeconfig(&sa_kubeconfig, &dir, "operator", &args)?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        // README's way to see which replica leads, as written.
        let lease = crate::support::run_readme_command(
            &dir,
            "kubectl get lease -n <ns> pki-operator-leader -o yaml",
            &[("<ns>", &release_ns.name)],
        )?;
        ensure!(
            lease.contains("holderIdentity:"),
            "the Lease names no holder:\n{lease}"
        );

        for ns in [&team_a.name, &team_b.name, &other.name] {
            apply(ns, &certificate_yaml("web", "team-ca", ""))?;
        }
        apply(
            &team_a.name,
            "apiVersion: pki-operator.io/v1alpha1\nkind: Certificate\nmetadata: {name: shared}\nspec:\n  secretName: shared-tls\n  issuerRef: {name: corporate, kind: ClusterIssuer}\n  dnsNames: [shared.example.com]\n",
        )?;
        for ns in [&team_a.name, &team_b.name] {
            wait_certificate(
                &client,
                ns,
                "web",
                "Ready in a watched namespace",
                Duration::from_secs(60),
                is_ready,
            )
            .await
            .map_err(|e| e.context(operator.log_text()))?;
        }
        let refused = wait_certificate(
            &client,
            &team_a.name,
            "shared",
            "Ready=False ClusterIssuerDisabled",
            Duration::from_secs(60),
            |c| {
                condition(c, "Ready")
                    .is_some_and(|(s, reason, _)| s == "False" && reason == "ClusterIssuerDisabled")
            },
        )
        .await?;
        let (_, _, message) = condition(&refused, "Ready").unwrap_or_default();
        ensure!(
            message.contains("ClusterIssuer corporate") && message.contains("use an Issuer in namespace"),
            "the refusal does not say what to do: {message}"
        );
        // The third namespace's Certificate was applied before the others became Ready, with
        // every cache synced: an operator watching it would have written its status by now.
        let untouched = Api::<Certificate>::namespaced(client.clone(), &other.name)
            .get("web")
            .await?;
        ensure!(
            untouched.status.is_none(),
            "a Certificate outside the watched namespaces was served: {:?}",
            untouched.status
        );

        // A DiscoveryTask reading its own namespace and one not served: the first is read, the
        // second refused with a message naming the field (no permission error).
        apply(
            &team_a.name,
            &format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: DiscoveryTask\nmetadata: {{name: secrets}}\nspec:\n  schedule: {{interval: 6h}}\n  cluster: {{secrets: true, namespaces: [{}, {}]}}\n",
                team_a.name, other.name
            ),
        )?;
        let tasks: Api<DiscoveryTask> = Api::namespaced(client.clone(), &team_a.name);
        let message = wait_for(
            "the DiscoveryTask's first run",
            Duration::from_secs(60),
            || async {
                let task = tasks.get_opt("secrets").await.ok().flatten()?;
                let ready = task.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                Some(ready.message)
            },
        )
        .await?;
        ensure!(
            message.contains(&format!("spec.cluster.namespaces: {} not served", other.name))
                && message.contains("certificates found"),
            "the DiscoveryTask did not read its namespace and refuse the other: {message}"
        );

        // The same identity: allowed in a watched namespace, forbidden in the third.
        let user = format!("system:serviceaccount:{}:{account}", release_ns.name);
        let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
        for (ns, verb, expected) in [
            (team_a.name.as_str(), "get", true),
            (team_b.name.as_str(), "list", true),
            (other.name.as_str(), "get", false),
            (other.name.as_str(), "list", false),
            ("", "list", false),
        ] {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        namespace: (!ns.is_empty()).then(|| ns.to_owned()),
                        verb: Some(verb.into()),
                        resource: Some("secrets".into()),
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            let answer = reviews.create(&PostParams::default(), &review).await?;
            let allowed = answer.status.is_some_and(|s| s.allowed);
            let place = if ns.is_empty() { "every namespace" } else { ns };
            ensure!(
                allowed == expected,
                "{verb} secrets in {place}: allowed={allowed}, expected {expected}"
            );
        }
        let denied = plane().kubectl_with_token(&token, &["get", "secret", "team-ca", "-n", &other.name])?;
        let stderr = String::from_utf8_lossy(&denied.stderr);
        ensure!(
            !denied.status.success() && stderr.contains("Forbidden"),
            "reading a Secret in {} as the operator was not forbidden: {stderr}",
            other.name
        );
        let log = operator.log_text();
        ensure!(
            !log.to_lowercase().contains("forbidden"),
            "the operator hit RBAC denials:\n{log}"
        );
        ensure!(
            log.contains("namespace-scoped mode"),
            "the operator does not log its mode:\n{log}"
        );
        Ok(())
    })
}
