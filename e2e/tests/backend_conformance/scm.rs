//! The conformance suite and the SCM client's error, retry and crash-recovery behaviour, against
//! the SCM simulator (Sectigo and InCommon flavours, password and client-certificate login),
//! under both readings of the ambiguous seeds (`ScmReading`): the suite's trials carry a
//! `strict::` prefix under the strict one. Network discovery has its own trials (`discovery`).

mod discovery;

use std::time::{Duration, Instant};

use crate::{capture_logs, ensure_no_secrets, run, trial};
use anyhow::{Result, bail, ensure};
use libtest_mimic::Trial;
use pki_operator::backend::{
    BackendError, CaBackend, Collected, OrderHandle,
    retry::{Idempotency, RetryPolicy},
    scm::{
        ScmAuth, ScmBackend, ScmConfig, ScmFlavor,
        client::{ApiFamily, CallError, ScmHttp},
    },
};
use pki_operator::pki::credentials::SecretString;
use pki_operator_e2e::{
    conformance::{self, Check, new_order},
    sim::{
        DEFAULT_DISCOVERY_BUCKET,
        scm::{
            Faults, PendingVariant, RateLimitFault, ScmFlavor as SimFlavor, ScmReading, ScmSimulator,
            ScmSimulatorConfig,
        },
    },
};

const PASSWORD: &str = "sim-password-123";

#[derive(Clone, Copy, Debug)]
enum Mode {
    SectigoPassword,
    SectigoClientCertificate,
    InCommonPassword,
    InCommonClientCertificate,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::SectigoPassword,
        Mode::SectigoClientCertificate,
        Mode::InCommonPassword,
        Mode::InCommonClientCertificate,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::SectigoPassword => "sectigo_password",
            Mode::SectigoClientCertificate => "sectigo_client_certificate",
            Mode::InCommonPassword => "incommon_password",
            Mode::InCommonClientCertificate => "incommon_client_certificate",
        }
    }

    fn flavors(self) -> (SimFlavor, ScmFlavor) {
        match self {
            Mode::SectigoPassword | Mode::SectigoClientCertificate => {
                (SimFlavor::Sectigo, ScmFlavor::Sectigo)
            }
            Mode::InCommonPassword | Mode::InCommonClientCertificate => {
                (SimFlavor::InCommon, ScmFlavor::InCommon)
            }
        }
    }
}

/// Both readings, with the prefix their trials' names carry.
const READINGS: [(ScmReading, &str); 2] = [(ScmReading::Common, ""), (ScmReading::Strict, "strict::")];

fn sim_config(mode: Mode) -> ScmSimulatorConfig {
    reading_config(mode, ScmReading::Common)
}

fn reading_config(mode: Mode, reading: ScmReading) -> ScmSimulatorConfig {
    ScmSimulatorConfig {
        flavor: mode.flavors().0,
        pending_collects: 2,
        reading,
        ..ScmSimulatorConfig::default()
    }
}

fn backend_for(sim: &ScmSimulator, mode: Mode, password: &str) -> Result<ScmBackend> {
    Ok(ScmBackend::new(config_for(sim, mode, password))?)
}

/// The client configuration for `sim` in `mode`, with test-sized timeouts and retries.
fn config_for(sim: &ScmSimulator, mode: Mode, password: &str) -> ScmConfig {
    let auth = match mode {
        Mode::SectigoPassword | Mode::InCommonPassword => ScmAuth::Password {
            login: "api-admin".into(),
            password: SecretString::new(password),
        },
        Mode::SectigoClientCertificate | Mode::InCommonClientCertificate => {
            let (cert, key) = sim.issue_client_certificate("api-admin");
            ScmAuth::ClientCertificate {
                login: "api-admin".into(),
                identity_pem: SecretString::new(format!("{cert}{key}")),
            }
        }
    };
    let mut config = ScmConfig::new(sim.base_url(), "cst-sim", auth, 8932, 5153);
    config.flavor = mode.flavors().1;
    config.ca_bundle_pem = Some(sim.tls_ca_pem());
    config.request_timeout = Duration::from_secs(3);
    config.retry = RetryPolicy {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(10),
    };
    config
}

