//! The conformance suite and the Nexus client's signing, error, retry and crash-recovery
//! behaviour, against the Nexus simulator in VRO mode (the gateway signs) and caller-signing mode
//! (the client answers `-19` with a CMS signature).
//!
//! The suite and the serial and procedure trials run under both readings of the ambiguous seeds
//! (`NexusReading`); under the strict one their names carry a `strict::` prefix.
//!
//! `collect_before_issuance_is_pending` is not run here: Nexus issues synchronously, the
//! certificate is the answer to the issuance POST (spec §7.7), so there is no pending state.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use libtest_mimic::Trial;
use pki_operator::backend::{
    BackendError, CaBackend, Capabilities, Capability, Collected, RevocationReason, RevokeTarget,
    nexus::{CertificateQuery, DownloadFormat, NexusBackend, NexusConfig, NexusSigner},
    retry::RetryPolicy,
};
use pki_operator::pki::{chain::parse_certificates, credentials::SecretString};
use pki_operator_e2e::{
    conformance::{self, Check, new_order},
    sim::{
        Faults, RateLimitFault,
        nexus::{NexusReading, NexusSigningMode, NexusSimulator, NexusSimulatorConfig},
    },
};

use crate::{capture_logs, ensure_no_secrets, run, trial};

/// Attempts per call in these tests (the production default is 6 too).
const MAX_ATTEMPTS: u32 = 6;

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// The gateway signs as a Virtual Registration Officer.
    Vro,
    /// The caller signs (Nexus' default).
    Caller,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Vro => "nexus_vro",
            Mode::Caller => "nexus_caller_signing",
        }
    }
}

/// Both readings, with the prefix their trials' names carry.
const READINGS: [(NexusReading, &str); 2] = [(NexusReading::Common, ""), (NexusReading::Strict, "strict::")];

fn sim_config(mode: Mode) -> NexusSimulatorConfig {
    reading_config(mode, NexusReading::Common)
}

fn reading_config(mode: Mode, reading: NexusReading) -> NexusSimulatorConfig {
    NexusSimulatorConfig {
        signing_mode: match mode {
            Mode::Vro => NexusSigningMode::Vro,
            Mode::Caller => NexusSigningMode::Caller,
        },
        reading,
        ..NexusSimulatorConfig::default()
    }
}

/// The client configuration for `sim` in `mode`, with test-sized timeouts and retries. The TLS
/// identity and the signer are both the simulator's officer.
fn config_for(sim: &NexusSimulator, mode: Mode) -> NexusConfig {
    let (chain, key) = sim.officer_identity();
    let mut config = NexusConfig::new(sim.base_url(), SecretString::new(format!("{chain}{key}")));
    config.signer = match mode {
        Mode::Vro => None,
        Mode::Caller => Some(NexusSigner {
            certificate_chain_pem: chain,
            key_pem: SecretString::new(key),
        }),
    };
    config.ca_bundle_pem = Some(sim.tls_ca_pem());
    config.request_timeout = Duration::from_secs(3);
    config.retry = RetryPolicy {
        max_attempts: MAX_ATTEMPTS,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(10),
    };
    config.index_wait = Duration::from_millis(20);
    config
}

fn backend_for(sim: &NexusSimulator, mode: Mode) -> Result<NexusBackend> {
    Ok(NexusBackend::new(config_for(sim, mode))?)
}

fn requests(sim: &NexusSimulator, endpoint: &str) -> u64 {
    sim.stats().requests.get(endpoint).copied().unwrap_or(0)
}

