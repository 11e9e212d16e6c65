//! What one AlertConfig sees: every certificate in its scope (managed Certificates from the
//! cache, discovered certificates from the inventory) and every discovery target unreachable for
//! too long, each at its level now, with the time the next level change is due. Pure over its
//! inputs: the controller passes the caches' contents and the clock.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{
    alerting::{AlertSubject, Notification, levels::LevelSet, levels::days_left},
    controller::issuer::IssuerTarget,
    crd::v1alpha1::{
        AlertConfig, Certificate, DiscoveryTask,
        alert_config::{AlertScope, Level},
    },
    discovery::analysis::Found,
};

/// The level of a discovery target unreachable for longer than `maxDaysCheckinDelay`.
pub const HOST_UNAVAILABLE_LEVEL: Level = Level::HIGH;

/// The source of managed Certificates (always read whole from the cache).
pub const CERTIFICATES: &str = "certificates";

/// One subject at a level.
#[derive(Clone, Debug)]
pub struct Subject {
    /// Stable identity within the AlertConfig (the sent-record's key).
    pub key: String,
    /// Which source it came from (`certificates`, `discovered/<task>`, `hosts/<task>`).
    pub source: String,
    /// The notification to send (with its level).
    pub notification: Notification,
    /// The managed Certificate it is about, for its Events.
    pub certificate: Option<CertificateRef>,
}

/// A managed Certificate, as an Event names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (so that `kubectl describe` finds the Event).
    pub uid: Option<String>,
}

/// The outcome of one evaluation.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Subjects at a level, most urgent first.
    pub alerting: Vec<Subject>,
    /// Managed Certificates in scope with their level (`None`: no alert), for the metric.
    pub managed_levels: BTreeMap<(String, String), Option<Level>>,
    /// Certificates evaluated (managed with a `notAfter`, plus discovered).
    pub evaluated: usize,
    /// Sources read whole: an alert of such a source that was not seen is cleared.
    pub complete_sources: BTreeSet<String>,
    /// When the next level change of any subject is due.
    pub next_change: Option<Timestamp>,
    /// `namespace/name` of every DiscoveryTask that exists.
    existing_tasks: BTreeSet<String>,
    /// Whether discovered certificates are in scope.
    include_discovered: bool,
    /// `scope.namespaces` (empty: all).
    namespaces: Vec<String>,
}

impl Evaluation {
    /// Whether `source` was read whole, so that its alerts not seen now are cleared: the
    /// Certificates, each task's findings and hosts that were read, and anything of a task that
    /// no longer exists or of discovered certificates no longer in scope.
    pub fn is_complete(&self, source: &str) -> bool {
        if self.complete_sources.contains(source) {
            return true;
        }
        let (kind, task) = source.split_once('/').unwrap_or((source, ""));
        match kind {
            "discovered" => {
                let namespace = task.split('/').next().unwrap_or_default();
                let in_scope = self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace);
                !self.include_discovered || !in_scope || !self.existing_tasks.contains(task)
            }
            "hosts" => !self.existing_tasks.contains(task),
            _ => false,
        }
    }
}

/// What the evaluation reads.
pub struct Inputs<'a> {
    /// Every cached Certificate (borrowed from the cache: a pass copies none).
    pub certificates: &'a [&'a Certificate],
    /// Every cached DiscoveryTask.
    pub discovery_tasks: &'a [&'a DiscoveryTask],
    /// Each DiscoveryTask's findings (`namespace/name` → found).
    pub discovered: &'a BTreeMap<String, std::sync::Arc<Vec<Found>>>,
}

