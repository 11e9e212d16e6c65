//! The configured solver of a DomainValidation, ready to publish and remove its record, and the
//! DNS server its self-check asks.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::{
    backend::scm::dcv::Challenge,
    controller::Context,
    crd::v1alpha1::{
        DomainValidation,
        domain_validation::{DcvChallenge, HttpSolverIngress, TsigAlgorithm},
    },
    pki::credentials::SecretString,
    solver::dns::{Published, Rfc2136, TsigHmac, server_address},
};

/// How the challenge is answered.
pub enum Solver {
    /// The operator's HTTP solver serves the file from `status.challenge`; with `ingress`, an
    /// Ingress routes the domain's validation path to it while the challenge is published.
    Http {
        /// `spec.solver.http.ingress`.
        ingress: Option<HttpSolverIngress>,
    },
    /// The operator publishes the record with a TSIG-signed dynamic update.
    Rfc2136(Rfc2136),
    /// A person (or another tool) publishes the record shown in status.
    Manual,
    /// SCM's DNS connector publishes the CNAME record once the order is submitted through it.
    ScmConnector {
        /// `spec.solver.dns.scmConnector.connectorId`.
        connector_id: Option<String>,
        /// `spec.solver.dns.scmConnector.provider`.
        provider: Option<String>,
    },
}

/// Why the solver cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    /// A setting or the TSIG Secret is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A solver this version does not implement.
    #[error("{0}")]
    Unsupported(String),
}

impl SolverError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "InvalidSolver",
            Self::Unsupported(_) => "Unsupported",
        }
    }
}

/// The solver `dv` configures; for RFC 2136 its TSIG secret is read from the referenced Secret.
pub async fn solver(ctx: &Context, dv: &DomainValidation) -> Result<Solver, SolverError> {
    let Some(solver) = &dv.spec.solver else {
        // EMAIL: nothing to publish (the CRD requires a solver for every other method).
        return Ok(Solver::Manual);
    };
    if let Some(http) = &solver.http {
        return Ok(Solver::Http {
            ingress: http.ingress.clone(),
        });
    }
    let Some(dns) = &solver.dns else {
        return Err(SolverError::Invalid(
            "spec.solver sets neither http nor dns".into(),
        ));
    };
    if dns.manual.is_some() {
        return Ok(Solver::Manual);
    }
    if let Some(connector) = &dns.scm_connector {
        return Ok(Solver::ScmConnector {
            connector_id: connector.connector_id.clone(),
            provider: connector.provider.clone(),
        });
    }
    let Some(rfc2136) = &dns.rfc2136 else {
        return Err(SolverError::Invalid("spec.solver.dns sets no provider".into()));
    };
    let server = server_address(&rfc2136.nameserver)
        .await
        .map_err(|e| SolverError::Invalid(format!("spec.solver.dns.rfc2136.nameserver: {e}")))?;
    let selector = &rfc2136.tsig_secret_ref;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &selector.namespace)
        .get_opt(&selector.name)
        .await
        .map_err(|e| {
            SolverError::Invalid(format!(
                "cannot read Secret {}/{}: {e}",
                selector.namespace, selector.name
            ))
        })?
        .ok_or_else(|| {
            SolverError::Invalid(format!(
                "spec.solver.dns.rfc2136.tsigSecretRef: Secret {}/{} not found",
                selector.namespace, selector.name
            ))
        })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&selector.key))
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
        .ok_or_else(|| {
            SolverError::Invalid(format!(
                "spec.solver.dns.rfc2136.tsigSecretRef: Secret {}/{} has no key {:?}",
                selector.namespace, selector.name, selector.key
            ))
        })?;
    Ok(Solver::Rfc2136(Rfc2136 {
        server,
        zone: rfc2136.zone.clone().unwrap_or_else(|| dv.spec.domain.clone()),
        key_name: rfc2136.tsig_key_name.clone(),
        algorithm: match rfc2136.tsig_algorithm {
            TsigAlgorithm::HmacSha256 => TsigHmac::Sha256,
            TsigAlgorithm::HmacSha384 => TsigHmac::Sha384,
            TsigAlgorithm::HmacSha512 => TsigHmac::Sha512,
        },
        secret: SecretString::new(value),
    }))
}

/// The DNS record a challenge asks for.
pub fn record(challenge: &Challenge) -> Option<Published> {
    match challenge {
        Challenge::Cname { host, point } => Some(Published::Cname {
            owner: host.clone(),
            target: point.clone(),
        }),
        Challenge::Txt { host, value } => Some(Published::Txt {
            owner: host.clone(),
            value: value.clone(),
        }),
        Challenge::File { .. } | Challenge::Email { .. } => None,
    }
}

/// The DNS record a challenge shown in status asks for (to remove it after success).
pub fn recorded(shown: &DcvChallenge) -> Option<Published> {
    if let (Some(owner), Some(target)) = (&shown.cname_host, &shown.cname_point) {
        return Some(Published::Cname {
            owner: owner.clone(),
            target: target.clone(),
        });
    }
    shown
        .txt_host
        .clone()
        .zip(shown.txt_value.clone())
        .map(|(owner, value)| Published::Txt { owner, value })
}

/// The server a DNS self-check asks: the RFC 2136 server (authoritative for the zone it
/// updates), else `--dcv-dns-self-check-server`, else the first `nameserver` of
/// `/etc/resolv.conf`.
pub fn check_server(ctx: &Context, solver: &Solver) -> Option<SocketAddr> {
    match solver {
        Solver::Rfc2136(rfc2136) => Some(rfc2136.server),
        Solver::Http { .. } | Solver::Manual | Solver::ScmConnector { .. } => {
            ctx.dcv_self_check.dns_server.or_else(system_nameserver)
        }
    }
}

fn system_nameserver() -> Option<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()?
        .lines()
        .find_map(|line| line.trim().strip_prefix("nameserver")?.trim().parse().ok())
        .map(|ip: std::net::IpAddr| SocketAddr::new(ip, 53))
}
