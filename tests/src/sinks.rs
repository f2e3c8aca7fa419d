//! Real transports for the workers' tests: an SMTP server and an HTTP
//! endpoint started by the test, on free ports, that record what they
//! receive and can be told to fail.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How a sink answers: fail the next `n` deliveries (n < 0: fail all) with `status`.
#[derive(Clone, Default)]
pub struct Failures(Arc<AtomicI64>);

impl Failures {
    pub fn fail_next(&self, n: i64) {
        self.0.store(n, Ordering::SeqCst);
    }

    pub fn fail_always(&self) {
        self.0.store(-1, Ordering::SeqCst);
    }

    pub fn recover(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    /// True if this delivery must fail.
    fn take(&self) -> bool {
        let n = self.0.load(Ordering::SeqCst);
        if n > 0 {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
        n != 0
    }
}

/// An SMTP server that accepts mail (or answers 451 while failing) and keeps each message.
pub struct SmtpSink {
    pub url: String,
    pub messages: Arc<Mutex<Vec<String>>>,
    pub failures: Failures,
    pub refused: Arc<AtomicI64>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("smtp://{}", listener.local_addr().expect("addr"));
        let messages = Arc::new(Mutex::new(Vec::new()));
        let failures = Failures::default();
        let refused = Arc::new(AtomicI64::new(0));
        let (m, f, r) = (messages.clone(), failures.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (m, f, r) = (m.clone(), f.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = session(socket, m, f, r).await;
                });
            }
        });
        Self { url, messages, failures, refused }
    }

    pub fn received(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    messages: Arc<Mutex<Vec<String>>>,
    failures: Failures,
    refused: Arc<AtomicI64>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink ESMTP\r\n").await?;
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("HELO")
            || upper.starts_with("MAIL")
            || upper.starts_with("RCPT")
            || upper.starts_with("RSET")
            || upper.starts_with("NOOP")
        {
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(&l);
                data.push('\n');
            }
            if failures.take() {
                refused.fetch_add(1, Ordering::SeqCst);
                write.write_all(b"451 4.3.0 try again later\r\n").await?;
            } else {
                if let Ok(mut m) = messages.lock() {
                    m.push(data);
                }
                write.write_all(b"250 2.0.0 queued\r\n").await?;
            }
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            break;
        } else {
            write.write_all(b"502 not implemented\r\n").await?;
        }
    }
    Ok(())
}

/// One webhook call: its idempotency key and body.
#[derive(Debug, Clone)]
pub struct Call {
    pub idempotency_key: String,
    pub body: serde_json::Value,
    pub answered: u16,
}

/// An HTTP endpoint (the shape of an SMS gateway) that records every call.
pub struct WebhookSink {
    pub url: String,
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub failures: Failures,
    /// Status answered while failing.
    pub fail_status: Arc<AtomicI64>,
    /// Requests that arrived (answered or not).
    pub arrivals: Arc<AtomicI64>,
    /// The first request is answered only after this many milliseconds.
    pub hold_first_ms: Arc<AtomicI64>,
}

#[derive(Clone)]
struct SinkState {
    calls: Arc<Mutex<Vec<Call>>>,
    failures: Failures,
    fail_status: Arc<AtomicI64>,
    arrivals: Arc<AtomicI64>,
    hold_first_ms: Arc<AtomicI64>,
}

async fn receive(State(s): State<SinkState>, headers: HeaderMap, body: String) -> StatusCode {
    let first = s.arrivals.fetch_add(1, Ordering::SeqCst) == 0;
    let failing = s.failures.take();
    let status = if failing {
        StatusCode::from_u16(s.fail_status.load(Ordering::SeqCst) as u16)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        StatusCode::OK
    };
    // Recorded on arrival: a caller that dies while the answer is held still counts as a call.
    let call = Call {
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_str(&body).unwrap_or_default(),
        answered: status.as_u16(),
    };
    if let Ok(mut c) = s.calls.lock() {
        c.push(call);
    }
    let hold = s.hold_first_ms.load(Ordering::SeqCst);
    if first && hold > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(hold as u64)).await;
    }
    status
}

impl WebhookSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/sms", listener.local_addr().expect("addr"));
        let state = SinkState {
            calls: Arc::new(Mutex::new(Vec::new())),
            failures: Failures::default(),
            fail_status: Arc::new(AtomicI64::new(503)),
            arrivals: Arc::new(AtomicI64::new(0)),
            hold_first_ms: Arc::new(AtomicI64::new(0)),
        };
        let sink = Self {
            url,
            calls: state.calls.clone(),
            failures: state.failures.clone(),
            fail_status: state.fail_status.clone(),
            arrivals: state.arrivals.clone(),
            hold_first_ms: state.hold_first_ms.clone(),
        };
        let app = axum::Router::new().route("/sms", axum::routing::post(receive)).with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        sink
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Calls answered 2xx.
    pub fn delivered(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.answered < 300).collect()
    }
}

/// An S3-compatible server (moto, from PyPI) with one bucket, started by the test.
pub struct S3Sink {
    pub endpoint: String,
    pub bucket: String,
    child: tokio::process::Child,
}

impl S3Sink {
    pub async fn start() -> Self {
        let port = crate::nats_server::free_port();
        let child = tokio::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("moto_server starts (scripts/test.sh installs moto[server] from PyPI)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let bucket = "receipts".to_owned();
        crate::eventually(std::time::Duration::from_secs(30), "the S3 server to create a bucket", || async {
            let r = client.put(format!("{endpoint}/{bucket}")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        Self { endpoint, bucket, child }
    }

    /// An object's body, read back with a signed S3 request.
    pub async fn get(&self, key: &str) -> Option<String> {
        use object_store::ObjectStore;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .ok()?;
        let object = store.get(&object_store::path::Path::from(key)).await.ok()?;
        let bytes = object.bytes().await.ok()?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