/// Evaluates `config` over `inputs` at `now`.
pub fn evaluate(config: &AlertConfig, inputs: &Inputs<'_>, now: Timestamp) -> Evaluation {
    let levels = LevelSet::from_spec(&config.spec.levels);
    let scope = config.spec.scope.clone().unwrap_or_default();
    let name = config.metadata.name.clone().unwrap_or_default();
    let mut out = Evaluation::default();
    out.complete_sources.insert(CERTIFICATES.to_owned());
    for cert in inputs.certificates.iter().filter(|c| in_scope(&scope, c)) {
        evaluate_certificate(&name, &levels, cert, now, &mut out);
    }
    let tasks: BTreeSet<String> = inputs
        .discovery_tasks
        .iter()
        .map(|t| task_key(t.metadata.namespace.as_deref(), t.metadata.name.as_deref()))
        .collect();
    if scope.include_discovered {
        for (task, found) in inputs.discovered {
            if !namespace_in_scope(&scope, task.split('/').next().unwrap_or_default()) {
                continue;
            }
            out.complete_sources.insert(format!("discovered/{task}"));
            for f in found.iter().filter(|f| !f.managed) {
                evaluate_found(&name, &levels, task, f, now, &mut out);
            }
        }
    }
    out.existing_tasks = tasks;
    out.include_discovered = scope.include_discovered;
    out.namespaces.clone_from(&scope.namespaces);
    evaluate_hosts(config, &scope, inputs.discovery_tasks, now, &mut out);
    out.alerting.sort_by(|a, b| {
        b.notification
            .level
            .cmp(&a.notification.level)
            .then(a.notification.not_after.cmp(&b.notification.not_after))
            .then(a.key.cmp(&b.key))
    });
    out
}

