//! A bare hyper 1.x proxy (HTTP/1.1 and h2c downstream, and both over TLS; HTTP/1.1
//! upstream): the floor of Portico's architecture, measured side by side with Portico and
//! NGINX by `bench/run.sh --binary` (see bench/README.md).
//!
//! It takes Portico's command line (`run -c FILE ...`), reads the first listener's address,
//! the `tls` listener's address, certificate, key and cipher suite if there is one, and the
//! first cluster's first endpoint from that file (bench/tools/benchlib.py's layout), and
//! forwards every request as it came to a pool of kept-alive upstream connections, and
//! every response as it came back: no routing, no header added or removed, no timeout, no
//! metrics, no connection guard. One single-threaded runtime, as Portico with `workers: 1`.
//! TLS is rustls 0.23 on ring through tokio-rustls, as Portico's: ALPN `h2` or `http/1.1`
//! picks hyper's server for the connection, the listed suite is the only one offered.
//! A connection returns to the pool when its response body has ended, as in Portico.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

type Pool = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `validate FILE`, as run.sh asks Portico: the file is read as for `run`, then nothing
    // is served.
    let validate = args.get(1).is_some_and(|a| a == "validate");
    let file = if validate {
        args.get(2)
    } else {
        args.iter()
            .position(|a| a == "-c" || a == "--config")
            .and_then(|i| args.get(i + 1))
    }
    .expect("usage: bare_proxy run -c FILE | bare_proxy validate FILE");
    let text = std::fs::read_to_string(file).expect("config file");
    let listen = value_after(&text, "address:").expect("a listener address");
    let origin = value_after(&text, "endpoints: [").expect("a cluster endpoint");
    let listen: SocketAddr = listen.parse().expect("listener address");
    let origin: SocketAddr = origin.parse().expect("endpoint address");
    let tls = text.find("- name: tls").map(|at| tls_listener(&text[at..]));
    if validate {
        return;
    }
    let pool: Pool = Arc::default();
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime")
        .block_on(async move {
            if let Some((address, acceptor)) = tls {
                tokio::spawn(serve(address, Some(acceptor), origin, pool.clone()));
            }
            serve(listen, None, origin, pool).await
        });
}

/// The TLS listener of benchlib.py's config (`section` starts at its `- name: tls`): its
/// address, and an acceptor with its certificate, key and the suite it lists (TLS 1.3 and
/// 1.2 as Portico's default, ALPN `h2` first as Portico's).
fn tls_listener(section: &str) -> (SocketAddr, TlsAcceptor) {
    let address = value_after(section, "address:").expect("the tls listener's address");
    let cert = value_after(section, "cert:").expect("a certificate");
    let key = value_after(section, "key:").expect("a key");
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suite) = value_after(section, "cipher_suites: [") {
        // The IANA name (TLS_AES_128_GCM_SHA256); rustls spells TLS 1.3's with `TLS13_`.
        provider
            .cipher_suites
            .retain(|s| format!("{:?}", s.suite()).replacen("TLS13_", "TLS_", 1) == suite);
        assert!(!provider.cipher_suites.is_empty(), "unknown suite {suite}");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let address = address.parse().expect("tls listener address");
    (address, TlsAcceptor::from(Arc::new(config)))
}

/// The text after the first `key` up to the end of its value (`]`, `,`, space or newline).
fn value_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start();
    let end = rest.find([']', ',', ' ', '\n']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// Accept connections on `listen`: over TLS with `tls` (ALPN picks the protocol), else
/// cleartext (the h2c preface does).
async fn serve(listen: SocketAddr, tls: Option<TlsAcceptor>, origin: SocketAddr, pool: Pool) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_connection(stream, h2, origin, pool).await;
                }
                None => {
                    let h2 = starts_with_h2_preface(&stream).await;
                    serve_connection(stream, h2, origin, pool).await;
                }
            }
        });
    }
}

/// One client connection on hyper's own server for its protocol, as Portico does.
async fn serve_connection<IO>(io: IO, h2: bool, origin: SocketAddr, pool: Pool)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| forward(req, origin, pool.clone()));
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .await;
    }
}

/// Whether the first bytes the client sent are the HTTP/2 connection preface (peeked, so
/// that the server then reads them itself).
async fn starts_with_h2_preface(stream: &TcpStream) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let mut seen = [0u8; 14];
    loop {
        match stream.peek(&mut seen).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if !PREFACE.starts_with(&seen[..n]) => return false,
            Ok(n) if n == PREFACE.len() => return true,
            Ok(_) => tokio::task::yield_now().await,
        }
    }
}

async fn forward(
    mut req: http::Request<Incoming>,
    origin: SocketAddr,
    pool: Pool,
) -> Result<http::Response<Returning>, Infallible> {
    if req.version() == http::Version::HTTP_2 {
        // The least an HTTP/2 request needs to go out as HTTP/1.1: the authority as Host,
        // the path as the request target.
        *req.version_mut() = http::Version::HTTP_11;
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(http::header::HOST, host);
        }
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_default();
        *req.uri_mut() = target;
    }
    let mut sender = loop {
        let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(mut sender) => {
                if sender.ready().await.is_ok() {
                    break sender;
                }
            }
            None => break connect(origin).await,
        }
    };
    match sender.send_request(req).await {
        Ok(response) => Ok(response.map(|body| Returning {
            body: Some(body),
            sender: Some((sender, pool)),
        })),
        Err(_) => {
            let mut response = http::Response::new(Returning::empty());
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}

async fn connect(origin: SocketAddr) -> SendRequest<Incoming> {
    let stream = TcpStream::connect(origin).await.expect("origin reachable");
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

/// The upstream response body (none for the gateway's own 502); its connection goes back
/// to the pool when it has ended.
struct Returning {
    body: Option<Incoming>,
    sender: Option<(SendRequest<Incoming>, Pool)>,
}

impl Returning {
    fn empty() -> Returning {
        Returning {
            body: None,
            sender: None,
        }
    }

    fn release(&mut self) {
        if let Some((sender, pool)) = self.sender.take() {
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(sender);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.is_end_stream(),
            _ => false,
        };
        if ended {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
