//! Plain HTTP/1.1 for the little the process asks of servers beside it: the
//! `healthcheck` command's probe and the Lambda Runtime API's `/init/error`
//! (and the tests' scrapes). The same hyper 1 stack as the X API client and the
//! AWS SDK; `http://` only, as both are local.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Sends `method url` with `headers` and `body`; the answer's status and body
/// (lossy UTF-8), or why there is none, within `timeout`.
pub async fn request(
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs are supported here"));
    }
    let mut request = hyper::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).map_err(|e| format!("{url}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let answer = async {
        let response = client.request(request).await.map_err(|e| format!("{url}: {}", crate::aws::describe(&e)))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("{url}: {}", crate::aws::describe(&e)))?;
        Ok((status, String::from_utf8_lossy(&body.to_bytes()).into_owned()))
    };
    tokio::time::timeout(timeout, answer).await.map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}

/// `GET url`: the status and body.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    request(hyper::Method::GET, url, &[], Vec::new(), timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_sent_as_given_and_its_answer_read() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/2018-06-01/runtime/init/error", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            while !String::from_utf8_lossy(&seen).contains("{\"a\":1}") {
                let mut buf = [0u8; 1024];
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
            String::from_utf8(seen).unwrap()
        });
        let headers = [("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")];
        let answer = request(hyper::Method::POST, &url, &headers, b"{\"a\":1}".to_vec(), Duration::from_secs(30)).await;
        assert_eq!(answer, Ok((202, "ok".into())));
        let seen = server.await.unwrap().to_ascii_lowercase();
        assert!(seen.starts_with("post /2018-06-01/runtime/init/error http/1.1\r\n"), "{seen}");
        assert!(seen.contains("lambda-runtime-function-error-type: runtime.initerror\r\n"), "{seen}");
        assert!(get("https://example.com/", Duration::from_secs(1)).await.unwrap_err().contains("only http://"));
    }
}
