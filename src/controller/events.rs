//! Kubernetes Events for every kind: lifecycle transitions as `Normal`, one `Warning` per
//! failure. The note is bounded like condition messages; a failure to publish is logged, never
//! fatal (Events are best effort by design).
//!
//! Events are created directly (`events.k8s.io/v1`), not through kube-runtime's `Recorder`: the
//! recorder keeps every Event it published for 6 minutes to count repeats as a series, which
//! during a burst of issuances held 35 of 74 MB of heap (BENCHMARKS.md's profile) for Events
//! that never repeat — each is published once per transition.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::{
    api::events::v1::Event,
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client, Resource,
    api::PostParams,
    runtime::events::{EventType, Reporter},
};

/// Longest Event note.
const MAX_NOTE_CHARS: usize = 1024;

/// Publishes Events as one reporting controller.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
}

impl Events {
    /// Events reported by `reporter` through `client`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// An Event when `object`'s `Ready` condition changed status or reason between `before` and
    /// `after` (`kubectl describe` then tells when it broke and recovered): `Normal` when it
    /// turned True, `Warning` otherwise; none while it stays the same.
    pub async fn announce_ready<K>(&self, object: &K, before: &[Condition], after: &[Condition])
    where
        K: Resource<DynamicType = ()>,
    {
        let ready = |conditions: &[Condition]| {
            super::conditions::get(conditions, "Ready")
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        };
        let Some((status, reason, message)) = ready(after) else {
            return;
        };
        if ready(before).is_some_and(|(s, r, _)| s == status && r == reason) {
            return;
        }
        let type_ = if status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        self.publish(object, type_, &reason, &message).await;
    }

    /// Publishes an Event about `object`, best effort (a failure is logged).
    pub async fn publish<K>(&self, object: &K, type_: EventType, reason: &str, note: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        if let Err(error) = self.try_publish(object, type_, reason, note).await {
            tracing::debug!(%error, "cannot publish event");
        }
    }

    /// Publishes an Event about `object`, saying whether the apiserver took it: for Events that
    /// are themselves the delivery (AlertConfig's Event channel).
    pub async fn try_publish<K>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let regarding = object.object_ref(&());
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        // Unique per object and moment, as kubectl and kube-runtime name Events.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{nanos:x}",
                    regarding.name.as_deref().unwrap_or("object")
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some("Reconcile".into()),
            event_time: Some(MicroTime(now)),
            note: Some(note.chars().take(MAX_NOTE_CHARS).collect()),
            reason: Some(reason.to_owned()),
            regarding: Some(regarding),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}
