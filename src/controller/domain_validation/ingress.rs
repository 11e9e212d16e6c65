//! The HTTP solver's route in a cluster: an Ingress sending the domain's validation path to the
//! operator's solver Service, created while a challenge is published and deleted after it.
//!
//! An Ingress can only name a Service in its own namespace. In the operator's namespace that is
//! the chart's solver Service itself; in another (`solver.http.ingress.namespace`, where an
//! Ingress controller may be restricted to) a Service of type `ExternalName` pointing at the
//! solver Service is created beside it. Both carry an owner reference to the DomainValidation,
//! so deleting it removes them even while the operator is down.

use k8s_openapi::api::{core::v1::Service, networking::v1::Ingress};
use kube::{
    Api, Resource as _, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams},
};

use crate::{
    FIELD_MANAGER,
    crd::v1alpha1::{DomainValidation, domain_validation::HttpSolverIngress},
};

/// Where the solver Service is: `--solver-service` in the operator's namespace.
#[derive(Clone, Debug, Default)]
pub struct SolverService {
    /// The Service's name (the chart's `<release>-solver`); `None` when not configured, and
    /// then Ingress routes cannot be made.
    pub name: Option<String>,
    /// The operator's namespace (`POD_NAMESPACE`).
    pub namespace: Option<String>,
}

/// The solver Service's port (the chart's `http` port, targeting the solver).
const SERVICE_PORT: i32 = 80;
/// Label naming the DomainValidation a route serves.
const DOMAIN_VALIDATION_LABEL: &str = "pki-operator.io/domain-validation";

/// The name of the Ingress (and Service) for `dv`: a DNS label (Service names allow no dots),
/// unique per DomainValidation through a hash of its name.
pub fn route_name(dv: &DomainValidation) -> String {
    let name = dv.name_any();
    let readable: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let hash = &crate::pki::chain::sha256_hex(name.as_bytes())[..8];
    format!("dcv-{}-{hash}", readable.trim_matches('-'))
}

/// Creates or updates the route for `path` on `host`. The error names what failed.
pub async fn ensure(
    client: &kube::Client,
    solver: &SolverService,
    dv: &DomainValidation,
    ingress: &HttpSolverIngress,
    (host, path): (&str, &str),
) -> Result<(), String> {
    let (Some(service), Some(operator_namespace)) = (&solver.name, &solver.namespace) else {
        return Err(
            "spec.solver.http.ingress needs the operator's solver Service: run it with --solver-service and POD_NAMESPACE (the Helm chart sets both)"
                .into(),
        );
    };
    let name = route_name(dv);
    let owner = dv
        .controller_owner_ref(&())
        .map(|mut owner| {
            // Deleting the DomainValidation must not wait for these.
            owner.block_owner_deletion = None;
            owner
        })
        .ok_or("the DomainValidation has no uid yet")?;
    let labels = serde_json::json!({
        "app.kubernetes.io/managed-by": "pki-operator",
        DOMAIN_VALIDATION_LABEL: dv.name_any().chars().take(63).collect::<String>(),
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let backend_service = if ingress.namespace == *operator_namespace {
        service.clone()
    } else {
        let external = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ingress.namespace, "labels": labels, "ownerReferences": [owner]},
            "spec": {
                "type": "ExternalName",
                "externalName": format!("{service}.{operator_namespace}.svc"),
                "ports": [{"name": "http", "port": SERVICE_PORT}],
            },
        });
        Api::<Service>::namespaced(client.clone(), &ingress.namespace)
            .patch(&name, &params, &Patch::Apply(&external))
            .await
            .map_err(|e| format!("cannot apply Service {}/{name}: {e}", ingress.namespace))?;
        name.clone()
    };
    let mut spec = serde_json::json!({
        "rules": [{
            "host": host,
            "http": {"paths": [{
                "path": path,
                "pathType": "Exact",
                "backend": {"service": {"name": backend_service, "port": {"number": SERVICE_PORT}}},
            }]},
        }],
    });
    if let Some(class) = &ingress.class_name {
        spec["ingressClassName"] = class.clone().into();
    }
    let body = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": ingress.namespace, "labels": labels, "ownerReferences": [owner]},
        "spec": spec,
    });
    Api::<Ingress>::namespaced(client.clone(), &ingress.namespace)
        .patch(&name, &params, &Patch::Apply(&body))
        .await
        .map_err(|e| format!("cannot apply Ingress {}/{name}: {e}", ingress.namespace))?;
    Ok(())
}

/// Deletes the route of `dv` (absent is fine).
pub async fn remove(
    client: &kube::Client,
    dv: &DomainValidation,
    ingress: &HttpSolverIngress,
) -> Result<(), String> {
    let name = route_name(dv);
    let gone = |result: Result<(), kube::Error>, what: &str| match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(format!("cannot delete {what} {}/{name}: {e}", ingress.namespace)),
    };
    gone(
        Api::<Ingress>::namespaced(client.clone(), &ingress.namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .map(drop),
        "Ingress",
    )?;
    gone(
        Api::<Service>::namespaced(client.clone(), &ingress.namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .map(drop),
        "Service",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_are_dns_labels_unique_per_validation() {
        let dv = |name: &str| {
            let mut dv = DomainValidation::new(name, crate::crd::v1alpha1::DomainValidationSpec::default());
            dv.metadata.name = Some(name.into());
            dv
        };
        let short = route_name(&dv("example.com"));
        assert!(short.starts_with("dcv-example-com-"), "{short}");
        let long = route_name(&dv(&format!("{}.example.com", "a".repeat(200))));
        for name in [&short, &long] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
        }
        assert_ne!(route_name(&dv("a.example.com")), route_name(&dv("a-example.com")));
    }
}