/// Every Nexus trial.
pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (reading, prefix) in READINGS {
        for mode in [Mode::Vro, Mode::Caller] {
            // Nexus issues synchronously (spec §7.7): there is no pending state to observe.
            for check in Check::ALL
                .into_iter()
                .filter(|c| *c != Check::CollectBeforeIssuanceIsPending)
            {
                trials.push(trial(
                    format!("{prefix}{}::{}", mode.name(), check.name()),
                    move || {
                        run(async move {
                            let sim = NexusSimulator::start(reading_config(mode, reading)).await?;
                            check
                                .run(&backend_for(&sim, mode)?, &sim.issuing_root_pem())
                                .await
                        })
                    },
                ));
            }
            trials.push(trial(
                format!("{prefix}{}::check_lists_token_procedures", mode.name()),
                move || run(check_lists_token_procedures(mode, reading)),
            ));
        }
        trials.extend([
            trial(
                format!("{prefix}nexus::revoke_by_serial_tolerates_leading_zeros_case_and_colons"),
                move || run(revoke_by_serial_tolerates_spellings(reading)),
            ),
            trial(
                format!("{prefix}nexus::revoke_by_a_serial_nothing_has_is_not_found"),
                move || run(revoke_by_unknown_serial_is_not_found(reading)),
            ),
            trial(
                format!("{prefix}nexus::a_procedure_configured_by_procid_passes_the_check_and_issues"),
                move || run(procedure_by_procid(reading)),
            ),
        ]);
    }
    trials.extend(one_off_trials());
    trials
}

/// The trials that run once, in one mode and reading.
fn one_off_trials() -> Vec<Trial> {
    vec![
        trial("nexus::caller_signing_answers_the_challenge_once".into(), || {
            run(caller_signing_answers_the_challenge_once())
        }),
        trial(
            "nexus::a_signature_by_a_foreign_officer_is_refused_with_17".into(),
            || run(foreign_signer_is_refused()),
        ),
        trial(
            "nexus::a_foreign_client_certificate_is_refused_in_the_tls_handshake".into(),
            || run(foreign_client_certificate_is_refused()),
        ),
        trial(
            "nexus::server_signing_against_a_caller_signing_gateway_names_the_fix".into(),
            || run(server_signing_against_caller_gateway()),
        ),
        trial(
            "nexus::lost_issuance_response_is_recovered_by_search_without_a_second_issuance".into(),
            || run(lost_issuance_response()),
        ),
        trial(
            "nexus::rate_limiting_is_retried_with_bounded_requests".into(),
            || run(rate_limiting_is_retried()),
        ),
        trial(
            "nexus::server_errors_are_retried_for_reads_with_bounded_requests".into(),
            || run(server_errors_are_retried_for_reads()),
        ),
        trial(
            "nexus::issuance_is_not_repeated_after_an_unknown_outcome".into(),
            || run(issuance_is_not_repeated()),
        ),
        trial("nexus::search_pages_through_every_hit".into(), || {
            run(search_pages_through_every_hit())
        }),
        trial(
            "nexus::download_negotiates_every_documented_format".into(),
            || run(download_negotiates_formats()),
        ),
        trial("nexus::hold_then_reinstate".into(), || run(hold_then_reinstate())),
        trial(
            "nexus::declares_issuance_revocation_and_search_only".into(),
            || run(declares_its_capabilities()),
        ),
        trial(
            "nexus::dates_as_rfc3339_strings_read_like_epoch_milliseconds".into(),
            || run(string_dates_are_read()),
        ),
        trial(
            "nexus::recovery_skips_certificates_issued_before_the_csr_for_a_reused_key".into(),
            || run(recovery_skips_earlier_certificates_of_a_reused_key()),
        ),
        trial(
            "nexus::a_certificate_not_yet_indexed_is_pending_until_search_finds_it".into(),
            || run(not_yet_indexed_is_pending()),
        ),
        trial("nexus::error_classes_map_to_kinds_with_the_cause".into(), || {
            run(error_classes())
        }),
        trial(
            "nexus::logs_and_errors_never_contain_officer_or_certificate_keys".into(),
            logs_never_contain_keys,
        ),
    ]
}

