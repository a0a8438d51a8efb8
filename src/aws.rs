//! The AWS edge: configuration from the standard chain, and error classes.
//!
//! Region, credentials and endpoints come from `aws-config` alone (`AWS_REGION`,
//! profiles, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KINESIS`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, ...); nothing here overrides them.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::error::display::DisplayErrorContext;

/// An AWS call attempt that has not answered by then is abandoned and retried:
/// a stalled connection must never hold a lease renewal past its fence.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Loads the shared SDK configuration from the standard chain, with attempt
/// timeouts (the SDK sets none by default). The SDK's stalled-stream protection
/// is off: these APIs answer small JSON bodies that the attempt timeout already
/// bounds, and its per-request bookkeeping cost a tenth of the worker's CPU.
///
/// `AWS_CA_BUNDLE`, as the AWS CLI and the other SDKs read it: a PEM file whose
/// certificates are trusted instead of the system's (a TLS-intercepting proxy,
/// a local emulator's TLS port). A file that cannot be used stops the process
/// with a message that names it.
pub async fn load_config() -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts(ATTEMPT_TIMEOUT))
        .stalled_stream_protection(aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled());
    let loader = match std::env::var_os("AWS_CA_BUNDLE").filter(|path| !path.is_empty()) {
        Some(path) => match https_client_trusting(std::path::Path::new(&path)) {
            Ok(client) => loader.http_client(client),
            Err(e) => {
                eprintln!(
                    "error: AWS_CA_BUNDLE={}: {e}\n  hint: point it at a PEM file of CA certificates, or unset it",
                    path.to_string_lossy()
                );
                std::process::exit(2);
            }
        },
        None => loader,
    };
    loader.load().await
}

/// A DynamoDB client for the worker: the SDK's, with every attempt made
/// [`within`](crate::fence::within) a fence checked before it is sent (see
/// [`crate::fence`]).
pub fn dynamodb_client(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(config).interceptor(FenceCheck).build())
}

/// Fails an attempt that would start past the fence of the task that makes it.
#[derive(Debug)]
struct FenceCheck;

/// The error of an attempt refused by the worker's DynamoDB client for starting
/// past its task's fence: the SDK does not retry it.
#[derive(Debug, thiserror::Error)]
#[error("not sent: the lease's fence passed {0:?} ago (another worker may hold it now)")]
pub struct PastFence(pub Duration);

impl aws_smithy_runtime_api::client::interceptors::Intercept for FenceCheck {
    fn name(&self) -> &'static str {
        "FenceCheck"
    }

    fn read_before_attempt(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        match crate::fence::passed() {
            Some(at) => {
                metrics::counter!(crate::metrics::FENCE_TRIPS, "what" => "attempt").increment(1);
                Err(Box::new(PastFence(tokio::time::Instant::now().saturating_duration_since(at))))
            }
            None => Ok(()),
        }
    }
}

/// Connecting gives up after [`ATTEMPT_TIMEOUT`], an attempt after `attempt`.
pub fn timeouts(attempt: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(ATTEMPT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .build()
}

/// The SDK's default HTTPS client (hyper 1, rustls, HTTP/2 by ALPN), trusting
/// only the certificates of the PEM file `bundle`.
fn https_client_trusting(bundle: &std::path::Path) -> Result<SharedHttpClient, String> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let pem = std::fs::read(bundle).map_err(|e| e.to_string())?;
    // Checked here: the SDK panics on a certificate it cannot use.
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {}: {e}", n + 1))?;
        roots.add(cert).map_err(|e| format!("certificate {}: {e}", n + 1))?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    let store = TrustStore::empty().with_native_roots(false).with_pem_certificate(pem);
    let context = TlsContext::builder().with_trust_store(store).build().map_err(|e| e.to_string())?;
    Ok(aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = aws_smithy_http_client::ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context.clone());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(aws_smithy_http_client::proxy::ProxyConfig::from_env()));
        connector.build()
    }))
}

/// What a caller should do about a failed AWS call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Slow down and retry (ProvisionedThroughputExceeded, ThrottlingException, ...).
    Throttled,
    /// Retry with backoff: 5xx, timeouts, dropped connections.
    Transient,
    /// The stream, shard or table does not exist.
    NotFound,
    /// A conditional write lost its race.
    ConditionFailed,
    /// The resource is busy (`ResourceInUseException`): another subscription to
    /// the shard is live, the consumer or table is being created.
    InUse,
    /// The shard iterator expired; get a new one from the last checkpoint.
    ExpiredIterator,
    /// No credentials could be found, or they were refused.
    Credentials,
    /// Nothing answered at the endpoint.
    Unreachable,
    /// The request itself is invalid (ValidationException, ...): retrying the same
    /// request cannot succeed.
    Rejected,
}

