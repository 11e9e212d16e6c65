//! Reporting a task's findings to a CertMgmt service as an agent host (`scm-discovery-alerts.md`
//! §6.2, §6.7): onboard once (the service answers 208 for a host name it knows, so onboarding
//! again after a crash finds the same host), keep the host id and secret key in an owned
//! Secret, and `PUT` the inventory with `Authorization: secret_key=…`.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Resource as _, ResourceExt as _,
    api::{Patch, PatchParams},
};

use super::sources::SourceFailure;
use crate::{
    FIELD_MANAGER,
    backend::certmgmt::{AgentCertType, AgentCertificate, CertMgmtClient, CertMgmtError},
    controller::Context,
    crd::v1alpha1::{DiscoveryTask, discovery_task::DiscoveryReport},
    discovery::analysis::Found,
    pki::credentials::SecretString,
};

/// Default `checkInInterval`.
pub const DEFAULT_CHECK_IN: Duration = Duration::from_secs(24 * 3600);
/// The `server_type` the operator onboards as (the service documents no set of values).
const SERVER_TYPE: &str = "kubernetes";

/// The check-in interval of `report`.
pub fn check_in_interval(report: &DiscoveryReport) -> Duration {
    report
        .check_in_interval
        .as_deref()
        .and_then(|t| crate::controller::certificate::validate::parse_duration(t).ok())
        .unwrap_or(DEFAULT_CHECK_IN)
}

/// The name of the Secret holding the host id and secret key.
pub fn host_secret_name(task: &DiscoveryTask) -> String {
    format!("{}-certmgmt-host", task.name_any())
}

/// How every reporting failure's message starts (a later successful check-in clears it).
pub const FAILURE_PREFIX: &str = "reporting to CertMgmt";

fn failure(error: &CertMgmtError, what: &str) -> SourceFailure {
    SourceFailure {
        reason: error.reason(),
        message: format!(
            "reporting to CertMgmt: {what}: {}",
            crate::controller::errors::error_chain(error)
        ),
    }
}

/// Sends `found` as the host's inventory; returns the host id.
pub async fn report(
    ctx: &Context,
    task: &DiscoveryTask,
    report: &DiscoveryReport,
    found: &[Found],
) -> Result<String, SourceFailure> {
    let namespace = task.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let client = client(&secrets, report).await?;

    let host_secret = host_secret_name(task);
    let stored = secrets.get_opt(&host_secret).await.map_err(|e| SourceFailure {
        reason: "KubernetesError",
        message: format!("cannot read Secret {host_secret}: {e}"),
    })?;
    if let Some(existing) = &stored
        && !existing
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == task.uid().as_ref())
    {
        return Err(SourceFailure {
            reason: "SecretConflict",
            message: format!(
                "{FAILURE_PREFIX}: Secret {host_secret} exists and is not this DiscoveryTask's; delete or rename it"
            ),
        });
    }
    let field = |secret: &Secret, key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let kept = stored
        .as_ref()
        .and_then(|s| field(s, "host_id").zip(field(s, "secret_key")));
    let (host_id, secret_key) = if let Some((id, key)) = kept {
        (id, SecretString::new(key))
    } else {
        let hostname = report
            .hostname
            .clone()
            .unwrap_or_else(|| format!("{namespace}-{}", task.name_any()));
        let (host, _created) = client
            .onboard_host(&hostname, SERVER_TYPE)
            .await
            .map_err(|e| failure(&e, "onboarding"))?;
        store_host(&secrets, task, &host_secret, &host.id, &host.secret_key).await?;
        (host.id, host.secret_key)
    };
    let now = jiff::Timestamp::now();
    let certificates: Vec<AgentCertificate> =
        found.iter().filter_map(|f| agent_certificate(f, now)).collect();
    match client
        .report_certificates(&host_id, &secret_key, &certificates)
        .await
    {
        Ok(()) => Ok(host_id),
        // The key was rotated at the service: read the host's current one with the service
        // credentials, keep it, and send once more.
        Err(CertMgmtError::Unauthorized { .. }) => {
            let host = client
                .host(&host_id)
                .await
                .map_err(|e| failure(&e, "reading the host's rotated key"))?;
            store_host(&secrets, task, &host_secret, &host.id, &host.secret_key).await?;
            client
                .report_certificates(&host_id, &host.secret_key, &certificates)
                .await
                .map_err(|e| failure(&e, "the certificate report"))?;
            Ok(host_id)
        }
        Err(e) => Err(failure(&e, "the certificate report")),
    }
}

