//! End-to-end tests of Certificates from the local `ca` backend: issuance with every key and
//! output format, a foreign Secret left alone, a keystore waiting for its password, and an
//! object the operator cannot read.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kube::Api;
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::Certificate;
use pki_operator_e2e::{Operator, TestNamespace, metric_value, wait_for, work_dir};

use crate::support::{
    apply, block_on, ca_issuer, certificate_yaml, condition, is_ready, plane, secret_text, trial,
    verify_tls_secret, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "ca_certificate_becomes_ready_with_a_verified_secret",
            ca_certificate_becomes_ready,
        ),
        trial(
            "foreign_secret_is_never_modified",
            foreign_secret_is_never_modified,
        ),
        trial(
            "keystore_waits_for_its_password_secret",
            keystore_waits_for_its_password_secret,
        ),
        trial(
            "unreadable_certificate_is_reported_and_recovers_when_fixed",
            unreadable_certificate_is_reported_and_recovers_when_fixed,
        ),
        trial(
            "the_readme_walkthrough_ends_with_the_example_certificate_ready",
            the_readme_walkthrough_ends_with_the_example_certificate_ready,
        ),
    ]
}

/// README's "Try it on a local control plane", as a new user runs it: `scripts/demo-ca.sh` (what
/// `make demo-ca` runs) creates the CA Secret, the two examples are applied unchanged, and
/// `kubectl wait` sees the example Certificate Ready; running the script again keeps the Secret.
fn the_readme_walkthrough_ends_with_the_example_certificate_ready() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "walkthrough").await?;
        let root = pki_operator_e2e::repo_root();
        let devcluster = std::env::var("PKI_E2E_DEVCLUSTER").unwrap_or_else(|_| {
            root.join("target/devcluster/devcluster")
                .to_string_lossy()
                .into_owned()
        });
        let kubectl = format!(
            "{devcluster} kubectl --kubeconfig {}",
            plane().kubeconfig().display()
        );
        let script = |expect: &str| -> Result<()> {
            let out = std::process::Command::new(root.join("scripts/demo-ca.sh"))
                .arg(&ns.name)
                .env("KUBECTL", &kubectl)
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.success() && text.contains(expect),
                "demo-ca.sh: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        script("secret/demo-ca created")?;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns.name);
        let first = secrets.get("demo-ca").await?.metadata.uid;
        script("already exists")?;
        ensure!(
            secrets.get("demo-ca").await?.metadata.uid == first,
            "the Secret was replaced"
        );

        let operator = Operator::start(
            plane(),
            &work_dir("walkthrough")?,
            "operator",
            &["--namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let examples = |file: &str| root.join("examples").join(file).to_string_lossy().into_owned();
        plane().kubectl_ok(
            &[
                "apply",
                "-n",
                &ns.name,
                "-f",
                &examples("issuer-ca.yaml"),
                "-f",
                &examples("certificate-minimal.yaml"),
            ],
            None,
        )?;
        plane()
            .kubectl_ok(
                &[
                    "wait",
                    "-n",
                    &ns.name,
                    "--for=condition=Ready",
                    "certificate/web",
                    "--timeout=60s",
                ],
                None,
            )
            .with_context(|| operator.log_text())?;
        let listed = plane().kubectl_ok(&["get", "pki", "-n", &ns.name], None)?;
        ensure!(
            listed.contains("certificate.pki-operator.io/web")
                && listed.contains("issuer.pki-operator.io/demo-ca"),
            "{listed}"
        );
        Ok(())
    })
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
  revocationPolicy: {onDelete: Revoke}
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
        certificate_series_follow_status_and_deletion(&client, &ns.name, &operator)
            .await
            .with_context(|| operator.log_text())
    })
}