/// Nexus declares what CM offers: issuance, revocation and search, no renewal by id (there is
/// no renew endpoint), no domain validation, no discovery; so every conformance check applies.
async fn declares_its_capabilities() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let declared = backend_for(&sim, Mode::Caller)?.capabilities();
    ensure!(
        declared
            == Capabilities::of(&[
                Capability::Issue,
                Capability::Revoke,
                Capability::CertificateSearch
            ]),
        "Nexus declares {declared}"
    );
    ensure!(
        Check::applicable(declared).eq(Check::ALL),
        "a conformance check does not apply to Nexus"
    );
    Ok(())
}

async fn check_lists_token_procedures(mode: Mode, reading: NexusReading) -> Result<()> {
    let sim = NexusSimulator::start(reading_config(mode, reading)).await?;
    let profiles = backend_for(&sim, mode)?.check().await?;
    ensure!(
        profiles
            .iter()
            .any(|p| p.name == "TLS-Server" && !p.id.is_empty()),
        "procedures: {profiles:?}"
    );
    Ok(())
}

async fn caller_signing_answers_the_challenge_once() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let backend = backend_for(&sim, Mode::Caller)?;
    let order = new_order(&["signed.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    ensure!(
        requests(&sim, "issuePkcs10") == 2,
        "issuance takes the unsigned request and the signed re-send: {:?}",
        sim.stats().requests
    );
    backend
        .revoke(
            &RevokeTarget::Order(handle),
            RevocationReason::CessationOfOperation,
        )
        .await?;
    ensure!(requests(&sim, "revoke") == 2, "{:?}", sim.stats().requests);
    let stats = sim.stats();
    ensure!(
        stats.certificates.len() == 1 && stats.certificates[0].status == "revoked",
        "{:?}",
        stats.certificates
    );
    Ok(())
}

async fn foreign_signer_is_refused() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let mut config = config_for(&sim, Mode::Caller);
    let (foreign_chain, foreign_key) = sim.foreign_identity();
    config.signer = Some(NexusSigner {
        certificate_chain_pem: foreign_chain,
        key_pem: SecretString::new(foreign_key),
    });
    let backend = NexusBackend::new(config)?;
    let order = new_order(&["wrong-signer.example.com"])?;
    match backend.enroll(&order.request).await {
        Err(error @ BackendError::Unauthorized { .. }) => {
            let text = error.to_string();
            ensure!(
                text.contains("error -17") && text.contains("signature"),
                "the cause is not clear: {text}"
            );
        }
        other => bail!("a foreign signer gave {other:?}"),
    }
    let stats = sim.stats();
    ensure!(
        stats.issuances_per_csr.is_empty(),
        "nothing may be issued: {:?}",
        stats.issuances_per_csr
    );
    ensure!(
        requests(&sim, "issuePkcs10") == 2,
        "a refused signature is not retried: {:?}",
        stats.requests
    );
    Ok(())
}

async fn foreign_client_certificate_is_refused() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Vro)).await?;
    let mut config = config_for(&sim, Mode::Vro);
    let (chain, key) = sim.foreign_identity();
    config.identity_pem = SecretString::new(format!("{chain}{key}"));
    let error = NexusBackend::new(config)?.check().await.err();
    match &error {
        Some(BackendError::Unauthorized { message, .. }) => ensure!(
            message.contains("refused the TLS client certificate"),
            "the cause is not clear: {message}"
        ),
        other => bail!("a foreign client certificate gave {other:?}"),
    }
    ensure!(
        sim.stats().requests.is_empty(),
        "the refusal must happen before any request: {:?}",
        sim.stats().requests
    );
    Ok(())
}

async fn server_signing_against_caller_gateway() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let backend = backend_for(&sim, Mode::Vro)?;
    let order = new_order(&["vro-mismatch.example.com"])?;
    match backend.enroll(&order.request).await {
        Err(BackendError::Configuration { message, .. }) => ensure!(
            message.contains("-19") && message.contains("signingMode: Caller"),
            "{message}"
        ),
        other => bail!("an unsigned request to a caller-signing gateway gave {other:?}"),
    }
    ensure!(sim.stats().issuances_per_csr.is_empty());
    Ok(())
}

