//! Status writes for every kind: one server-side apply under the operator's single field
//! manager, skipped when nothing changed (so a steady state makes no writes).

use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::FIELD_MANAGER;

/// Applies `new` as the status of `name` when it differs from `old`; returns whether a write
/// happened. The body names the kind's `apiVersion` and `kind`, as server-side apply requires.
pub async fn apply<K, S>(api: &Api<K>, name: &str, old: &S, new: &S) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == new {
        return Ok(false);
    }
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok(true)
}
