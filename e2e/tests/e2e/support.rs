//! What every area's tests share: the control plane and runtime, applying objects, the issuers
//! the tests use, waiting for a Certificate's conditions, checking a TLS Secret, and reading the
//! apiserver's audit log.

use std::{
    sync::{LazyLock, OnceLock},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use libtest_mimic::{Failed, Trial};
use pki_operator::crd::v1alpha1::Certificate;
use pki_operator_e2e::sim::scm::{ScmSimulator, ScmSimulatorConfig};
use pki_operator_e2e::{AuditedWrite, ControlPlane, Operator, TestNamespace, repo_root, wait_for, work_dir};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
});
static PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane `main` started for the whole run.
pub fn plane() -> &'static ControlPlane {
    PLANE.get().expect("control plane started in main")
}

/// Starts the shared control plane and installs the CRDs (once, from `main`).
pub fn start_plane() -> Result<()> {
    let plane = RUNTIME.block_on(async {
        let plane = ControlPlane::start(&work_dir("cluster")?).await?;
        install_crds(&plane)?;
        Ok::<_, anyhow::Error>(plane)
    })?;
    let _ = PLANE.set(plane);
    Ok(())
}

/// Stops the shared control plane if it was started: statics are never dropped.
pub fn stop_plane() {
    if let Some(plane) = PLANE.get() {
        plane.stop();
    }
}

/// A trial named `name` running `test`; an error fails it with its whole chain.
pub fn trial(name: &'static str, test: fn() -> Result<()>) -> Trial {
    Trial::test(name, move || test().map_err(|e| Failed::from(format!("{e:#}"))))
}

/// `kubectl apply -f crds/` and wait until every CRD is established.
pub fn install_crds(plane: &ControlPlane) -> Result<()> {
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

/// Runs a test's async body on the shared runtime.
pub fn block_on<F: Future<Output = Result<()>>>(future: F) -> Result<()> {
    RUNTIME.block_on(future)
}

/// `kubectl apply -f -` of `yaml` in `namespace`.
pub fn apply(namespace: &str, yaml: &str) -> Result<()> {
    let out = plane().kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml))?;
    ensure!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A `kubernetes.io/tls` Secret `name` holding a new self-signed CA (`<name> test CA`), as JSON,
/// and the CA's PEM.
pub fn ca_secret(name: &str) -> Result<(String, String)> {
    let (cert, key) = pki_operator_e2e::self_signed_ca(&format!("{name} test CA"))?;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "stringData": {"tls.crt": cert, "tls.key": key},
    });
    Ok((serde_json::to_string(&secret)?, cert))
}

/// Creates the CA Secret and a `ca` Issuer named `name` in `namespace`; returns the CA PEM.
pub fn ca_issuer(namespace: &str, name: &str) -> Result<String> {
    let (secret, cert) = ca_secret(name)?;
    apply(namespace, &secret)?;
    apply(
        namespace,
        &format!(
            "apiVersion: pki-operator.io/v1alpha1\nkind: Issuer\nmetadata: {{name: {name}}}\nspec: {{ca: {{secretName: {name}}}}}\n"
        ),
    )?;
    Ok(cert)
}

/// Waits until Certificate `name` passes `check`; on timeout the error shows its last status.
pub async fn wait_certificate(
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
pub async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
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

/// The Certificate's condition `type_` as (status, reason, message).
pub fn condition(cert: &Certificate, type_: &str) -> Option<(String, String, String)> {
    cert.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Whether the Certificate is `Ready=True`.
pub fn is_ready(cert: &Certificate) -> bool {
    condition(cert, "Ready").is_some_and(|(status, ..)| status == "True")
}

/// The Secret's `key` as UTF-8 text.
pub fn secret_text(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret has no {key}"))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// Checks a TLS Secret: key matches the leaf, the chain verifies to `root_pem`, names equal `dns`.
pub fn verify_tls_secret(
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

/// Reasons of the Events recorded for `name` in `namespace`.
pub async fn event_reasons(client: &Client, namespace: &str, name: &str) -> Result<Vec<String>> {
    Ok(events_of(client, namespace, name)
        .await?
        .into_iter()
        .map(|(reason, _)| reason)
        .collect())
}

/// `(reason, type)` of the Events recorded for `name` in `namespace`.
pub async fn events_of(client: &Client, namespace: &str, name: &str) -> Result<Vec<(String, String)>> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    Ok(events
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.type_.unwrap_or_default()))
        .collect())
}

/// Writes in `namespace` recorded in the audit log at or after `since`, excluding the test's
/// own kubectl: what the operator (or anything else but the test) changed. The one reader of the
/// audit log; `audit_log_records_the_operators_writes` proves it sees the operator's writes.
pub fn audited_writes(namespace: &str, since: jiff::Timestamp) -> Result<Vec<AuditedWrite>> {
    let mut writes = plane().audited_writes(namespace, since)?;
    writes.retain(|w| !w.user_agent.starts_with("kubectl"));
    Ok(writes)
}

/// The password in the SCM Issuers' credentials Secrets.
pub const SCM_PASSWORD: &str = "sim-password-123";

/// A namespace with an SCM simulator, an SCM Issuer `sectigo` for it, and a Ready operator
/// watching the namespace.
pub struct ScmScene {
    pub client: Client,
    pub ns: TestNamespace,
    pub sim: ScmSimulator,
    pub operator: Operator,
}

impl ScmScene {
    pub async fn start(name: &str, config: ScmSimulatorConfig, password: &str) -> Result<Self> {
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
pub fn scm_issuer(namespace: &str, name: &str, sim: &ScmSimulator, password: &str) -> Result<()> {
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

/// A Certificate `name` from `issuer` for `<name>.example.com` into `<name>-tls`; `extra` adds
/// indented spec lines.
pub fn certificate_yaml(name: &str, issuer: &str, extra: &str) -> String {
    format!(
        "apiVersion: pki-operator.io/v1alpha1\nkind: Certificate\nmetadata: {{name: {name}}}\nspec:\n  secretName: {name}-tls\n  issuerRef: {{name: {issuer}}}\n  dnsNames: [{name}.example.com]\n{extra}"
    )
}

/// Orders the SCM simulator accepted in total.
pub fn total_orders(sim: &ScmSimulator) -> u32 {
    sim.stats().orders_per_csr.values().sum()
}

/// Runs README's inline command starting with `start` as written against the shared control
/// plane, each placeholder of `fill` (e.g. `("<name>", "web -n team")`) filled in, and returns
/// its output. An unfilled placeholder fails rather than reaching the shell.
pub fn run_readme_command(dir: &std::path::Path, start: &str, fill: &[(&str, &str)]) -> Result<String> {
    let text = pki_operator_e2e::readme::readme()?;
    let mut command = pki_operator_e2e::readme::inline_command(&text, start)?;
    for (placeholder, value) in fill {
        command = command.replace(placeholder, value);
    }
    ensure!(
        !command.contains('<'),
        "README's command has a placeholder left: {command}"
    );
    pki_operator_e2e::readme::Shell::new(dir, plane().kubeconfig())?.run(&command, Duration::from_secs(60))
}
