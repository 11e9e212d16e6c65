//! What the SCM and Nexus clients share to survive whatever answers at a CA's URL: a hard cap on
//! how much of a response body is read, no redirects (a redirect would carry the credential
//! headers to another address), and ids escaped before they are placed in a URL path. Whatever
//! answers at the CA's URL (a proxy, a misconfigured load balancer, a compromised host) is not
//! trusted with the operator's memory, its credentials or the shape of its requests.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use reqwest::{
    StatusCode, Url,
    header::{HeaderMap, LOCATION},
};

use super::{BackendError, BackendKind};

/// The largest response body read from a CA: 4 MiB. The CA APIs answer with JSON pages of 50
/// orders or a certificate chain of a few KiB, so anything bigger is not a CA's answer; the read
/// is aborted at the limit instead of buffering an endless body until memory runs out.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The limit as written in error messages and the README.
const MAX_RESPONSE_TEXT: &str = "4 MiB";

/// A redirect policy that follows nothing. The SCM client authenticates with `login` and
/// `password` headers, which reqwest would send on to any host a redirect names (it strips only
/// the standard `Authorization`-like headers); a 3xx is reported by [`redirect_error`] instead.
pub fn no_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::none()
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body is (or announces to be) larger than [`MAX_RESPONSE_BYTES`].
    TooLarge,
    /// The connection failed while the body was read.
    Transport(reqwest::Error),
}

impl BodyError {
    /// The error of `backend`'s `operation`: a body too large is a malformed response (which
    /// names the limit, never the body); a broken transfer is left to the caller's `transport`
    /// classification.
    pub fn into_backend(
        self,
        backend: BackendKind,
        operation: &'static str,
        transport: impl FnOnce(reqwest::Error) -> BackendError,
    ) -> BackendError {
        match self {
            Self::TooLarge => BackendError::MalformedResponse {
                backend,
                operation,
                message: format!(
                    "the response body exceeds the {MAX_RESPONSE_TEXT} limit; the read was aborted \
                     (check that url points at the CA's API)"
                ),
            },
            Self::Transport(error) => transport(error),
        }
    }
}

