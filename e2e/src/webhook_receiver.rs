//! An HTTP server on loopback standing in for Slack, Teams or any webhook receiver: it records
//! every request (method, path, headers with `Authorization`, body) and answers 200, or an error
//! status a test asked for ([`WebhookReceiver::fail_next`]) to exercise retries.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::wait_for;

/// The path of [`WebhookReceiver::url`]; it stands for the credential a real webhook URL embeds,
/// so tests can check it never shows in errors.
pub const SECRET_PATH: &str = "/services/T0E2E/B0E2E/e2e-secret-webhook-path";

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers by lower-case name (the last value of a repeated header).
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Bytes,
    /// The status it was answered with.
    pub answered: u16,
}

impl ReceivedRequest {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    requests: Vec<ReceivedRequest>,
    failures_left: usize,
    failure_status: u16,
}

/// A running receiver; stopped on drop.
pub struct WebhookReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), shutdown.clone()));
        Ok(Self {
            addr,
            state,
            shutdown,
            task,
        })
    }

    /// `http://127.0.0.1:<port>` followed by [`SECRET_PATH`].
    pub fn url(&self) -> String {
        format!("http://{}{SECRET_PATH}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next `count` requests with `status` instead of 200.
    pub fn fail_next(&self, count: usize, status: u16) {
        let mut state = lock(&self.state);
        state.failures_left = count;
        state.failure_status = status;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Waits until at least `count` requests arrived and returns them all.
    pub async fn wait_for_requests(&self, count: usize, timeout: Duration) -> Result<Vec<ReceivedRequest>> {
        wait_for(&format!("{count} webhook request(s)"), timeout, || async {
            Some(self.requests()).filter(|all| all.len() >= count)
        })
        .await
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| record(request, Arc::clone(&state)));
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

async fn record(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut state = lock(&state);
    let status = if state.failures_left > 0 {
        state.failures_left -= 1;
        StatusCode::from_u16(state.failure_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    } else {
        StatusCode::OK
    };
    state.requests.push(ReceivedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
        headers,
        body,
        answered: status.as_u16(),
    });
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = status;
    Ok(response)
}