async fn lost_issuance_response() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let backend = backend_for(&sim, Mode::Caller)?;
    let order = new_order(&["crash.example.com"])?;
    sim.set_faults(Faults {
        drop_after_enroll: 1,
        endpoints: Some(vec!["issuePkcs10".into()]),
        ..Faults::default()
    });
    let error = match backend.enroll(&order.request).await {
        Ok(handle) => bail!("enroll succeeded ({handle:?}) although the connection was dropped"),
        Err(error) => error,
    };
    ensure!(
        matches!(error, BackendError::Unavailable { .. }),
        "a dropped connection must be Unavailable, got {error:?}"
    );
    let found = backend
        .find_existing_order(&order.request)
        .await?
        .context("the issued certificate was not found by search")?;
    let (issued, _) = conformance::collect_until_issued(&backend, &found, &order.request.csr_der, 3).await?;
    conformance::verify_issued(&issued, &sim.issuing_root_pem(), &order.key)?;
    let stats = sim.stats();
    ensure!(
        stats.issuances_per_csr.get(&order.request.csr_sha256_hex()) == Some(&1),
        "expected exactly one issuance for the CSR, the simulator counted {:?}",
        stats.issuances_per_csr
    );
    ensure!(
        stats.certificates.len() == 1 && stats.certificates[0].certid == found.id,
        "recovered {} but the simulator holds {:?}",
        found.id,
        stats.certificates
    );
    Ok(())
}

async fn rate_limiting_is_retried() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let backend = backend_for(&sim, Mode::Caller)?;
    // -40 proves the request was refused before it ran, so even issuance is sent again.
    sim.set_faults(Faults {
        rate_limit: Some(RateLimitFault {
            retry_after_secs: 0,
            count: 3,
        }),
        endpoints: Some(vec!["issuePkcs10".into()]),
        ..Faults::default()
    });
    let order = new_order(&["limited.example.com"])?;
    backend.enroll(&order.request).await?;
    ensure!(
        requests(&sim, "issuePkcs10") == 3 + 2,
        "3 refused, then the challenge and the signed request: {:?}",
        sim.stats().requests
    );
    ensure!(sim.stats().issuances_per_csr.get(&order.request.csr_sha256_hex()) == Some(&1));
    // A limit that outlasts the attempts ends in RateLimited after exactly MAX_ATTEMPTS.
    sim.reset_stats();
    sim.set_faults(Faults {
        rate_limit: Some(RateLimitFault {
            retry_after_secs: 0,
            count: 1000,
        }),
        endpoints: Some(vec!["procedures".into()]),
        ..Faults::default()
    });
    let error = backend.check().await.err();
    ensure!(
        matches!(error, Some(BackendError::RateLimited { .. })),
        "got {error:?}"
    );
    ensure!(
        requests(&sim, "procedures") == u64::from(MAX_ATTEMPTS),
        "{:?}",
        sim.stats().requests
    );
    Ok(())
}

