//! `make demo`: the main job on embedded defaults. Starts the local control plane and the SCM and
//! Nexus simulators, runs the operator, applies `examples/demo/` (a `ca`, an SCM and a Nexus
//! ClusterIssuer, an HTTP DomainValidation of the SCM Certificates' domain, several Certificates
//! and an AlertConfig emailing a real SMTP server), waits until every Certificate and the
//! DomainValidation are Ready and the alert email arrived, prints a summary, cleans up.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use pki_operator::crd::v1alpha1::{Certificate, ClusterIssuer, DomainValidation};
use pki_operator_e2e::{
    ControlPlane, Operator, free_port, repo_root,
    sim::{
        nexus::{NexusSimulator, NexusSimulatorConfig},
        scm::{ScmSimulator, ScmSimulatorConfig, SimDomain},
    },
    smtp::SmtpServer,
    wait_for, work_dir,
};

const NAMESPACE: &str = "demo";
const OPERATOR_NAMESPACE: &str = "pki-operator";

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("demo: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let dir = work_dir("demo")?;
    println!("==> starting the local control plane (kube-apiserver 1.36 + etcd)");
    let plane = ControlPlane::start(&dir.join("cluster")).await?;
    // The simulator validates demo.example.com by fetching the file from the operator's HTTP
    // solver, so the solver's address is chosen before either starts.
    let solver = format!("127.0.0.1:{}", free_port()?);
    println!("==> starting the SCM simulator (demo.example.com registered, validated over HTTP)");
    let sim = ScmSimulator::start(ScmSimulatorConfig {
        pending_collects: 1,
        processing_delay: Duration::from_secs(2),
        domains: vec![SimDomain::new("demo.example.com")],
        dcv_http_address: Some(solver.parse()?),
        ..ScmSimulatorConfig::default()
    })
    .await?;
    println!("==> starting the Nexus simulator (caller signing)");
    let nexus = NexusSimulator::start(NexusSimulatorConfig::default()).await?;
    let root = repo_root();
    install_crds_and_secrets(&plane, &root, &nexus)?;

    println!("==> starting the operator");
    let operator = Operator::start(
        &plane,
        &dir,
        "operator",
        &[
            "--cluster-resource-namespace",
            OPERATOR_NAMESPACE,
            "--solver-address",
            &solver,
            // On a laptop demo.example.com does not resolve to the solver; in a cluster an
            // Ingress routes it there.
            "--dcv-http-self-check-address",
            &solver,
        ],
    )?;
    operator.wait_ready(Duration::from_secs(60)).await?;

    println!("==> starting an SMTP server (aiosmtpd) for the AlertConfig's email");
    let smtp = SmtpServer::start(&dir.join("smtp")).await?;
    println!("==> applying examples/demo/");
    apply_examples(&plane, &root, &sim, &nexus)?;
    let alerts = std::fs::read_to_string(root.join("examples/demo/alertconfig.yaml"))?
        .replace("SMTP_PORT", &smtp.port().to_string());
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&alerts))?;

    let client = plane.client().await?;
    let certs: Api<Certificate> = Api::namespaced(client.clone(), NAMESPACE);
    let names = ["web", "api", "shop", "partner", "intranet"];
    wait_for(
        "every Certificate to be Ready",
        Duration::from_secs(180),
        || async {
            let list = certs.list(&kube::api::ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|c| {
                    c.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            (ready == names.len()).then_some(())
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.log_text()))?;

    let validated = wait_validated(&client)
        .await
        .with_context(|| format!("operator log:\n{}", operator.log_text()))?;

    print_summary(&plane, &client, &sim, &nexus, &names).await?;
    show_alert_email(&smtp, &operator).await?;
    let status = validated.status.unwrap_or_default();
    println!(
        "\n== DomainValidation demo-example-com: {} validated over HTTP through the operator's solver, {} (expires {})",
        validated.spec.domain,
        status.validation_status.unwrap_or_default(),
        status.expires_at.map(|t| t.0.to_string()).unwrap_or_default()
    );
    println!("==> cleaning up");
    drop(operator);
    sim.shutdown().await;
    nexus.shutdown().await;
    plane.stop();
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    println!("demo complete: every example is Ready");
    Ok(())
}

/// Waits until the demo's DomainValidation is Ready.
async fn wait_validated(client: &kube::Client) -> Result<DomainValidation> {
    let validations: Api<DomainValidation> = Api::all(client.clone());
    wait_for(
        "the DomainValidation to be Ready",
        Duration::from_secs(60),
        || async {
            let dv = validations.get_opt("demo-example-com").await.ok()??;
            let ready = dv.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            ready.then_some(dv)
        },
    )
    .await
}

/// Waits for the AlertConfig's email and shows it as the recipient would see it.
async fn show_alert_email(smtp: &SmtpServer, operator: &Operator) -> Result<()> {
    let emails = smtp
        .wait_for_messages(1, Duration::from_secs(60))
        .await
        .with_context(|| format!("operator log:\n{}", operator.log_text()))?;
    let email = emails.first().context("no email")?;
    println!("\n== Alert delivered by email (AlertConfig demo, through aiosmtpd)");
    println!("To:      {}", email.to);
    println!("Subject: {}", email.subject);
    for line in email.text.as_deref().unwrap_or_default().lines().take(12) {
        println!("  {line}");
    }
    Ok(())
}

/// Applies `examples/demo/` with the simulators' addresses and CAs filled in.
fn apply_examples(
    plane: &ControlPlane,
    root: &Path,
    sim: &ScmSimulator,
    nexus: &NexusSimulator,
) -> Result<()> {
    let manifests = root.join("examples/demo");
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let issuers = std::fs::read_to_string(manifests.join("clusterissuers.yaml"))?
        .replace("NEXUS_SIMULATOR_URL", &nexus.base_url())
        .replace("NEXUS_SIMULATOR_CA_BUNDLE\n", &indent(nexus.tls_ca_pem()))
        .replace("SCM_SIMULATOR_URL", &sim.base_url())
        .replace("SCM_SIMULATOR_CA_BUNDLE\n", &indent(sim.tls_ca_pem()));
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&issuers))?;
    plane.kubectl_ok(
        &[
            "apply",
            "-f",
            &manifests.join("domainvalidation.yaml").to_string_lossy(),
        ],
        None,
    )?;
    plane.kubectl_ok(
        &[
            "apply",
            "-n",
            NAMESPACE,
            "-f",
            &manifests.join("certificates.yaml").to_string_lossy(),
        ],
        None,
    )?;
    Ok(())
}

