//! The X API over HTTP: one connection per request (the stream's, each rules
//! call), hyper 1 and rustls with aws-lc as the SDK uses, through the proxy the
//! environment names; and how an answer is classified for the schedule.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryFutureExt};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

use super::{
    plan_rules, reset_wait, Backoff, BearerToken, Body, Connect, ConnectError, ExistingRule, Reconnect, Rule, RulesPlan,
};

/// What `tweet.fields`, `user.fields` and `expansions` the core needs.
pub const STREAM_QUERY: &[(&str, &str)] = &[
    ("expansions", "author_id"),
    ("tweet.fields", "author_id,created_at,lang,entities,note_tweet"),
    ("user.fields", "name,username"),
];
const USER_AGENT: &str = concat!("stream-worker/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /2/tweets/search/stream`: tweets matching the rules.
    Filtered,
    /// `GET /2/tweets/sample/stream`: a ~1 % sample.
    Sample,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Self::Filtered => "/2/tweets/search/stream",
            Self::Sample => "/2/tweets/sample/stream",
        }
    }
}

/// The X API over HTTP: the stream and the rules requests alike, each on a
/// connection of its own (see `Streaming`).
pub struct XApi {
    connector: HttpsConnector<Route>,
    stream_uri: Uri,
    rules_uri: Uri,
    token: BearerToken,
}

/// How the stream's TCP connection is made: directly, or through the HTTPS
/// proxy that `HTTPS_PROXY` (`HTTP_PROXY` for `http:` URLs) names and
/// `NO_PROXY` does not exclude, as for the rules requests.
#[derive(Clone)]
enum Route {
    Direct(HttpConnector),
    Proxy(Tunnel<HttpConnector>),
}