async fn server_errors_are_retried_for_reads() -> Result<()> {
    const CALLS: u64 = 20;
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let backend = backend_for(&sim, Mode::Caller)?;
    let order = new_order(&["flaky.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    sim.reset_stats();
    sim.set_faults(Faults {
        // A third of the requests fail; six attempts make a call fail with odds of 1 in 729.
        server_error_rate: 1.0 / 3.0,
        seed: 7,
        endpoints: Some(vec![
            "procedures".into(),
            "details".into(),
            "download".into(),
            "revoke".into(),
        ]),
        ..Faults::default()
    });
    for _ in 0..CALLS {
        backend.check().await?;
    }
    match backend.collect(&handle, &order.request.csr_der).await? {
        Collected::Issued(issued) => {
            conformance::verify_issued(&issued, &sim.issuing_root_pem(), &order.key)?;
        }
        other => bail!("collect gave {other:?}"),
    }
    backend
        .revoke(&RevokeTarget::Order(handle), RevocationReason::Superseded)
        .await?;
    let stats = sim.stats().requests;
    eprintln!("requests under a third of 5xx: {stats:?}");
    let procedures = stats.get("procedures").copied().unwrap_or(0);
    ensure!(
        procedures > CALLS && procedures <= CALLS * u64::from(MAX_ATTEMPTS),
        "{CALLS} checks took {procedures} requests: some must have failed and been retried, within the bound"
    );
    for endpoint in ["details", "download"] {
        let count = stats.get(endpoint).copied().unwrap_or(0);
        ensure!(
            (1..=u64::from(MAX_ATTEMPTS)).contains(&count),
            "{endpoint}: {count} requests"
        );
    }
    // Revocation is idempotent: the challenge and the signed request, retried within one budget.
    let revokes = stats.get("revoke").copied().unwrap_or(0);
    ensure!(
        (2..=u64::from(MAX_ATTEMPTS)).contains(&revokes),
        "revoke: {revokes} requests"
    );
    ensure!(
        sim.stats().certificates[0].status == "revoked",
        "the certificate was not revoked"
    );
    Ok(())
}

async fn issuance_is_not_repeated() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Vro)).await?;
    let backend = backend_for(&sim, Mode::Vro)?;
    sim.set_faults(Faults {
        server_error_rate: 1.0,
        endpoints: Some(vec!["issuePkcs10".into()]),
        ..Faults::default()
    });
    let order = new_order(&["once.example.com"])?;
    let error = backend.enroll(&order.request).await.err();
    ensure!(
        matches!(error, Some(BackendError::Unavailable { .. })),
        "got {error:?}"
    );
    ensure!(
        requests(&sim, "issuePkcs10") == 1,
        "an issuance with an unknown outcome must not be sent again: {:?}",
        sim.stats().requests
    );
    Ok(())
}

async fn search_pages_through_every_hit() -> Result<()> {
    let sim = NexusSimulator::start(NexusSimulatorConfig {
        max_search_hits: 3,
        ..sim_config(Mode::Vro)
    })
    .await?;
    let backend = backend_for(&sim, Mode::Vro)?;
    for _ in 0..7 {
        backend.enroll(&new_order(&["page.example.com"])?.request).await?;
    }
    backend
        .enroll(&new_order(&["other.example.com"])?.request)
        .await?;
    sim.reset_stats();
    let query = CertificateQuery {
        common_name: Some("page.example.com".into()),
        not_revoked: true,
        ..CertificateQuery::default()
    };
    let found = backend.search(&query, 100).await?;
    let mut ids: Vec<&str> = found.iter().map(|c| c.certid.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ensure!(ids.len() == 7, "found {ids:?}");
    ensure!(
        requests(&sim, "listCertificates") == 3,
        "pages of at most 3 (certsearch.maxhits) for 7 hits: {:?}",
        sim.stats().requests
    );
    ensure!(
        backend.search(&query, 4).await?.len() == 4,
        "the caller's maximum is honoured"
    );
    Ok(())
}

async fn download_negotiates_formats() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Vro)).await?;
    let backend = backend_for(&sim, Mode::Vro)?;
    let handle = backend
        .enroll(&new_order(&["download.example.com"])?.request)
        .await?;
    for (format, expected) in [
        (DownloadFormat::Der, 1),
        (DownloadFormat::Pkcs7, 3),
        (DownloadFormat::PemChain { depth: 0 }, 3),
        (DownloadFormat::PemChain { depth: 1 }, 1),
        (DownloadFormat::PemChain { depth: 2 }, 2),
    ] {
        let body = backend.download(&handle.id, format).await?;
        let count = parse_certificates(&body)?.len();
        ensure!(count == expected, "{format:?}: {count} certificates");
        if matches!(format, DownloadFormat::PemChain { .. }) {
            ensure!(
                body.starts_with(b"-----BEGIN CERTIFICATE-----"),
                "{format:?} is not PEM"
            );
        }
    }
    Ok(())
}

