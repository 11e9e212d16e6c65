//! The checks a DCV order is decided by, made for real (spec §9 "Checker"): the HTTP(S) file is
//! fetched from the configured address with the domain as `Host`, CNAME and TXT records are asked
//! of the configured DNS server. Every check is logged.

use std::{net::SocketAddr, time::Duration};

use hyper::header::HOST;

use super::ScmSimulatorConfig;
use crate::dns;

/// How long one fetch or DNS question may take before the check counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What to check.
#[derive(Clone, Debug)]
pub enum Probe {
    /// `GET http(s)://<domain>/.well-known/pki-validation/<file>`: the first two lines, trimmed,
    /// must be `first_line` and `second_line`.
    Http {
        https: bool,
        domain: String,
        file: String,
        first_line: String,
        second_line: String,
    },
    /// A CNAME at `host` pointing to `point` (case-insensitive, trailing dot normalised).
    Cname { host: String, point: String },
    /// A TXT character-string at `host` equal to `point`, byte for byte.
    Txt { host: String, point: String },
}

/// The result of one check.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub passed: bool,
    /// What was asked, and where.
    pub target: String,
    /// What was found, or why it failed.
    pub detail: String,
}

/// Runs `probe` against the addresses `config` names.
pub async fn run(config: &ScmSimulatorConfig, probe: &Probe) -> Outcome {
    let outcome = match probe {
        Probe::Http {
            https,
            domain,
            file,
            first_line,
            second_line,
        } => {
            let address = if *https {
                config.dcv_https_address
            } else {
                config.dcv_http_address
            };
            http(*https, address, domain, file, [first_line, second_line]).await
        }
        Probe::Cname { host, point } => cname(config.dcv_dns_server, host, point).await,
        Probe::Txt { host, point } => txt(config.dcv_dns_server, host, point).await,
    };
    tracing::info!(checked = %outcome.target, passed = outcome.passed, detail = %outcome.detail, "DCV check");
    outcome
}

async fn http(
    https: bool,
    address: Option<SocketAddr>,
    domain: &str,
    file: &str,
    expected: [&String; 2],
) -> Outcome {
    let scheme = if https { "https" } else { "http" };
    let path = format!("/.well-known/pki-validation/{file}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Inferred (spec §10.3): whether the CA follows redirects is not documented; we chose not
    // to, so the file must be served at the exact path.
    // HTTPS skips certificate verification: the spec leaves open whether the CA requires a
    // publicly trusted certificate, and a test's solver has none.
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CHECK_TIMEOUT)
        .danger_accept_invalid_certs(https);
    // With an address configured the connection goes there while the URL, the `Host` header
    // and (for HTTPS) the SNI name are the domain's, as if DNS resolved the domain to it.
    // Without one, the domain is resolved by the system on the default port.
    let (url, shown) = if let Some(address) = address {
        builder = builder.resolve(domain, address);
        (
            format!("{scheme}://{domain}:{}{path}", address.port()),
            format!("{scheme}://{domain}{path} via {address}"),
        )
    } else {
        let url = format!("{scheme}://{domain}{path}");
        (url.clone(), url)
    };
    let fail = |detail: String| Outcome {
        passed: false,
        target: shown.clone(),
        detail,
    };
    let client = match builder.build() {
        Ok(client) => client,
        Err(error) => return fail(format!("HTTP client: {error}")),
    };
    let response = match client.get(&url).header(HOST, domain).send().await {
        Ok(response) => response,
        Err(error) => return fail(format!("fetch failed: {error}")),
    };
    let status = response.status();
    if !status.is_success() {
        return fail(format!("answered {status}"));
    }
    let body = match response.text().await {
        Ok(body) => body,
        Err(error) => return fail(format!("reading the body: {error}")),
    };
    let lines: Vec<&str> = body.lines().map(str::trim).collect();
    let passed = lines.len() >= 2 && lines[0] == expected[0].as_str() && lines[1] == expected[1].as_str();
    Outcome {
        passed,
        target: shown.clone(),
        detail: if passed {
            "file content matches".to_owned()
        } else {
            format!("unexpected content {:?}", truncate(&body))
        },
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

fn no_server(question: String) -> Outcome {
    // Inferred: without a configured DNS server the simulator asks nobody (a test must never
    // query the public DNS), so the check fails and says why.
    Outcome {
        passed: false,
        target: question,
        detail: "no DNS server configured (dcv_dns_server)".to_owned(),
    }
}

fn canonical(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

async fn cname(server: Option<SocketAddr>, host: &str, point: &str) -> Outcome {
    let Some(server) = server else {
        return no_server(format!("{host} CNAME"));
    };
    let target = format!("{host} CNAME @{server}");
    match dns::lookup_cname(server, host).await {
        Ok(found) => {
            let passed = found.iter().any(|name| canonical(name) == canonical(point));
            Outcome {
                passed,
                target,
                detail: if passed {
                    "CNAME points to the expected name".to_owned()
                } else {
                    format!("CNAME targets found: {found:?}")
                },
            }
        }
        Err(error) => Outcome {
            passed: false,
            target,
            detail: format!("{error:#}"),
        },
    }
}

async fn txt(server: Option<SocketAddr>, host: &str, point: &str) -> Outcome {
    let Some(server) = server else {
        return no_server(format!("{host} TXT"));
    };
    let target = format!("{host} TXT @{server}");
    match dns::lookup_txt(server, host).await {
        Ok(records) => {
            // Any one character-string equal to the value, byte for byte (spec §9, §10.1 item 10).
            let passed = records
                .iter()
                .flatten()
                .any(|string| string.as_slice() == point.as_bytes());
            let found: Vec<String> = records
                .iter()
                .map(|strings| {
                    strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>()
                })
                .collect();
            Outcome {
                passed,
                target,
                detail: if passed {
                    "TXT value found".to_owned()
                } else {
                    format!("TXT values found: {found:?}")
                },
            }
        }
        Err(error) => Outcome {
            passed: false,
            target,
            detail: format!("{error:#}"),
        },
    }
}