impl ErrorClass {
    /// Whether the same call may simply be retried later, with backoff: true for
    /// [`Throttled`](Self::Throttled), [`Transient`](Self::Transient) and
    /// [`Unreachable`](Self::Unreachable). The other classes need handling of
    /// their own (a new iterator, a lost race, a busy resource) or cannot succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient | Self::Unreachable)
    }
}

const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "KMSThrottlingException",
    "TooManyRequestsException",
];

const CREDENTIAL_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "AccessDeniedException",
    "MissingAuthenticationToken",
    "IncompleteSignature",
];

/// Classifies any SDK error by its service code or, without one, by how the call
/// failed. Works on `SdkError<E, R>` of every service.
pub fn classify<E>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> ErrorClass
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            classify_code(ctx.err().code(), status)
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorClass::Transient,
        SdkError::DispatchFailure(failure) => {
            if failure.is_io() {
                ErrorClass::Unreachable
            } else if failure.is_timeout() {
                ErrorClass::Transient
            } else if mentions_credentials(err) {
                ErrorClass::Credentials
            } else {
                ErrorClass::Transient
            }
        }
        _ if mentions_credentials(err) => ErrorClass::Credentials,
        _ => ErrorClass::Rejected,
    }
}

/// Classifies by the service's error code and the HTTP status.
pub fn classify_code(code: Option<&str>, status: u16) -> ErrorClass {
    match code {
        Some(c) if THROTTLING_CODES.contains(&c) => ErrorClass::Throttled,
        Some("ResourceNotFoundException") => ErrorClass::NotFound,
        Some("ConditionalCheckFailedException") => ErrorClass::ConditionFailed,
        Some("ExpiredIteratorException") => ErrorClass::ExpiredIterator,
        Some("ResourceInUseException") => ErrorClass::InUse,
        Some(c) if CREDENTIAL_CODES.contains(&c) => ErrorClass::Credentials,
        _ if status == 429 => ErrorClass::Throttled,
        _ if status >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Rejected,
    }
}

fn mentions_credentials(err: &dyn StdError) -> bool {
    let text = DisplayErrorContext(err).to_string().to_ascii_lowercase();
    text.contains("credential") || text.contains("identity")
}

/// The whole error chain on one line, for logs and messages.
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    DisplayErrorContext(err).to_string()
}

/// The innermost cause's message ("Connection refused (os error 111)"), for
/// one-line messages; credential chains say which providers were tried.
pub fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cause: &(dyn StdError + 'static) = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let message = cause.to_string();
    let lower = message.to_ascii_lowercase();
    if mentions_credentials(err) && (lower.contains("provider") || lower.contains("imds")) {
        return "none found in the environment, the shared profile files, web identity, ECS or EC2 instance metadata"
            .to_owned();
    }
    message
}

/// Where a service is reached, for error messages: the endpoint the SDK resolved
/// from the environment, or the regional AWS default.
#[derive(Debug, Clone)]
pub struct Target {
    /// The service's name in lower case, e.g. `kinesis` or `dynamodb`; it also
    /// names the `AWS_ENDPOINT_URL_<SERVICE>` variable that [`Target::new`] reads.
    pub service: &'static str,
    /// The configured region, or `<none>` when none is set.
    pub region: String,
    /// The endpoint URL from `AWS_ENDPOINT_URL_<SERVICE>`, `AWS_ENDPOINT_URL` or the
    /// SDK config, in that order; `None` means the regional AWS default.
    pub endpoint: Option<String>,
}

impl Target {
    /// Describes where `service` (e.g. `"kinesis"`) is reached with `config`. Reads
    /// `AWS_ENDPOINT_URL_<SERVICE>` first, then `AWS_ENDPOINT_URL`, then the config's
    /// endpoint URL; empty values count as unset.
    pub fn new(service: &'static str, config: &SdkConfig) -> Self {
        let env_name = format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase());
        let endpoint = std::env::var(env_name)
            .ok()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| config.endpoint_url().map(str::to_owned))
            .filter(|s| !s.is_empty());
        Self { service, region: config.region().map(|r| r.to_string()).unwrap_or_else(|| "<none>".into()), endpoint }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(e) => write!(f, "region {}, endpoint {e}", self.region),
            None => write!(f, "region {}, default endpoint", self.region),
        }
    }
}

