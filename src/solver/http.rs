//! The HTTP file solver: serves `/.well-known/pki-validation/<file>` for the domain named by the
//! request's `Host` header, with the content the CA asked for (`scm-dcv-domains.md` §3.8,
//! §10.3). What it serves comes from `status.challenge` of DomainValidations whose solver is
//! `http`, so a challenge the controller removes (after the domain validated) is answered 404
//! from then on, on every replica.

use std::net::SocketAddr;

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use futures::StreamExt as _;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, reflector, reflector::Store, watcher},
};
use tokio::net::TcpListener;

use crate::crd::v1alpha1::DomainValidation;

/// The path prefix the CA fetches (the file name follows).
pub const PATH_PREFIX: &str = "/.well-known/pki-validation/";

/// Why the solver could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on the HTTP solver address {address}")]
pub struct BindSolver {
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The file `dv` publishes, as (host, file name, content), when its solver is `http` and its
/// status holds a file challenge.
pub fn published_file(dv: &DomainValidation) -> Option<(String, String, String)> {
    dv.spec.solver.as_ref()?.http.as_ref()?;
    let challenge = dv.status.as_ref()?.challenge.as_ref()?;
    let (url, content) = (challenge.file_url.as_ref()?, challenge.file_content.as_ref()?);
    let rest = url.split_once("://")?.1;
    let (host, path) = rest.split_once('/')?;
    let host = host.split(':').next()?.to_ascii_lowercase();
    let file = format!("/{path}").strip_prefix(PATH_PREFIX)?.to_owned();
    Some((host, file, content.clone()))
}

/// The content to serve for `file` on `host`, among `validations`.
pub fn lookup<'a>(
    validations: impl IntoIterator<Item = &'a DomainValidation>,
    host: &str,
    file: &str,
) -> Option<String> {
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    validations.into_iter().find_map(|dv| {
        let (published_host, published_file, content) = published_file(dv)?;
        // The file name is compared exactly: the CA's path matching is case-sensitive (§10.3).
        (published_host == host && published_file == file).then_some(content)
    })
}

async fn serve_file(
    State(store): State<Store<DomainValidation>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let state = store.state();
    match lookup(state.iter().map(AsRef::as_ref), host, &file) {
        Some(content) => {
            tracing::info!(host, file, "served a domain validation file");
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], content).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Binds `address`; the returned future watches DomainValidations and serves their files until
/// `shutdown` resolves.
pub async fn serve(
    address: SocketAddr,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = std::io::Result<()>>, BindSolver> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| BindSolver { address, source })?;
    let local = listener.local_addr().unwrap_or(address);
    tracing::info!(address = %local, "HTTP solver listening");
    let (store, writer) = reflector::store();
    let api: Api<DomainValidation> = Api::all(client);
    let feed = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .for_each(|event| {
            if let Err(error) = event {
                tracing::debug!(%error, "DomainValidation watch for the HTTP solver");
            }
            futures::future::ready(())
        });
    let app = Router::new()
        .route(&format!("{PATH_PREFIX}{{file}}"), get(serve_file))
        .with_state(store);
    Ok(async move {
        let feed = tokio::spawn(feed);
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        feed.abort();
        served
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dv(name: &str, http: bool, url: &str, content: &str) -> DomainValidation {
        let solver = if http {
            serde_json::json!({"http": {}})
        } else {
            serde_json::json!({"dns": {"manual": {}}})
        };
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pki-operator.io/v1alpha1", "kind": "DomainValidation",
            "metadata": {"name": name},
            "spec": {"domain": "example.com", "issuerRef": {"name": "scm"}, "method": "HTTP", "solver": solver},
            "status": {"challenge": {"fileUrl": url, "fileContent": content}},
        }))
        .unwrap()
    }

    #[test]
    fn files_are_served_by_host_and_exact_name_only_for_http_solvers() {
        let served = dv(
            "a",
            true,
            "http://Example.com/.well-known/pki-validation/88F8.txt",
            "hash\nsectigo.com",
        );
        let dns = dv(
            "b",
            false,
            "http://other.com/.well-known/pki-validation/99.txt",
            "x",
        );
        let all = [served, dns];
        assert_eq!(
            lookup(&all, "example.com:80", "88F8.txt").as_deref(),
            Some("hash\nsectigo.com"),
            "host compared without port and case"
        );
        assert_eq!(
            lookup(&all, "example.com", "88f8.txt"),
            None,
            "file names are case-sensitive"
        );
        assert_eq!(lookup(&all, "www.example.com", "88F8.txt"), None);
        assert_eq!(
            lookup(&all, "other.com", "99.txt"),
            None,
            "a DNS solver publishes no file"
        );
    }
}