/// Reads `response`'s body chunk by chunk, giving up as soon as it would exceed `limit` bytes
/// (or its `Content-Length` says it will), so at most `limit` bytes plus one chunk are ever held.
pub async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    let announced = response.content_length();
    if announced.is_some_and(|length| usize::try_from(length).map_or(true, |length| length > limit)) {
        return Err(BodyError::TooLarge);
    }
    // The announced length only sizes the buffer; a lying header cannot push past the limit.
    let mut body = BytesMut::with_capacity(
        announced
            .and_then(|length| usize::try_from(length).ok())
            .unwrap_or(0)
            .min(limit),
    );
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The error for a 3xx answer from `url`: the issuer's configuration points somewhere that sends
/// us elsewhere, which retrying cannot change and only the Issuer's `url` can fix. Only the
/// target's host and port are named (the `Location` may carry tokens in its path or query).
pub fn redirect_error(
    backend: BackendKind,
    endpoint: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    url: &Url,
) -> BackendError {
    let target = headers
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|location| url.join(location).ok())
        .and_then(|target| {
            let host = target.host_str()?.chars().take(253).collect::<String>();
            Some(match target.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    let status = status.as_u16();
    let message = match target {
        Some(target) => format!(
            "{endpoint}: the CA answered HTTP {status}, a redirect to {target}, which is not followed \
             (it would send the credentials there); set url to the CA's API address itself"
        ),
        None => format!(
            "{endpoint}: the CA answered HTTP {status}, a redirect without a usable Location, which is \
             not followed; set url to the CA's API address itself"
        ),
    };
    BackendError::Configuration { backend, message }
}

/// `text` as one URL path segment: every byte outside RFC 3986's unreserved set (and `:`, which
/// SCM's colon-separated serials use and a path segment allows) is percent-encoded, so `/`, `?`,
/// `#` and `%` in an id cannot change the path. An empty id, `.` and `..` are refused: URL
/// parsing resolves dot segments (even percent-encoded ones), so no escaping makes them safe.
pub fn path_segment(backend: BackendKind, what: &'static str, text: &str) -> Result<String, BackendError> {
    if matches!(text, "" | "." | "..") {
        return Err(BackendError::InvalidRequest {
            backend,
            code: None,
            message: format!("the {what} {text:?} cannot be placed in a URL path"),
        });
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte == b':' {
            out.push(':');
        } else {
            percent_encode_byte(byte, &mut out);
        }
    }
    Ok(out)
}

/// Appends `text` with every byte outside RFC 3986's unreserved set percent-encoded.
pub fn percent_encode(text: &str, out: &mut String) {
    for byte in text.bytes() {
        percent_encode_byte(byte, out);
    }
}

fn percent_encode_byte(byte: u8, out: &mut String) {
    if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
        out.push(char::from(byte));
    } else {
        let _ = write!(out, "%{byte:02X}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::HeaderValue;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;

    /// A plain-HTTP server on loopback answering one request with `head` and then `chunks`
    /// chunks of 64 KiB (chunked encoding), stopping when the client goes away. Returns its
    /// address and a task yielding how many body bytes it managed to write.
    async fn streaming_server(head: &'static str, chunks: usize) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0_u8; 4096];
            let _ = stream.read(&mut request).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut written = 0;
            for _ in 0..chunks {
                let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if stream.write_all(&framed).await.is_err() {
                    return written;
                }
                written += chunk.len();
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
            written
        });
        (address, task)
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .redirect(no_redirects())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    const CHUNKED: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";

    #[tokio::test]
    async fn an_endless_body_is_cut_off_at_the_limit() {
        // 256 MiB offered; the reader must stop after about 4 MiB.
        let (address, server) = streaming_server(CHUNKED, 4096).await;
        let response = client().get(&address).send().await.unwrap();
        let error = read_body(response, MAX_RESPONSE_BYTES).await.unwrap_err();
        assert!(matches!(error, BodyError::TooLarge), "{error:?}");
        let written = server.await.unwrap();
        assert!(written < 64 * 1024 * 1024, "the server wrote {written} bytes");
        let message = error
            .into_backend(BackendKind::Scm, "check", |_| unreachable!())
            .to_string();
        assert!(message.contains("4 MiB limit"), "{message}");
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_returned_whole() {
        let (address, _server) = streaming_server(CHUNKED, 3).await;
        let response = client().get(&address).send().await.unwrap();
        let body = read_body(response, MAX_RESPONSE_BYTES).await.unwrap();
        assert_eq!(body.len(), 3 * 64 * 1024);
    }

    #[tokio::test]
    async fn an_announced_length_over_the_limit_is_refused_before_reading() {
        let (address, _server) =
            streaming_server("HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n", 0).await;
        let response = client().get(&address).send().await.unwrap();
        assert!(matches!(
            read_body(response, MAX_RESPONSE_BYTES).await,
            Err(BodyError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_names_only_the_target_host() {
        let (address, _server) = streaming_server(
            "HTTP/1.1 302 Found\r\nlocation: https://127.0.0.1:9/steal?token=s3cret\r\ncontent-length: 0\r\n\r\n",
            0,
        )
        .await;
        let response = client().get(&address).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        let error = redirect_error(
            BackendKind::Scm,
            "check",
            response.status(),
            response.headers(),
            response.url(),
        );
        assert_eq!(error.category(), "InvalidConfiguration");
        let message = error.to_string();
        assert!(message.contains("redirect to 127.0.0.1:9"), "{message}");
        assert!(
            !message.contains("s3cret") && !message.contains("steal"),
            "{message}"
        );
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, HeaderValue::from_static("/elsewhere"));
        let base = Url::parse("https://ca.example.com:8443/api/ssl/v1/collect/1").unwrap();
        let relative = redirect_error(
            BackendKind::Nexus,
            "list",
            StatusCode::MOVED_PERMANENTLY,
            &headers,
            &base,
        );
        assert!(
            relative.to_string().contains("redirect to ca.example.com:8443"),
            "{relative}"
        );
        let missing = redirect_error(
            BackendKind::Nexus,
            "list",
            StatusCode::FOUND,
            &HeaderMap::new(),
            &base,
        );
        assert!(
            missing.to_string().contains("without a usable Location"),
            "{missing}"
        );
    }

    #[test]
    fn ids_cannot_change_the_path() {
        let segment = path_segment(BackendKind::Scm, "order id", "../../x?y#z/%2e").unwrap();
        assert_eq!(segment, "..%2F..%2Fx%3Fy%23z%2F%252e");
        let url = Url::parse(&format!("https://ca.example.com/api/ssl/v1/collect/{segment}")).unwrap();
        assert_eq!(url.path(), "/api/ssl/v1/collect/..%2F..%2Fx%3Fy%23z%2F%252e");
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);
        assert_eq!(
            path_segment(BackendKind::Scm, "serial", "0A:FF").unwrap(),
            "0A:FF"
        );
        assert_eq!(
            path_segment(BackendKind::Scm, "order id", "4711").unwrap(),
            "4711"
        );
        for dots in ["", ".", ".."] {
            let error = path_segment(BackendKind::Nexus, "certificate id", dots).unwrap_err();
            assert_eq!(error.category(), "InvalidRequest", "{dots:?}");
        }
    }
}