/// How long a start-up check waits out a slow or throttled service before it
/// gives up. A missing resource, refused credentials or nothing answering at the
/// endpoint fail at once: waiting would not help, and the hint does.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// Runs a start-up check's call until it succeeds, fails for good, or
/// 60 s (`STARTUP_PATIENCE`) are spent on throttling and transient errors (timeouts,
/// 5xx: a service under load, or starting beside the worker).
pub async fn check<T, E, F, Fut>(what: &str, target: Target, mut call: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = Result<T, aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>>,
    >,
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let start = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(500);
    loop {
        let e = match call().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let class = classify(&e);
        let waiting = matches!(class, ErrorClass::Throttled | ErrorClass::Transient);
        if !waiting || start.elapsed() + backoff > STARTUP_PATIENCE {
            return Err(StartupError::from_class(what.to_owned(), &target, class, root_cause(&e)).into());
        }
        tracing::warn!(what, error = %root_cause(&e), retry_in = ?backoff, "start-up check failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(8));
    }
}

/// A start-up check that failed, as one readable line with a hint.
#[derive(Debug, thiserror::Error)]
#[error("{what} ({target}): {problem}\n  hint: {hint}")]
pub struct StartupError {
    /// What was being checked, e.g. `kinesis stream 'tweets'`.
    pub what: String,
    /// Where the service was reached (region and endpoint).
    pub target: Target,
    /// What went wrong, e.g. `not found` or the error's root cause.
    pub problem: String,
    /// What the operator can do about it; printed after `hint:`.
    pub hint: String,
}

impl StartupError {
    /// Explains a failed call on `what` (e.g. "kinesis stream 'tweets'") by its class.
    pub fn from_class(what: String, target: &Target, class: ErrorClass, detail: String) -> Self {
        let (problem, hint) = match class {
            ErrorClass::NotFound => (
                "not found".to_owned(),
                "check the name and AWS_REGION; locally, create it with `deploy/local/resources.py create` \
                 (see docs/local-development.md); in AWS, deploy the stack"
                    .to_owned(),
            ),
            ErrorClass::Credentials => (
                format!("no usable AWS credentials: {detail}"),
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run where an instance/task role \
                 is available (locally any values work, e.g. test/test)"
                    .to_owned(),
            ),
            ErrorClass::Unreachable if detail.to_ascii_lowercase().contains("certificate") => (
                format!("the {} endpoint's TLS certificate is not trusted: {detail}", target.service),
                "set AWS_CA_BUNDLE to a PEM file with the CA that signed it (locally: \
                 $STREAM_WORKER_LOCAL_CA_BUNDLE, printed by deploy/local/emulators.sh)"
                    .to_owned(),
            ),
            ErrorClass::Unreachable => (
                format!("cannot reach the {} endpoint: {detail}", target.service),
                format!(
                    "is the endpoint right and up? locally: eval \"$(deploy/local/emulators.sh start)\" \
                     sets AWS_ENDPOINT_URL_{}",
                    target.service.to_ascii_uppercase()
                ),
            ),
            _ => (detail, "see the error above; transient errors are retried once running".to_owned()),
        };
        Self { what, target: target.clone(), problem, hint }
    }
}

/// DynamoDB's size of an item: attribute names plus values.
pub fn item_size(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    aws_sdk_dynamodb::types::AttributeValue::S(s) | aws_sdk_dynamodb::types::AttributeValue::N(s) => {
                        s.len()
                    }
                    aws_sdk_dynamodb::types::AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
                    aws_sdk_dynamodb::types::AttributeValue::B(b) => b.as_ref().len(),
                    _ => 8,
                }
        })
        .sum()
}

