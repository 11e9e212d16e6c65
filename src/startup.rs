//! Checks made before any controller starts. A missing CRD would otherwise surface as an endless
//! stream of watch errors; instead the operator exits with a message saying what to install.

use kube::{Client, CustomResourceExt};

use crate::crd::{GROUP, v1alpha1};

/// A startup check failed.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Some CRDs are not installed (or not yet established).
    #[error(
        "missing CustomResourceDefinition(s) {}: install the CRDs with `kubectl apply -f crds/` \
         (the Helm chart installs them unless run with --skip-crds) and restart the operator",
        missing.join(", ")
    )]
    MissingCrds {
        /// Full CRD names, e.g. `certificates.pki-operator.io`.
        missing: Vec<String>,
    },
    /// The apiserver's discovery endpoint could not be read.
    #[error("cannot read API discovery for group {GROUP}")]
    Discovery(#[source] kube::Error),
}

/// Fails unless every CRD of [`crate::crd::all`] is served by the apiserver. Uses discovery, so
/// it needs no permission on `customresourcedefinitions`.
pub async fn check_crds_installed(client: &Client) -> Result<(), StartupError> {
    let group_version = format!("{GROUP}/{}", v1alpha1::Certificate::api_resource().version);
    let served: Vec<String> = match client.list_api_group_resources(&group_version).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(e) => return Err(StartupError::Discovery(e)),
    };
    let missing = missing_crds(&served);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StartupError::MissingCrds { missing })
    }
}

/// CRD names of [`crate::crd::all`] whose plural is not among `served` resource names.
fn missing_crds(served: &[String]) -> Vec<String> {
    crate::crd::all()
        .into_iter()
        .filter(|crd| !served.contains(&crd.spec.names.plural))
        .filter_map(|crd| crd.metadata.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_crd() {
        let served = vec![
            "certificates".to_string(),
            "certificates/status".to_string(),
            "issuers".to_string(),
        ];
        let missing = missing_crds(&served);
        assert!(missing.contains(&"clusterissuers.pki-operator.io".to_string()));
        assert!(!missing.contains(&"certificates.pki-operator.io".to_string()));
        let message = StartupError::MissingCrds { missing }.to_string();
        assert!(message.contains("alertconfigs.pki-operator.io"), "{message}");
        assert!(message.contains("kubectl apply -f crds/"), "{message}");
    }
}
