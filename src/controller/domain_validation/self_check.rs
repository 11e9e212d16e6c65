//! The operator's own check of a published challenge, before it is submitted (`scm-dcv-domains.md`
//! §10.2: "submit only after a self-check passes"): a submitted order the CA cannot verify only
//! waits for its next check, hours later, while a self-check says at once what is wrong.

use std::{net::SocketAddr, time::Duration};

use super::solvers::{self, Solver};
use crate::{backend::scm::dcv::Challenge, controller::Context, crd::v1alpha1::DomainValidation};

impl Default for SelfCheckSettings {
    fn default() -> Self {
        Self {
            recheck_interval: Duration::from_secs(6 * 3600),
            http_address: None,
            dns_server: None,
        }
    }
}

/// How long one self-check request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a validation file read (the real one is two short lines).
const MAX_FILE_BYTES: usize = 4096;

/// Where self-checks connect instead of resolving the domain, for networks where the domain's
/// public address is not reachable from the operator (and for tests), and how often a
/// validated domain's state is read again.
#[derive(Clone, Debug)]
pub struct SelfCheckSettings {
    /// The longest a validated domain goes without its CA state being read
    /// (`--dcv-recheck-interval`).
    pub recheck_interval: Duration,
    /// HTTP(S) file checks connect here (`--dcv-http-self-check-address`).
    pub http_address: Option<SocketAddr>,
    /// DNS checks of manually published records ask this server (`--dcv-dns-self-check-server`).
    pub dns_server: Option<SocketAddr>,
}

/// Checks that `challenge` is answered the way the CA will look for it; the error says what was
/// found instead.
pub async fn check(
    ctx: &Context,
    dv: &DomainValidation,
    solver: &Solver,
    challenge: &Challenge,
) -> Result<(), String> {
    match challenge {
        Challenge::File { url, content, .. } => {
            check_file(&ctx.dcv_self_check, &dv.spec.domain, url, content).await
        }
        Challenge::Cname { .. } | Challenge::Txt { .. } => {
            let Some(record) = solvers::record(challenge) else {
                return Ok(());
            };
            let server = solvers::check_server(ctx, solver)
                .ok_or("no DNS server to check the record at (set --dcv-dns-self-check-server)")?;
            match record.is_served(server).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("{server} does not answer the record {record:?} yet")),
                Err(error) => Err(error.to_string()),
            }
        }
        // Nothing to check: a person answers the mail.
        Challenge::Email { .. } => Ok(()),
    }
}

/// The lines of a validation file, trimmed (a trailing newline or CRLF is harmless, §3.8).
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

async fn check_file(
    settings: &SelfCheckSettings,
    domain: &str,
    url: &str,
    expected: &str,
) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // The CA's HTTPS check is not documented to verify the certificate; neither does ours,
        // so a self-signed listener is not reported as a failure the CA would not see.
        .tls_danger_accept_invalid_certs(true);
    if let Some(address) = settings.http_address {
        builder = builder.resolve(domain, address);
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url} failed: {}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url} answered HTTP {}", status.as_u16()));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_FILE_BYTES)]).into_owned();
    if lines(&text) == lines(expected) {
        Ok(())
    } else {
        Err(format!(
            "GET {url} answered other content than the CA's challenge"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_content_compares_by_trimmed_lines() {
        assert_eq!(lines("hash\r\nsectigo.com\n"), lines("hash\nsectigo.com"));
        assert_ne!(lines("hash\nsectigo.org"), lines("hash\nsectigo.com"));
    }
}
