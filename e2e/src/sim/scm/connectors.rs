//! The DNS connector API (`scm-dcv-domains.md` §6): list, details and provider names of the
//! connectors the account is configured with ([`super::SimDnsConnector`]). Only their status
//! changes, through [`super::ScmSimulator::set_connector_status`]; the connectors live in the DCV
//! book because `submit/domain/cname` goes through them (§3.9, in [`super::dcv`]).

use hyper::StatusCode;
use serde_json::{Value, json};

use super::{
    ConnectorStatus, Shared, SimDnsConnector,
    api::{Call, Reply},
    dcv::page_bounds,
    error::ScmError,
    routes::Endpoint,
};

// Inferred (spec §6.1): the agent's `version`, `revision`, `hostname` and `os` are not
// modelled; every simulated connector reports the spec example's values.
const VERSION: &str = "1.0";
const REVISION: &str = "aabbccee";
const HOSTNAME: &str = "localhost";
const OS: &str = "Windows";
/// The simulated customer's only organization has no configured name.
const ORG_NAME: &str = "Simulated Organization";

/// Refuses connector ids that are not 32 hex characters and ids given twice (in any case).
pub fn check_config(connectors: &[SimDnsConnector]) -> anyhow::Result<()> {
    for (index, connector) in connectors.iter().enumerate() {
        anyhow::ensure!(
            is_connector_id(&connector.id),
            "DNS connector id {:?} is not 32 hex characters",
            connector.id
        );
        anyhow::ensure!(
            !connectors[..index]
                .iter()
                .any(|other| other.id.eq_ignore_ascii_case(&connector.id)),
            "DNS connector id {} is given twice",
            connector.id
        );
    }
    Ok(())
}

/// A connector `id` / `dnsAgentUUID`: 32 hex characters, no dashes (spec §3.9, §6.1).
pub fn is_connector_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Runs one authenticated DNS connector API call.
/// Inferred (spec §1.4, §6): the connector API is not part of DCV, so neither the customer's DCV
/// switch nor the admin's `allowDCV` privilege ([`super::DcvAccess`]) gates it.
pub fn dispatch(shared: &Shared, endpoint: &Endpoint, call: &Call) -> Result<Reply, ScmError> {
    match endpoint {
        Endpoint::ConnectorList => list(shared, call),
        Endpoint::ConnectorDetails(id) => {
            let book = shared.dcv();
            let connector = book.connector(id).ok_or_else(unknown)?;
            let mut body = summary_json(connector);
            body["delegatedOrganizations"] = json!([{ "id": shared.config.org_id, "name": ORG_NAME }]);
            Ok(Reply::Json(body))
        }
        Endpoint::ConnectorProviders(id) => {
            let book = shared.dcv();
            let providers = book.connector(id).ok_or_else(unknown)?.providers.clone();
            let total = providers.len();
            Ok(Reply::Page(json!(providers), total))
        }
        _ => Err(ScmError::Unknown(StatusCode::NOT_FOUND)),
    }
}

/// An id in the path that names no connector.
/// Inferred (spec §9, §10.1 item 12): 404, as for every unknown path id; no code in the tables
/// names a connector, so the body is the generic -1 "Unknown error.".
fn unknown() -> ScmError {
    ScmError::Unknown(StatusCode::NOT_FOUND)
}

/// §6.1. Filters: `name` (case-insensitive substring), `status` (an enum name, any case; another
/// value is -1601), `orgIds` (comma-separated; a connector matches when it is delegated to one of
/// them). Empty values mean no filter.
fn list(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let text = |name: &str| call.param(name).map(str::trim).filter(|value| !value.is_empty());
    let name = text("name").map(str::to_ascii_lowercase);
    let status = text("status")
        .map(|wanted| {
            [
                ConnectorStatus::NotAvailable,
                ConnectorStatus::NotConnected,
                ConnectorStatus::Connected,
            ]
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| ScmError::InvalidField("status".to_owned()))
        })
        .transpose()?;
    let org_ids = text("orgIds")
        .map(|ids| {
            ids.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(|id| {
                    id.parse::<i64>()
                        .map_err(|_| ScmError::InvalidField("orgIds".to_owned()))
                })
                .collect::<Result<Vec<i64>, ScmError>>()
        })
        .transpose()?
        .filter(|ids| !ids.is_empty());
    let (position, size) = page_bounds(call)?;
    let org_id = shared.config.org_id;
    let book = shared.dcv();
    let rows: Vec<Value> = book
        .connectors()
        .iter()
        .filter(|connector| {
            name.as_ref()
                .is_none_or(|name| connector.name.to_ascii_lowercase().contains(name.as_str()))
                && status.is_none_or(|status| connector.status == status)
                && org_ids.as_ref().is_none_or(|ids| ids.contains(&org_id))
        })
        .map(summary_json)
        .collect();
    let total = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(position).take(size).collect();
    Ok(Reply::Page(Value::Array(page), total))
}

/// One connector as the list shows it (§6.1).
/// Inferred (spec §6.2): every simulated connector is delegated to the customer's only
/// organization, `CUSTOMIZED` as in the example.
fn summary_json(connector: &SimDnsConnector) -> Value {
    json!({
        "id": connector.id,
        "name": connector.name,
        "comments": "simulated DNS connector",
        "version": VERSION,
        "revision": REVISION,
        "hostname": HOSTNAME,
        "os": OS,
        "status": connector.status.as_str(),
        "delegationMode": "CUSTOMIZED",
    })
}
