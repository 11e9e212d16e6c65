//! Finalizers for every kind: add or remove one finalizer with a merge patch guarded by the
//! object's resourceVersion, so a concurrent edit of the list is never overwritten.

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;

/// Makes `object` carry `finalizer` (`wanted`) or not; no write when it already does.
pub async fn ensure<K>(api: &Api<K>, object: &K, finalizer: &str, wanted: bool) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let finalizers = object.finalizers();
    if finalizers.iter().any(|f| f == finalizer) == wanted {
        return Ok(());
    }
    let mut list: Vec<String> = finalizers.iter().filter(|f| *f != finalizer).cloned().collect();
    if wanted {
        list.push(finalizer.to_owned());
    }
    let patch =
        serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": object.resource_version()}});
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
