//! End-to-end tests of DomainValidation: the operator against the SCM simulator, which validates
//! for real (it fetches the file from the operator's HTTP solver, asks BIND9 for the record, or
//! waits for the "click" on the mail's link), and BIND9 taking RFC 2136 updates.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use hickory_client::proto::rr::{RData, RecordType, rdata::TXT};
use k8s_openapi::api::{core::v1::Service, networking::v1::Ingress};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    discovery::ApiResource,
};
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::Issuer;
use pki_operator_e2e::{
    Operator, TestNamespace,
    dns::Bind9,
    free_port, http_get_with_host,
    sim::scm::{ConnectorStatus, DcvAccess, ScmSimulator, ScmSimulatorConfig, SimDnsConnector, SimDomain},
    wait_for, work_dir,
};

use crate::support::{
    SCM_PASSWORD, ScmScene, apply, block_on, certificate_yaml, is_ready, plane, scm_issuer, trial,
    wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "http_validation_is_served_checked_and_withdrawn",
            http_validation_is_served_checked_and_withdrawn,
        ),
        trial(
            "http_challenge_is_routed_by_an_ingress_until_validated",
            http_challenge_is_routed_by_an_ingress_until_validated,
        ),
        trial(
            "certificates_wait_for_an_email_validation_then_issue",
            certificates_wait_for_an_email_validation_then_issue,
        ),
        trial(
            "rfc2136_cname_and_txt_records_are_published_and_removed",
            rfc2136_cname_and_txt_records_are_published_and_removed,
        ),
        trial(
            "manual_dns_waits_for_the_record_then_validates",
            manual_dns_waits_for_the_record_then_validates,
        ),
        trial(
            "an_expired_validation_is_renewed_without_anyone_acting",
            an_expired_validation_is_renewed_without_anyone_acting,
        ),
        trial(
            "bad_domain_validations_say_why_without_a_hot_loop",
            bad_domain_validations_say_why_without_a_hot_loop,
        ),
        trial(
            "an_order_placed_elsewhere_is_followed_and_a_validation_elsewhere_counts",
            an_order_placed_elsewhere_is_followed_and_a_validation_elsewhere_counts,
        ),
        trial(
            "a_validation_due_before_its_expiry_is_renewed_while_still_valid",
            a_validation_due_before_its_expiry_is_renewed_while_still_valid,
        ),
        trial(
            "scm_dns_connector_publishes_the_cname_once_connected",
            scm_dns_connector_publishes_the_cname_once_connected,
        ),
        trial(
            "per_order_dcv_is_sent_with_each_enrollment",
            per_order_dcv_is_sent_with_each_enrollment,
        ),
    ]
}

fn validations(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("pki-operator.io", "v1alpha1", "DomainValidation");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// The `Ready` condition's (status, reason, message).
fn ready(object: &DynamicObject) -> Option<(String, String, String)> {
    let conditions = object.data["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    let text = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Some((text("status"), text("reason"), text("message")))
}

/// Waits until DomainValidation `name` passes `check`; the error shows its last status.
async fn wait_validation(
    client: &Client,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&DynamicObject) -> bool,
) -> Result<DynamicObject> {
    let api = validations(client);
    let result = wait_for(what, timeout, || async {
        api.get_opt(name).await.ok().flatten().filter(|o| check(o))
    })
    .await;
    if result.is_err() {
        let last = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .map(|o| o.data["status"].clone());
        return result.with_context(|| format!("last status of {name}: {last:#?}"));
    }
    result
}

fn reason_is(reason: &'static str) -> impl Fn(&DynamicObject) -> bool {
    move |o| ready(o).is_some_and(|(_, found, _)| found == reason)
}

fn is_validated(o: &DynamicObject) -> bool {
    ready(o).is_some_and(|(status, reason, _)| status == "True" && reason == "Validated")
}

/// A DomainValidation `name` for `domain` through the Issuer `sectigo` of `namespace`.
fn validation_yaml(name: &str, namespace: &str, domain: &str, rest: &str) -> String {
    format!(
        "apiVersion: pki-operator.io/v1alpha1\nkind: DomainValidation\nmetadata: {{name: {name}}}\nspec:\n  domain: {domain}\n  issuerRef: {{kind: Issuer, namespace: {namespace}, name: sectigo}}\n{rest}"
    )
}

/// A Certificate `name` from `sectigo` for `dns_name`.
fn certificate_for(name: &str, dns_name: &str) -> String {
    format!(
        "apiVersion: pki-operator.io/v1alpha1\nkind: Certificate\nmetadata: {{name: {name}}}\nspec:\n  secretName: {name}-tls\n  issuerRef: {{name: sectigo}}\n  dnsNames: [{dns_name}]\n"
    )
}

/// A namespace, an SCM simulator made by `config` (given the solver address the operator will
/// listen on), its Issuer `sectigo`, and a Ready operator with `args`.
struct Scene {
    client: Client,
    ns: TestNamespace,
    sim: ScmSimulator,
    operator: Operator,
    solver: String,
}

impl Scene {
    async fn start(
        name: &str,
        config: impl FnOnce(&str) -> Result<ScmSimulatorConfig>,
        args: &[&str],
    ) -> Result<Self> {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, name).await?;
        let solver = format!("127.0.0.1:{}", free_port()?);
        let sim = ScmSimulator::start(config(&solver)?).await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        let dir = work_dir(name)?;
        // In a cluster the domain routes to the solver Service; here the self-check is told so.
        let mut all = vec![
            "--namespace",
            &ns.name,
            "--solver-address",
            &solver,
            "--dcv-http-self-check-address",
            &solver,
        ];
        all.extend_from_slice(args);
        let operator = Operator::start(plane(), &dir, "operator", &all)?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        Ok(Self {
            client,
            ns,
            sim,
            operator,
            solver,
        })
    }

    /// Deletes the DomainValidations and waits until they are gone: a finalizer (RFC 2136
    /// solvers) must release them, even when its record cannot be removed.
    async fn cleanup(&self, names: &[&str]) -> Result<()> {
        let api = validations(&self.client);
        for name in names {
            api.delete(name, &DeleteParams::default()).await?;
        }
        for name in names {
            crate::support::wait_gone(&api, name, "DomainValidation")
                .await
                .with_context(|| self.operator.log_text())?;
        }
        Ok(())
    }
}