/// The Ready `ecdsa` Certificate's series carry cert-manager's labels and its status' notAfter,
/// renewal time and Ready condition; once it is deleted (through its revoke-on-delete
/// finalizer) none is left.
async fn certificate_series_follow_status_and_deletion(
    client: &kube::Client,
    namespace: &str,
    operator: &Operator,
) -> Result<()> {
    let certs: Api<Certificate> = Api::namespaced(client.clone(), namespace);
    let status = certs.get("ecdsa").await?.status.unwrap_or_default();
    let seconds =
        |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.map(|t| t.0.as_second());
    let labels = format!(
        r#"name="ecdsa",namespace="{namespace}",issuer_name="local-ca",issuer_kind="Issuer",issuer_group="pki-operator.io""#
    );
    let expected = [
        (
            format!("pki_operator_certificate_expiration_timestamp_seconds{{{labels}}}"),
            seconds(status.not_after.as_ref()).context("no notAfter")?,
        ),
        (
            format!("pki_operator_certificate_renewal_timestamp_seconds{{{labels}}}"),
            seconds(status.renewal_time.as_ref()).context("no renewalTime")?,
        ),
        (
            format!(r#"pki_operator_certificate_ready_status{{condition="True",{labels}}}"#),
            1,
        ),
        (
            format!(r#"pki_operator_certificate_ready_status{{condition="False",{labels}}}"#),
            0,
        ),
        (
            format!(r#"pki_operator_certificate_ready_status{{condition="Unknown",{labels}}}"#),
            0,
        ),
    ];
    // Recorded by the reconcile that follows the status write: wait for it.
    wait_for(
        "the Certificate's series with its status",
        Duration::from_secs(30),
        || async {
            let (_, body) = operator.get("/metrics").await?;
            // Whole lines: integer gauges are encoded as integers.
            expected
                .iter()
                .all(|(series, value)| body.lines().any(|l| l == format!("{series} {value}")))
                .then_some(())
        },
    )
    .await?;
    certs.delete("ecdsa", &kube::api::DeleteParams::default()).await?;
    wait_for(
        "the deleted Certificate's series to go",
        Duration::from_secs(30),
        || async {
            let (_, body) = operator.get("/metrics").await?;
            let gone = !body.contains(r#"name="ecdsa""#);
            // The other Certificate's series stay.
            (gone && body.contains(r#"pki_operator_certificate_ready_status{condition="True",name="rsa""#))
                .then_some(())
        },
    )
    .await
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

/// A PKCS#12 keystore whose password Secret does not exist: `Ready=False
/// reason=KeystorePasswordMissing` naming the Secret, and no keystore anywhere; a Secret without
/// the key is still missing (naming the key); once the password is there the Certificate becomes
/// Ready with a `keystore.p12` that opens with it.
fn keystore_waits_for_its_password_secret() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let dir = work_dir("keystore-password")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "keystore-password").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(
            &ns.name,
            &certificate_yaml(
                "vault",
                "local-ca",
                "  keystores: {pkcs12: {create: true, passwordSecretRef: {name: vault-password, key: password}}}\n",
            ),
        )?;
        let missing = |needle: &'static str| {
            move |c: &Certificate| {
                condition(c, "Ready").is_some_and(|(s, r, m)| {
                    s == "False" && r == "KeystorePasswordMissing" && m.contains(needle)
                })
            }
        };
        wait_certificate(
            &client,
            &ns.name,
            "vault",
            "Ready=False KeystorePasswordMissing naming the Secret",
            Duration::from_secs(60),
            missing("Secret vault-password not found"),
        )
        .await
        .with_context(|| operator.log_text())?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let keystore_in = |secret: Option<Secret>| {
            secret
                .and_then(|s| s.data)
                .is_some_and(|d| d.contains_key("keystore.p12"))
        };
        ensure!(
            !keystore_in(secrets.get_opt("vault-tls").await?),
            "a keystore was written without its password"
        );

        // The Secret exists but lacks the key: still missing, and the message says which key.
        apply(
            &ns.name,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: vault-password}\nstringData: {pin: \"1234\"}\n",
        )?;
        wait_certificate(
            &client,
            &ns.name,
            "vault",
            "Ready=False KeystorePasswordMissing naming the key",
            Duration::from_secs(90),
            missing("has no key \"password\""),
        )
        .await
        .with_context(|| operator.log_text())?;

        apply(
            &ns.name,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: vault-password}\nstringData: {password: s3cret-pass}\n",
        )?;
        wait_certificate(
            &client,
            &ns.name,
            "vault",
            "Ready once the password Secret is complete",
            Duration::from_secs(90),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let secret = secrets.get("vault-tls").await?;
        let keystore = secret
            .data
            .as_ref()
            .and_then(|d| d.get("keystore.p12"))
            .context("keystore.p12 missing")?;
        let store = p12_keystore::KeyStore::from_pkcs12(
            &keystore.0,
            "s3cret-pass",
            p12_keystore::Pkcs12ImportPolicy::default(),
        )
        .context("keystore.p12 does not open with the password")?;
        let (_, chain) = store
            .private_key_chain()
            .context("keystore.p12 has no key entry")?;
        let tls_key = pki_operator::pki::key::PrivateKey::from_pem(&secret_text(&secret, "tls.key")?)?;
        ensure!(
            chain.key().as_der() == tls_key.pkcs8_der(),
            "keystore key differs from tls.key"
        );
        Ok(())
    })
}

/// A Certificate whose stored status the operator cannot read: the apiserver checks a
/// `date-time` only against a pattern that takes any two-digit offset, so `+99:99` is stored,
/// and no timestamp parser accepts it. The operator counts the object as `InvalidObject`, logs
/// which object and why, and keeps serving the others; once the field is fixed it issues the
/// Certificate as usual.
fn unreadable_certificate_is_reported_and_recovers_when_fixed() -> Result<()> {
    use kube::{
        api::{DynamicObject, Patch, PatchParams},
        discovery::ApiResource,
    };
    block_on(async {
        let dir = work_dir("invalid-object")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "invalid-object").await?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        // Its issuer does not exist yet, so it cannot become Ready before the issuer appears.
        apply(&ns.name, &certificate_yaml("garbled", "later-ca", ""))?;
        wait_certificate(
            &client,
            &ns.name,
            "garbled",
            "Ready=False while the issuer is missing",
            Duration::from_secs(60),
            |c| condition(c, "Ready").is_some_and(|(s, ..)| s == "False"),
        )
        .await
        .with_context(|| operator.log_text())?;
        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        // Untyped, since the typed answer to this very patch could not be read either.
        let untyped: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns.name, &ApiResource::erase::<Certificate>(&()));
        let garble = serde_json::json!({"status": {"notAfter": "2030-01-01T00:00:00+99:99"}});
        untyped
            .patch_status("garbled", &PatchParams::default(), &Patch::Merge(&garble))
            .await
            .context("the apiserver refused the out-of-range offset")?;
        let invalid =
            r#"pki_operator_reconciliations_total{controller="certificate",outcome="InvalidObject"}"#;
        wait_for(
            "an InvalidObject reconcile of the Certificate",
            Duration::from_secs(30),
            || async {
                let (status, body) = operator.get("/metrics").await?;
                (status == 200 && metric_value(&body, invalid).is_some_and(|v| v >= 1.0)).then_some(())
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        // The metric is counted before the error policy logs the failure: await the line.
        wait_for(
            "the log to name the unreadable object",
            Duration::from_secs(30),
            || async {
                let log = operator.log_text();
                (log.contains("garbled") && log.contains("cannot be read by this operator version"))
                    .then_some(())
            },
        )
        .await
        .with_context(|| operator.log_text())?;

        // The operator keeps working: the issuer appears and another Certificate issues, while
        // the unreadable one stays as it was.
        ca_issuer(&ns.name, "later-ca")?;
        apply(&ns.name, &certificate_yaml("sound", "later-ca", ""))?;
        wait_certificate(
            &client,
            &ns.name,
            "sound",
            "the readable Certificate Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let garbled = certs.get_opt("garbled").await;
        ensure!(
            garbled.is_err(),
            "the garbled Certificate still deserialises, the test proves nothing: {garbled:?}"
        );

        let repair = serde_json::json!({"status": {"notAfter": null}});
        untyped
            .patch_status("garbled", &PatchParams::default(), &Patch::Merge(&repair))
            .await?;
        wait_certificate(
            &client,
            &ns.name,
            "garbled",
            "Ready once the status is readable",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        Ok(())
    })
}
