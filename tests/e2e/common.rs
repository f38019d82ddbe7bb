//! Test support: a real gateway on 127.0.0.1:0, real backends, a real client.
//!
//! Nothing here sleeps to synchronise: tests wait on readiness (bound sockets, channels,
//! reload status) and bound every wait with a generous timeout so a bug fails the test
//! instead of hanging it.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::Gateway;
use portico::ReloadHandle;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any single wait in a test: a failure, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub struct TestGateway {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address by name.
    pub listeners: std::collections::HashMap<String, SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub reload: ReloadHandle,
    pub certificates: portico::CertificateReloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Start a gateway from YAML text (listeners should use 127.0.0.1:0).
    pub async fn start(yaml: &str) -> TestGateway {
        let config = portico::config::load_str(yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::start_config(config, None).await
    }

    /// Start from a file, so reloads read it.
    pub async fn start_file(path: PathBuf) -> TestGateway {
        let config = portico::config::load_file(&path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::start_config(config, Some(path)).await
    }

    async fn start_config(config: portico::Config, path: Option<PathBuf>) -> TestGateway {
        let gateway = Gateway::bind(config, path).await.expect("gateway binds");
        let addr = gateway.listeners()[0].1;
        let listeners = gateway.listeners().into_iter().collect();
        let admin = gateway.admin_addr();
        let reload = gateway.reload_handle();
        let certificates = gateway.certificate_reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run(async move {
            let _ = stopped.await;
        }));
        TestGateway {
            addr,
            listeners,
            admin,
            reload,
            certificates,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The address of the listener called `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners[name]
    }

    /// The value of one metric series (`name{labels}`) from the admin listener.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = metrics(self.admin.expect("admin listener")).await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    /// Wait until a counter reaches `expected` (some are counted just after the event the
    /// client sees, such as a connection closing).
    pub async fn wait_metric(&self, series: &str, expected: u64) {
        within(&format!("{series} to reach {expected}"), async {
            loop {
                let value = self.metric(series).await;
                assert!(
                    value <= expected,
                    "{series} is {value}, more than {expected}"
                );
                if value == expected {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Begin shutdown; the returned handle resolves once draining is over.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("gateway still running")
    }

    pub async fn shutdown(mut self) {
        let task = self.begin_shutdown();
        within("gateway shutdown", task)
            .await
            .expect("gateway task");
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(data: impl Into<Bytes>) -> BoxBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A backend on 127.0.0.1:0 serving HTTP/1.1 and h2c with `handler`.
pub async fn backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A backend that answers every request with a JSON description of what it received:
/// `{"name", "method", "path", "query", "version", "headers": {name: [values]}, "body"}`.
pub async fn echo_backend(name: &'static str) -> SocketAddr {
    backend(move |req: Request<Incoming>| async move {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut headers = serde_json::Map::new();
        for key in parts.headers.keys() {
            let values: Vec<serde_json::Value> = parts
                .headers
                .get_all(key)
                .iter()
                .map(|v| {
                    serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned())
                })
                .collect();
            headers.insert(key.as_str().to_string(), values.into());
        }
        let description = serde_json::json!({
            "name": name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        Response::builder()
            .header("content-type", "application/json")
            .header("x-backend", name)
            .body(full(description.to_string()))
            .expect("response")
    })
    .await
}

/// A loopback port with nothing listening on it: bound and never listening, so connections
/// to it are refused and no other socket of the test run (a backend another test starts, an
/// outgoing connection's ephemeral port) can take it over while the test runs.
pub async fn closed_port() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    // Held for the rest of the test process: the port stays reserved.
    std::mem::forget(socket);
    addr
}

/// A loopback port free at the time of the call, for a server the test starts as another
/// process (redis-server) that must bind it itself.
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A response as the test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the gateway's own JSON error shape and returns the error code.
    pub fn error_code(&self) -> String {
        assert_eq!(
            self.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let json = self.json();
        let id = json["error"]["request_id"].as_str().expect("request_id");
        assert!(!id.is_empty(), "request id present");
        assert!(json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        json["error"]["code"].as_str().expect("code").to_string()
    }
}

/// A new HTTP/1.1 client connection to `addr`, its driver running in the background.
pub async fn h1_connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<BoxBody> {
    let stream = within("a connection", TcpStream::connect(addr))
        .await
        .expect("connect");
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream));
    let (sender, conn) = within("a handshake", handshake).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Send one request over a new HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<BoxBody>) -> Reply {
    within("an HTTP/1.1 exchange", async {
        let mut sender = h1_connection(addr).await;
        let response = sender.send_request(req).await.expect("response");
        collect(response).await
    })
    .await
}

/// A config with one cluster `b` at `backend` and one route to it with extra route keys
/// (e.g. `", timeout: 200ms"`).
pub fn single_route(backend: SocketAddr, route_keys: &str) -> String {
    config(&format!(
        "clusters:\n  - {{ name: b, endpoints: [\"{backend}\"] }}\nroutes:\n  - {{ cluster: b{route_keys} }}\n"
    ))
}

/// Send one request over a new h2c (prior knowledge) connection.
pub async fn send_h2(addr: SocketAddr, req: Request<BoxBody>) -> Reply {
    within("an h2c exchange", async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let response = sender.send_request(req).await.expect("response");
        collect(response).await
    })
    .await
}

pub async fn collect(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET `path` with `Host: host` (HTTP/1.1).
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let req = Request::get(path)
        .header("host", host)
        .body(full(""))
        .expect("request");
    send(addr, req).await
}

/// Write raw bytes, then read until the server closes the connection.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    within("a raw exchange", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
}

/// A config with one listener on 127.0.0.1:0, access log off, and the given clusters and
/// routes sections (YAML text, already indented at top level).
pub fn config(clusters_and_routes: &str) -> String {
    format!(
        "access_log: {{ enabled: false }}\nlisteners:\n  - name: public\n    address: 127.0.0.1:0\n{clusters_and_routes}"
    )
}

/// `GET /metrics` from the admin listener.
pub async fn metrics(admin: SocketAddr) -> String {
    get(admin, "admin", "/metrics").await.text()
}

/// Everything a backend received, on every connection, in arrival order.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<u8>>>);

impl Recorder {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("recorder")).into_owned()
    }
}

/// A raw HTTP/1.1 backend that records every byte and answers each bodyless request head
/// with `200 ok` (the tests only let bodyless requests through).
pub async fn recording_backend() -> (SocketAddr, Recorder) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorder = Recorder::default();
    let log = recorder.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    log.0.lock().expect("recorder").extend_from_slice(&buf[..n]);
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = find(&pending, b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, recorder)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Read exactly one response from a raw connection, its body announced by `content-length`
/// (none: empty), leaving the connection open; returns its head and body. Anything after it
/// fails the test.
pub async fn read_response(stream: &mut TcpStream) -> (String, String) {
    within("a response", async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = find(&seen, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().expect("content-length"))
                    })
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    assert_eq!(seen.len(), end + 4 + length, "nothing after the response");
                    let body = String::from_utf8_lossy(&seen[end + 4..]).into_owned();
                    return (head, body);
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed mid-response: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
}

/// One listener with `limits` (YAML flow-map entries), an admin listener for the metrics,
/// and one route to `backend`.
pub fn gateway_config(backend: SocketAddr, limits: &str) -> String {
    format!(
        r#"
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: public
    address: 127.0.0.1:0
    limits: {{ {limits} }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ cluster: b }}
"#
    )
}

/// A WebSocket server on 127.0.0.1:0 that echoes text and binary messages.
pub async fn websocket_echo_backend() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Run a Python script (`python3 -c script args…`, a peer we did not write) to its end;
/// its standard output, once it has exited successfully.
pub async fn python_script(what: &str, script: &str, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new("python3");
    command.arg("-c").arg(script).args(args);
    run_peer(what, command).await
}

/// Run a peer's command to its end; its standard output, once it has exited successfully.
pub async fn run_peer(what: &str, mut command: tokio::process::Command) -> String {
    let output = within(what, command.output()).await.expect("the peer runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