fn simulator(domains: Vec<SimDomain>) -> ScmSimulatorConfig {
    ScmSimulatorConfig {
        pending_collects: 0,
        domains,
        ..ScmSimulatorConfig::default()
    }
}

/// HTTP: the operator publishes the file on its solver, checks it there and submits; the
/// simulator fetches it from the solver and validates; a Certificate under the domain then
/// issues; the solver answers 404 for the file afterwards.
fn http_validation_is_served_checked_and_withdrawn() -> Result<()> {
    block_on(async {
        let domain = format!("http-{}.test", std::process::id());
        let scene = Scene::start(
            "dcv-http",
            |solver| {
                Ok(ScmSimulatorConfig {
                    dcv_http_address: Some(solver.parse()?),
                    ..simulator(vec![SimDomain::new(&domain)])
                })
            },
            &[],
        )
        .await?;
        let name = scene.ns.name.clone();
        apply(
            &scene.ns.name,
            &validation_yaml(
                &name,
                &scene.ns.name,
                &domain,
                "  method: HTTP\n  solver: {http: {}}\n",
            ),
        )?;
        let validated = wait_validation(
            &scene.client,
            &name,
            "validated",
            Duration::from_secs(90),
            is_validated,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        ensure!(
            validated.data["status"]["challenge"].is_null(),
            "the challenge stays in status after success: {}",
            validated.data["status"]
        );
        let stats = scene.sim.stats();
        let fetched = stats
            .dcv_checks
            .iter()
            .find(|c| c.method == "HTTP" && c.passed)
            .with_context(|| format!("no passed HTTP check: {:?}", stats.dcv_checks))?;
        ensure!(
            fetched.target.contains(&scene.solver),
            "the simulator fetched {} instead of from the operator's solver {}",
            fetched.target,
            scene.solver
        );
        let path = fetched
            .target
            .split_whitespace()
            .next()
            .and_then(|url| url.split_once(&domain))
            .map(|(_, path)| path.to_owned())
            .context("no path in the check's target")?;
        let (status, _) = http_get_with_host(&scene.solver, &path, &domain).await?;
        ensure!(
            status == 404,
            "the solver still answers {status} for {path} after success"
        );

        apply(&scene.ns.name, &certificate_for("www", &format!("www.{domain}")))?;
        wait_certificate(
            &scene.client,
            &scene.ns.name,
            "www",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        scene.cleanup(&[&name]).await
    })
}

/// HTTP through an Ingress (`solver.http.ingress` in another namespace than the operator's):
/// while the challenge is published, an Ingress there routes exactly the validation path on the
/// domain's host, with the configured class, to an `ExternalName` Service pointing at the
/// operator's solver Service, both owned by the DomainValidation. The first operator's self-check
/// cannot reach the solver, so the challenge stays published (and unsubmitted) for the test to
/// look at; an operator that can validates it, and then both are deleted.
fn http_challenge_is_routed_by_an_ingress_until_validated() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "dcv-ingress").await?;
        let routes = TestNamespace::create(&client, "dcv-routes").await?;
        let domain = format!("ingress-{}.test", std::process::id());
        let solver = format!("127.0.0.1:{}", free_port()?);
        let sim = ScmSimulator::start(ScmSimulatorConfig {
            dcv_http_address: Some(solver.parse()?),
            ..simulator(vec![SimDomain::new(&domain)])
        })
        .await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        let unreachable = format!("127.0.0.1:{}", free_port()?);
        let args = |self_check: &str| -> Vec<String> {
            [
                "--namespace",
                &ns.name,
                "--solver-address",
                &solver,
                "--dcv-http-self-check-address",
                self_check,
                "--solver-service",
                "pki-operator-solver",
                "--pod-namespace",
                &ns.name,
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let first_args = args(&unreachable);
        let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
        let mut first = Operator::start(plane(), &work_dir("dcv-ingress-1")?, "operator-1", &first_args)?;
        first.wait_ready(Duration::from_secs(60)).await?;
        let name = ns.name.clone();
        apply(
            &ns.name,
            &validation_yaml(
                &name,
                &ns.name,
                &domain,
                &format!(
                    "  method: HTTP\n  solver: {{http: {{ingress: {{namespace: {}, className: nginx}}}}}}\n",
                    routes.name
                ),
            ),
        )?;
        let pending = wait_validation(
            &client,
            &name,
            "the challenge published but not answered",
            Duration::from_secs(60),
            reason_is("ChallengeNotReachable"),
        )
        .await
        .with_context(|| first.log_text())?;
        let file_url = pending.data["status"]["challenge"]["fileUrl"]
            .as_str()
            .context("no fileUrl in status")?
            .to_owned();
        let path = file_url
            .split_once(&domain)
            .map(|(_, path)| path.to_owned())
            .context("fileUrl does not name the domain")?;

        let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &routes.name);
        let listed = ingresses
            .list(&ListParams::default().labels(&format!("pki-operator.io/domain-validation={name}")))
            .await?;
        ensure!(listed.items.len() == 1, "Ingresses: {:?}", listed.items);
        let ingress = &listed.items[0];
        let route_name = ingress.metadata.name.clone().context("Ingress name")?;
        let spec = ingress.spec.clone().context("Ingress spec")?;
        let rule = spec.rules.unwrap_or_default().pop().context("no Ingress rule")?;
        let http_path = rule
            .http
            .context("no http rule")?
            .paths
            .pop()
            .context("no path")?;
        let backend = http_path.backend.service.context("no service backend")?;
        ensure!(
            spec.ingress_class_name.as_deref() == Some("nginx")
                && rule.host.as_deref() == Some(domain.as_str())
                && http_path.path.as_deref() == Some(path.as_str())
                && http_path.path_type == "Exact"
                && backend.name == route_name
                && backend.port.and_then(|p| p.number) == Some(80),
            "the Ingress routes something else: class {:?}, host {:?}, path {:?} {}, backend {}",
            spec.ingress_class_name,
            rule.host,
            http_path.path,
            http_path.path_type,
            backend.name
        );
        let dv_uid = pending.metadata.uid.clone().context("DomainValidation uid")?;
        ensure!(
            ingress
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "DomainValidation" && o.uid == dv_uid),
            "the Ingress is not owned by the DomainValidation"
        );
        let services: Api<Service> = Api::namespaced(client.clone(), &routes.name);
        let service = services.get(&route_name).await?.spec.context("Service spec")?;
        let target = format!("pki-operator-solver.{}.svc", ns.name);
        ensure!(
            service.type_.as_deref() == Some("ExternalName")
                && service.external_name.as_deref() == Some(target.as_str()),
            "the Service points at {:?} {:?}, not {target}",
            service.type_,
            service.external_name
        );

        first.kill();
        let second_args = args(&solver);
        let second_args: Vec<&str> = second_args.iter().map(String::as_str).collect();
        let second = Operator::start(plane(), &work_dir("dcv-ingress-2")?, "operator-2", &second_args)?;
        wait_validation(&client, &name, "validated", Duration::from_secs(90), is_validated)
            .await
            .with_context(|| second.log_text())?;
        crate::support::wait_gone(&ingresses, &route_name, "the Ingress to be deleted")
            .await
            .with_context(|| second.log_text())?;
        crate::support::wait_gone(&services, &route_name, "the Service to be deleted").await?;
        validations(&client)
            .delete(&name, &DeleteParams::default())
            .await?;
        crate::support::wait_gone(&validations(&client), &name, "DomainValidation").await?;
        Ok(())
    })
}

