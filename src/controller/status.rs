//! Status writes for every kind: one server-side apply under the operator's single field
//! manager, skipped when nothing changed (so a steady state makes no writes).

use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::FIELD_MANAGER;

/// Applies `status` as the status of `name`. The body names the kind's `apiVersion` and `kind`,
/// as server-side apply requires.
pub async fn write<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// [`write()`]s `new` when it differs from `old`; returns whether a write happened.
pub async fn write_if_changed<K, S>(api: &Api<K>, name: &str, old: &S, new: &S) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == new {
        return Ok(false);
    }
    write(api, name, new).await?;
    Ok(true)
}
