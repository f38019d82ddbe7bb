//! `portico demo`: real backends on loopback and the gateway in front of them.
//!
//! Three small HTTP services start on `127.0.0.1:0` (two instances of `users`, one `reports`
//! service that streams slowly and speaks h2c); the shipped `config/demo.yaml` is loaded
//! with their addresses filled in through its `${PORTICO_DEMO_…}` variables, and the
//! gateway serves it on `127.0.0.1:8080` (admin on `127.0.0.1:9901`). Each backend answers
//! with a JSON description of the request it received, so what the gateway added or
//! rewrote is visible in every `curl`. With certificates (from `portico certs`, or made on
//! the fly by the CLI), a second listener serves the same routes over HTTPS on
//! `127.0.0.1:8443` (HTTP/2 via ALPN, HSTS). A small web page on `127.0.0.1:8090`, another
//! origin, calls the CORS-enabled route `/browser/v1/users` from the browser. The orders API
//! (`/v1/orders`) takes the demo consumer's API key or a token from the gateway's own OAuth2
//! server, whose signing keys live in a temporary directory. The route
//! `/limited/v1/users` allows 5 requests a minute per client address: the printed curl loop
//! shows its `RateLimit` headers and then its 429.
//!
//! A fourth backend is a gRPC service, `helloworld.Greeter` (h2c): the gateway compiles its
//! `.proto` files (embedded, written to a temporary directory the config points at) and
//! exposes it twice — by the `google.api.http` rules of `helloworld_http.proto`
//! (`GET /v1/hello/{name}`) and by auto-mapping the unannotated `helloworld.proto`
//! (`POST /helloworld.Greeter/SayHello`) — while native gRPC calls pass through;
//! [`grpc_hello`] is the small native client `portico grpc-hello` runs.

use crate::config::{self, model, Config, ConfigError};
use crate::dev_certs::DevCerts;
use crate::Gateway;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// The demo config, embedded so `portico demo` works from any directory.
pub(crate) const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");

/// The demo's backends, each on its own loopback port.
pub struct DemoBackends {
    /// The first `users` instance.
    pub users_a: SocketAddr,
    /// The second `users` instance.
    pub users_b: SocketAddr,
    /// The `reports` service (h2c, streams slowly).
    pub reports: SocketAddr,
    /// A web page on another origin (`http://127.0.0.1:8090`) that calls the gateway's
    /// CORS-enabled route with `fetch`.
    pub page: SocketAddr,
    /// The gRPC greeter (h2c).
    pub greeter: SocketAddr,
    /// Where the greeter's `.proto` files were written for the gateway to compile.
    pub protos: std::path::PathBuf,
}

/// The greeter's `.proto` files, as shipped in `config/protos`.
const GREETER_PROTOS: &[(&str, &str)] = &[
    (
        "helloworld.proto",
        include_str!("../config/protos/helloworld.proto"),
    ),
    (
        "helloworld_http.proto",
        include_str!("../config/protos/helloworld_http.proto"),
    ),
];

/// Start the demo backends on `127.0.0.1:0`.
pub async fn start_backends() -> std::io::Result<DemoBackends> {
    let protos = std::env::temp_dir().join(format!("portico-demo-protos-{}", std::process::id()));
    std::fs::create_dir_all(&protos)?;
    for (name, text) in GREETER_PROTOS {
        std::fs::write(protos.join(name), text)?;
    }
    Ok(DemoBackends {
        users_a: spawn_backend("users-a").await?,
        users_b: spawn_backend("users-b").await?,
        reports: spawn_backend("reports").await?,
        page: spawn_page().await?,
        greeter: spawn_greeter().await?,
        protos,
    })
}

/// The demo config with the backends' real addresses, plus an HTTPS listener when `certs`
/// are given. That listener is added here rather than in `config/demo.yaml` because the
/// certificate files only exist once generated, and the shipped file must validate anywhere.
pub fn config(backends: &DemoBackends, certs: Option<&DevCerts>) -> Result<Config, ConfigError> {
    config_on(backends, certs, None)
}

