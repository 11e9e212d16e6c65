//! Where an AlertConfig's sent-record ([`Ledger`]) lives: a ConfigMap in the operator's namespace
//! (`--cluster-resource-namespace`), owned by the AlertConfig so that it goes with it. Read at
//! the start of every pass and written after its deliveries, so a restarted operator or a new
//! leader continues where the last one stopped. A crash between a send and this write can repeat
//! that pass's notifications (at most [`super::channels::MAX_SENDS_PER_PASS`] per channel): a
//! duplicate rather than a loss.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Resource as _,
    api::{ObjectMeta, Patch, PatchParams},
};

use crate::{FIELD_MANAGER, alerting::ledger::Ledger, controller::Context, crd::v1alpha1::AlertConfig};

/// The ConfigMap key holding the record.
const KEY: &str = "sent";

/// Name of the record's ConfigMap for the AlertConfig `name` (a ConfigMap name is at most 253
/// characters, like the AlertConfig's: a long name is cut and made unique with its hash).
pub fn configmap_name(name: &str) -> String {
    let full = format!("pki-operator-alerts-{name}");
    if full.len() <= 253 {
        return full;
    }
    let hash = crate::alerting::ledger::key_hash(name);
    format!("{}-{hash}", &full[..239])
}

/// Reads the record of `config` (empty when it has none yet).
pub async fn load(ctx: &Context, config: &AlertConfig) -> Result<Ledger, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.cluster_resource_namespace);
    let name = configmap_name(config.metadata.name.as_deref().unwrap_or_default());
    let text = api
        .get_opt(&name)
        .await?
        .and_then(|cm| cm.data)
        .and_then(|mut data| data.remove(KEY))
        .unwrap_or_default();
    Ok(Ledger::decode(&text))
}

/// Writes the record of `config` (server-side apply; owned by the AlertConfig).
pub async fn save(ctx: &Context, config: &AlertConfig, ledger: &Ledger) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.cluster_resource_namespace);
    let name = configmap_name(config.metadata.name.as_deref().unwrap_or_default());
    let record = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ctx.cluster_resource_namespace.clone()),
            // Without blockOwnerDeletion, which would need `update` on alertconfigs/finalizers
            // where OwnerReferencesPermissionEnforcement is on (e.g. OpenShift).
            owner_references: config.controller_owner_ref(&()).map(|mut owner| {
                owner.block_owner_deletion = None;
                vec![owner]
            }),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                FIELD_MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(KEY.to_owned(), ledger.encode())])),
        ..ConfigMap::default()
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&record),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_fit_a_configmap_name() {
        assert_eq!(configmap_name("production"), "pki-operator-alerts-production");
        let long = "a".repeat(253);
        let name = configmap_name(&long);
        assert!(name.len() <= 253, "{}", name.len());
        assert_ne!(name, configmap_name(&"a".repeat(252)));
    }
}
