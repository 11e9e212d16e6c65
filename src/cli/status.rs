//! `kubectl pki status <certificate>`: everything needed to see why a Certificate is or is not
//! Ready on one screen: conditions, the order, the issuer, the Secret decoded, recent Events.

use std::fmt::Write as _;

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{Api, api::ListParams};
use serde::Serialize;

use super::{
    ConditionView, Context, Outcome, decode::SecretView, get_error, is_ready, now, render::Report,
    render::or_dash, render::table,
};
use crate::crd::v1alpha1::Certificate;

/// How many Events `status` shows: the latest few tell the story, older ones are history.
const EVENTS_SHOWN: usize = 5;

/// The order in progress or last delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// The CA's order id.
    pub id: String,
    /// The issuer that placed it, `Kind/[namespace/]name`.
    pub issuer: Option<String>,
    /// The backend (`ca`, `scm`, `nexus`).
    pub backend: String,
    /// The order's state.
    pub state: String,
}

/// The issuer a Certificate references.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendView {
    /// `Issuer` or `ClusterIssuer`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// One Event about the Certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// When it (last) happened, RFC 3339.
    pub time: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The Event's reason.
    pub reason: String,
    /// What happened.
    pub note: String,
}

/// `status`'s result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The Certificate's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `Ready=True`.
    pub ready: bool,
    /// Its conditions.
    pub conditions: Vec<ConditionView>,
    /// `status.serialNumber`.
    pub serial_number: Option<String>,
    /// `status.revision`.
    pub revision: Option<i64>,
    /// `status.order`.
    pub order: Option<OrderView>,
    /// `spec.issuerRef`.
    pub backend: BackendView,
    /// `spec.secretName`.
    pub secret_name: String,
    /// The Secret decoded, when it exists and is readable.
    pub secret: Option<SecretView>,
    /// Why the Secret is not shown, when it is not.
    pub secret_error: Option<String>,
    /// The latest Events about the Certificate, newest last.
    pub events: Vec<EventView>,
}

impl Report for StatusReport {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Certificate {}/{}", self.namespace, self.name);
        let _ = writeln!(out, "Ready:    {}", self.ready);
        let _ = writeln!(out, "Issuer:   {}/{}", self.backend.kind, self.backend.name);
        let _ = writeln!(
            out,
            "Revision: {}",
            or_dash(self.revision.map(|r| r.to_string()).as_deref())
        );
        if let Some(order) = &self.order {
            let _ = writeln!(
                out,
                "Order:    {} ({}, from {}): {}",
                order.id,
                order.backend,
                or_dash(order.issuer.as_deref()),
                order.state
            );
        }
        out += "\nConditions:\n";
        let rows: Vec<Vec<String>> = self
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        out += &indent(&table(&["type", "status", "reason", "message"], &rows));
        let _ = writeln!(out, "\nSecret {}:", self.secret_name);
        match (&self.secret, &self.secret_error) {
            (Some(secret), _) => out += &indent(&super::inspect::describe_secret(secret)),
            (None, error) => {
                let _ = writeln!(out, "  {}", or_dash(error.as_deref()));
            }
        }
        out += "\nEvents:\n";
        let rows: Vec<Vec<String>> = self
            .events
            .iter()
            .map(|e| vec![e.time.clone(), e.type_.clone(), e.reason.clone(), e.note.clone()])
            .collect();
        out += &indent(&table(&["time", "type", "reason", "note"], &rows));
        out
    }
}

/// `text` with every line indented by two spaces.
pub fn indent(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// The latest [`EVENTS_SHOWN`] Events about Certificate `name`, oldest first.
async fn events(ctx: &Context, name: &str) -> Result<Vec<EventView>, super::CliError> {
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // Filtered here rather than with a field selector: the events.k8s.io field labels differ
    // between apiserver versions, and a namespace's Events are few.
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|source| super::CliError::Api {
            action: format!("list Events in namespace {}", ctx.namespace),
            source,
        })?;
    let mut events: Vec<(jiff::Timestamp, EventView)> = list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(name) && r.kind.as_deref() == Some("Certificate"))
        })
        .map(|e| {
            let time = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or_default();
            let view = EventView {
                time: super::decode::rfc3339(time.as_second()),
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                note: e.note.unwrap_or_default(),
            };
            (time, view)
        })
        .collect();
    events.sort_by_key(|(time, _)| *time);
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    Ok(events.into_iter().skip(skip).map(|(_, e)| e).collect())
}

/// Runs `status`: exit 0 when the Certificate is Ready, 1 when not.
pub async fn run(ctx: &Context, name: &str) -> Result<Outcome<StatusReport>, super::CliError> {
    let api: Api<Certificate> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let cert = api
        .get(name)
        .await
        .map_err(|e| get_error("Certificate", Some(&ctx.namespace), name, e))?;
    let status = cert.status.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let (secret, secret_error) = match secrets.get_opt(&cert.spec.secret_name).await {
        Ok(Some(secret)) => match super::decode::decode_secret(&secret, now()) {
            Ok(view) => (Some(view), None),
            Err(e) => (None, Some(e.to_string())),
        },
        Ok(None) => (None, Some("not found".to_owned())),
        Err(e) => (None, Some(format!("cannot read: {e}"))),
    };
    let order = status.order.as_ref().map(|o| OrderView {
        id: o.id.clone(),
        issuer: o.issuer.as_ref().map(|i| {
            let namespace = i
                .namespace
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default();
            format!("{}/{namespace}{}", i.kind.as_str(), i.name)
        }),
        backend: o.backend.clone(),
        state: o.state.clone(),
    });
    let ready = is_ready(&status.conditions);
    let report = StatusReport {
        namespace: ctx.namespace.clone(),
        name: name.to_owned(),
        ready,
        conditions: status.conditions.iter().map(ConditionView::from).collect(),
        serial_number: status.serial_number.clone(),
        revision: status.revision,
        order,
        backend: BackendView {
            kind: cert.spec.issuer_ref.kind.as_str().to_owned(),
            name: cert.spec.issuer_ref.name.clone(),
        },
        secret_name: cert.spec.secret_name.clone(),
        secret,
        secret_error,
        events: events(ctx, name).await?,
    };
    Ok(Outcome { report, ok: ready })
}