/// [`config`], with the public listener and the admin listener on `addresses` instead of
/// `127.0.0.1:8080` and `:9901` (tests use port 0).
pub fn config_on(
    backends: &DemoBackends,
    certs: Option<&DevCerts>,
    addresses: Option<(SocketAddr, SocketAddr)>,
) -> Result<Config, ConfigError> {
    let env = |name: &str| match name {
        "PORTICO_DEMO_USERS_A" => Some(backends.users_a.to_string()),
        "PORTICO_DEMO_USERS_B" => Some(backends.users_b.to_string()),
        "PORTICO_DEMO_REPORTS" => Some(backends.reports.to_string()),
        // The OAuth2 server's signing keys: made in a temporary directory, never in the
        // working tree.
        "PORTICO_DEMO_SIGNING_KEYS" => Some(
            std::env::temp_dir()
                .join(format!("portico-demo-signing-keys-{}", std::process::id()))
                .display()
                .to_string(),
        ),
        "PORTICO_DEMO_GREETER" => Some(backends.greeter.to_string()),
        "PORTICO_DEMO_PROTOS" => Some(backends.protos.display().to_string()),
        "PORTICO_DEMO_PUBLIC" => addresses.map(|(public, _)| public.to_string()),
        "PORTICO_DEMO_ADMIN" => addresses.map(|(_, admin)| admin.to_string()),
        other => std::env::var(other).ok(),
    };
    let mut config = config::load_str_with_env(DEMO_CONFIG, "config/demo.yaml", &env)?;
    if let Some(certs) = certs {
        config.listeners.push(model::Listener {
            name: "public-tls".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 8443)),
            via: true,
            headers_with_underscores: model::UnderscoreHeaders::default(),
            limits: model::ListenerLimits::default(),
            tls: Some(model::ListenerTls {
                certificates: vec![model::CertificateSource {
                    cert: certs.cert.clone(),
                    key: certs.key.clone(),
                    server_names: Vec::new(),
                }],
                unknown_sni: model::UnknownSni::DefaultCertificate,
                min_version: model::TlsVersion::Tls12,
                handshake_timeout: Duration::from_secs(10),
                cipher_suites: None,
                client_auth: model::ClientAuth::default(),
                hsts: Some(model::Hsts {
                    max_age: Duration::from_secs(300),
                    include_subdomains: false,
                }),
            }),
            redirect_https: None,
        });
    }
    Ok(config)
}

