//! The Domain API (`scm-dcv-domains.md` §5): list, count, details, create, delete, activate and
//! suspend over the registry the DCV API shares ([`super::dcv::DcvBook`]). CT-log monitoring and
//! delegation changes are not simulated (501).

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    DcvAccess, Shared,
    api::{Call, Reply, is_dns_name},
    error::ScmError,
    routes::Endpoint,
};

/// Runs one authenticated Domain API call.
pub fn dispatch(shared: &Shared, endpoint: &Endpoint, call: &Call) -> Result<Reply, ScmError> {
    match endpoint {
        Endpoint::DomainList => list(shared, call, false),
        Endpoint::DomainCount => list(shared, call, true),
        Endpoint::DomainDetails(id) => details(shared, id),
        Endpoint::DomainCreate => create(shared, call),
        Endpoint::DomainDelete(id) => {
            let id = known_id(shared, id)?;
            shared.dcv().remove(id);
            tracing::info!(id, "domain deleted");
            Ok(Reply::NoContent)
        }
        Endpoint::DomainActivate(id) => set_active(shared, id, true),
        Endpoint::DomainSuspend(id) => set_active(shared, id, false),
        _ => Err(ScmError::Unknown(StatusCode::NOT_FOUND)),
    }
}

/// The id in a path, when a domain has it; otherwise 404.
/// Inferred (spec §5.3, §9): 404 with -727 naming the id, since the docs give neither the code
/// nor the message for an unknown id.
fn known_id(shared: &Shared, text: &str) -> Result<i64, ScmError> {
    let unknown = || ScmError::DomainUnknown(text.to_owned(), StatusCode::NOT_FOUND);
    let id = text.parse::<i64>().map_err(|_| unknown())?;
    shared.dcv().entry(id).map(|_| id).ok_or_else(unknown)
}

/// §5.1/§5.2. Filters: `name` (case-insensitive substring; exact or substring is unknown),
/// `state` (`active`/`inactive`), `status` (`approved`/`requested`: every simulated delegation
/// is approved), `orgId`.
fn list(shared: &Shared, call: &Call, count_only: bool) -> Result<Reply, ScmError> {
    let text = |name: &str| {
        call.param(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase)
    };
    let name = text("name");
    let state = match text("state").as_deref() {
        None => None,
        Some("active") => Some(true),
        Some("inactive") => Some(false),
        Some(_) => return Err(ScmError::InvalidField("state".to_owned())),
    };
    let approved = match text("status").as_deref() {
        None => None,
        Some("approved") => Some(true),
        Some("requested") => Some(false),
        Some(_) => return Err(ScmError::InvalidField("status".to_owned())),
    };
    let org = if text("orgId").is_some() {
        call.int_param("orgId")?
    } else {
        None
    };
    let index = |key: &'static str, default: usize| -> Result<usize, ScmError> {
        call.int_param(key)?.map_or(Ok(default), |value| {
            usize::try_from(value).map_err(|_| ScmError::InvalidField(key.to_owned()))
        })
    };
    // Inferred (spec §1.5): `[oas]` caps `size` at 200; the default is the cap too.
    let size = index("size", 200)?.min(200);
    let position = index("position", 0)?;
    let book = shared.dcv();
    let rows: Vec<Value> = book
        .entries()
        .filter(|entry| {
            name.as_ref()
                .is_none_or(|name| entry.name.contains(name.as_str()))
                && state.is_none_or(|active| entry.active == active)
                && approved.is_none_or(|approved| approved)
                && org.is_none_or(|org| entry.org_ids.contains(&org))
        })
        .map(|entry| json!({ "id": entry.id, "name": entry.name }))
        .collect();
    let total = rows.len();
    if count_only {
        return Ok(Reply::Dcv(json!({ "count": total })));
    }
    let page: Vec<Value> = rows.into_iter().skip(position).take(size).collect();
    Ok(Reply::DcvPage(Value::Array(page), total))
}

/// §5.3. The validation fields appear only while DCV is enabled for the customer.
fn details(shared: &Shared, id: &str) -> Result<Reply, ScmError> {
    let id = known_id(shared, id)?;
    let book = shared.dcv();
    let entry = book
        .entry(id)
        .ok_or_else(|| ScmError::DomainUnknown(id.to_string(), StatusCode::NOT_FOUND))?;
    let delegations: Vec<Value> = entry
        .org_ids
        .iter()
        .map(|org| {
            // Inferred: the simulated account delegates every domain for SSL with the DOMAIN and
            // SUBDOMAIN privileges, approved.
            json!({
                "orgId": org,
                "certTypes": ["SSL"],
                "domainCertificateRequestPrivileges": ["DOMAIN", "SUBDOMAIN"],
                "status": "ACTIVE",
            })
        })
        .collect();
    let mut body = json!({
        "id": entry.id,
        "name": entry.name,
        "delegationStatus": "ACTIVE",
        "state": if entry.active { "ACTIVE" } else { "SUSPENDED" },
        "delegations": delegations,
        "ctLogMonitoring": { "enabled": false, "includeSubdomains": false },
    });
    if let Some(description) = &entry.description {
        body["description"] = description.clone().into();
    }
    if shared.config.dcv_access != DcvAccess::DisabledForCustomer
        && let Some(object) = body.as_object_mut()
    {
        object.extend(book.domain_validation(&entry.name));
    }
    Ok(Reply::Dcv(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct CreateRequest {
    name: Option<String>,
    description: Option<String>,
    active: Option<bool>,
    delegations: Option<Vec<DelegationInput>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DelegationInput {
    org_id: Option<i64>,
}

/// §5.4: 201 with `Location` and no body.
fn create(shared: &Shared, call: &Call) -> Result<Reply, ScmError> {
    let request: CreateRequest = call.json()?;
    let name = request
        .name
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or(ScmError::Required("name"))?;
    let length = name.chars().count();
    if length < 4 {
        return Err(ScmError::DomainTooShort(4));
    }
    if length > 255 {
        return Err(ScmError::DomainTooLong(255));
    }
    if !is_dns_name(name.trim_end_matches('.')) {
        return Err(ScmError::InvalidDomainName);
    }
    if request
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 255)
    {
        return Err(ScmError::InvalidField("description".to_owned()));
    }
    let delegations = request.delegations.unwrap_or_default();
    if delegations.is_empty() {
        return Err(ScmError::DelegationRequired);
    }
    let mut org_ids = Vec::new();
    for delegation in delegations {
        match delegation.org_id {
            Some(org) if org == shared.config.org_id => org_ids.push(org),
            None => return Err(ScmError::Required("orgId")),
            // Inferred (spec §5.4): no code is documented for an unknown organization; we chose
            // -1601 naming the field.
            Some(_) => return Err(ScmError::InvalidField("delegations.orgId".to_owned())),
        }
    }
    let mut book = shared.dcv();
    if book.find(&name).is_some() {
        return Err(ScmError::DomainExists);
    }
    let id = book.register(
        &name,
        request.description.filter(|d| !d.is_empty()),
        request.active.unwrap_or(true),
        org_ids,
    );
    tracing::info!(id, %name, "domain created");
    let base = call.base_url();
    Ok(Reply::Created(format!("{base}/api/domain/v1/{id}")))
}

/// §5.7: 200 without a body.
fn set_active(shared: &Shared, id: &str, active: bool) -> Result<Reply, ScmError> {
    let id = known_id(shared, id)?;
    if let Some(entry) = shared.dcv().entry_mut(id) {
        entry.active = active;
        tracing::info!(domain = %entry.name, active, "domain state changed");
    }
    Ok(Reply::Empty)
}