/// Every SCM trial.
pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (reading, prefix) in READINGS {
        for mode in Mode::ALL {
            for check in Check::ALL {
                trials.push(trial(
                    format!("{prefix}{}::{}", mode.name(), check.name()),
                    move || {
                        run(async move {
                            let sim = ScmSimulator::start(reading_config(mode, reading)).await?;
                            check
                                .run(&backend_for(&sim, mode, PASSWORD)?, &sim.issuing_root_pem())
                                .await
                        })
                    },
                ));
            }
            trials.push(trial(
                format!("{prefix}{}::check_lists_profiles", mode.name()),
                move || run(check_lists_profiles(mode, reading)),
            ));
            trials.push(trial(
                format!(
                    "{prefix}{}::every_api_family_is_reached_authenticated",
                    mode.name()
                ),
                move || run(every_api_family_is_reached(mode, reading)),
            ));
            trials.push(trial(
                format!("{prefix}{}::discovery_scans_through_the_client", mode.name()),
                move || run(discovery::scans_through_the_client(mode, reading)),
            ));
        }
        trials.extend([
            trial(
                format!("{prefix}scm::declined_order_is_never_recovered"),
                move || run(declined_order_is_never_recovered(reading)),
            ),
            trial(
                format!("{prefix}scm::recovery_finds_the_newest_order_across_all_pages"),
                move || run(recovery_finds_the_newest_order_across_all_pages(reading)),
            ),
            trial(
                format!("{prefix}scm::recovery_ignores_orders_placed_before_the_csr"),
                move || run(recovery_ignores_orders_placed_before_the_csr(reading)),
            ),
            trial(
                format!("{prefix}scm::incommon_renewal_with_a_new_key_is_a_new_enrollment"),
                move || run(incommon_renewal_is_a_new_enrollment(reading)),
            ),
        ]);
    }
    trials.push(trial(
        "strict::scm::renewal_made_with_the_initial_csr_fails_once_and_for_all".into(),
        || run(renewal_with_the_initial_csr_fails()),
    ));
    trials.extend([
        trial(
            "scm::collect_is_pending_exactly_n_times_then_issued".into(),
            || run(pending_n_times_then_issued()),
        ),
        trial("scm::every_pending_variant_is_pending".into(), || {
            run(every_pending_variant_is_pending())
        }),
        trial(
            "scm::lost_enroll_response_is_recovered_without_a_second_order".into(),
            || run(lost_enroll_response()),
        ),
        trial("scm::error_classes_map_to_kinds_with_the_cause".into(), || {
            run(error_classes())
        }),
        trial("scm::enroll_is_never_retried".into(), || {
            run(enroll_is_never_retried())
        }),
        trial("scm::retry_after_is_waited_out".into(), || {
            run(retry_after_is_waited_out())
        }),
        trial(
            "scm::idempotent_calls_survive_half_failing_server_with_bounded_requests".into(),
            || run(half_failing_server()),
        ),
        trial(
            "scm::declined_order_fails_instead_of_polling_forever".into(),
            || run(declined_order_fails()),
        ),
        trial("scm::timeouts_are_transient_unavailable".into(), || {
            run(timeouts_are_unavailable())
        }),
        trial(
            "scm::logs_and_errors_never_contain_credentials_or_keys".into(),
            logs_never_contain_secrets,
        ),
    ]);
    trials.extend(discovery::trials());
    trials
}