impl Route {
    fn to(proxy: Option<Intercept>) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_nodelay(true);
        match proxy {
            None => Self::Direct(tcp),
            Some(proxy) if proxy.uri().scheme_str() != Some("http") => {
                tracing::warn!(
                    proxy = %proxy.uri().authority().map_or("", |a| a.as_str()),
                    "only http:// proxies carry the X stream; connecting directly"
                );
                Self::Direct(tcp)
            }
            Some(proxy) => {
                let tunnel = Tunnel::new(proxy.uri().clone(), tcp);
                Self::Proxy(match proxy.basic_auth() {
                    Some(auth) => tunnel.with_auth(auth.clone()),
                    None => tunnel,
                })
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Route {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Direct(tcp) => tcp.poll_ready(cx).map_err(Into::into),
            Self::Proxy(tunnel) => tunnel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            Self::Direct(tcp) => tcp.call(uri).map_err(Into::into).boxed(),
            Self::Proxy(tunnel) => tunnel.call(uri).map_err(Into::into).boxed(),
        }
    }
}

/// An answer's body, with the connection it arrives on driven by whoever
/// polls it: taking one tweet's chunk after another is a call, not a hop
/// between tasks (a task of its own made each chunk a scheduler round trip
/// with its `epoll_wait`).
struct Streaming {
    body: Incoming,
    /// `None` once the connection has ended: what it read before is in `body`.
    connection: Option<hyper::client::conn::http1::Connection<MaybeHttpsStream<TokioIo<TcpStream>>, Full<Bytes>>>,
    _requests: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Streaming {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        loop {
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(crate::aws::describe(&e)))),
                None => return Poll::Ready(None),
            }
        }
    }

    /// The body read to its end or to `limit` bytes, whichever comes first;
    /// what arrived before a failure counts.
    async fn read_to_end(mut self, limit: usize) -> Result<Vec<u8>, (Vec<u8>, String)> {
        let mut body = Vec::new();
        while body.len() < limit {
            match self.next().await {
                None => break,
                Some(Ok(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
                Some(Err(e)) => return Err((body, e)),
            }
        }
        Ok(body)
    }
}

impl futures::Stream for Streaming {
    type Item = Result<Bytes, String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Poll::Ready(next) = this.poll_body(cx) {
                return Poll::Ready(next);
            }
            let Some(connection) = this.connection.as_mut() else { return Poll::Pending };
            match Pin::new(connection).poll(cx) {
                // The body has what the connection decoded, or is pending on more.
                Poll::Pending => return this.poll_body(cx),
                Poll::Ready(Ok(())) => this.connection = None,
                Poll::Ready(Err(e)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(crate::aws::describe(&e))));
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct RulesResponse {
    #[serde(default)]
    data: Vec<ExistingRule>,
}

/// Rules requests: attempts before giving up (the waits between them follow
/// X's schedule, as the stream's do: 5 s, 10 s, 20 s after HTTP errors).
const RULES_ATTEMPTS: u32 = 4;
/// A rules request, connection included, that takes longer is a network error.
const RULES_TIMEOUT: Duration = Duration::from_secs(30);
/// What is kept of an answer's body: rules listings are small, error bodies smaller.
const BODY_LIMIT: usize = 1 << 20;

impl XApi {
    pub fn new(base: &str, token: BearerToken, endpoint: Endpoint) -> anyhow::Result<Self> {
        Self::with_proxies(base, token, endpoint, &Matcher::from_env())
    }

    fn with_proxies(base: &str, token: BearerToken, endpoint: Endpoint, proxies: &Matcher) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/');
        let uri = |path_and_query: &str| -> anyhow::Result<Uri> {
            let uri: Uri = format!("{base}{path_and_query}")
                .parse()
                .map_err(|e| anyhow::anyhow!("--x-api-url {base:?} is not a URL: {e}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                anyhow::bail!("--x-api-url {base:?} is not an http:// or https:// URL");
            }
            Ok(uri)
        };
        let stream_uri = uri(&format!("{}?{}", endpoint.path(), query_string(STREAM_QUERY)))?;
        let rules_uri = uri(RULES_PATH)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(Route::to(proxies.intercept(&stream_uri)));
        Ok(Self { connector, stream_uri, rules_uri, token })
    }

    /// Connects and sends one request; the answer's head, and its body with
    /// the connection.
    ///
    /// An answer the server closes the connection right after (as load
    /// balancers do after an error status) is still an answer: hyper hands a
    /// response it has read to the request's future even when the
    /// connection then ends, or fails on the close racing its read, so the
    /// connection's end is not taken for "no answer" until that future says so.
    async fn exchange(
        &self,
        method: hyper::Method,
        uri: &Uri,
        body: Option<Vec<u8>>,
    ) -> Result<(hyper::http::response::Parts, Streaming), String> {
        let describe = |e: &(dyn std::error::Error + 'static)| crate::aws::describe(e);
        let mut connector = self.connector.clone();
        futures::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(|e| describe(&*e))?;
        let io = connector.call(uri.clone()).await.map_err(|e| describe(&*e))?;
        let (mut requests, mut connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| describe(&e))?;
        let mut auth = HeaderValue::try_from(format!("Bearer {}", self.token.expose()))
            .map_err(|_| "the bearer token is not a valid HTTP header value".to_owned())?;
        auth.set_sensitive(true);
        let authority = uri.authority().map_or("", |a| a.as_str());
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, authority)
            .header(header::AUTHORIZATION, auth)
            .header(header::USER_AGENT, USER_AGENT);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
        // The connection is driven here until the head arrives, then by the body's reader.
        let sending = requests.send_request(request);
        tokio::pin!(sending);
        let (response, connection) = tokio::select! {
            biased;
            response = &mut sending => (response.map_err(|e| describe(&e))?, Some(connection)),
            ended = &mut connection => {
                // Dropping the ended connection settles the request's future:
                // with the answer it read, or with "closed before answering".
                drop(connection);
                match sending.await {
                    Ok(response) => (response, None),
                    Err(e) => {
                        return Err(match ended {
                            Err(ended) => describe(&ended),
                            Ok(()) if e.is_canceled() || e.is_incomplete_message() => {
                                "the server closed the connection before answering".to_owned()
                            }
                            Ok(()) => describe(&e),
                        })
                    }
                }
            }
        };
        let (head, body) = response.into_parts();
        Ok((head, Streaming { body, connection, _requests: requests }))
    }

    /// One request and its whole answer; a failure as the schedule classifies it.
    async fn call(
        &self,
        method: hyper::Method,
        uri: &Uri,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Vec<u8>, ConnectError> {
        let network = |detail: String| ConnectError::Retry {
            reason: Reconnect::Network,
            detail: format!("{what}: {detail}"),
            reset_in: None,
        };
        let answer = async {
            let (head, body) = self.exchange(method, uri, body).await.map_err(network)?;
            let status = head.status.as_u16();
            let read = body.read_to_end(BODY_LIMIT).await;
            if (200..300).contains(&status) {
                return read.map_err(|(_, e)| network(e));
            }
            let body = read.unwrap_or_else(|(partial, _)| partial);
            Err(refusal(status, &head.headers, &body, Some(what)))
        };
        tokio::time::timeout(RULES_TIMEOUT, answer)
            .await
            .unwrap_or_else(|_| Err(network(format!("no answer within {RULES_TIMEOUT:?}"))))
    }

    /// Makes X's rules the wanted ones (see [`plan_rules`]); returns what
    /// changed, or `None` when `stop` came first. Refusals and network errors
    /// are retried on X's schedule (a `429` waits for its reset), up to
    /// 4 attempts (`RULES_ATTEMPTS`); a `401`, `403` or refused rule is final.
    pub async fn sync_rules(
        &self,
        wanted: &[Rule],
        keep_others: bool,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<RulesPlan>> {
        let mut backoff = Backoff::default();
        for attempt in 1.. {
            let (reason, detail, reset_in) = match self.try_sync_rules(wanted, keep_others).await {
                Ok(plan) => return Ok(Some(plan)),
                Err(ConnectError::Fatal(detail)) => anyhow::bail!(detail),
                Err(ConnectError::Retry { reason, detail, reset_in }) => (reason, detail, reset_in),
            };
            if attempt >= RULES_ATTEMPTS {
                anyhow::bail!("{detail} (gave up after {attempt} attempts)");
            }
            let delay = backoff.next(reason, reset_in);
            tracing::warn!(reason = reason.label(), %detail, delay_ms = delay.as_millis() as u64, "retrying the stream rules");
            tokio::select! {
                _ = stop.cancelled() => return Ok(None),
                _ = tokio::time::sleep(delay) => {}
            }
        }
        unreachable!("the attempts are counted until one returns")
    }

    async fn try_sync_rules(&self, wanted: &[Rule], keep_others: bool) -> Result<RulesPlan, ConnectError> {
        let invalid = |what: &str, e: serde_json::Error| {
            ConnectError::Fatal(format!("{what}: the X API's answer is not what it documents: {e}"))
        };
        let listed = self.call(hyper::Method::GET, &self.rules_uri, None, "listing the stream rules").await?;
        let existing: RulesResponse =
            serde_json::from_slice(&listed).map_err(|e| invalid("listing the stream rules", e))?;
        let plan = plan_rules(&existing.data, wanted, keep_others);
        if !plan.delete.is_empty() {
            let ids: Vec<&str> = plan.delete.iter().map(|r| r.id.as_str()).collect();
            let body = serde_json::json!({ "delete": { "ids": ids } }).to_string().into_bytes();
            self.call(hyper::Method::POST, &self.rules_uri, Some(body), "deleting stream rules").await?;
        }
        if !plan.add.is_empty() {
            let body = serde_json::json!({ "add": plan.add }).to_string().into_bytes();
            let answer = self.call(hyper::Method::POST, &self.rules_uri, Some(body), "adding stream rules").await?;
            // X answers 201 and lists refused rules under `errors` (e.g. an invalid rule).
            let parsed: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
            if let Some(errors) = parsed.get("errors").filter(|e| e.as_array().is_some_and(|a| !a.is_empty())) {
                return Err(ConnectError::Fatal(format!("X refused stream rules: {errors}")));
            }
        }
        Ok(plan)
    }
}

const RULES_PATH: &str = "/2/tweets/search/stream/rules";

/// `name=value&…`, percent-encoded as a form's query is.
fn query_string(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// What a refusal means for the schedule, with X's detail in words: a `429`
/// waits for `x-rate-limit-reset`, a `408`, `420` or `5xx` backs off
/// exponentially, anything else is final. `what` names the request, for rules calls.
fn refusal(status: u16, headers: &hyper::HeaderMap, body: &[u8], what: Option<&str>) -> ConnectError {
    let failure = http_failure(status, body);
    let detail = match what {
        Some(what) => format!("{what}: {failure}"),
        None => failure,
    };
    match status {
        429 => {
            let reset = headers.get("x-rate-limit-reset").and_then(|v| v.to_str().ok());
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            ConnectError::Retry { reason: Reconnect::RateLimited, detail, reset_in: reset_wait(reset, now.as_secs()) }
        }
        408 | 420 | 500.. => ConnectError::Retry { reason: Reconnect::HttpError, detail, reset_in: None },
        _ => ConnectError::Fatal(detail),
    }
}

/// A refused request, in words, with a hint for the usual causes.
fn http_failure(status: u16, body: &[u8]) -> String {
    let detail = String::from_utf8_lossy(&body[..body.len().min(500)]).trim().to_owned();
    let hint = match status {
        401 => "the bearer token was refused (401 Unauthorized); check X_BEARER_TOKEN or --bearer-token-secret: \
                it must be the app's current bearer token"
            .to_owned(),
        403 => "the X API refused access (403 Forbidden); the app's access level does not include this endpoint \
                (the filtered and sampled streams need an access level with streaming), or the app is not in a \
                project"
            .to_owned(),
        _ => format!("the X API answered {status}"),
    };
    if detail.is_empty() {
        hint
    } else {
        format!("{hint}; X said: {detail}")
    }
}

#[async_trait]
impl Connect for XApi {
    async fn connect(&self) -> Result<Body, ConnectError> {
        let network = |detail| ConnectError::Retry { reason: Reconnect::Network, detail, reset_in: None };
        let (head, body) = self.exchange(hyper::Method::GET, &self.stream_uri, None).await.map_err(network)?;
        if head.status == hyper::StatusCode::OK {
            return Ok(body.boxed());
        }
        // An error's body is short; what arrives of it in time is enough for the detail.
        let error = tokio::time::timeout(CONNECT_TIMEOUT, body.read_to_end(4096)).await;
        let error = match error {
            Ok(Ok(body)) | Ok(Err((body, _))) => body,
            Err(_) => Vec::new(),
        };
        Err(refusal(head.status.as_u16(), &head.headers, &error, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an HTTP request's head from `socket`.
    async fn request_head(socket: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt as _;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            socket.read_exact(&mut byte).await.expect("a request head");
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn the_stream_goes_through_the_https_proxy_and_is_read_as_it_was_sent() {
        use tokio::io::AsyncWriteExt as _;
        use tokio::net::{TcpListener, TcpStream};
        let x = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let x_addr = x.local_addr().unwrap();
        let tweets = ["{\"data\":{\"id\":\"1\"}}\r\n", "\r\n", "{\"data\":{\"id\":\"2\"}}\r\n"];
        let server = tokio::spawn(async move {
            let (mut socket, _) = x.accept().await.unwrap();
            let head = request_head(&mut socket).await;
            let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for chunk in tweets {
                answer.extend(format!("{:x}\r\n{chunk}\r\n", chunk.len()).bytes());
            }
            answer.extend(b"0\r\n\r\n");
            socket.write_all(&answer).await.unwrap();
            head
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        let tunnel = tokio::spawn(async move {
            let (mut client, _) = proxy.accept().await.unwrap();
            let head = request_head(&mut client).await;
            let target = head.split_whitespace().nth(1).unwrap().to_owned();
            let mut upstream = TcpStream::connect(&target).await.unwrap();
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            head
        });

        let proxies = Matcher::builder().http(proxy_url).build();
        let token = BearerToken::new("AAAA-secret").unwrap();
        let api = XApi::with_proxies(&format!("http://{x_addr}"), token, Endpoint::Sample, &proxies).unwrap();
        let body: Vec<Bytes> = match api.connect().await {
            Ok(body) => body.map(|chunk| chunk.unwrap()).collect().await,
            Err(e) => panic!("the stream did not open: {e:?}"),
        };
        assert_eq!(body.concat(), tweets.concat().as_bytes());

        // Bounded only so that a stream that went direct fails rather than hangs.
        let connect = tokio::time::timeout(Duration::from_secs(30), tunnel)
            .await
            .expect("the stream's connection went through the proxy")
            .unwrap();
        assert!(connect.starts_with(&format!("CONNECT {x_addr} HTTP/1.1\r\n")), "{connect}");
        assert!(!connect.contains("secret"), "the proxy never sees the token: {connect}");
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /2/tweets/sample/stream?expansions=author_id&"), "{request}");
        assert!(request.contains(&format!("\r\nhost: {x_addr}\r\n")), "{request}");
        assert!(request.contains("\r\nauthorization: bearer aaaa-secret\r\n"), "{request}");
    }

    /// How a raw-socket stand-in frames an error answer's body.
    #[derive(Debug, Clone, Copy)]
    enum Framing {
        /// `content-length: 0`.
        Empty,
        /// No length and not chunked: the body ends where the connection does.
        UntilClose,
        ContentLength,
        Chunked,
    }

    /// An error answer as a load balancer sends it: whole, marked
    /// `connection: close`, the socket closed right after.
    fn closing_answer(status: u16, reason: &str, extra: &str, framing: Framing) -> Vec<u8> {
        let body = format!(r#"{{"title":"{reason}","detail":"stand-in says {status}"}}"#);
        let head =
            format!("HTTP/1.1 {status} {reason}\r\n{extra}connection: close\r\ncontent-type: application/json\r\n");
        let rest = match framing {
            Framing::Empty => "content-length: 0\r\n\r\n".to_owned(),
            Framing::UntilClose => format!("\r\n{body}"),
            Framing::ContentLength => format!("content-length: {}\r\n\r\n{body}", body.len()),
            Framing::Chunked => {
                let (a, b) = body.split_at(10);
                format!("transfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len())
            }
        };
        (head + &rest).into_bytes()
    }

    /// Serves one connection per answer, in order: reads the request's head
    /// first (or not: then the close races the client's request and its read),
    /// writes the answer whole and closes at once. Returns the base URL and the
    /// request heads it read.
    async fn closing_server(answers: Vec<(Vec<u8>, bool)>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let mut heads = Vec::new();
            for (answer, read_first) in answers {
                let (mut socket, _) = listener.accept().await.unwrap();
                if read_first {
                    heads.push(request_head(&mut socket).await);
                }
                socket.write_all(&answer).await.unwrap();
                drop(socket);
            }
            heads
        });
        (base, served)
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[tokio::test]
    async fn an_error_answer_the_server_closes_at_once_is_classified_by_its_status() {
        let framings = [Framing::Empty, Framing::UntilClose, Framing::ContentLength, Framing::Chunked];
        for read_first in [true, false] {
            for framing in framings {
                let reset = unix_now() + 3;
                let answers = vec![
                    (
                        closing_answer(429, "Too Many Requests", &format!("x-rate-limit-reset: {reset}\r\n"), framing),
                        read_first,
                    ),
                    (closing_answer(503, "Service Unavailable", "", framing), read_first),
                    (closing_answer(401, "Unauthorized", "", framing), read_first),
                ];
                let (base, served) = closing_server(answers).await;
                let api = XApi::new(&base, BearerToken::new("t").unwrap(), Endpoint::Filtered).unwrap();
                let case = format!("{framing:?}, request read first: {read_first}");
                match api.connect().await {
                    Err(ConnectError::Retry { reason: Reconnect::RateLimited, reset_in: Some(wait), detail }) => {
                        // Until the reset, plus a second for clock skew.
                        assert!(wait >= Duration::from_secs(3) && wait <= Duration::from_secs(4), "{case}: {wait:?}");
                        assert!(detail.contains("429"), "{case}: {detail}");
                    }
                    other => panic!("{case}: a 429 is rate limiting with its reset time, not {:?}", other.err()),
                }
                match api.connect().await {
                    Err(ConnectError::Retry { reason: Reconnect::HttpError, reset_in: None, detail }) => {
                        assert!(detail.contains("503"), "{case}: {detail}");
                    }
                    other => panic!("{case}: a 503 is an HTTP error, not {:?}", other.err()),
                }
                match api.connect().await {
                    Err(ConnectError::Fatal(detail)) => {
                        assert!(
                            detail.contains("401 Unauthorized") && detail.contains("X_BEARER_TOKEN"),
                            "{case}: {detail}"
                        );
                        if read_first && !matches!(framing, Framing::Empty) {
                            assert!(detail.contains("stand-in says 401"), "{case}: X's detail is kept: {detail}");
                        }
                    }
                    other => panic!("{case}: a 401 is fatal, not {:?}", other.err()),
                }
                served.await.unwrap();
            }
        }
    }
}