/// What the demo prints: the addresses and the commands to try, each answering as promised.
pub fn instructions(gateway: &Gateway, certs: Option<&DevCerts>) -> String {
    let public = gateway
        .listener_addr("public")
        .map_or_else(|| "127.0.0.1:8080".into(), |a| a.to_string());
    let admin = gateway
        .admin_addr()
        .map_or_else(|| "127.0.0.1:9901".into(), |a| a.to_string());
    let https = https_instructions(gateway, certs);
    let portico = std::env::args()
        .next()
        .filter(|arg0| arg0.contains('/'))
        .unwrap_or_else(|| String::from("portico"));
    format!(
        r#"Portico demo: gateway on http://{public}, admin on http://{admin}
Backends: users x2 (round robin), reports (HTTP/2 cleartext, streams slowly), a gRPC greeter
(h2c); a web page on http://127.0.0.1:8090/ that calls the API from another origin (CORS). Try:

  curl -i http://{public}/v1/users/42 -H 'Host: api.example.com'         # routed, prefix stripped
  curl -s http://{public}/v1/users/42 -H 'Host: api.example.com'         # again: the other instance
  curl -i -X POST http://{public}/v1/users -H 'Host: api.example.com' -d '{{"name":"ada"}}'
  curl -i -X DELETE http://{public}/v1/users/42 -H 'Host: api.example.com'   # 405 + Allow
  curl -i http://{public}/v1/nothing -H 'Host: api.example.com'          # 404, JSON error
  curl -N http://{public}/reports/stream                                  # streamed as it is produced
  curl -i --http2-prior-knowledge http://{public}/reports/summary         # h2c to the gateway
  curl -i 'http://{public}/v1/users/%2e%2e/admin' -H 'Host: api.example.com'   # normalised to /v1/admin: no route, 404
  curl -i http://{public}/browser/v1/users/42 -H 'Origin: http://127.0.0.1:8090'   # CORS headers
  curl -i -X OPTIONS http://{public}/browser/v1/users/42 -H 'Origin: http://127.0.0.1:8090' -H 'Access-Control-Request-Method: PUT' -H 'Access-Control-Request-Headers: content-type'   # preflight answered by the gateway
  curl -i -X OPTIONS http://{public}/browser/v1/users/42 -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: PUT'   # 403, no CORS headers
  # In a browser, open http://127.0.0.1:8090/ : a page on another origin calls the API with fetch

Auth (consumer acme-mobile: API key pk_demo_acme_mobile, client secret sk_demo_acme_mobile):

  curl -i http://{public}/v1/orders/7 -H 'Host: api.example.com'                 # 401 + WWW-Authenticate
  curl -i http://{public}/v1/orders/7 -H 'Host: api.example.com' -H 'x-api-key: pk_demo_acme_mobile'   # 200, x-consumer-id reaches the backend
  TOKEN=$(curl -s -u acme-mobile:sk_demo_acme_mobile -d grant_type=client_credentials http://{public}/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -i http://{public}/v1/orders/7 -H 'Host: api.example.com' -H "Authorization: Bearer $TOKEN"   # 200, the same consumer
  curl -i http://{public}/v1/admin/orders -H 'Host: api.example.com' -H "Authorization: Bearer $TOKEN"   # 403 insufficient_scope
  curl -s http://{public}/.well-known/jwks.json                                  # the gateway's public signing keys
  curl -s http://{admin}/metrics | grep portico_auth_total

Rate limits (5 requests a minute per client address):

  for i in 1 2 3 4 5 6; do curl -si http://{public}/limited/v1/users/42 | grep -i -e '^HTTP' -e '^ratelimit' -e '^retry-after'; done   # 5 a minute: the 6th is 429

gRPC: helloworld.Greeter (h2c) from its .proto files, compiled by the gateway at start-up:

  curl -s http://{public}/v1/hello/ada                                     # {{"message":"Hello, ada"}}  (google.api.http rule)
  curl -s -X POST http://{public}/v1/hello -d '{{"name":"bob"}}'             # {{"message":"Hello, bob"}}  (additional binding)
  curl -s -X POST http://{public}/helloworld.Greeter/SayHello -d '{{"name":"cy"}}'   # {{"message":"Hello, cy"}}  (auto-mapped, proto unchanged)
  curl -s 'http://{public}/v1/hello/dee:stream?times=2' -H 'accept: application/x-ndjson'   # {{"message":"Hello, dee (1 of 2)"}}  (one line per message, as they come)
  curl -s http://{public}/v1/hello                                         # "code":"method_not_allowed"  (405, JSON)
  curl -s http://{admin}/openapi.json                                      # "openapi":"3.1.0"  (every binding)
  {portico} grpc-hello --to {public} eve                                   # Hello, eve (grpc-status 0)  (native gRPC through the gateway)

Admin:

  curl -s http://{admin}/metrics | grep portico_requests_total
  curl -s http://{admin}/clusters                                          # endpoints' live state
  curl -s http://{admin}/config
{https}
Ctrl-C stops (in-flight requests are drained first).
"#
    )
}

/// The HTTPS part of the instructions.
fn https_instructions(gateway: &Gateway, certs: Option<&DevCerts>) -> String {
    let (Some(certs), Some(addr)) = (certs, gateway.listener_addr("public-tls")) else {
        return String::new();
    };
    let ca = certs.ca.display();
    let port = addr.port();
    format!(
        r#"
HTTPS on {addr} (certificate from {cert}; HTTP/2 via ALPN, HSTS):

  curl -i --cacert {ca} https://localhost:{port}/v1/users/42 -H 'Host: api.example.com'
  curl -si --cacert {ca} --resolve api.example.com:{port}:127.0.0.1 https://api.example.com:{port}/v1/users/7 | grep -i -e '^HTTP' -e strict-transport
  curl -s http://{admin}/metrics | grep portico_tls_
"#,
        cert = certs.cert.display(),
        admin = gateway
            .admin_addr()
            .map_or_else(|| "127.0.0.1:9901".into(), |a| a.to_string()),
    )
}

/// The page `http://127.0.0.1:8090/` serves: it calls the gateway (same host, port 8080)
/// from its own origin with `fetch` and shows what the browser let it read.
const CORS_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Portico demo: CORS</title>
<style>body{font:15px system-ui,sans-serif;margin:2em;max-width:60em}
pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}</style></head>
<body><h1>A page on another origin calls the API</h1>
<p>This page comes from <code id="origin"></code>; the API is on port 8080, another origin.
The route <code>/browser/v1/users</code> allows this origin with <code>cors</code>, so the
browser lets the page read the answers, the gateway's own errors included.</p>
<div id="out"></div>
<script>
const api = location.protocol + "//" + location.hostname + ":8080/browser/v1/users";
document.getElementById("origin").textContent = location.origin;
async function show(title, url, init) {
  let text;
  try {
    const r = await fetch(url, init);
    text = r.status + " " + r.statusText + "\nx-request-id: " + r.headers.get("x-request-id") +
      "\n\n" + (await r.text());
  } catch (e) {
    text = "the browser refused to let the page read the answer: " + e;
  }
  const h = document.createElement("h3"); h.textContent = title;
  const pre = document.createElement("pre"); pre.textContent = text;
  document.getElementById("out").append(h, pre);
}
(async () => {
  await show("GET (a simple request)", api + "/42");
  await show("PUT with a JSON body (preflighted: the gateway answers the OPTIONS)", api + "/42",
    { method: "PUT", headers: { "content-type": "application/json" }, body: '{"name":"ada"}' });
  await show("PUT over the 64 KiB limit (the gateway's own 413, readable)", api + "/42",
    { method: "PUT", headers: { "content-type": "application/json" }, body: "x".repeat(70000) });
})();
</script></body></html>
"#;