/// The write capacity units a put of `item` costs: its size in KB, rounded up.
pub fn write_units(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> u32 {
    (item_size(item).div_ceil(1024)).max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DynamoDB stand-in that answers every request with a retryable 500 and
    /// records when each arrived.
    fn failing_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>) {
        flaky_endpoint(usize::MAX)
    }

    /// A DynamoDB stand-in that answers its first `failures` requests with a
    /// retryable 500, and `{}` after; records when each arrived.
    fn flaky_endpoint(failures: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>) {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body their Content-Length announces.
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let answered = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(std::time::Instant::now());
                    seen.len()
                };
                let (status, body) = if answered <= failures {
                    (
                        "500 Internal Server Error",
                        r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"down"}"#,
                    )
                } else {
                    ("200 OK", "{}")
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        (url, arrivals)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_start_up_check_waits_out_a_service_that_fails_for_a_while() {
        // Five 500s: more than the SDK's own three attempts, so the check itself
        // must try again.
        let (url, arrivals) = flaky_endpoint(5);
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(&url)
            .load()
            .await;
        let client = aws_sdk_dynamodb::Client::new(&config);
        let target = Target::new("dynamodb", &config);
        check("dynamodb table 't'", target, || client.describe_table().table_name("t").send()).await.unwrap();
        assert_eq!(arrivals.lock().unwrap().len(), 6);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_attempt_is_sent_past_the_fence_of_the_write_that_makes_it() {
        let (url, arrivals) = failing_endpoint();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(&url)
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(30)
                    .with_initial_backoff(Duration::from_millis(20))
                    .with_max_backoff(Duration::from_millis(100)),
            )
            .load()
            .await;
        let client = dynamodb_client(&config);
        let put =
            || client.put_item().table_name("t").item("Id", aws_sdk_dynamodb::types::AttributeValue::S("1".into()));

        // Outside a fence every attempt is made: 30 of them.
        assert!(put().send().await.is_err());
        assert_eq!(arrivals.lock().unwrap().len(), 30);
        arrivals.lock().unwrap().clear();

        // Within a fence 300 ms away, the SDK retries until the fence, and the
        // attempt its backoff releases after it is never sent.
        let fence = crate::fence::Fence::new(tokio::time::Instant::now() + Duration::from_millis(300));
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        let err = crate::fence::within(&fence, put().send()).await.unwrap_err();
        let returned = std::time::Instant::now();
        let message = format!("{}", DisplayErrorContext(&err));
        assert!(message.contains("the lease's fence passed"), "{message}");
        // The call ended on the refused attempt, not on the 30th answer.
        let attempts = arrivals.lock().unwrap().len();
        assert!((2..30).contains(&attempts), "{attempts} attempts");
        assert!(returned >= deadline, "refused {:?} before the fence", deadline - returned);
    }

    #[test]
    fn codes_map_to_classes() {
        assert_eq!(classify_code(Some("ProvisionedThroughputExceededException"), 400), ErrorClass::Throttled);
        assert_eq!(classify_code(Some("ThrottlingException"), 400), ErrorClass::Throttled);
        assert_eq!(classify_code(Some("ResourceNotFoundException"), 400), ErrorClass::NotFound);
        assert_eq!(classify_code(Some("ConditionalCheckFailedException"), 400), ErrorClass::ConditionFailed);
        assert_eq!(classify_code(Some("ExpiredIteratorException"), 400), ErrorClass::ExpiredIterator);
        assert_eq!(classify_code(Some("ResourceInUseException"), 400), ErrorClass::InUse);
        assert_eq!(classify_code(Some("UnrecognizedClientException"), 400), ErrorClass::Credentials);
        assert_eq!(classify_code(Some("ValidationException"), 400), ErrorClass::Rejected);
        assert_eq!(classify_code(Some("InternalFailure"), 500), ErrorClass::Transient);
        assert_eq!(classify_code(None, 503), ErrorClass::Transient);
        assert_eq!(classify_code(None, 429), ErrorClass::Throttled);
    }

    #[test]
    fn startup_errors_name_what_where_and_how_to_fix() {
        let target =
            Target { service: "kinesis", region: "eu-west-1".into(), endpoint: Some("http://127.0.0.1:4567".into()) };
        let not_found =
            StartupError::from_class("kinesis stream 'tweets'".into(), &target, ErrorClass::NotFound, String::new());
        let line = not_found.to_string();
        assert!(
            line.starts_with("kinesis stream 'tweets' (region eu-west-1, endpoint http://127.0.0.1:4567): not found"),
            "{line}"
        );
        assert!(line.contains("hint: check the name and AWS_REGION"), "{line}");

        let unreachable = StartupError::from_class(
            "kinesis stream 'tweets'".into(),
            &target,
            ErrorClass::Unreachable,
            "connection refused".into(),
        )
        .to_string();
        assert!(unreachable.contains("cannot reach the kinesis endpoint: connection refused"), "{unreachable}");
        assert!(unreachable.contains("AWS_ENDPOINT_URL_KINESIS"), "{unreachable}");

        let creds = StartupError::from_class(
            "dynamodb table 'tweets'".into(),
            &target,
            ErrorClass::Credentials,
            "none found".into(),
        )
        .to_string();
        assert!(creds.contains("no usable AWS credentials: none found"), "{creds}");
        assert!(creds.contains("AWS_PROFILE"), "{creds}");
    }
}