/// The CRDs, the namespaces, the demo CA and the simulators' credentials.
fn install_crds_and_secrets(plane: &ControlPlane, root: &Path, nexus: &NexusSimulator) -> Result<()> {
    plane.kubectl_ok(&["apply", "-f", &root.join("crds").to_string_lossy()], None)?;
    plane.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &root.join("crds").to_string_lossy(),
        ],
        None,
    )?;
    for ns in [OPERATOR_NAMESPACE, NAMESPACE] {
        plane.kubectl_ok(&["create", "namespace", ns], None)?;
    }
    let (ca_cert, ca_key) = pki_operator_e2e::self_signed_ca("pki-operator demo CA")?;
    let (officer_chain, officer_key) = nexus.officer_identity();
    let secrets = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "demo-ca"},
         "stringData": {"tls.crt": ca_cert, "tls.key": ca_key}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "scm-credentials"},
         "stringData": {"login": "api-admin", "password": "sim-password-123"}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "nexus-officer"},
         "stringData": {"tls.crt": officer_chain, "tls.key": officer_key}},
    ]});
    plane.kubectl_ok(
        &["apply", "-n", OPERATOR_NAMESPACE, "-f", "-"],
        Some(&secrets.to_string()),
    )?;

    Ok(())
}

async fn print_summary(
    plane: &ControlPlane,
    client: &kube::Client,
    sim: &ScmSimulator,
    nexus: &NexusSimulator,
    names: &[&str],
) -> Result<()> {
    let issuers: Api<ClusterIssuer> = Api::all(client.clone());
    println!("\n== ClusterIssuers");
    for issuer in issuers.list(&kube::api::ListParams::default()).await?.items {
        let ready = issuer
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        println!(
            "  {:<10} Ready={:<5} {}",
            issuer.metadata.name.unwrap_or_default(),
            ready.map_or("?", |c| c.status.as_str()),
            ready.map_or("", |c| c.message.as_str())
        );
    }
    let certs: Api<Certificate> = Api::namespaced(client.clone(), NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    println!("\n== Certificates in namespace {NAMESPACE}");
    println!(
        "  {:<8} {:<8} {:<34} {:<22} {:<12} SECRET KEYS",
        "NAME", "ISSUER", "SERIAL", "NOT AFTER", "ORDER"
    );
    for name in names {
        let cert = certs.get(name).await?;
        let status = cert.status.clone().unwrap_or_default();
        let secret = secrets.get(&cert.spec.secret_name).await?;
        let keys: Vec<String> = secret.data.unwrap_or_default().into_keys().collect();
        let order = status
            .order
            .map(|o| {
                if o.backend == "ca" {
                    "local".to_owned()
                } else {
                    format!("{}:{}", o.backend, o.id)
                }
            })
            .unwrap_or_default();
        println!(
            "  {:<8} {:<8} {:<34} {:<22} {:<12} {}: {}",
            name,
            cert.spec.issuer_ref.name,
            status.serial_number.unwrap_or_default(),
            status.not_after.map(|t| t.0.to_string()).unwrap_or_default(),
            order,
            cert.spec.secret_name,
            keys.join(", ")
        );
    }
    let stats = sim.stats();
    println!(
        "\n== SCM simulator: {} order(s) for {} CSR(s), {} enroll request(s)",
        stats.orders_per_csr.values().sum::<u32>(),
        stats.orders_per_csr.len(),
        stats.requests.get("enroll").copied().unwrap_or(0)
    );
    let stats = nexus.stats();
    println!(
        "== Nexus simulator: {} certificate(s) issued for {} CSR(s), {} issuance request(s) (signed re-sends included)",
        stats.issuances_per_csr.values().sum::<u32>(),
        stats.issuances_per_csr.len(),
        stats.requests.get("issuePkcs10").copied().unwrap_or(0)
    );
    println!("\n== kubectl get pki -n {NAMESPACE}");
    print!("{}", plane.kubectl_ok(&["get", "pki", "-n", NAMESPACE], None)?);
    Ok(())
}
