//! `kubectl pki list`: every pki-operator resource with its readiness, and for Certificates the
//! expiry, as one table: the namespaced kinds of `-n`, or with `-A` of every namespace plus the
//! cluster-scoped kinds (ClusterIssuers, DomainValidations, AlertConfigs). A namespace's list,
//! and so its exit code, is about that namespace alone, not about what other teams run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Resource, ResourceExt as _, api::ListParams};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    CliError, Context, Outcome, decode, is_ready, now, ready_condition,
    render::{Report, or_dash, table},
};
use crate::crd::v1alpha1::{
    AlertConfig, Certificate, ClusterIssuer, DiscoveryTask, DomainValidation, Issuer,
};

/// `--sort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Soonest `notAfter` first; resources without one last.
    Expiry,
}

/// One resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Its kind.
    pub kind: String,
    /// Its namespace; none for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// `Ready=True`.
    pub ready: bool,
    /// The Ready condition's reason (none before the operator has looked at it).
    pub reason: Option<String>,
    /// A Certificate's `status.notAfter`, RFC 3339.
    pub not_after: Option<String>,
    /// Whole days until `notAfter`.
    pub days_left: Option<i64>,
}

/// `list`'s result.
#[derive(Clone, Debug, Serialize)]
pub struct ListReport {
    /// The resources.
    pub items: Vec<Row>,
}

impl Report for ListReport {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .items
            .iter()
            .map(|r| {
                vec![
                    r.kind.clone(),
                    or_dash(r.namespace.as_deref()),
                    r.name.clone(),
                    if r.ready { "True" } else { "False" }.to_owned(),
                    or_dash(r.reason.as_deref()),
                    or_dash(r.not_after.as_deref()),
                    or_dash(r.days_left.map(|d| d.to_string()).as_deref()),
                ]
            })
            .collect();
        table(
            &[
                "kind",
                "namespace",
                "name",
                "ready",
                "reason",
                "not after",
                "days left",
            ],
            &rows,
        )
    }
}

/// Sorts `rows` by `key`, else by kind, namespace and name; stable, so equal expiries keep
/// that order.
pub fn sort(rows: &mut [Row], key: Option<SortKey>) {
    rows.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    if key == Some(SortKey::Expiry) {
        rows.sort_by_key(|r| (r.days_left.is_none(), r.not_after.clone()));
    }
}

/// The row of one object, from its conditions.
fn row<K: Resource<DynamicType = ()>>(item: &K, conditions: Option<&[Condition]>) -> Row {
    let conditions = conditions.unwrap_or_default();
    Row {
        kind: K::kind(&()).into_owned(),
        namespace: item.namespace(),
        name: item.name_any(),
        ready: is_ready(conditions),
        reason: ready_condition(conditions).map(|c| c.reason.clone()),
        not_after: None,
        days_left: None,
    }
}

/// Every object of kind `K` in `api`.
async fn all<K>(api: Api<K>) -> Result<Vec<K>, CliError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|source| CliError::Api {
            action: format!("list {}", K::plural(&())),
            source,
        })
}

/// The API of a namespaced kind in `namespace`, or in every namespace.
fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    namespace.map_or_else(
        || Api::all(client.clone()),
        |ns| Api::namespaced(client.clone(), ns),
    )
}

/// Runs `list`: exit 0 when everything listed is Ready, 1 otherwise.
pub async fn run(
    ctx: &Context,
    all_namespaces: bool,
    key: Option<SortKey>,
) -> Result<Outcome<ListReport>, CliError> {
    let client = &ctx.client;
    let namespace = (!all_namespaces).then_some(ctx.namespace.as_str());
    let (certificates, issuers, tasks) = (
        scoped::<Certificate>(client, namespace),
        scoped::<Issuer>(client, namespace),
        scoped::<DiscoveryTask>(client, namespace),
    );
    let now = now();
    let mut items: Vec<Row> = Vec::new();
    for cert in all(certificates).await? {
        let not_after = cert
            .status
            .as_ref()
            .and_then(|s| s.not_after.as_ref())
            .map(|t| t.0.as_second());
        let mut row = row(&cert, cert.status.as_ref().map(|s| s.conditions.as_slice()));
        row.not_after = not_after.map(decode::rfc3339);
        row.days_left = not_after.map(|t| decode::days_left(t, now));
        items.push(row);
    }
    for i in all(issuers).await? {
        items.push(row(&i, i.status.as_ref().map(|s| s.conditions.as_slice())));
    }
    for t in all(tasks).await? {
        items.push(row(&t, t.status.as_ref().map(|s| s.conditions.as_slice())));
    }
    if all_namespaces {
        for i in all(Api::<ClusterIssuer>::all(client.clone())).await? {
            items.push(row(&i, i.status.as_ref().map(|s| s.conditions.as_slice())));
        }
        for d in all(Api::<DomainValidation>::all(client.clone())).await? {
            items.push(row(&d, d.status.as_ref().map(|s| s.conditions.as_slice())));
        }
        for a in all(Api::<AlertConfig>::all(client.clone())).await? {
            items.push(row(&a, a.status.as_ref().map(|s| s.conditions.as_slice())));
        }
    }
    sort(&mut items, key);
    let ok = items.iter().all(|r| r.ready);
    Ok(Outcome {
        report: ListReport { items },
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, name: &str, not_after: Option<i64>) -> Row {
        Row {
            kind: kind.to_owned(),
            namespace: Some("a".to_owned()),
            name: name.to_owned(),
            ready: true,
            reason: None,
            not_after: not_after.map(decode::rfc3339),
            days_left: not_after.map(|t| decode::days_left(t, 0)),
        }
    }

    fn names(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn rows_sort_by_kind_and_name_by_default() {
        let mut rows = vec![
            row("Issuer", "i", None),
            row("Certificate", "b", Some(10)),
            row("Certificate", "a", Some(900_000)),
        ];
        sort(&mut rows, None);
        assert_eq!(names(&rows), ["a", "b", "i"]);
    }

    #[test]
    fn rows_sort_by_expiry_soonest_first_and_others_last() {
        let mut rows = vec![
            row("Issuer", "i", None),
            row("Certificate", "late", Some(900_000_000)),
            row("Certificate", "soon", Some(86_400 * 3)),
            row("Certificate", "never-issued", None),
        ];
        sort(&mut rows, Some(SortKey::Expiry));
        assert_eq!(names(&rows), ["soon", "late", "never-issued", "i"]);
        assert_eq!(rows[0].days_left, Some(3));
    }

    #[test]
    fn the_table_has_a_row_per_resource() {
        let text = ListReport {
            items: vec![row("Certificate", "web", Some(86_400))],
        }
        .table();
        assert!(text.starts_with("KIND"), "{text}");
        assert!(
            text.contains("Certificate  a          web   True   -       1970-01-02T00:00:00Z  1"),
            "{text}"
        );
    }
}