async fn hold_then_reinstate() -> Result<()> {
    /// RFC 5280 certificateHold, the only reason `reinstate` undoes.
    const HOLD: u8 = 6;
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let backend = backend_for(&sim, Mode::Caller)?;
    let handle = backend.enroll(&new_order(&["hold.example.com"])?.request).await?;
    let ids = vec![handle.id.clone()];
    backend.revoke_certificates(&ids, HOLD).await?;
    ensure!(backend.details(&handle.id).await?.is_revoked(), "not on hold");
    backend.reinstate(&ids).await?;
    let details = backend.details(&handle.id).await?;
    ensure!(
        !details.is_revoked(),
        "still revoked after reinstate: {details:?}"
    );
    match backend.reinstate(&ids).await {
        Err(BackendError::InvalidRequest {
            code: Some(910),
            message,
            ..
        }) => ensure!(message.contains(&handle.id), "{message}"),
        other => bail!("reinstating an active certificate gave {other:?}"),
    }
    Ok(())
}

async fn recovery_skips_earlier_certificates_of_a_reused_key() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Vro)).await?;
    let backend = backend_for(&sim, Mode::Vro)?;
    let first = new_order(&["reuse.example.com"])?;
    let issued = backend.enroll(&first.request).await?;
    // The same key in a CSR made later, as when renewing with `rotationPolicy: Never`.
    let mut again = conformance::new_order_with_key(&["reuse.example.com"], first.key)?;
    ensure!(
        backend.find_existing_order(&again.request).await?.map(|h| h.id) == Some(issued.id),
        "without the CSR's creation time the earlier certificate carries the key"
    );
    // Made two hours later: beyond the hour of clock skew and backdating recovery allows.
    again.request.csr_created_at = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2));
    let found = backend.find_existing_order(&again.request).await?;
    ensure!(
        found.is_none(),
        "a certificate issued before the CSR was made was taken as its order: {found:?}"
    );
    Ok(())
}

async fn string_dates_are_read() -> Result<()> {
    for rfc3339_dates in [false, true] {
        let sim = NexusSimulator::start(NexusSimulatorConfig {
            rfc3339_dates,
            ..sim_config(Mode::Vro)
        })
        .await?;
        let backend = backend_for(&sim, Mode::Vro)?;
        let before = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2);
        conformance::find_existing_order_finds_the_order(&backend).await?;
        let listed = backend.search(&CertificateQuery::default(), 10).await?;
        ensure!(!listed.is_empty(), "nothing listed");
        for certificate in listed {
            ensure!(
                certificate.not_before.is_some_and(|t| t >= before)
                    && certificate.not_after.is_some_and(|t| t > jiff::Timestamp::now()),
                "dates as strings: {rfc3339_dates}, read {certificate:?}"
            );
        }
    }
    Ok(())
}