async fn check_lists_profiles(mode: Mode, reading: ScmReading) -> Result<()> {
    let sim = ScmSimulator::start(reading_config(mode, reading)).await?;
    let backend = backend_for(&sim, mode, PASSWORD)?;
    let profiles = backend.check().await?;
    ensure!(
        profiles.iter().any(|p| p.id == "5153" && p.terms.contains(&365)),
        "profiles: {profiles:?}"
    );
    // InCommon's certificate-login path is found once (by the check) and then remembered: only
    // the strict reading's server, which serves 001's path, ever sees the probe of 004's path.
    backend.check().await?;
    let order = new_order(&["base-path.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    conformance::collect_until_issued(&backend, &handle, &order.request.csr_der, 10).await?;
    let misses = sim.stats().requests.get("unknown").copied().unwrap_or(0);
    let expected =
        u64::from(matches!(mode, Mode::InCommonClientCertificate) && reading == ScmReading::Strict);
    ensure!(
        misses == expected,
        "{misses} requests to a path the server does not serve, expected {expected}"
    );
    Ok(())
}

/// The client reaches every API family at the path the simulator serves for the login and
/// flavour, and is authenticated there: SSL, DCV, Domain, DNS connector and discovery answer a
/// real call (DCV v2 with the -727 of an unknown domain and discovery v4 with the 404 of an
/// unknown task, which only an authenticated caller gets, on a path the call log shows was
/// routed), every other family the simulator's 501 (an authentication failure would be 401, a
/// wrong path 404).
async fn every_api_family_is_reached(mode: Mode, reading: ScmReading) -> Result<()> {
    let sim = ScmSimulator::start(reading_config(mode, reading)).await?;
    let http = ScmHttp::new(&config_for(&sim, mode, PASSWORD))?;
    let private = match mode {
        Mode::SectigoPassword | Mode::InCommonPassword => "",
        Mode::SectigoClientCertificate | Mode::InCommonClientCertificate => "/private",
    };
    let unknown = serde_json::json!({"domain": "not-registered.example"});
    let bucket_certificates = format!("/bucket/{DEFAULT_DISCOVERY_BUCKET}/certificates");
    for family in ApiFamily::ALL {
        let (method, path, body) = match family {
            ApiFamily::DcvV1 => (reqwest::Method::GET, "/validation", None),
            ApiFamily::DcvV2 => (reqwest::Method::POST, "/validation/status", Some(&unknown)),
            ApiFamily::DomainV1 => (reqwest::Method::GET, "", None),
            ApiFamily::ConnectorV1 => (reqwest::Method::GET, "/dns", None),
            ApiFamily::DiscoveryV1 => (reqwest::Method::GET, bucket_certificates.as_str(), None),
            ApiFamily::DiscoveryV3 => (reqwest::Method::GET, "/net_task", None),
            ApiFamily::DiscoveryV4 => (reqwest::Method::GET, "/net_task/1", None),
            _ => (reqwest::Method::GET, "/types", None),
        };
        let outcome = http
            .api(family)
            .call("probe", method.clone(), path, &[], body, Idempotency::Once)
            .await;
        match (family, outcome) {
            (
                ApiFamily::SslV1
                | ApiFamily::DcvV1
                | ApiFamily::DomainV1
                | ApiFamily::ConnectorV1
                | ApiFamily::DiscoveryV1
                | ApiFamily::DiscoveryV3,
                Ok(_),
            )
            | (ApiFamily::DcvV2, Err(CallError::Api { code: -727, .. }))
            | (
                ApiFamily::DiscoveryV4,
                Err(CallError::Api {
                    status: reqwest::StatusCode::NOT_FOUND,
                    ..
                }),
            ) => {}
            (
                ApiFamily::SslV1
                | ApiFamily::DcvV1
                | ApiFamily::DcvV2
                | ApiFamily::DomainV1
                | ApiFamily::ConnectorV1
                | ApiFamily::DiscoveryV1
                | ApiFamily::DiscoveryV3
                | ApiFamily::DiscoveryV4,
                other,
            ) => bail!("{} {path} failed: {other:?}", family.path()),
            (_, Err(CallError::Backend(BackendError::Unavailable { message, .. })))
                if message.contains("HTTP 501") => {}
            (_, other) => bail!(
                "{} answered {other:?}, expected the simulator's 501",
                family.path()
            ),
        }
        let wanted = format!("{method} {private}/api/{}{path}", family.path());
        let calls = sim.stats().calls;
        ensure!(
            family == ApiFamily::SslV1 || calls.last() == Some(&wanted),
            "the last call was {:?}, expected {wanted}",
            calls.last()
        );
    }
    Ok(())
}

async fn pending_n_times_then_issued() -> Result<()> {
    let sim = ScmSimulator::start(ScmSimulatorConfig {
        pending_collects: 3,
        ..sim_config(Mode::SectigoPassword)
    })
    .await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let order = new_order(&["pending-n.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    let (issued, pending) =
        conformance::collect_until_issued(&backend, &handle, &order.request.csr_der, 10).await?;
    ensure!(
        pending == 3,
        "collect was pending {pending} times, the simulator was set to 3"
    );
    conformance::verify_issued(&issued, &sim.issuing_root_pem(), &order.key)?;
    let stats = sim.stats();
    ensure!(
        stats.orders_per_csr.get(&order.request.csr_sha256_hex()) == Some(&1),
        "orders: {:?}",
        stats.orders_per_csr
    );
    ensure!(
        stats.requests.get("enroll") == Some(&1),
        "enroll requests: {:?}",
        stats.requests
    );
    Ok(())
}

async fn every_pending_variant_is_pending() -> Result<()> {
    for variant in [
        PendingVariant::Code1400,
        PendingVariant::Code0,
        PendingVariant::Code183,
        PendingVariant::Code103,
        PendingVariant::Code130,
    ] {
        let config = ScmSimulatorConfig {
            pending_variant: variant,
            ..sim_config(Mode::SectigoPassword)
        };
        let sim = ScmSimulator::start(config).await?;
        conformance::collect_before_issuance_is_pending(&backend_for(&sim, Mode::SectigoPassword, PASSWORD)?)
            .await
            .map_err(|e| e.context(format!("{variant:?}")))?;
    }
    Ok(())
}

async fn lost_enroll_response() -> Result<()> {
    let sim = ScmSimulator::start(sim_config(Mode::SectigoPassword)).await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let order = new_order(&["crash.example.com"])?;
    sim.set_faults(Faults {
        drop_after_enroll: 1,
        ..Faults::default()
    });
    let error = match backend.enroll(&order.request).await {
        Ok(handle) => bail!("enroll succeeded ({handle:?}) although the connection was dropped"),
        Err(error) => error,
    };
    ensure!(
        error.is_transient(),
        "a dropped connection must be transient, got {error:?}"
    );
    ensure!(matches!(error, BackendError::Unavailable { .. }), "got {error:?}");
    let found = backend
        .find_existing_order(&order.request)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order not found"))?;
    let (issued, _) = conformance::collect_until_issued(&backend, &found, &order.request.csr_der, 10).await?;
    conformance::verify_issued(&issued, &sim.issuing_root_pem(), &order.key)?;
    let stats = sim.stats();
    ensure!(
        stats.orders_per_csr.get(&order.request.csr_sha256_hex()) == Some(&1),
        "expected exactly one order for the CSR, simulator counted {:?}",
        stats.orders_per_csr
    );
    ensure!(
        stats.requests.get("enroll") == Some(&1),
        "enroll requests: {:?}",
        stats.requests
    );
    Ok(())
}

async fn error_classes() -> Result<()> {
    // Unauthorized: wrong password.
    let sim = ScmSimulator::start(sim_config(Mode::SectigoPassword)).await?;
    let error = backend_for(&sim, Mode::SectigoPassword, "wrong-password")?
        .check()
        .await
        .err();
    ensure!(
        matches!(&error, Some(BackendError::Unauthorized { message, .. }) if message.contains("Unknown user")),
        "wrong password gave {error:?}"
    );
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;

    // Invalid CSR: bytes that are not a PKCS#10 request.
    let mut garbage = new_order(&["bad-csr.example.com"])?.request;
    garbage.csr_der = b"definitely not a CSR".to_vec();
    match backend.enroll(&garbage).await {
        Err(BackendError::InvalidRequest {
            code: Some(code),
            message,
            ..
        }) => {
            ensure!(matches!(code, -9 | -10 | -138), "bad CSR code {code}");
            ensure!(
                message.contains("CSR"),
                "message {message:?} does not name the CSR"
            );
        }
        other => bail!("garbage CSR gave {other:?}"),
    }

    // Invalid term for the profile.
    let mut wrong_term = new_order(&["term.example.com"])?.request;
    wrong_term.options.term_days = Some(7);
    match backend.enroll(&wrong_term).await {
        Err(BackendError::InvalidRequest {
            code: Some(-36),
            message,
            ..
        }) => {
            ensure!(
                message.contains("term"),
                "message {message:?} does not name the term"
            );
        }
        other => bail!("invalid term gave {other:?}"),
    }

    // Domain not validated.
    let dcv = ScmSimulator::start(ScmSimulatorConfig {
        validated_domains: Some(vec!["example.com".into()]),
        ..sim_config(Mode::SectigoPassword)
    })
    .await?;
    let dcv_backend = backend_for(&dcv, Mode::SectigoPassword, PASSWORD)?;
    match dcv_backend
        .enroll(&new_order(&["shop.unvalidated.test"])?.request)
        .await
    {
        Err(BackendError::DomainNotValidated { message, .. }) => {
            ensure!(
                message.contains("unvalidated.test"),
                "message {message:?} does not name the domain"
            );
        }
        other => bail!("unvalidated domain gave {other:?}"),
    }
    dcv_backend
        .enroll(&new_order(&["www.example.com"])?.request)
        .await?;

    // Rate limited (enroll is not retried, so the caller sees it with the hint).
    sim.set_faults(Faults {
        rate_limit: Some(RateLimitFault {
            retry_after_secs: 30,
            count: 1,
        }),
        endpoints: Some(vec!["enroll".into()]),
        ..Faults::default()
    });
    match backend
        .enroll(&new_order(&["limited.example.com"])?.request)
        .await
    {
        Err(error @ BackendError::RateLimited { .. }) => {
            ensure!(
                error.retry_after() == Some(Duration::from_secs(30)),
                "retry hint {:?}",
                error.retry_after()
            );
            ensure!(error.is_transient());
            ensure!(error.to_string().contains("retry after 30s"), "message {error}");
        }
        other => bail!("429 gave {other:?}"),
    }

    // Server error.
    sim.set_faults(Faults {
        server_error_rate: 1.0,
        endpoints: Some(vec!["enroll".into()]),
        ..Faults::default()
    });
    match backend.enroll(&new_order(&["down.example.com"])?.request).await {
        Err(error @ BackendError::Unavailable { .. }) => {
            ensure!(error.is_transient());
            ensure!(error.to_string().contains("HTTP 5"), "message {error}");
        }
        other => bail!("5xx gave {other:?}"),
    }
    Ok(())
}

async fn enroll_is_never_retried() -> Result<()> {
    let sim = ScmSimulator::start(sim_config(Mode::SectigoPassword)).await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let first = new_order(&["once.example.com"])?;
    let handle = backend.enroll(&first.request).await?;
    conformance::collect_until_issued(&backend, &handle, &first.request.csr_der, 10).await?;
    sim.reset_stats();
    // Every call that places an order fails with a 5xx: each must be sent exactly once.
    let ordering = ["enroll", "renewById", "replace"];
    sim.set_faults(Faults {
        server_error_rate: 1.0,
        endpoints: Some(ordering.iter().map(|e| (*e).to_owned()).collect()),
        ..Faults::default()
    });
    let next = new_order(&["once.example.com"])?;
    ensure!(
        backend.enroll(&next.request).await.is_err(),
        "enroll succeeded against a failing server"
    );
    ensure!(
        backend.renew(&handle, &next.request).await.is_err(),
        "renew succeeded against a failing server"
    );
    ensure!(
        backend.replace(&handle, &next.request, "test").await.is_err(),
        "replace succeeded"
    );
    let stats = sim.stats();
    for endpoint in ordering {
        ensure!(
            stats.requests.get(endpoint) == Some(&1),
            "{endpoint} was sent {:?} times",
            stats.requests.get(endpoint)
        );
    }
    Ok(())
}

async fn retry_after_is_waited_out() -> Result<()> {
    let sim = ScmSimulator::start(sim_config(Mode::SectigoPassword)).await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    sim.set_faults(Faults {
        rate_limit: Some(RateLimitFault {
            retry_after_secs: 2,
            count: 1,
        }),
        ..Faults::default()
    });
    let started = Instant::now();
    backend.check().await?;
    let waited = started.elapsed();
    ensure!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, Retry-After said 2s"
    );
    ensure!(
        sim.stats().requests.get("types") == Some(&2),
        "types requests: {:?}",
        sim.stats().requests
    );
    Ok(())
}

async fn half_failing_server() -> Result<()> {
    const ATTEMPTS: u64 = 10;
    const CALLS: u64 = 20;
    let sim = ScmSimulator::start(sim_config(Mode::SectigoPassword)).await?;
    let mut config = config_for(&sim, Mode::SectigoPassword, PASSWORD);
    // Ten attempts: a call fails only if ten requests in a row do (1 in 1024 at 50%).
    config.retry = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(10),
    };
    let backend = ScmBackend::new(config)?;
    let order = new_order(&["flaky.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    sim.reset_stats();
    sim.set_faults(Faults {
        server_error_rate: 0.5,
        seed: 7,
        ..Faults::default()
    });
    for _ in 0..CALLS {
        backend.check().await?;
    }
    let mut issued = false;
    for _ in 0..CALLS {
        if let Collected::Issued(_) = backend.collect(&handle, &order.request.csr_der).await? {
            issued = true;
            break;
        }
    }
    ensure!(issued, "collect never succeeded");
    let stats = sim.stats();
    let types = stats.requests.get("types").copied().unwrap_or(0);
    // At most ATTEMPTS requests per call; with half of them failing, well over CALLS were needed.
    ensure!(
        types > CALLS && types <= CALLS * ATTEMPTS,
        "{types} requests for {CALLS} calls"
    );
    let collects = stats.requests.get("collect").copied().unwrap_or(0);
    ensure!(collects <= CALLS * ATTEMPTS, "{collects} collect requests");
    eprintln!("half-failing server: {types} types requests for {CALLS} calls, {collects} collect requests");
    Ok(())
}

async fn declined_order_fails() -> Result<()> {
    let sim = ScmSimulator::start(ScmSimulatorConfig {
        require_approval: true,
        ..sim_config(Mode::SectigoPassword)
    })
    .await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let order = new_order(&["declined.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    ensure!(matches!(
        backend.collect(&handle, &order.request.csr_der).await?,
        Collected::Pending { .. }
    ));
    decline(&sim, &handle.id).await?;
    match backend.collect(&handle, &order.request.csr_der).await? {
        Collected::Failed { reason } => ensure!(reason.contains("Declined"), "reason {reason:?}"),
        other => bail!("declined order gave {other:?}"),
    }
    Ok(())
}

/// Declines an order the way an SCM administrator would, through the API.
async fn decline(sim: &ScmSimulator, ssl_id: &str) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(
            sim.tls_ca_pem().as_bytes(),
        )?)
        .build()?;
    let response = client
        .post(format!("{}/api/ssl/v1/decline/{ssl_id}", sim.base_url()))
        .header("login", "api-admin")
        .header("password", PASSWORD)
        .header("customerUri", "cst-sim")
        .json(&serde_json::json!({"message": "not allowed"}))
        .send()
        .await?;
    ensure!(response.status() == 204, "decline answered {}", response.status());
    Ok(())
}

async fn timeouts_are_unavailable() -> Result<()> {
    let sim = ScmSimulator::start(sim_config(Mode::SectigoPassword)).await?;
    let mut config = config_for(&sim, Mode::SectigoPassword, PASSWORD);
    config.request_timeout = Duration::from_millis(500);
    config.retry = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let backend = ScmBackend::new(config)?;
    sim.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    match backend.check().await {
        Err(error @ BackendError::Unavailable { .. }) => {
            ensure!(error.to_string().contains("timed out"), "message {error}");
        }
        other => bail!("hanging server gave {other:?}"),
    }
    ensure!(
        sim.stats().requests.get("types") == Some(&2),
        "{:?}",
        sim.stats().requests
    );
    Ok(())
}

/// Runs enrolments with password and client-certificate login, failures included, with every
/// log level captured, then greps the logs and error messages for the password and key material.
fn logs_never_contain_secrets() -> Result<()> {
    let mut messages = Vec::new();
    let mut secrets = vec![PASSWORD.to_owned()];
    let logs = capture_logs(|| {
        run(async {
            for mode in [Mode::SectigoPassword, Mode::SectigoClientCertificate] {
                let sim = ScmSimulator::start(sim_config(mode)).await?;
                let backend = backend_for(&sim, mode, PASSWORD)?;
                let order = new_order(&["secret.example.com"])?;
                secrets.push(order.key.serialize_pem());
                let handle = backend.enroll(&order.request).await?;
                conformance::collect_until_issued(&backend, &handle, &order.request.csr_der, 10).await?;
                sim.set_faults(Faults {
                    server_error_rate: 1.0,
                    ..Faults::default()
                });
                if let Err(e) = backend.check().await {
                    messages.push(format!("{e} {e:?}"));
                }
                messages.push(format!("{:?}", backend_for(&sim, mode, "wrong")?.check().await));
                messages.push(format!("{backend:?}"));
            }
            Ok(())
        })
    })?;
    ensure_no_secrets(&logs, &messages, &secrets)
}

/// A declined order is never what crash recovery resumes: it will never be issued.
async fn declined_order_is_never_recovered(reading: ScmReading) -> Result<()> {
    let sim = ScmSimulator::start(ScmSimulatorConfig {
        require_approval: true,
        ..reading_config(Mode::SectigoPassword, reading)
    })
    .await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let order = new_order(&["declined-recovery.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    let found = backend.find_existing_order(&order.request).await?;
    ensure!(
        found.as_ref().map(|h| &h.id) == Some(&handle.id),
        "before the decline, recovery found {found:?}"
    );
    decline(&sim, &handle.id).await?;
    let found = backend.find_existing_order(&order.request).await?;
    ensure!(
        found.is_none(),
        "declined order {} was recovered as {found:?}",
        handle.id
    );
    Ok(())
}

/// More orders for the name than one recovery used to examine, ours the newest: recovery pages
/// from the newest end (whichever end the list puts it at) and finds ours at once.
async fn recovery_finds_the_newest_order_across_all_pages(reading: ScmReading) -> Result<()> {
    const EARLIER: usize = 520;
    let sim = ScmSimulator::start(ScmSimulatorConfig {
        pending_collects: 0,
        ..reading_config(Mode::SectigoPassword, reading)
    })
    .await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let earlier = new_order(&["busy.example.com"])?;
    for _ in 0..EARLIER {
        backend.enroll(&earlier.request).await?;
    }
    let order = new_order(&["busy.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    sim.reset_stats();
    let found = backend.find_existing_order(&order.request).await?;
    ensure!(
        found.as_ref().map(|h| &h.id) == Some(&handle.id),
        "recovery found {found:?}, expected order {} (the newest of {})",
        handle.id,
        EARLIER + 1
    );
    let stats = sim.stats();
    let details = stats.requests.get("details").copied().unwrap_or(0);
    let lists = stats.requests.get("list").copied().unwrap_or(0);
    ensure!(
        details == 1 && lists <= 2,
        "newest first means one details call and at most two pages; made {details} and {lists}"
    );
    Ok(())
}

/// Orders dated days before the CSR was made cannot be for it: recovery stops at them.
async fn recovery_ignores_orders_placed_before_the_csr(reading: ScmReading) -> Result<()> {
    let sim = ScmSimulator::start(reading_config(Mode::SectigoPassword, reading)).await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let mut order = new_order(&["window.example.com"])?;
    backend.enroll(&order.request).await?;
    // The same CSR, claimed to be made three days from now: today's order predates it.
    order.request.csr_created_at = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(72));
    sim.reset_stats();
    let found = backend.find_existing_order(&order.request).await?;
    ensure!(
        found.is_none(),
        "an order placed before the CSR was recovered: {found:?}"
    );
    let details = sim.stats().requests.get("details").copied().unwrap_or(0);
    ensure!(details <= 1, "{details} details calls after the window closed");
    // Within the window it is found.
    order.request.csr_created_at = Some(jiff::Timestamp::now());
    ensure!(
        backend.find_existing_order(&order.request).await?.is_some(),
        "the order was not found within the window"
    );
    Ok(())
}

/// InCommon renews with the original CSR (seed 004): a renewal with a new key is answered
/// `Unsupported` (the controller then enrolls) and nothing is sent to the CA.
async fn incommon_renewal_is_a_new_enrollment(reading: ScmReading) -> Result<()> {
    let mode = Mode::InCommonPassword;
    let sim = ScmSimulator::start(reading_config(mode, reading)).await?;
    let backend = backend_for(&sim, mode, PASSWORD)?;
    let first = new_order(&["incommon-renew.example.com"])?;
    let handle = backend.enroll(&first.request).await?;
    conformance::collect_until_issued(&backend, &handle, &first.request.csr_der, 10).await?;
    sim.reset_stats();
    let second = new_order(&["incommon-renew.example.com"])?;
    match backend.renew(&handle, &second.request).await {
        Err(BackendError::Unsupported { .. }) => {}
        other => bail!("InCommon renewal with a new key gave {other:?}, expected Unsupported"),
    }
    let stats = sim.stats();
    ensure!(
        !stats.requests.contains_key("renewById") && !stats.requests.contains_key("renew"),
        "a renewal reached the CA: {:?}",
        stats.requests
    );
    Ok(())
}

/// Under the strict reading the CA renews with the initial CSR: the renewed order's certificate
/// carries the old key. Collecting it fails the order with a clear reason, every time, after
/// exactly the polls needed to see it issued: never an endless "pending" or "malformed".
async fn renewal_with_the_initial_csr_fails() -> Result<()> {
    let mode = Mode::SectigoPassword;
    let sim = ScmSimulator::start(reading_config(mode, ScmReading::Strict)).await?;
    let backend = backend_for(&sim, mode, PASSWORD)?;
    let first = new_order(&["initial-csr.example.com"])?;
    let handle = backend.enroll(&first.request).await?;
    conformance::collect_until_issued(&backend, &handle, &first.request.csr_der, 10).await?;
    let second = new_order(&["initial-csr.example.com"])?;
    let renewed: OrderHandle = backend.renew(&handle, &second.request).await?;
    let settled = conformance::collect_until_settled(&backend, &renewed, &second.request.csr_der, 10).await?;
    let Collected::Failed { reason } = settled else {
        bail!("the renewed order for the old key gave {settled:?}, expected Failed");
    };
    ensure!(
        reason
            == format!(
                "order {} was issued for a different key (the CA did not use this order's CSR)",
                renewed.id
            ),
        "reason {reason:?}"
    );
    ensure!(
        matches!(
            backend.collect(&renewed, &second.request.csr_der).await?,
            Collected::Failed { .. }
        ),
        "a second collect of the failed order did not fail"
    );
    Ok(())
}
