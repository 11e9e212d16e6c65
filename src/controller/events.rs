//! Kubernetes Events for every kind: lifecycle transitions as `Normal`, one `Warning` per
//! failure. The note is bounded like condition messages; a failure to publish is logged, never
//! fatal (Events are best effort by design).

use kube::{
    Resource,
    runtime::events::{Event, EventType, Recorder},
};

/// Longest Event note.
const MAX_NOTE_CHARS: usize = 1024;

/// Publishes an Event about `object`.
pub async fn publish<K>(recorder: &Recorder, object: &K, type_: EventType, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(MAX_NOTE_CHARS).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(%error, "cannot publish event");
    }
}