async fn not_yet_indexed_is_pending() -> Result<()> {
    let sim = NexusSimulator::start(NexusSimulatorConfig {
        index_lag_searches: 2,
        ..sim_config(Mode::Caller)
    })
    .await?;
    let mut config = config_for(&sim, Mode::Caller);
    config.index_attempts = 1;
    let backend = NexusBackend::new(config)?;
    let order = new_order(&["lagging.example.com"])?;
    // Search 1 (in enroll) misses: the order is known by its serial.
    let handle = backend.enroll(&order.request).await?;
    let serial = handle
        .id
        .strip_prefix("serial:")
        .with_context(|| format!("order id {} is not a serial id", handle.id))?;
    ensure!(
        sim.stats().certificates[0].serial_number == serial,
        "the serial id names another certificate"
    );
    // Search 2 misses (Pending), search 3 finds it.
    let (issued, pending) =
        conformance::collect_until_issued(&backend, &handle, &order.request.csr_der, 3).await?;
    ensure!(pending == 1, "pending {pending} times, expected once");
    conformance::verify_issued(&issued, &sim.issuing_root_pem(), &order.key)?;
    backend
        .revoke(&RevokeTarget::Order(handle), RevocationReason::Superseded)
        .await?;
    let stats = sim.stats();
    ensure!(
        stats.certificates[0].status == "revoked" && stats.issuances_per_csr.values().sum::<u32>() == 1,
        "{stats:?}"
    );
    Ok(())
}

async fn error_classes() -> Result<()> {
    let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
    let backend = backend_for(&sim, Mode::Caller)?;

    let mut unknown_procedure = new_order(&["procedure.example.com"])?.request;
    unknown_procedure.options.token_procedure = Some("No Such Procedure".into());
    match backend.enroll(&unknown_procedure).await {
        Err(BackendError::InvalidRequest {
            code: Some(-14),
            message,
            ..
        }) => ensure!(message.contains("procedure"), "{message}"),
        other => bail!("an unknown procedure gave {other:?}"),
    }

    let mut garbage = new_order(&["garbage.example.com"])?.request;
    garbage.csr_der = b"not a CSR".to_vec();
    let error = backend.enroll(&garbage).await.err();
    ensure!(
        matches!(error, Some(BackendError::InvalidRequest { code: Some(-8), .. })),
        "a garbage CSR gave {error:?}"
    );

    let mut config = config_for(&sim, Mode::Caller);
    config.token_procedure = Some("Missing Procedure".into());
    match NexusBackend::new(config)?.check().await {
        Err(BackendError::Configuration { message, .. }) => ensure!(
            message.contains("Missing Procedure") && message.contains("TLS-Server"),
            "{message}"
        ),
        other => bail!("a procedure the officer cannot see gave {other:?}"),
    }

    match backend.details("424242").await {
        Err(BackendError::NotFound { what, .. }) => ensure!(what.contains("424242"), "{what}"),
        other => bail!("details of an unknown certid gave {other:?}"),
    }
    // Revoking a certificate CM does not hold (907) counts as done.
    backend
        .revoke_certificates(&["424242".into()], RevocationReason::Superseded.code())
        .await?;
    Ok(())
}

/// A caller-signing run with every log level captured, failures included: neither the officer's
/// key (TLS and signing) nor the certificate key appears in logs, errors or Debug output.
fn logs_never_contain_keys() -> Result<()> {
    let mut messages = Vec::new();
    let mut secrets = Vec::new();
    let logs = capture_logs(|| {
        run(async {
            let sim = NexusSimulator::start(sim_config(Mode::Caller)).await?;
            secrets.push(sim.officer_identity().1);
            secrets.push(sim.foreign_identity().1);
            let backend = backend_for(&sim, Mode::Caller)?;
            let order = new_order(&["secret.example.com"])?;
            secrets.push(order.key.serialize_pem());
            let handle = backend.enroll(&order.request).await?;
            conformance::collect_until_issued(&backend, &handle, &order.request.csr_der, 3).await?;
            backend
                .revoke(&RevokeTarget::Order(handle), RevocationReason::Superseded)
                .await?;
            let mut config = config_for(&sim, Mode::Caller);
            let (chain, key) = sim.foreign_identity();
            config.signer = Some(NexusSigner {
                certificate_chain_pem: chain.clone(),
                key_pem: SecretString::new(key.clone()),
            });
            let foreign_signer = NexusBackend::new(config.clone())?;
            messages.push(format!("{:?}", foreign_signer.enroll(&order.request).await));
            config.identity_pem = SecretString::new(format!("{chain}{key}"));
            messages.push(format!("{:?}", NexusBackend::new(config.clone())?.check().await));
            messages.push(format!("{config:?} {backend:?}"));
            Ok(())
        })
    })?;
    ensure_no_secrets(&logs, &messages, &secrets)
}

