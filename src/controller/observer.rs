//! The kinds whose controllers have not landed yet (AlertConfig): watched and
//! answered on the shared machinery — status written by server-side apply, `Ready=False` with a
//! reason a user can act on — so an applied object never looks as if it were being acted on. A
//! kind that names an issuer has it resolved through the shared resolver and checked for the
//! capability it will need ([`ObservedKind::issuer_need`]), before anything else.

use std::{fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Client, Resource, ResourceExt as _, runtime::controller::Action};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Context, Error, conditions, errors,
    issuer::{self, IssuerTarget},
};
use crate::{
    backend::{CaBackend as _, Capability},
    crd::v1alpha1::{AlertConfig, alert_config::AlertConfigStatus},
};

/// How soon an object whose issuer is not usable looks again (the issuer kinds are not watched
/// by the observers).
const ISSUER_WAIT: Duration = Duration::from_secs(30);

/// The reason of `Ready=False` while a kind has no controller.
pub const NOT_IMPLEMENTED: &str = "NotImplemented";

/// A kind the operator accepts and observes but does not act on yet.
pub trait ObservedKind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// Its status type.
    type Status: Clone + Default + PartialEq + Serialize + Send;

    /// The status the operator last wrote.
    fn current_status(&self) -> Option<&Self::Status>;

    /// The status's conditions and `observedGeneration`.
    fn parts_mut(status: &mut Self::Status) -> (&mut Vec<Condition>, &mut Option<i64>);

    /// The API of this kind for the object in `namespace` (ignored for cluster-scoped kinds).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;

    /// The issuer the object names and the capability it will need of it, if any.
    fn issuer_need(&self) -> Option<(IssuerTarget, Capability)> {
        None
    }
}

/// The status accessors, alike for every observed kind (each status has `conditions` and
/// `observedGeneration`).
macro_rules! status_of {
    ($status:ty) => {
        type Status = $status;

        fn current_status(&self) -> Option<&Self::Status> {
            self.status.as_ref()
        }

        fn parts_mut(status: &mut Self::Status) -> (&mut Vec<Condition>, &mut Option<i64>) {
            (&mut status.conditions, &mut status.observed_generation)
        }
    };
}

impl ObservedKind for AlertConfig {
    status_of!(AlertConfigStatus);

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

/// Observes one object: `Ready=False` with `IssuerNotReady` or `Unsupported` when its issuer
/// cannot serve it, else `NotImplemented`. Writes status only when it changed.
pub async fn reconcile<K: ObservedKind>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let generation = object.meta().generation;
    let old = object.current_status().cloned().unwrap_or_default();
    let mut status = old.clone();
    let (reason, message, next) = match object.issuer_need() {
        Some((target, needed)) => match issuer::resolve(&ctx, &target, None).await {
            Err(unusable) => (
                "IssuerNotReady",
                errors::error_chain(&unusable),
                Action::requeue(ISSUER_WAIT),
            ),
            Ok(resolved) => {
                let backend = &resolved.backend;
                match backend.capabilities().require(backend.kind(), needed.into()) {
                    Err(unsupported) => (
                        "Unsupported",
                        format!("{target}: {unsupported}"),
                        Action::requeue(ISSUER_WAIT),
                    ),
                    Ok(()) => not_implemented::<K>(),
                }
            }
        },
        None => not_implemented::<K>(),
    };
    let (conditions, observed_generation) = K::parts_mut(&mut status);
    *observed_generation = generation;
    conditions::set(conditions, "Ready", false, reason, message, generation);
    let api = K::api(ctx.client.clone(), object.meta().namespace.as_deref());
    let written = super::status::write_if_changed(&api, &object.name_any(), &old, &status)
        .await
        .map_err(|source| Error::UpdateStatus {
            object: format!("{} {}", K::kind(&()), object.name_any()),
            source,
        })?;
    if written {
        let before = object.current_status().cloned().unwrap_or_default();
        let mut before = before;
        let mut after = status;
        let (old_conditions, _) = K::parts_mut(&mut before);
        let old_conditions = old_conditions.clone();
        let (new_conditions, _) = K::parts_mut(&mut after);
        ctx.events
            .announce_ready(object.as_ref(), &old_conditions, new_conditions)
            .await;
    }
    Ok(next)
}

fn not_implemented<K: ObservedKind>() -> (&'static str, String, Action) {
    let message = format!(
        "pki-operator {} accepts {} resources but does not act on them yet; nothing is done for this one",
        env!("CARGO_PKG_VERSION"),
        K::kind(&()),
    );
    (NOT_IMPLEMENTED, message, Action::await_change())
}