async fn spawn_page() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 8090)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<Incoming>| async {
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(CORS_PAGE.as_bytes())));
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn spawn_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(name, addr, req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

type DemoBody = Either<Full<Bytes>, ChannelBody>;

async fn answer(
    name: &'static str,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<DemoBody>, Infallible> {
    if req.uri().path().ends_with("/stream") {
        return Ok(stream_response());
    }
    let (parts, body) = req.into_parts();
    // Count the body as it streams in; the demo never needs to hold it.
    let mut body = body;
    let mut received = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            received += data.len();
        }
    }
    let pick = |h: &str| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut description = serde_json::json!({
        "service": name,
        "instance": addr.to_string(),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "body_bytes": received,
        "headers": {
            "host": pick("host"),
            "x-forwarded-for": pick("x-forwarded-for"),
            "x-forwarded-proto": pick("x-forwarded-proto"),
            "x-forwarded-host": pick("x-forwarded-host"),
            "x-request-id": pick("x-request-id"),
            "x-platform": pick("x-platform"),
        }
    });
    // What the gateway tells a backend about an authenticated caller, where it does.
    for name in ["x-consumer-id", "x-consumer-plan", "x-consumer-scopes"] {
        if let Some(value) = pick(name) {
            description["headers"][name] = serde_json::Value::from(value);
        }
    }
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(format!(
        "{description:#}\n"
    )))));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Five lines, 300 ms apart, sent as they are produced.