fn task_key(namespace: Option<&str>, name: Option<&str>) -> String {
    format!("{}/{}", namespace.unwrap_or_default(), name.unwrap_or_default())
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn evaluate_certificate(
    config: &str,
    levels: &LevelSet,
    cert: &Certificate,
    now: Timestamp,
    out: &mut Evaluation,
) {
    let namespace = cert.metadata.namespace.clone().unwrap_or_default();
    let name = cert.metadata.name.clone().unwrap_or_default();
    let status = cert.status.as_ref();
    let Some(not_after) = status.and_then(|s| s.not_after.as_ref()).map(|t| t.0) else {
        out.managed_levels.insert((namespace, name), None);
        return;
    };
    out.evaluated += 1;
    out.next_change = earliest(out.next_change, levels.next_crossing(not_after, now));
    let level = levels.level_at(not_after, now);
    out.managed_levels
        .insert((namespace.clone(), name.clone()), level);
    let Some(level) = level else { return };
    let issuer = IssuerTarget::from_namespaced(&cert.spec.issuer_ref, &namespace).to_string();
    out.alerting.push(Subject {
        key: format!("c/{namespace}/{name}"),
        source: CERTIFICATES.to_owned(),
        notification: Notification {
            alert_config: config.to_owned(),
            level,
            subject: AlertSubject::Certificate {
                namespace: namespace.clone(),
                name: name.clone(),
                issuer,
                secret_name: cert.spec.secret_name.clone(),
            },
            common_name: cert.spec.common_name.clone(),
            dns_names: cert.spec.dns_names.clone(),
            serial: status.and_then(|s| s.serial_number.clone()),
            not_after: Some(not_after),
            days_left: Some(days_left(not_after, now)),
            repeat: false,
        },
        certificate: Some(CertificateRef {
            namespace,
            name,
            uid: cert.metadata.uid.clone(),
        }),
    });
}

fn evaluate_found(
    config: &str,
    levels: &LevelSet,
    task: &str,
    f: &Found,
    now: Timestamp,
    out: &mut Evaluation,
) {
    let Ok(not_after) = Timestamp::from_second(f.not_after) else {
        return;
    };
    out.evaluated += 1;
    out.next_change = earliest(out.next_change, levels.next_crossing(not_after, now));
    let Some(level) = levels.level_at(not_after, now) else {
        return;
    };
    out.alerting.push(Subject {
        key: format!("d/{task}/{}/{}", f.location, f.serial_hex),
        source: format!("discovered/{task}"),
        notification: Notification {
            alert_config: config.to_owned(),
            level,
            subject: AlertSubject::Discovered {
                location: f.location.clone(),
                task: task.to_owned(),
                issuer: f.issuer.clone(),
            },
            common_name: f.common_name.clone(),
            dns_names: Vec::new(),
            serial: Some(f.serial_hex.clone()),
            not_after: Some(not_after),
            days_left: Some(days_left(not_after, now)),
            repeat: false,
        },
        certificate: None,
    });
}

/// Discovery targets that have been unreachable for longer than `maxDaysCheckinDelay`
/// (DiscoveryTask `status.unreachableTargets[].since`, kept across runs and restarts).
fn evaluate_hosts(
    config: &AlertConfig,
    scope: &AlertScope,
    tasks: &[&DiscoveryTask],
    now: Timestamp,
    out: &mut Evaluation,
) {
    let Some(hosts) = config.spec.host_unavailability.as_ref().filter(|h| h.enabled) else {
        out.complete_sources.extend(tasks.iter().map(|t| {
            format!(
                "hosts/{}",
                task_key(t.metadata.namespace.as_deref(), t.metadata.name.as_deref())
            )
        }));
        return;
    };
    let delay = SignedDuration::from_hours(24 * i64::from(hosts.max_days_checkin_delay));
    for task in tasks {
        let namespace = task.metadata.namespace.as_deref().unwrap_or_default();
        let key = task_key(Some(namespace), task.metadata.name.as_deref());
        let source = format!("hosts/{key}");
        out.complete_sources.insert(source.clone());
        if !namespace_in_scope(scope, namespace) {
            continue;
        }
        let targets = task
            .status
            .as_ref()
            .map(|s| s.unreachable_targets.as_slice())
            .unwrap_or_default();
        for target in targets {
            let Some(since) = target.since.as_ref().map(|t| t.0) else {
                continue;
            };
            let Ok(due) = since.checked_add(delay) else {
                continue;
            };
            if due > now {
                out.next_change = earliest(out.next_change, Some(due));
                continue;
            }
            out.alerting.push(Subject {
                key: format!("h/{key}/{}", target.target),
                source: source.clone(),
                notification: Notification {
                    alert_config: config.metadata.name.clone().unwrap_or_default(),
                    level: HOST_UNAVAILABLE_LEVEL,
                    subject: AlertSubject::Host {
                        target: target.target.clone(),
                        task: key.clone(),
                        reason: target.reason.clone(),
                        unreachable_since: since,
                    },
                    common_name: None,
                    dns_names: Vec::new(),
                    serial: None,
                    not_after: None,
                    days_left: None,
                    repeat: false,
                },
                certificate: None,
            });
        }
    }
}

fn namespace_in_scope(scope: &AlertScope, namespace: &str) -> bool {
    scope.namespaces.is_empty() || scope.namespaces.iter().any(|n| n == namespace)
}

/// Whether a Certificate is in the AlertConfig's scope: namespace, labels and issuer.
fn in_scope(scope: &AlertScope, cert: &Certificate) -> bool {
    let namespace = cert.metadata.namespace.as_deref().unwrap_or_default();
    if !namespace_in_scope(scope, namespace) {
        return false;
    }
    if let Some(selector) = &scope.selector
        && !selector_matches(selector, cert.metadata.labels.as_ref())
    {
        return false;
    }
    scope.issuers.is_empty()
        || scope.issuers.iter().any(|wanted| {
            IssuerTarget::from_cluster_scoped(wanted)
                == IssuerTarget::from_namespaced(&cert.spec.issuer_ref, namespace)
        })
}

/// Kubernetes label-selector semantics: every `matchLabels` pair and every expression holds
/// (`In`, `NotIn`, `Exists`, `DoesNotExist`; an unknown operator matches nothing).
pub fn selector_matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    pairs && expressions
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    use super::*;
    use crate::{
        crd::v1alpha1::{
            AlertConfigSpec,
            alert_config::HostUnavailability,
            certificate::{CertificateSpec, CertificateStatus},
            common::{ClusterScopedIssuerRef, IssuerKind, IssuerRef},
            discovery_task::{DiscoveryTaskSpec, DiscoveryTaskStatus, UnreachableTarget},
        },
        discovery::analysis::Source,
    };

    const DAY: i64 = 86_400;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn in_days(days: i64) -> Timestamp {
        Timestamp::from_second(now().as_second() + days * DAY).unwrap()
    }

    fn certificate(
        namespace: &str,
        name: &str,
        days: Option<i64>,
        issuer: &str,
        team: &str,
    ) -> Arc<Certificate> {
        let mut cert = Certificate::new(
            name,
            CertificateSpec {
                secret_name: format!("{name}-tls"),
                issuer_ref: IssuerRef {
                    name: issuer.into(),
                    kind: IssuerKind::ClusterIssuer,
                },
                dns_names: vec![format!("{name}.example.com")],
                ..CertificateSpec::default()
            },
        );
        cert.metadata.namespace = Some(namespace.into());
        cert.metadata.labels = Some(BTreeMap::from([("team".to_owned(), team.to_owned())]));
        cert.status = Some(CertificateStatus {
            not_after: days.map(|d| Time(in_days(d))),
            serial_number: Some("0a1b".into()),
            ..CertificateStatus::default()
        });
        Arc::new(cert)
    }

    fn config(scope: AlertScope, hosts: bool) -> AlertConfig {
        AlertConfig::new(
            "production",
            AlertConfigSpec {
                scope: Some(scope),
                host_unavailability: hosts.then_some(HostUnavailability {
                    enabled: true,
                    max_days_checkin_delay: 2,
                }),
                ..AlertConfigSpec::default()
            },
        )
    }

    fn found(location: &str, days: i64, managed: bool) -> Found {
        Found {
            source: Source::Endpoint,
            location: location.into(),
            subject: "CN=x".into(),
            common_name: Some("x".into()),
            issuer: "CN=Some CA".into(),
            serial_hex: "0c".into(),
            not_before: now().as_second() - DAY,
            not_after: in_days(days).as_second(),
            self_signed: false,
            weakness: None,
            managed,
            der: Arc::from(Vec::new()),
        }
    }

    fn task(namespace: &str, name: &str, unreachable: Vec<(&str, i64)>) -> Arc<DiscoveryTask> {
        let mut task = DiscoveryTask::new(name, DiscoveryTaskSpec::default());
        task.metadata.namespace = Some(namespace.into());
        task.status = Some(DiscoveryTaskStatus {
            unreachable_targets: unreachable
                .into_iter()
                .map(|(target, days_ago)| UnreachableTarget {
                    target: target.into(),
                    reason: "connection refused".into(),
                    since: Some(Time(in_days(-days_ago))),
                })
                .collect(),
            ..DiscoveryTaskStatus::default()
        });
        Arc::new(task)
    }

    fn levels_of(evaluation: &Evaluation) -> Vec<(String, Level)> {
        evaluation
            .alerting
            .iter()
            .map(|s| (s.key.clone(), s.notification.level))
            .collect()
    }

    #[test]
    fn certificates_in_scope_are_at_their_level_most_urgent_first() {
        let certificates = [
            certificate("web", "in45", Some(45), "corp", "a"),
            certificate("web", "in3", Some(3), "corp", "a"),
            certificate("web", "expired", Some(-1), "corp", "a"),
            certificate("web", "fresh", Some(300), "corp", "a"),
            certificate("web", "pending", None, "corp", "a"),
            certificate("other", "in10", Some(10), "corp", "a"),
        ];
        let scope = AlertScope {
            namespaces: vec!["web".into()],
            ..AlertScope::default()
        };
        let discovered = BTreeMap::new();
        let certificates: Vec<&Certificate> = certificates.iter().map(AsRef::as_ref).collect();
        let inputs = Inputs {
            certificates: &certificates,
            discovery_tasks: &[],
            discovered: &discovered,
        };
        let evaluation = evaluate(&config(scope, false), &inputs, now());
        assert_eq!(
            levels_of(&evaluation),
            vec![
                ("c/web/expired".to_owned(), Level::ERROR),
                ("c/web/in3".to_owned(), Level::ERROR),
                ("c/web/in45".to_owned(), Level::INFO),
            ]
        );
        assert_eq!(
            evaluation.evaluated, 4,
            "the one without notAfter is not evaluated"
        );
        assert_eq!(evaluation.managed_levels.len(), 5);
        // in3 expires in 3 days, before in45 reaches WARN (in 15) and fresh INFO (in 240).
        assert_eq!(evaluation.next_change, Some(in_days(3)));
        let notification = &evaluation.alerting[1].notification;
        assert_eq!(notification.days_left, Some(3));
        assert_eq!(notification.serial.as_deref(), Some("0a1b"));
        assert!(
            matches!(&notification.subject, AlertSubject::Certificate { issuer, .. } if issuer == "ClusterIssuer corp")
        );
    }

    #[test]
    fn labels_and_issuers_narrow_the_scope() {
        let certificates = [
            certificate("web", "a", Some(3), "corp", "payments"),
            certificate("web", "b", Some(3), "corp", "search"),
            certificate("web", "c", Some(3), "other", "payments"),
        ];
        let scope = AlertScope {
            selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "team".into(),
                    operator: "In".into(),
                    values: Some(vec!["payments".into()]),
                }]),
                ..LabelSelector::default()
            }),
            issuers: vec![ClusterScopedIssuerRef {
                name: "corp".into(),
                kind: IssuerKind::ClusterIssuer,
                namespace: None,
            }],
            ..AlertScope::default()
        };
        let discovered = BTreeMap::new();
        let certificates: Vec<&Certificate> = certificates.iter().map(AsRef::as_ref).collect();
        let inputs = Inputs {
            certificates: &certificates,
            discovery_tasks: &[],
            discovered: &discovered,
        };
        let evaluation = evaluate(&config(scope, false), &inputs, now());
        assert_eq!(levels_of(&evaluation), vec![("c/web/a".to_owned(), Level::ERROR)]);
    }

    #[test]
    fn discovered_certificates_and_long_unreachable_hosts_alert() {
        let tasks = [task(
            "ops",
            "sweep",
            vec![("10.0.0.9:443", 3), ("10.0.0.8:443", 1)],
        )];
        let discovered = BTreeMap::from([(
            "ops/sweep".to_owned(),
            Arc::new(vec![
                found("10.0.0.1:443", 10, false),
                found("10.0.0.2:443", 5, true),
            ]),
        )]);
        let scope = AlertScope {
            include_discovered: true,
            ..AlertScope::default()
        };
        let inputs = Inputs {
            certificates: &[],
            discovery_tasks: &tasks.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            discovered: &discovered,
        };
        let evaluation = evaluate(&config(scope, true), &inputs, now());
        assert_eq!(
            levels_of(&evaluation),
            vec![
                ("h/ops/sweep/10.0.0.9:443".to_owned(), HOST_UNAVAILABLE_LEVEL),
                ("d/ops/sweep/10.0.0.1:443/0c".to_owned(), Level::HIGH),
            ],
            "a managed certificate found again is not told twice; a target down 1 of 2 days is not yet"
        );
        // The target down for a day alerts in a day.
        assert_eq!(evaluation.next_change, Some(in_days(1)));
        assert!(evaluation.is_complete("discovered/ops/sweep"));
        assert!(evaluation.is_complete("hosts/ops/sweep"));
    }

    #[test]
    fn only_sources_read_whole_clear_their_alerts() {
        let tasks = [task("ops", "sweep", vec![])];
        let scope = AlertScope {
            include_discovered: true,
            ..AlertScope::default()
        };
        let discovered = BTreeMap::new();
        let inputs = Inputs {
            certificates: &[],
            discovery_tasks: &tasks.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            discovered: &discovered,
        };
        let evaluation = evaluate(&config(scope, false), &inputs, now());
        assert!(evaluation.is_complete(CERTIFICATES));
        assert!(
            !evaluation.is_complete("discovered/ops/sweep"),
            "a task that has not run since the restart keeps its alerts"
        );
        assert!(
            evaluation.is_complete("discovered/ops/deleted"),
            "a deleted task's alerts go"
        );
        assert!(evaluation.is_complete("hosts/ops/sweep"));
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let labels = BTreeMap::from([("tier".to_owned(), "prod".to_owned())]);
        let requirement = |operator: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
            ..LabelSelector::default()
        };
        assert!(selector_matches(
            &requirement("In", &["prod", "stage"]),
            Some(&labels)
        ));
        assert!(!selector_matches(&requirement("NotIn", &["prod"]), Some(&labels)));
        assert!(selector_matches(&requirement("NotIn", &["prod"]), None));
        assert!(selector_matches(&requirement("Exists", &[]), Some(&labels)));
        assert!(!selector_matches(
            &requirement("DoesNotExist", &[]),
            Some(&labels)
        ));
        assert!(!selector_matches(&requirement("Gt", &["1"]), Some(&labels)));
        let pairs = LabelSelector {
            match_labels: Some(BTreeMap::from([("tier".to_owned(), "dev".to_owned())])),
            ..LabelSelector::default()
        };
        assert!(!selector_matches(&pairs, Some(&labels)));
        assert!(selector_matches(&LabelSelector::default(), None));
    }
}
