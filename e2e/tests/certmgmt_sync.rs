//! The AlertConfig's CertMgmt sync (`pki_operator::alerting::certmgmt_sync`) against the real
//! CertMgmt simulator over TLS: push (create, no needless writes, drift corrected), reading the
//! generated alerts without duplicates, and teardown.

use std::time::Duration;

use jiff::SignedDuration;
use pki_operator::{
    alerting::certmgmt_sync::{self, DesiredAlerting, NODE_LEVEL},
    backend::{
        certmgmt::{
            AgentCertType, AgentCertificate, AlertLevel, CertMgmtClient, ClientOptions, LevelConfig,
            NewEmailList,
        },
        retry::RetryPolicy,
    },
    crd::v1alpha1::alert_config::Level,
    pki::credentials::SecretString,
};
use pki_operator_e2e::sim::certmgmt::{
    CertMgmtSimulator, CertMgmtSimulatorConfig, Level as SimLevel, LevelSettings, NodeSettings,
};

const DAY: SignedDuration = SignedDuration::from_hours(24);

struct Fixture {
    sim: CertMgmtSimulator,
    client: CertMgmtClient,
}

impl Fixture {
    async fn start() -> anyhow::Result<Self> {
        let config = CertMgmtSimulatorConfig::default();
        let sim = CertMgmtSimulator::start(config.clone()).await?;
        let options = ClientOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                max_retry_after: Duration::from_secs(1),
            },
            ..ClientOptions::default()
        };
        let client = CertMgmtClient::with_options(
            &sim.base_url(),
            &config.username,
            &SecretString::new(config.password),
            Some(&sim.tls_ca_pem()),
            options,
        )?;
        Ok(Self { sim, client })
    }

    /// How many requests an endpoint got since the last reset.
    fn requests(&self, endpoint: &str) -> u64 {
        self.sim
            .stats()
            .requests
            .get(endpoint)
            .copied()
            .unwrap_or_default()
    }

    fn level(&self, level: SimLevel) -> LevelSettings {
        self.sim.stats().levels[&level].clone()
    }
}

fn desired(to: &[&str]) -> DesiredAlerting {
    DesiredAlerting {
        email_list_name: "pki-operator-prod".into(),
        to: to.iter().map(|&address| address.to_owned()).collect(),
        levels: vec![
            (Level::INFO, true, 60),
            (Level::WARN, true, 30),
            (Level::HIGH, true, 14),
            (Level::ERROR, true, 7),
        ],
        node: Some((true, 3)),
    }
}

const WRITES: [&str; 5] = [
    "create_email_list",
    "update_email_list",
    "delete_email_list",
    "put_alert_config",
    "put_node_alert_config",
];