fn stream_response() -> Response<DemoBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 1..=5 {
            if tx
                .send(Bytes::from(format!("report line {i}\n")))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut response = Response::new(Either::Right(ChannelBody(rx)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A body fed by a channel: each message is one data frame, sent when it is produced.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// The demo's gRPC greeter: `helloworld.Greeter` over h2c, `SayHello` and `SayHelloStream`
/// (a reply every 200 ms). Speaks gRPC's framing directly over hyper, as any gRPC server
/// would answer on the wire.
async fn spawn_greeter() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(greet);
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A gRPC response body: frames (messages, then the trailers) as the handler makes them.
struct FrameBody(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl http_body::Body for FrameBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

fn grpc_trailers(status: u32, message: &str) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    if let Ok(value) = HeaderValue::from_str(message) {
        if !message.is_empty() {
            trailers.insert("grpc-message", value);
        }
    }
    trailers
}

/// One greeter call.
async fn greet(req: Request<Incoming>) -> Result<Response<FrameBody>, Infallible> {
    let method = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut response = Response::new(FrameBody(rx));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let request = body.get(5..).and_then(HelloRequest::decode);
    tokio::spawn(async move {
        let Some(request) = request else {
            let _ = tx
                .send(Frame::trailers(grpc_trailers(
                    3,
                    "expected one HelloRequest",
                )))
                .await;
            return;
        };
        match method.as_str() {
            "/helloworld.Greeter/SayHello" => {
                let reply = hello_reply(&format!("Hello, {}", request.name));
                let _ = tx.send(Frame::data(reply)).await;
                let _ = tx.send(Frame::trailers(grpc_trailers(0, ""))).await;
            }
            "/helloworld.Greeter/SayHelloStream" => {
                let times = if request.times > 0 {
                    request.times.min(20)
                } else {
                    3
                };
                for i in 1..=times {
                    let text = format!("Hello, {} ({i} of {times})", request.name);
                    if tx.send(Frame::data(hello_reply(&text))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let _ = tx.send(Frame::trailers(grpc_trailers(0, ""))).await;
            }
            other => {
                let message = format!("unknown method {other}");
                let _ = tx.send(Frame::trailers(grpc_trailers(12, &message))).await;
            }
        }
    });
    Ok(response)
}

/// `helloworld.HelloRequest`: `string name = 1; int32 times = 2;`.
#[derive(Debug, Default)]
struct HelloRequest {
    name: String,
    times: i32,
}

impl HelloRequest {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.name.is_empty() {
            out.push(0x0a);
            put_varint(&mut out, self.name.len() as u64);
            out.extend_from_slice(self.name.as_bytes());
        }
        if self.times != 0 {
            out.push(0x10);
            put_varint(&mut out, self.times as u64);
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<HelloRequest> {
        let mut request = HelloRequest::default();
        while !bytes.is_empty() {
            let key = take_varint(&mut bytes)?;
            match (key >> 3, key & 7) {
                (1, 2) => {
                    request.name = String::from_utf8(take_bytes(&mut bytes)?.to_vec()).ok()?
                }
                (2, 0) => request.times = take_varint(&mut bytes)? as i32,
                (_, 0) => {
                    take_varint(&mut bytes)?;
                }
                (_, 2) => {
                    take_bytes(&mut bytes)?;
                }
                _ => return None,
            }
        }
        Some(request)
    }
}

/// A framed `helloworld.HelloReply { string message = 1; }`.
fn hello_reply(message: &str) -> Bytes {
    let mut payload = vec![0x0a];
    put_varint(&mut payload, message.len() as u64);
    payload.extend_from_slice(message.as_bytes());
    let mut framed = vec![0];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    Bytes::from(framed)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(take_varint(bytes)?).ok()?;
    if bytes.len() < len {
        return None;
    }
    let (taken, rest) = bytes.split_at(len);
    *bytes = rest;
    Some(taken)
}

/// Why [`grpc_hello`] got no greeting.
#[derive(Debug, thiserror::Error)]
pub enum GrpcHelloError {
    /// No HTTP/2 connection to the address.
    #[error("cannot reach {0}: {1}")]
    Connect(SocketAddr, #[source] std::io::Error),
    /// The HTTP/2 exchange failed.
    #[error("the HTTP/2 exchange failed: {0}")]
    Http(#[source] hyper::Error),
    /// The call ended with a gRPC status other than OK.
    #[error("grpc-status {code}: {message}")]
    Status {
        /// The `grpc-status` code.
        code: String,
        /// The `grpc-message`, percent-decoded.
        message: String,
    },
    /// The answer was not a `HelloReply`.
    #[error("the answer is not a helloworld.HelloReply")]
    BadReply,
}

/// Call `helloworld.Greeter/SayHello` at `addr` (a native gRPC call over h2c, as any gRPC
/// client makes it) and return the greeting.
pub async fn grpc_hello(addr: SocketAddr, name: &str) -> Result<String, GrpcHelloError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| GrpcHelloError::Connect(addr, e))?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(GrpcHelloError::Http)?;
    tokio::spawn(connection);
    let payload = HelloRequest {
        name: name.to_string(),
        times: 0,
    }
    .encode();
    let mut framed = vec![0];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    let req = Request::post(format!("http://{addr}/helloworld.Greeter/SayHello"))
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .map_err(|_| GrpcHelloError::BadReply)?;
    let response = sender
        .send_request(req)
        .await
        .map_err(GrpcHelloError::Http)?;
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(GrpcHelloError::Http)?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let bytes = collected.to_bytes();
    // A trailers-only answer carries its status in the headers.
    let status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"));
    let code = status
        .and_then(|v| v.to_str().ok())
        .unwrap_or("2")
        .to_string();
    if code != "0" {
        let message = trailers
            .get("grpc-message")
            .or_else(|| parts.headers.get("grpc-message"))
            .map(|v| crate::grpc::status::percent_decode(v.as_bytes()))
            .unwrap_or_default();
        return Err(GrpcHelloError::Status { code, message });
    }
    let mut reply = bytes.get(5..).ok_or(GrpcHelloError::BadReply)?;
    while !reply.is_empty() {
        let key = take_varint(&mut reply).ok_or(GrpcHelloError::BadReply)?;
        let value = take_bytes(&mut reply).ok_or(GrpcHelloError::BadReply)?;
        if key == 0x0a {
            return String::from_utf8(value.to_vec()).map_err(|_| GrpcHelloError::BadReply);
        }
    }
    Err(GrpcHelloError::BadReply)
}