/// The service's client, with the Basic credentials of `spec.report.credentialsSecretName`.
async fn client(secrets: &Api<Secret>, report: &DiscoveryReport) -> Result<CertMgmtClient, SourceFailure> {
    let invalid = |message: String| SourceFailure {
        reason: "InvalidConfiguration",
        message,
    };
    let credentials = secrets
        .get_opt(&report.credentials_secret_name)
        .await
        .map_err(|e| SourceFailure {
            reason: "KubernetesError",
            message: format!("cannot read Secret {}: {e}", report.credentials_secret_name),
        })?
        .ok_or_else(|| {
            invalid(format!(
                "spec.report.credentialsSecretName: Secret {} not found",
                report.credentials_secret_name
            ))
        })?;
    let value = |key: &str| {
        credentials
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "spec.report.credentialsSecretName: Secret {} has no key {key:?}",
                    report.credentials_secret_name
                ))
            })
    };
    let username = value("username")?;
    let password = SecretString::new(value("password")?);
    let client = CertMgmtClient::new(&report.url, &username, password, report.ca_bundle.as_deref())
        .map_err(|e| failure(&e, "spec.report"))?;
    Ok(client)
}

/// Writes the host id and secret key to the task's host Secret (owned by the task, so it goes
/// with it), before anything else is done with them.
async fn store_host(
    secrets: &Api<Secret>,
    task: &DiscoveryTask,
    name: &str,
    host_id: &str,
    secret_key: &SecretString,
) -> Result<(), SourceFailure> {
    let owner = task.controller_owner_ref(&()).into_iter().collect::<Vec<_>>();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            owner_references: Some(owner),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "pki-operator".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            ("host_id".to_owned(), ByteString(host_id.as_bytes().to_vec())),
            (
                "secret_key".to_owned(),
                ByteString(secret_key.expose().as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    };
    let mut body = serde_json::to_value(&secret).map_err(|e| SourceFailure {
        reason: "KubernetesError",
        message: e.to_string(),
    })?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    secrets
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| SourceFailure {
            reason: "KubernetesError",
            message: format!("cannot write Secret {name}: {e}"),
        })?;
    Ok(())
}

/// The report entry of a finding: from the certificate when discovery has it, else (SCM's
/// results, facts without the bytes) from the facts, with no SANs.
fn agent_certificate(found: &Found, now: jiff::Timestamp) -> Option<AgentCertificate> {
    if !found.der.is_empty() {
        return AgentCertificate::from_der(
            &found.der,
            AgentCertType::Public,
            &found.location,
            &found.location,
            now,
        )
        .ok();
    }
    let serial = found.serial_hex.to_ascii_uppercase();
    let cn = found.common_name.clone().unwrap_or_default();
    Some(AgentCertificate {
        service_name: found.location.clone(),
        cert_sn: serial.clone(),
        cert_type: AgentCertType::Public,
        cert_issuer: found.issuer.clone(),
        cert_subject: found.subject.clone(),
        leaf_cert_cn: cn.clone(),
        leaf_cert_sn: serial,
        cert_cn: cn,
        cert_sans: Vec::new(),
        cert_not_before: jiff::Timestamp::from_second(found.not_before).ok()?,
        cert_not_after: jiff::Timestamp::from_second(found.not_after).ok()?,
        cert_modified_date: now,
        cert_path: found.location.clone(),
    })
}