/// A serial given with leading zeros, colons and upper case revokes the certificate, whichever
/// way CM spells serials.
async fn revoke_by_serial_tolerates_spellings(reading: NexusReading) -> Result<()> {
    let sim = NexusSimulator::start(reading_config(Mode::Vro, reading)).await?;
    let backend = backend_for(&sim, Mode::Vro)?;
    let order = new_order(&["serial.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    let (issued, _) = conformance::collect_until_issued(&backend, &handle, &order.request.csr_der, 3).await?;
    let serial = conformance::leaf_serial(&issued)?;
    let spelled = format!("00{}", serial.to_ascii_uppercase())
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    backend
        .revoke(
            &RevokeTarget::Serial(spelled.clone()),
            RevocationReason::Superseded,
        )
        .await
        .with_context(|| format!("revoke by serial {spelled}"))?;
    ensure!(
        backend.details(&handle.id).await?.is_revoked(),
        "revoke by serial {spelled} succeeded but certificate {} is not revoked",
        handle.id
    );
    Ok(())
}

/// Revoking by a serial no certificate has revokes nothing, and says so.
async fn revoke_by_unknown_serial_is_not_found(reading: NexusReading) -> Result<()> {
    let sim = NexusSimulator::start(reading_config(Mode::Vro, reading)).await?;
    let backend = backend_for(&sim, Mode::Vro)?;
    backend
        .enroll(&new_order(&["present.example.com"])?.request)
        .await?;
    match backend
        .revoke(
            &RevokeTarget::Serial("7e:57:00:00:00:01".into()),
            RevocationReason::Superseded,
        )
        .await
    {
        Err(BackendError::NotFound { what, .. }) => {
            ensure!(what.contains("7e:57:00:00:00:01"), "NotFound names {what:?}");
        }
        other => bail!("revoking an unknown serial gave {other:?}, expected NotFound"),
    }
    ensure!(
        !sim.stats().requests.contains_key("revoke"),
        "a revoke request was sent for a serial nothing has"
    );
    Ok(())
}

/// The issuer may name its token procedure by `procid`: the check accepts it, and issuance uses
/// that procedure (sending its name, which `procname` takes).
async fn procedure_by_procid(reading: NexusReading) -> Result<()> {
    let sim = NexusSimulator::start(reading_config(Mode::Vro, reading)).await?;
    let listed = backend_for(&sim, Mode::Vro)?.check().await?;
    let procid = listed
        .iter()
        .find(|p| p.name == "TLS-Server")
        .map(|p| p.id.clone())
        .context("TLS-Server is not listed")?;
    ensure!(
        procid != "TLS-Server",
        "the procid must differ from the name for this test"
    );
    let mut config = config_for(&sim, Mode::Vro);
    config.token_procedure = Some(procid.clone());
    let backend = NexusBackend::new(config)?;
    backend
        .check()
        .await
        .with_context(|| format!("check with procedure {procid}"))?;
    let order = new_order(&["procid.example.com"])?;
    let handle = backend.enroll(&order.request).await?;
    conformance::collect_until_issued(&backend, &handle, &order.request.csr_der, 3).await?;
    // A backend that skipped the check (as the certificate controller's) resolves it too.
    let mut config = config_for(&sim, Mode::Vro);
    config.token_procedure = Some(procid);
    NexusBackend::new(config)?
        .enroll(&new_order(&["procid2.example.com"])?.request)
        .await?;
    let stats = sim.stats();
    ensure!(
        stats.certificates.len() == 2 && stats.certificates.iter().all(|c| c.procedure == "TLS-Server"),
        "{:?}",
        stats.certificates
    );
    Ok(())
}