#[tokio::test]
async fn push_creates_the_list_and_sets_the_levels_then_writes_nothing_when_in_sync() {
    let f = Fixture::start().await.unwrap();
    let pushed = certmgmt_sync::push(&f.client, &desired(&["ops@example.com"]), None)
        .await
        .unwrap();
    let id = pushed.email_list_id.unwrap();
    assert!(
        pushed
            .corrected
            .iter()
            .any(|c| c.starts_with("email list pki-operator-prod created")),
        "{:?}",
        pushed.corrected
    );
    let stats = f.sim.stats();
    assert_eq!(stats.email_lists.len(), 1);
    assert_eq!(stats.email_lists[0].email_list_name, "pki-operator-prod");
    assert_eq!(stats.email_lists[0].to, ["ops@example.com"]);
    for (level, days) in [
        (SimLevel::Info, 60),
        (SimLevel::Warn, 30),
        (SimLevel::High, 14),
        (SimLevel::Error, 7),
    ] {
        assert_eq!(
            stats.levels[&level],
            LevelSettings {
                enabled: true,
                email_list_ids: vec![id],
                remaining_days: days,
            }
        );
    }
    assert_eq!(
        stats.node_config,
        NodeSettings {
            enabled: true,
            email_list_ids: vec![id],
            max_days_checkin_delay: 3,
        }
    );

    // In sync: reads only, with the recorded id and (status lost) by name alike.
    f.sim.reset_stats();
    for known in [Some(id), None] {
        let again = certmgmt_sync::push(&f.client, &desired(&["ops@example.com"]), known)
            .await
            .unwrap();
        assert_eq!(again.email_list_id, Some(id));
        assert!(again.corrected.is_empty(), "{:?}", again.corrected);
    }
    for endpoint in WRITES {
        assert_eq!(f.requests(endpoint), 0, "{endpoint}");
    }
    assert_eq!(f.sim.stats().email_lists.len(), 1);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn drift_at_the_service_is_found_and_corrected() {
    let f = Fixture::start().await.unwrap();
    let id = certmgmt_sync::push(&f.client, &desired(&["ops@example.com"]), None)
        .await
        .unwrap()
        .email_list_id
        .unwrap();
    // Someone edits the service by hand: WARN's days, a cc on our list, and the node turned off.
    let warn = LevelConfig {
        enabled: true,
        email_list_ids: vec![id],
        remaining_days: 45,
    };
    f.client.put_alert_config(AlertLevel::Warn, &warn).await.unwrap();
    let edited = NewEmailList {
        email_list_name: "pki-operator-prod".into(),
        to: vec!["ops@example.com".into()],
        cc: vec!["boss@example.com".into()],
    };
    f.client.update_email_list(id, &edited).await.unwrap();
    let mut node = f.client.node_alert_config().await.unwrap();
    node.enabled = false;
    f.client.put_node_alert_config(&node).await.unwrap();

    f.sim.reset_stats();
    let pushed = certmgmt_sync::push(&f.client, &desired(&["ops@example.com"]), Some(id))
        .await
        .unwrap();
    assert_eq!(
        pushed.corrected,
        [
            r#"email list pki-operator-prod cc ["boss@example.com"] -> []"#,
            "WARN remaining_days 45 -> 30",
            "node enabled false -> true",
        ]
    );
    assert_eq!(f.requests("put_alert_config"), 1, "only WARN is written");
    assert_eq!(f.requests("update_email_list"), 1);
    assert_eq!(f.requests("put_node_alert_config"), 1);
    assert_eq!(f.level(SimLevel::Warn).remaining_days, 30);
    assert!(f.sim.stats().email_lists[0].cc.is_empty());

    // New recipients in the spec: the list is updated in place.
    let pushed = certmgmt_sync::push(&f.client, &desired(&["sec@example.com"]), Some(id))
        .await
        .unwrap();
    assert_eq!(pushed.email_list_id, Some(id));
    assert_eq!(f.sim.stats().email_lists[0].to, ["sec@example.com"]);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn without_recipients_no_list_is_kept() {
    let f = Fixture::start().await.unwrap();
    let id = certmgmt_sync::push(&f.client, &desired(&["ops@example.com"]), None)
        .await
        .unwrap()
        .email_list_id
        .unwrap();
    let pushed = certmgmt_sync::push(&f.client, &desired(&[]), Some(id))
        .await
        .unwrap();
    assert_eq!(pushed.email_list_id, None);
    assert!(
        pushed
            .corrected
            .contains(&"email list pki-operator-prod deleted (no recipients)".to_owned()),
        "{:?}",
        pushed.corrected
    );
    let stats = f.sim.stats();
    assert!(stats.email_lists.is_empty());
    assert!(
        stats
            .levels
            .values()
            .all(|level| level.enabled && level.email_list_ids.is_empty())
    );
    assert!(stats.node_config.enabled && stats.node_config.email_list_ids.is_empty());
    f.sim.shutdown().await;
}

fn certificate(cn: &str, serial: &str, not_after: jiff::Timestamp) -> AgentCertificate {
    AgentCertificate {
        service_name: "ingress".into(),
        cert_sn: serial.into(),
        cert_type: AgentCertType::Public,
        cert_issuer: "CN=Simulated Issuing CA".into(),
        cert_subject: format!("CN={cn}"),
        leaf_cert_cn: cn.into(),
        leaf_cert_sn: serial.into(),
        cert_cn: cn.into(),
        cert_sans: vec![cn.into()],
        cert_not_before: not_after - DAY * 90,
        cert_not_after: not_after,
        cert_modified_date: not_after - DAY * 90,
        cert_path: format!("default/{cn}"),
    }
}

#[tokio::test]
async fn generated_alerts_are_read_once_each() {
    let f = Fixture::start().await.unwrap();
    certmgmt_sync::push(&f.client, &desired(&["ops@example.com"]), None)
        .await
        .unwrap();
    // The operator reports as an agent host: one certificate 10 days from expiry (INFO, WARN,
    // HIGH now; ERROR once 7 days are left), one far away.
    let (host, _) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    let now = f.sim.now();
    let inventory = [
        certificate(
            "soon.example",
            "0A",
            now + DAY * 10 + SignedDuration::from_hours(1),
        ),
        certificate("far.example", "0B", now + DAY * 200),
    ];
    f.client
        .report_certificates(&host.id, &host.secret_key, &inventory)
        .await
        .unwrap();
    assert_eq!(f.sim.evaluate_alerts().len(), 3);

    let first = certmgmt_sync::read_alerts(&f.client, None, &[], f.sim.now())
        .await
        .unwrap();
    let mut levels: Vec<&str> = first.new_alerts.iter().map(|a| a.level.as_str()).collect();
    levels.sort_unstable();
    assert_eq!(levels, ["HIGH", "INFO", "WARN"]);
    assert!(first.new_alerts.iter().all(|a| a.host_id == host.id
        && a.cn.as_deref() == Some("soon.example")
        && a.serial_number.as_deref() == Some("0A")
        && a.title.starts_with("Certificate expiring in")));
    assert_eq!(
        (
            first.new_counts.info,
            first.new_counts.warn,
            first.new_counts.high
        ),
        (1, 1, 1)
    );

    // The same day read again: nothing new, the mark holds.
    let again = certmgmt_sync::read_alerts(&f.client, Some(first.high_water), &first.new_alerts, f.sim.now())
        .await
        .unwrap();
    assert!(again.new_alerts.is_empty(), "{:?}", again.new_alerts);
    assert_eq!(again.high_water, first.high_water);

    // Four silent days later: ERROR for the certificate, and the host missed its check-in (3).
    f.sim.advance_clock(Duration::from_secs(4 * 86_400));
    assert_eq!(f.sim.evaluate_alerts().len(), 2);
    let later = certmgmt_sync::read_alerts(&f.client, Some(again.high_water), &first.new_alerts, f.sim.now())
        .await
        .unwrap();
    let mut levels: Vec<&str> = later.new_alerts.iter().map(|a| a.level.as_str()).collect();
    levels.sort_unstable();
    assert_eq!(levels, ["ERROR", NODE_LEVEL]);
    assert_eq!(
        (later.new_counts.error, later.new_counts.unavailable_hosts),
        (1, 1)
    );
    assert!(later.high_water > again.high_water);
    let last = certmgmt_sync::read_alerts(&f.client, Some(later.high_water), &later.new_alerts, f.sim.now())
        .await
        .unwrap();
    assert!(last.new_alerts.is_empty(), "{:?}", last.new_alerts);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn teardown_disables_what_we_enabled_and_deletes_our_list() {
    let f = Fixture::start().await.unwrap();
    // A list of someone else's stays.
    let other = NewEmailList {
        email_list_name: "security".into(),
        to: vec!["sec@example.com".into()],
        cc: vec![],
    };
    let other = f.client.create_email_list(&other).await.unwrap().email_list_id;
    let mut wanted = desired(&["ops@example.com"]);
    // INFO stays off at the service, so teardown need not touch it.
    wanted.levels[0].1 = false;
    let id = certmgmt_sync::push(&f.client, &wanted, None)
        .await
        .unwrap()
        .email_list_id
        .unwrap();
    f.sim.reset_stats();
    let affected = certmgmt_sync::teardown(&f.client, "pki-operator-prod", Some(id))
        .await
        .unwrap();
    assert!(
        affected.is_empty(),
        "nothing referenced the list any more: {affected:?}"
    );
    assert_eq!(f.requests("put_alert_config"), 3, "WARN, HIGH and ERROR");
    assert_eq!(f.requests("put_node_alert_config"), 1);
    let stats = f.sim.stats();
    assert!(
        stats
            .levels
            .values()
            .all(|level| !level.enabled && level.email_list_ids.is_empty())
    );
    assert_eq!(f.level(SimLevel::Warn).remaining_days, 30, "days are kept");
    assert!(!stats.node_config.enabled && stats.node_config.email_list_ids.is_empty());
    let lists: Vec<i64> = stats.email_lists.iter().map(|list| list.email_list_id).collect();
    assert_eq!(lists, [other]);

    // A second teardown (a retried finalizer) finds nothing to do.
    f.sim.reset_stats();
    let affected = certmgmt_sync::teardown(&f.client, "pki-operator-prod", Some(id))
        .await
        .unwrap();
    assert!(affected.is_empty());
    for endpoint in WRITES {
        assert_eq!(f.requests(endpoint), 0, "{endpoint}");
    }
    f.sim.shutdown().await;
}