/// EMAIL: status lists the allowed addresses and waits for a person; meanwhile a Certificate
/// under the domain is `DomainNotValidated` and the simulator counts no order; after the
/// simulator's "click" the domain validates and the Certificate issues by itself.
fn certificates_wait_for_an_email_validation_then_issue() -> Result<()> {
    block_on(async {
        let domain = format!("mail-{}.test", std::process::id());
        let scene = Scene::start("dcv-email", |_| Ok(simulator(vec![SimDomain::new(&domain)])), &[]).await?;
        let name = scene.ns.name.clone();
        apply(
            &scene.ns.name,
            &validation_yaml(
                &name,
                &scene.ns.name,
                &domain,
                &format!("  method: EMAIL\n  email: hostmaster@{domain}\n"),
            ),
        )?;
        let waiting = wait_validation(
            &scene.client,
            &name,
            "waiting for the mail",
            Duration::from_secs(60),
            |o| {
                ready(o).is_some_and(|(_, reason, _)| reason == "Submitted" || reason == "WaitingForEmail")
                    && o.data["status"]["challenge"]["allowedEmails"].is_array()
            },
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let allowed = waiting.data["status"]["challenge"]["allowedEmails"].to_string();
        ensure!(
            allowed.contains(&format!("hostmaster@{domain}")),
            "allowed addresses not listed: {allowed}"
        );
        let (_, _, message) = ready(&waiting).unwrap_or_default();
        ensure!(message.contains("a person must follow"), "{message}");

        apply(
            &scene.ns.name,
            &certificate_for("shop", &format!("shop.{domain}")),
        )?;
        let blocked = wait_certificate(
            &scene.client,
            &scene.ns.name,
            "shop",
            "DomainNotValidated",
            Duration::from_secs(60),
            |c| {
                crate::support::condition(c, "Ready")
                    .is_some_and(|(_, reason, _)| reason == "DomainNotValidated")
            },
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let (_, _, message) = crate::support::condition(&blocked, "Ready").unwrap_or_default();
        ensure!(
            message.contains(&domain),
            "the message names no domain: {message}"
        );
        ensure!(
            crate::support::total_orders(&scene.sim) == 0,
            "orders placed for an unvalidated domain: {:?}",
            scene.sim.stats().orders_per_csr
        );

        scene
            .sim
            .click_email_link(&domain)
            .map_err(|e| anyhow::anyhow!("click: {e:?}"))?;
        wait_validation(
            &scene.client,
            &name,
            "validated after the click",
            Duration::from_secs(90),
            is_validated,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        wait_certificate(
            &scene.client,
            &scene.ns.name,
            "shop",
            "Ready",
            Duration::from_secs(90),
            is_ready,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        ensure!(
            crate::support::total_orders(&scene.sim) == 1,
            "one order after validation"
        );
        scene.cleanup(&[&name]).await
    })
}

/// A Secret with the BIND9 harness's TSIG key in `namespace`.
fn tsig_secret(namespace: &str, bind: &Bind9) -> Result<()> {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tsig"},
        "stringData": {"secret": base64::engine::general_purpose::STANDARD.encode(&bind.key().secret)},
    });
    apply(namespace, &serde_json::to_string(&secret)?)
}

fn rfc2136_solver(namespace: &str, bind: &Bind9) -> String {
    format!(
        "  solver:\n    dns:\n      rfc2136: {{nameserver: \"{}\", zone: \"{}\", tsigKeyName: \"{}\", tsigSecretRef: {{namespace: {namespace}, name: tsig, key: secret}}}}\n",
        bind.addr(),
        Bind9::ZONE,
        bind.key().name
    )
}

/// CNAME and TXT through RFC 2136: the record appears in BIND9, the simulator validates by asking
/// BIND9, and the operator removes the record afterwards.
fn rfc2136_cname_and_txt_records_are_published_and_removed() -> Result<()> {
    block_on(async {
        let bind = Bind9::start().await?;
        let zone = Bind9::ZONE.trim_end_matches('.');
        let (cname_domain, txt_domain) = (format!("cname.{zone}"), format!("txt.{zone}"));
        let dns = bind.addr();
        let scene = Scene::start(
            "dcv-rfc2136",
            |_| {
                Ok(ScmSimulatorConfig {
                    dcv_dns_server: Some(dns),
                    ..simulator(vec![SimDomain::new(&cname_domain), SimDomain::new(&txt_domain)])
                })
            },
            &[],
        )
        .await?;
        tsig_secret(&scene.ns.name, &bind)?;
        let (cname, txt) = (
            format!("{}-cname", scene.ns.name),
            format!("{}-txt", scene.ns.name),
        );
        let solver = rfc2136_solver(&scene.ns.name, &bind);
        apply(
            &scene.ns.name,
            &validation_yaml(
                &cname,
                &scene.ns.name,
                &cname_domain,
                &format!("  method: CNAME\n{solver}"),
            ),
        )?;
        apply(
            &scene.ns.name,
            &validation_yaml(
                &txt,
                &scene.ns.name,
                &txt_domain,
                &format!("  method: TXT\n{solver}"),
            ),
        )?;
        for name in [&cname, &txt] {
            wait_validation(
                &scene.client,
                name,
                "validated",
                Duration::from_secs(120),
                is_validated,
            )
            .await
            .with_context(|| scene.operator.log_text())?;
        }
        let stats = scene.sim.stats();
        for method in ["CNAME", "TXT"] {
            ensure!(
                stats.dcv_checks.iter().any(|c| c.method == method && c.passed),
                "the simulator validated no {method} at BIND9: {:?}",
                stats.dcv_checks
            );
        }
        // Removed after success (the operator removes what it added, nothing else).
        wait_for("the records removed", Duration::from_secs(30), || async {
            let cnames = bind
                .lookup(&format!("_x.{cname_domain}."), RecordType::CNAME)
                .await
                .ok()?;
            let txts = bind.txt(&format!("_pki-validation.{txt_domain}.")).await.ok()?;
            (cnames.is_empty() && txts.is_empty()).then_some(())
        })
        .await?;
        let leftovers = stats
            .dcv_checks
            .iter()
            .filter(|c| c.method == "CNAME")
            .map(|c| c.target.clone())
            .collect::<Vec<_>>();
        for target in leftovers {
            let owner = target.split_whitespace().next().unwrap_or_default().to_owned();
            let found = bind.lookup(&owner, RecordType::CNAME).await?;
            ensure!(found.is_empty(), "{owner} CNAME still published: {found:?}");
        }
        scene.cleanup(&[&cname, &txt]).await
    })
}

/// Manual DNS: status shows the TXT record; the test creates it in BIND9; the operator's
/// self-check at BIND9 then passes and the domain validates.
fn manual_dns_waits_for_the_record_then_validates() -> Result<()> {
    block_on(async {
        let bind = Bind9::start().await?;
        let zone = Bind9::ZONE.trim_end_matches('.');
        let domain = format!("manual.{zone}");
        let dns = bind.addr().to_string();
        let scene = Scene::start(
            "dcv-manual",
            |_| {
                Ok(ScmSimulatorConfig {
                    dcv_dns_server: Some(bind.addr()),
                    ..simulator(vec![SimDomain::new(&domain)])
                })
            },
            &["--dcv-dns-self-check-server", &dns],
        )
        .await?;
        let name = scene.ns.name.clone();
        apply(
            &scene.ns.name,
            &validation_yaml(
                &name,
                &scene.ns.name,
                &domain,
                "  method: TXT\n  solver: {dns: {manual: {}}}\n",
            ),
        )?;
        let shown = wait_validation(
            &scene.client,
            &name,
            "the record shown",
            Duration::from_secs(60),
            |o| o.data["status"]["challenge"]["txtValue"].is_string(),
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let host = shown.data["status"]["challenge"]["txtHost"]
            .as_str()
            .context("no txtHost")?
            .to_owned();
        let value = shown.data["status"]["challenge"]["txtValue"]
            .as_str()
            .context("no txtValue")?
            .to_owned();
        ensure!(host == format!("_pki-validation.{domain}."), "host {host}");
        let (_, reason, _) = ready(&shown).unwrap_or_default();
        ensure!(reason != "Validated", "validated before the record exists");
        bind.add(&host, RData::TXT(TXT::new(vec![value.clone()]))).await?;
        wait_validation(
            &scene.client,
            &name,
            "validated",
            Duration::from_secs(120),
            is_validated,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        scene.cleanup(&[&name]).await
    })
}

/// A validation that expired at the CA (the simulator's DCV clock moved past its expiry) is
/// noticed at the next re-read and validated again by HTTP without anyone acting: `expiresAt`
/// moves forward. (Revalidation *before* the expiry is decided by the planner, whose timing is
/// unit-tested: the operator's own clock cannot be moved here.)
fn an_expired_validation_is_renewed_without_anyone_acting() -> Result<()> {
    block_on(async {
        let domain = format!("renew-{}.test", std::process::id());
        let scene = Scene::start(
            "dcv-renew",
            |solver| {
                Ok(ScmSimulatorConfig {
                    dcv_http_address: Some(solver.parse()?),
                    ..simulator(vec![SimDomain::new(&domain)])
                })
            },
            &["--dcv-recheck-interval", "3"],
        )
        .await?;
        let name = scene.ns.name.clone();
        apply(
            &scene.ns.name,
            &validation_yaml(
                &name,
                &scene.ns.name,
                &domain,
                "  method: HTTP\n  solver: {http: {}}\n",
            ),
        )?;
        let first = wait_validation(
            &scene.client,
            &name,
            "validated",
            Duration::from_secs(90),
            is_validated,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let expiry = |o: &DynamicObject| {
            o.data["status"]["expiresAt"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let first_expiry = expiry(&first);
        ensure!(!first_expiry.is_empty(), "no expiresAt: {}", first.data["status"]);
        scene.sim.advance_dcv_clock(Duration::from_secs(400 * 86_400));
        let renewed = wait_validation(
            &scene.client,
            &name,
            "validated again with a later expiry",
            Duration::from_secs(120),
            |o| is_validated(o) && expiry(o) > first_expiry,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let passed = scene
            .sim
            .stats()
            .dcv_checks
            .iter()
            .filter(|c| c.method == "HTTP" && c.passed)
            .count();
        ensure!(passed >= 2, "expected a second HTTP check, saw {passed}");
        ensure!(
            renewed.data["status"]["challenge"].is_null(),
            "challenge left in status"
        );
        scene.cleanup(&[&name]).await
    })
}

/// Unknown domain, suspended domain, DCV disabled for the account, a wrong TSIG key, a `ca`
/// issuer: each is Ready=False with a reason and a message naming the cause, and the CA is not called in a hot
/// loop while they wait.
fn bad_domain_validations_say_why_without_a_hot_loop() -> Result<()> {
    block_on(async {
        let bind = Bind9::start().await?;
        let zone = Bind9::ZONE.trim_end_matches('.');
        let (suspended, tsig_domain) = (
            format!("suspended-{}.test", std::process::id()),
            format!("wrongkey.{zone}"),
        );
        let dns = bind.addr();
        let scene = Scene::start(
            "dcv-bad",
            |_| {
                Ok(ScmSimulatorConfig {
                    dcv_dns_server: Some(dns),
                    ..simulator(vec![
                        SimDomain {
                            active: false,
                            ..SimDomain::new(&suspended)
                        },
                        SimDomain::new(&tsig_domain),
                    ])
                })
            },
            &[],
        )
        .await?;
        // A TSIG Secret with another key than the server's.
        let wrong = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tsig"},
            "stringData": {"secret": base64::engine::general_purpose::STANDARD.encode([7_u8; 32])},
        });
        apply(&scene.ns.name, &serde_json::to_string(&wrong)?)?;
        let ns = scene.ns.name.clone();
        let cases = [
            (
                format!("{ns}-unknown"),
                format!("unknown-{}.test", std::process::id()),
                "  method: EMAIL\n  email: admin@x.test\n".to_owned(),
                "DomainNotFound",
                "does not exist in SCM",
            ),
            (
                format!("{ns}-suspended"),
                suspended.clone(),
                format!("  method: EMAIL\n  email: admin@{suspended}\n"),
                "DomainInactive",
                "inactive",
            ),
            (
                format!("{ns}-wrongkey"),
                tsig_domain.clone(),
                format!("  method: CNAME\n{}", rfc2136_solver(&ns, &bind)),
                "PublishFailed",
                "did not accept the TSIG signature",
            ),
        ];
        for (name, domain, rest, _, _) in &cases {
            apply(&ns, &validation_yaml(name, &ns, domain, rest))?;
        }
        for (name, _, _, reason, needle) in &cases {
            let found = wait_validation(
                &scene.client,
                name,
                reason,
                Duration::from_secs(60),
                reason_is(reason),
            )
            .await
            .with_context(|| scene.operator.log_text())?;
            let (status, _, message) = ready(&found).unwrap_or_default();
            ensure!(status == "False", "{name}: Ready={status}");
            ensure!(
                message
                    .to_ascii_lowercase()
                    .contains(&needle.to_ascii_lowercase()),
                "{name}: {message:?} lacks {needle:?}"
            );
        }
        // No hot loop: over 20 s, a handful of CA calls for three waiting objects.
        let before: u64 = scene.sim.stats().requests.values().sum();
        let window_end = Instant::now() + Duration::from_secs(20);
        wait_for("the 20-second window", Duration::from_secs(30), || async {
            (Instant::now() >= window_end).then_some(())
        })
        .await?;
        let calls: u64 = scene.sim.stats().requests.values().sum::<u64>() - before;
        ensure!(
            calls <= 12,
            "{calls} CA calls in 20 s while waiting: {:?}",
            scene.sim.stats().requests
        );

        // DCV disabled for the whole account.
        let disabled = ScmSimulator::start(ScmSimulatorConfig {
            dcv_access: DcvAccess::DisabledForCustomer,
            ..simulator(vec![SimDomain::new("off.test")])
        })
        .await?;
        scm_issuer(&ns, "sectigo-off", &disabled, SCM_PASSWORD)?;
        let off = format!("{ns}-off");
        apply(
            &ns,
            &validation_yaml(
                &off,
                &ns,
                "off.test",
                "  method: EMAIL\n  email: admin@off.test\n",
            )
            .replace("name: sectigo}", "name: sectigo-off}"),
        )?;
        wait_validation(
            &scene.client,
            &off,
            "DcvNotEnabled",
            Duration::from_secs(60),
            reason_is("DcvNotEnabled"),
        )
        .await
        .with_context(|| scene.operator.log_text())?;

        // A `ca` issuer has no CA account to validate at.
        crate::support::ca_issuer(&ns, "local")?;
        let local = format!("{ns}-local");
        apply(
            &ns,
            &validation_yaml(
                &local,
                &ns,
                "local.test",
                "  method: EMAIL\n  email: admin@local.test\n",
            )
            .replace("name: sectigo}", "name: local}"),
        )?;
        let found = wait_validation(
            &scene.client,
            &local,
            "Unsupported",
            Duration::from_secs(60),
            reason_is("Unsupported"),
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let (_, _, message) = ready(&found).unwrap_or_default();
        ensure!(
            message.contains(&format!("Issuer {ns}/local")) && message.contains("omain"),
            "the message does not name the issuer and what it cannot do: {message}"
        );
        let names: Vec<&str> = cases
            .iter()
            .map(|c| c.0.as_str())
            .chain([off.as_str(), local.as_str()])
            .collect();
        scene.cleanup(&names).await
    })
}

/// Requests for the calls that change a domain's DCV order (start, submit, clear).
fn order_changing_calls(sim: &ScmSimulator) -> u64 {
    sim.stats()
        .requests
        .iter()
        .filter(|(name, _)| {
            name.starts_with("dcvStart") || name.starts_with("dcvSubmit") || *name == "dcvClear"
        })
        .map(|(_, count)| count)
        .sum()
}

/// Two clusters share one SCM account, and a person uses the console: an HTTP order someone else
/// started and submitted is adopted by operator A — it publishes the order's challenge and
/// follows it, never clearing or restarting it — until the CA validates. Operator B, in another
/// namespace with its own Issuer on the same account, then finds the domain validated: its
/// DomainValidation is Ready without a single order-changing call.
fn an_order_placed_elsewhere_is_followed_and_a_validation_elsewhere_counts() -> Result<()> {
    block_on(async {
        let domain = format!("shared-{}.test", std::process::id());
        let scene = Scene::start(
            "dcv-shared-a",
            |solver| {
                Ok(ScmSimulatorConfig {
                    dcv_http_address: Some(solver.parse()?),
                    // The CA looks again soon after its first, failed, check.
                    dcv_check_interval: Duration::from_secs(5),
                    ..simulator(vec![SimDomain::new(&domain)])
                })
            },
            &[],
        )
        .await?;
        scene
            .sim
            .console_start_and_submit(&domain, "HTTP")
            .await
            .map_err(anyhow::Error::msg)?;
        let first_check = scene.sim.stats().dcv_checks;
        ensure!(
            first_check.iter().all(|c| !c.passed),
            "the console's order passed before anyone published: {first_check:?}"
        );
        let a = format!("{}-a", scene.ns.name);
        apply(
            &scene.ns.name,
            &validation_yaml(
                &a,
                &scene.ns.name,
                &domain,
                "  method: HTTP\n  solver: {http: {}}\n",
            ),
        )?;
        wait_validation(
            &scene.client,
            &a,
            "validated",
            Duration::from_secs(150),
            is_validated,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        ensure!(
            order_changing_calls(&scene.sim) == 0,
            "operator A changed the order someone else placed: {:?}",
            scene.sim.stats().requests
        );
        let passed = scene.sim.stats().dcv_checks;
        ensure!(
            passed
                .iter()
                .any(|c| c.passed && c.target.contains(&scene.solver)),
            "the CA did not validate through operator A's solver: {passed:?}"
        );

        let other = TestNamespace::create(&scene.client, "dcv-shared-b").await?;
        scm_issuer(&other.name, "sectigo", &scene.sim, SCM_PASSWORD)?;
        let solver_b = format!("127.0.0.1:{}", free_port()?);
        let operator_b = Operator::start(
            plane(),
            &work_dir("dcv-shared-b")?,
            "operator-b",
            &["--namespace", &other.name, "--solver-address", &solver_b],
        )?;
        operator_b.wait_ready(Duration::from_secs(60)).await?;
        let b = format!("{}-b", other.name);
        apply(
            &other.name,
            &validation_yaml(&b, &other.name, &domain, "  method: HTTP\n  solver: {http: {}}\n"),
        )?;
        wait_validation(
            &scene.client,
            &b,
            "validated",
            Duration::from_secs(60),
            is_validated,
        )
        .await
        .with_context(|| operator_b.log_text())?;
        ensure!(
            order_changing_calls(&scene.sim) == 0,
            "operator B placed an order for a validated domain: {:?}",
            scene.sim.stats().requests
        );
        validations(&scene.client)
            .delete(&b, &DeleteParams::default())
            .await?;
        crate::support::wait_gone(&validations(&scene.client), &b, "DomainValidation").await?;
        scene.cleanup(&[&a]).await
    })
}

/// A domain validated 340 days ago elsewhere (365 days of validity: 25 left) with
/// `revalidateBefore: 720h` is due: the operator validates it again while SCM still reports it
/// validated, and `expiresAt` moves a year ahead — no one acts, nothing expires.
fn a_validation_due_before_its_expiry_is_renewed_while_still_valid() -> Result<()> {
    block_on(async {
        let domain = format!("due-{}.test", std::process::id());
        let scene = Scene::start(
            "dcv-due",
            |solver| {
                Ok(ScmSimulatorConfig {
                    dcv_http_address: Some(solver.parse()?),
                    ..simulator(vec![SimDomain {
                        validated: true,
                        validated_days_ago: 340,
                        ..SimDomain::new(&domain)
                    }])
                })
            },
            &[],
        )
        .await?;
        let name = scene.ns.name.clone();
        apply(
            &scene.ns.name,
            &validation_yaml(
                &name,
                &scene.ns.name,
                &domain,
                "  method: HTTP\n  solver: {http: {}}\n  revalidateBefore: 720h\n",
            ),
        )?;
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(26 * 24);
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(300 * 24);
        let renewed = wait_validation(
            &scene.client,
            &name,
            "validated with an expiry a year ahead",
            Duration::from_secs(90),
            |o| {
                is_validated(o)
                    && o.data["status"]["expiresAt"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .is_some_and(|t| t > later)
            },
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let stats = scene.sim.stats();
        ensure!(
            stats.dcv_checks.iter().any(|c| c.method == "HTTP" && c.passed),
            "no new HTTP validation: {:?}",
            stats.dcv_checks
        );
        ensure!(
            stats.requests.get("dcvStartHttp") == Some(&1) && stats.requests.get("dcvSubmitHttp") == Some(&1),
            "one revalidation order expected: {:?}",
            stats.requests
        );
        // The old validation had 25 days left: it was renewed ahead of its expiry, not after.
        ensure!(jiff::Timestamp::now() < soon);
        ensure!(
            renewed.data["status"]["challenge"].is_null(),
            "challenge left in status"
        );
        scene.cleanup(&[&name]).await
    })
}

/// `solver.dns.scmConnector`: while SCM's only connector is `NOT_CONNECTED` the validation is
/// `Ready=False DnsConnectorUnavailable` naming it, and no order is submitted; once the agent
/// connects, the CNAME order is submitted through it (SCM's agent publishes the record, the
/// operator publishes nothing) and the domain validates.
fn scm_dns_connector_publishes_the_cname_once_connected() -> Result<()> {
    block_on(async {
        let domain = format!("connector-{}.test", std::process::id());
        let connector = SimDnsConnector::new("office agent", &["cloudflare", "ovh"]);
        let id = connector.id.clone();
        let scene = Scene::start(
            "dcv-connector",
            |_| {
                Ok(ScmSimulatorConfig {
                    dns_connectors: vec![SimDnsConnector {
                        status: ConnectorStatus::NotConnected,
                        ..connector
                    }],
                    ..simulator(vec![SimDomain::new(&domain)])
                })
            },
            &[],
        )
        .await?;
        let name = scene.ns.name.clone();
        apply(
            &scene.ns.name,
            &validation_yaml(
                &name,
                &scene.ns.name,
                &domain,
                &format!(
                    "  method: CNAME\n  solver: {{dns: {{scmConnector: {{connectorId: {id}, provider: cloudflare}}}}}}\n"
                ),
            ),
        )?;
        let blocked = wait_validation(
            &scene.client,
            &name,
            "DnsConnectorUnavailable",
            Duration::from_secs(60),
            reason_is("DnsConnectorUnavailable"),
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let (status, _, message) = ready(&blocked).unwrap_or_default();
        ensure!(
            status == "False" && message.contains(&id) && message.contains("NOT_CONNECTED"),
            "{message}"
        );
        ensure!(
            !scene.sim.stats().requests.contains_key("dcvSubmitCname"),
            "submitted through a disconnected connector: {:?}",
            scene.sim.stats().requests
        );
        scene
            .sim
            .set_connector_status(&id, ConnectorStatus::Connected)
            .map_err(anyhow::Error::msg)?;
        wait_validation(
            &scene.client,
            &name,
            "validated",
            Duration::from_secs(120),
            is_validated,
        )
        .await
        .with_context(|| scene.operator.log_text())?;
        let stats = scene.sim.stats();
        ensure!(
            stats
                .dcv_checks
                .iter()
                .any(|c| c.passed && c.method == "CNAME" && c.connector.as_deref() == Some(id.as_str())),
            "the CNAME was not validated through the connector: {:?}",
            stats.dcv_checks
        );
        ensure!(
            stats.requests.get("dcvSubmitCname") == Some(&1),
            "one submit expected: {:?}",
            stats.requests
        );
        scene.cleanup(&[&name]).await
    })
}

/// Accounts without DCV pre-validation: the Issuer's `spec.scm.dcv` goes with every enrollment as
/// `dcvMode`/`dcvEmail`, a Certificate's `spec.scm.dcv` replaces it, and the schema refuses an
/// `email` with another mode than `EMAIL`, naming the field.
fn per_order_dcv_is_sent_with_each_enrollment() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start(
            "per-order-dcv",
            ScmSimulatorConfig {
                pending_collects: 0,
                ..ScmSimulatorConfig::default()
            },
            SCM_PASSWORD,
        )
        .await?;
        let issuers: Api<Issuer> = Api::namespaced(client.clone(), &ns.name);
        let dcv = serde_json::json!({"spec": {"scm": {"dcv": {"mode": "CNAME"}}}});
        issuers
            .patch("sectigo", &PatchParams::default(), &Patch::Merge(&dcv))
            .await?;
        apply(&ns.name, &certificate_yaml("plain", "sectigo", ""))?;
        apply(
            &ns.name,
            &certificate_yaml(
                "mailed",
                "sectigo",
                "  scm: {dcv: {mode: EMAIL, email: hostmaster@mailed.example.com}}\n",
            ),
        )?;
        for name in ["plain", "mailed"] {
            wait_certificate(
                &client,
                &ns.name,
                name,
                "Ready",
                Duration::from_secs(60),
                is_ready,
            )
            .await
            .with_context(|| operator.log_text())?;
        }
        let mut sent: Vec<(Option<String>, Option<String>)> = sim
            .stats()
            .orders
            .into_iter()
            .map(|o| (o.dcv_mode, o.dcv_email))
            .collect();
        sent.sort();
        ensure!(
            sent == [
                (Some("CNAME".into()), None),
                (Some("EMAIL".into()), Some("hostmaster@mailed.example.com".into())),
            ],
            "dcvMode/dcvEmail sent: {sent:?}"
        );
        let refused = apply(
            &ns.name,
            &certificate_yaml(
                "mixed",
                "sectigo",
                "  scm: {dcv: {mode: HTTP, email: a@b.example.com}}\n",
            ),
        )
        .err()
        .context("a dcv email with mode HTTP was accepted")?;
        let refused = format!("{refused:#}");
        ensure!(
            refused.contains("spec.scm.dcv") && refused.contains("email is required with mode EMAIL"),
            "{refused}"
        );
        Ok(())
    })
}
