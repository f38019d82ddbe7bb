//! TLS end to end: real handshakes on loopback with certificates made here by rcgen —
//! SNI, ALPN h2, mTLS, upstream TLS, certificate rotation, redirects, HSTS and bad input.

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::CertReloadStatus;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

// ---------------------------------------------------------------------------------------
// Certificates

/// A test CA that issues server and client certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, common_name: &str, names: &[&str]) -> Issued {
        self.issue_with(common_name, names, |_| {})
    }

    fn issue_with(
        &self,
        common_name: &str,
        names: &[&str],
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        tweak(&mut params);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Write `contents` to `dir/name` atomically (a rename), as a deploy tool would.
fn put(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let staging = dir.join(format!(".{name}.tmp"));
    std::fs::write(&staging, contents).expect("write");
    std::fs::rename(&staging, &path).expect("rename");
    path
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs_of(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certs")
}

fn key_of(pem: &str) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key")
}

/// A client trusting `ca`, offering `alpn`, with an optional client certificate.
fn client_config(ca: &str, alpn: &[&[u8]], identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_of(ca) {
        roots.add(cert).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(certs_of(&id.cert), key_of(&id.key))
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    within("a TLS handshake", async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_string()).expect("server name");
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    })
    .await
}

/// The DNS names of the certificate the server presented.
fn served_names(stream: &TlsStream<TcpStream>) -> Vec<String> {
    let der = &stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0];
    portico::pki::inspect(der).expect("inspect").dns_names
}

/// An HTTP/1.1 sender over a TLS stream.
async fn h1_over(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<BoxBody> {
    let (sender, conn) = within(
        "an HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn request(
    sender: &mut hyper::client::conn::http1::SendRequest<BoxBody>,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<Reply, hyper::Error> {
    let mut req = Request::get(path).header("host", host);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let req = req.body(full("")).expect("request");
    within("an HTTPS exchange", async {
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        Ok(collect(response).await)
    })
    .await
}

/// One GET over a new TLS connection.
async fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
    path: &str,
) -> Reply {
    let stream = tls_connect(addr, config, sni).await.expect("handshake");
    let mut sender = h1_over(stream).await;
    request(&mut sender, sni, path, &[])
        .await
        .expect("response")
}

// ---------------------------------------------------------------------------------------
// Configs

/// Header text shared by the configs below.
fn preamble(watch_interval: &str) -> String {
    format!(
        "runtime: {{ watch_interval: {watch_interval} }}\naccess_log: {{ enabled: false }}\nadmin: {{ address: \"127.0.0.1:0\" }}\n"
    )
}

fn yaml_path(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("json string")
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn sni_picks_exact_and_wildcard_certificates_and_unknown_names_get_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    // The first (default) certificate also covers fallback.example.org, but its
    // server_names leave that name out: SNI never selects it by that name, so a client
    // asking for it proves the default is served for unknown names.
    let a = ca.issue_with("a", &["a.example.com", "fallback.example.org"], |p| {
        p.not_after = rcgen::date_time_ymd(2040, 1, 2);
    });
    let wild = ca.issue("wild", &["*.b.example.com"]);
    let backend = echo_backend("b").await;
    let yaml = format!(
        "{}listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: {}, key: {}, server_names: [a.example.com] }}
        - {{ cert: {}, key: {} }}
clusters:
  - {{ name: b, endpoints: [\"{backend}\"] }}
routes:
  - {{ cluster: b }}
",
        preamble("0s"),
        yaml_path(&put(dir.path(), "a.pem", &a.cert)),
        yaml_path(&put(dir.path(), "a-key.pem", &a.key)),
        yaml_path(&put(dir.path(), "w.pem", &wild.cert)),
        yaml_path(&put(dir.path(), "w-key.pem", &wild.key)),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.listener("secure");
    let client = client_config(&ca.pem(), &[b"http/1.1"], None);

    let stream = tls_connect(addr, client.clone(), "a.example.com")
        .await
        .expect("a");
    assert_eq!(
        served_names(&stream),
        ["a.example.com", "fallback.example.org"]
    );
    let stream = tls_connect(addr, client.clone(), "fallback.example.org")
        .await
        .expect("unknown name, default certificate");
    assert_eq!(
        served_names(&stream),
        ["a.example.com", "fallback.example.org"]
    );
    let stream = tls_connect(addr, client.clone(), "x.b.example.com")
        .await
        .expect("wild");
    assert_eq!(served_names(&stream), ["*.b.example.com"]);
    // One label only: y.x.b.example.com is not covered by the wildcard, so the default
    // certificate (a.example.com) is served — and a verifying client refuses it.
    let refused = tls_connect(addr, client.clone(), "y.x.b.example.com").await;
    assert!(
        refused.is_err(),
        "the default certificate does not cover that name"
    );
    let refused = tls_connect(addr, client.clone(), "other.example.org").await;
    assert!(refused.is_err());

    let reply = https_get(addr, client.clone(), "a.example.com", "/").await;
    assert_eq!(reply.status, StatusCode::OK);

    let expiry = gw
        .metric(
            "portico_tls_certificate_expiry_seconds{listener=\"secure\",certificate=\"0\",name=\"a.example.com\"}",
        )
        .await;
    assert_eq!(expiry, 2_209_075_200, "2040-01-02T00:00:00Z");
    gw.wait_metric(
        "portico_tls_handshakes_total{listener=\"secure\",outcome=\"success\"}",
        4,
    )
    .await;
    // Both clients that refused the default certificate said so with an alert.
    gw.wait_metric(
        "portico_tls_handshakes_total{listener=\"secure\",outcome=\"client_alert\"}",
        2,
    )
    .await;
}

#[tokio::test]
async fn unknown_sni_is_refused_when_configured_and_the_listener_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let a = ca.issue("a", &["a.example.com"]);
    let backend = echo_backend("b").await;
    let yaml = format!(
        "{}listeners:
  - name: strict
    address: 127.0.0.1:0
    tls:
      unknown_sni: refuse
      min_version: 1.3
      certificates:
        - {{ cert: {}, key: {}, server_names: [a.example.com, \"*.alias.example.com\"] }}
clusters:
  - {{ name: b, endpoints: [\"{backend}\"] }}
routes:
  - {{ cluster: b }}
",
        preamble("0s"),
        yaml_path(&put(dir.path(), "a.pem", &a.cert)),
        yaml_path(&put(dir.path(), "a-key.pem", &a.key)),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.listener("strict");
    let client = client_config(&ca.pem(), &[b"http/1.1"], None);

    let error = tls_connect(addr, client.clone(), "unknown.example.org")
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("AccessDenied") || error.to_string().contains("alert"),
        "{error}"
    );
    gw.wait_metric(
        "portico_tls_handshakes_total{listener=\"strict\",outcome=\"unknown_sni\"}",
        1,
    )
    .await;
    // Everyone else is still served; TLS 1.3 only.
    let stream = tls_connect(addr, client.clone(), "a.example.com")
        .await
        .expect("known");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let reply = https_get(addr, client, "a.example.com", "/").await;
    assert_eq!(reply.status, StatusCode::OK);

    // A TLS 1.2-only client finds nothing in common with a 1.3-only listener.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs_of(&ca.pem()).remove(0)).expect("root");
    let old = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(tls_connect(addr, Arc::new(old), "a.example.com")
        .await
        .is_err());
    gw.wait_metric(
        "portico_tls_handshakes_total{listener=\"strict\",outcome=\"incompatible\"}",
        1,
    )
    .await;
    assert!(
        gw.metric("portico_tls_versions_total{listener=\"strict\",version=\"TLSv1.3\"}")
            .await
            >= 2
    );
}

/// The listener for the tests below: one certificate for localhost, the given extra TLS
/// keys (indented for `tls:`), and routes (indented for `routes:`).
fn single_tls_listener(
    dir: &Path,
    ca: &Ca,
    tls_keys: &str,
    backend: SocketAddr,
    routes: &str,
) -> String {
    let server = ca.issue("localhost", &["localhost"]);
    format!(
        "{}listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: {}, key: {} }}
{tls_keys}clusters:
  - {{ name: b, endpoints: [\"{backend}\"] }}
routes:
{routes}",
        preamble("0s"),
        yaml_path(&put(dir, "server.pem", &server.cert)),
        yaml_path(&put(dir, "server-key.pem", &server.key)),
    )
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_reaches_an_http1_backend_with_https_facts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let backend = echo_backend("b").await;
    let yaml = single_tls_listener(
        dir.path(),
        &ca,
        "      hsts: { max_age: 8760h, include_subdomains: true }\n",
        backend,
        "  - { cluster: b }\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.listener("secure");

    let client = client_config(&ca.pem(), &[b"h2", b"http/1.1"], None);
    let stream = tls_connect(addr, client, "localhost")
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = within(
        "an h2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("https://localhost/hello?x=1")
        .header("x-forwarded-proto", "http")
        .body(full(""))
        .expect("request");
    let response = within("an h2 exchange", sender.send_request(req))
        .await
        .expect("response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let reply = collect(response).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let echoed = reply.json();
    assert_eq!(echoed["version"], "HTTP/1.1");
    assert_eq!(echoed["path"], "/hello");
    // The client's claim is replaced by what the gateway knows.
    assert_eq!(
        echoed["headers"]["x-forwarded-proto"],
        serde_json::json!(["https"])
    );

    // HTTP/1.1 over TLS still works and gets the same facts.
    let client = client_config(&ca.pem(), &[b"http/1.1"], None);
    let reply = https_get(addr, client, "localhost", "/").await;
    assert_eq!(
        reply.json()["headers"]["x-forwarded-proto"],
        serde_json::json!(["https"])
    );
    assert!(reply.headers.contains_key("strict-transport-security"));
}

#[tokio::test]
async fn required_client_certificates_admit_trusted_clients_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("someone else's CA");
    let ca_path = put(dir.path(), "clients.pem", &clients.pem());
    let backend = echo_backend("b").await;
    let yaml = single_tls_listener(
        dir.path(),
        &ca,
        &format!(
            "      client_auth: {{ mode: required, ca: {} }}\n",
            yaml_path(&ca_path)
        ),
        backend,
        "  - { cluster: b }\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.listener("secure");

    let trusted = clients.issue("client-1", &["client-1.example.com"]);
    let client = client_config(&ca.pem(), &[b"http/1.1"], Some(&trusted));
    assert_eq!(
        https_get(addr, client.clone(), "localhost", "/")
            .await
            .status,
        StatusCode::OK
    );

    // No certificate, and an untrusted one: with TLS 1.3 the client's side of the handshake
    // may finish before the server has judged its certificate, so the refusal shows either
    // in the handshake or on the first request. Either way no request gets through.
    let untrusted = stranger.issue("intruder", &["intruder.example.com"]);
    for identity in [None, Some(&untrusted)] {
        let config = client_config(&ca.pem(), &[b"http/1.1"], identity);
        if let Ok(stream) = tls_connect(addr, config, "localhost").await {
            let mut sender = h1_over(stream).await;
            let result = request(&mut sender, "localhost", "/", &[]).await;
            assert!(result.is_err(), "request went through: {result:?}");
        }
    }
    let expired = clients.issue_with("old", &["old.example.com"], |p| {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    });
    let config = client_config(&ca.pem(), &[b"http/1.1"], Some(&expired));
    if let Ok(stream) = tls_connect(addr, config, "localhost").await {
        let mut sender = h1_over(stream).await;
        assert!(request(&mut sender, "localhost", "/", &[]).await.is_err());
    }

    gw.wait_metric(
        "portico_tls_handshakes_total{listener=\"secure\",outcome=\"no_client_cert\"}",
        1,
    )
    .await;
    gw.wait_metric(
        "portico_tls_handshakes_total{listener=\"secure\",outcome=\"bad_client_cert\"}",
        2,
    )
    .await;
    // The listener keeps serving trusted clients.
    assert_eq!(
        https_get(addr, client, "localhost", "/").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn optional_client_certificates_are_forwarded_never_spoofed_and_gate_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let ca_path = put(dir.path(), "clients.pem", &clients.pem());
    let backend = echo_backend("b").await;
    let yaml = single_tls_listener(
        dir.path(),
        &ca,
        &format!(
            "      client_auth: {{ mode: optional, ca: {}, forward_header: x-client-cert }}\n",
            yaml_path(&ca_path)
        ),
        backend,
        "  - { cluster: b, match: { path_prefix: /secure }, require_client_cert: true }
  - { cluster: b }
",
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.listener("secure");
    let spoof = [("x-client-cert", "Subject=\"CN=admin\"")];

    // Without a certificate: the spoofed header is removed, the gated route answers 403.
    let anonymous = client_config(&ca.pem(), &[b"http/1.1"], None);
    let stream = tls_connect(addr, anonymous, "localhost")
        .await
        .expect("handshake");
    let mut sender = h1_over(stream).await;
    let reply = request(&mut sender, "localhost", "/", &spoof)
        .await
        .expect("reply");
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.json()["headers"].get("x-client-cert").is_none(),
        "{}",
        reply.text()
    );
    let reply = request(&mut sender, "localhost", "/secure/data", &[])
        .await
        .expect("reply");
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "client_certificate_required");

    // With one: exactly the verified identity goes upstream, and the gated route opens.
    let identity = clients.issue_with("client-1", &["client-1.example.com"], |p| {
        p.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/ns/client-1".try_into().expect("uri"),
        ));
    });
    let known = client_config(&ca.pem(), &[b"http/1.1"], Some(&identity));
    let stream = tls_connect(addr, known, "localhost")
        .await
        .expect("handshake");
    let mut sender = h1_over(stream).await;
    let reply = request(&mut sender, "localhost", "/secure/data", &spoof)
        .await
        .expect("reply");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["headers"]["x-client-cert"],
        serde_json::json!([
            "Subject=\"CN=client-1\";DNS=client-1.example.com;URI=spiffe://example.org/ns/client-1"
        ])
    );
}

/// Routes are shared by every listener, so the identity header a TLS listener forwards must be
/// stripped on the others too: a plaintext client cannot hand a backend a made-up identity.
#[tokio::test]
async fn the_forwarded_client_identity_cannot_be_spoofed_through_another_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let ca_path = put(dir.path(), "clients.pem", &clients.pem());
    let backend = echo_backend("b").await;
    let yaml = single_tls_listener(
        dir.path(),
        &ca,
        &format!(
            "      client_auth: {{ mode: optional, ca: {}, forward_header: x-client-cert }}\n  \
             - {{ name: plain, address: 127.0.0.1:0 }}\n",
            yaml_path(&ca_path)
        ),
        backend,
        "  - { cluster: b }\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let req = http::Request::get("/")
        .header("host", "localhost")
        .header("x-client-cert", "Subject=\"CN=admin\"")
        .body(full(""))
        .expect("request");
    let reply = send(gw.listener("plain"), req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.json()["headers"].get("x-client-cert").is_none(),
        "{}",
        reply.text()
    );
}

/// A TLS backend: answers with its name, the HTTP version and the SNI it was asked for.
async fn tls_backend(name: &'static str, cert: &Issued) -> SocketAddr {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs_of(&cert.cert), key_of(&cert.key))
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = stream.get_ref().1.server_name().unwrap_or("").to_string();
                let service = service_fn(move |req: Request<Incoming>| {
                    let sni = sni.clone();
                    async move {
                        let body = format!("{name} {:?} {} {}", req.version(), sni, req.uri());
                        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_tls_verifies_backends_against_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = Ca::new("private CA");
    let other = Ca::new("other CA");
    let backend_cert = private.issue("backend", &["backend.internal", "127.0.0.1"]);
    let backend = tls_backend("tls-backend", &backend_cert).await;
    let private_ca = yaml_path(&put(dir.path(), "private.pem", &private.pem()));
    let other_ca = yaml_path(&put(dir.path(), "other.pem", &other.pem()));
    let yaml = format!(
        "{}listeners:
  - {{ name: public, address: 127.0.0.1:0 }}
clusters:
  - {{ name: good, endpoints: [\"{backend}\"], tls: {{ ca: {private_ca}, server_name: backend.internal }} }}
  - {{ name: by-ip, endpoints: [\"{backend}\"], protocol: http2, tls: {{ ca: {private_ca} }} }}
  - {{ name: untrusted, endpoints: [\"{backend}\"], tls: {{ ca: {other_ca}, server_name: backend.internal }} }}
  - {{ name: wrong-name, endpoints: [\"{backend}\"], tls: {{ ca: {private_ca}, server_name: elsewhere.internal }} }}
routes:
  - {{ cluster: good, match: {{ path_prefix: /good }} }}
  - {{ cluster: by-ip, match: {{ path_prefix: /h2 }} }}
  - {{ cluster: untrusted, match: {{ path_prefix: /untrusted }} }}
  - {{ cluster: wrong-name, match: {{ path_prefix: /wrong-name }} }}
",
        preamble("0s")
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.listener("public");

    let reply = get(addr, "gw", "/good/x").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.text(),
        "tls-backend HTTP/1.1 backend.internal /good/x"
    );

    // HTTP/2 negotiated by ALPN; an IP endpoint is verified against the IP SAN (no SNI).
    let reply = get(addr, "gw", "/h2/y").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply
            .text()
            .starts_with("tls-backend HTTP/2.0  https://gw/h2/y"),
        "{}",
        reply.text()
    );

    for path in ["/untrusted", "/wrong-name"] {
        let reply = get(addr, "gw", path).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(reply.error_code(), "upstream_tls_failed", "{path}");
    }
    assert_eq!(
        gw.metric("portico_upstream_tls_errors_total{cluster=\"untrusted\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn rotated_certificates_reach_new_connections_while_old_ones_keep_going() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let v1 = ca.issue("v1", &["localhost", "v1.example.com"]);
    let cert = put(dir.path(), "server.pem", &v1.cert);
    let key = put(dir.path(), "server-key.pem", &v1.key);
    let backend = echo_backend("b").await;
    let yaml = format!(
        "{}listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: {}, key: {} }}
clusters:
  - {{ name: b, endpoints: [\"{backend}\"] }}
routes:
  - {{ cluster: b }}
",
        preamble("20ms"),
        yaml_path(&cert),
        yaml_path(&key),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.listener("secure");
    let mut status = gw.certificates.subscribe();
    let client = client_config(&ca.pem(), &[b"http/1.1"], None);

    let old = tls_connect(addr, client.clone(), "localhost")
        .await
        .expect("handshake");
    assert_eq!(served_names(&old), ["localhost", "v1.example.com"]);
    let mut old = h1_over(old).await;
    assert_eq!(
        request(&mut old, "localhost", "/", &[])
            .await
            .expect("reply")
            .status,
        StatusCode::OK
    );

    // Rotate on disk (key first, then the certificate; a check in between sees a mismatch
    // and refuses it, the next one takes the pair). The file watch notices.
    let v2 = ca.issue("v2", &["localhost", "v2.example.com"]);
    put(dir.path(), "server-key.pem", &v2.key);
    put(dir.path(), "server.pem", &v2.cert);
    within(
        "the rotated certificate to be loaded",
        status.wait_for(|s: &CertReloadStatus| s.swaps >= 1),
    )
    .await
    .expect("status");

    let new = tls_connect(addr, client.clone(), "localhost")
        .await
        .expect("handshake");
    assert_eq!(served_names(&new), ["localhost", "v2.example.com"]);
    // The old connection was not disturbed.
    assert_eq!(
        request(&mut old, "localhost", "/", &[])
            .await
            .expect("reply")
            .status,
        StatusCode::OK
    );

    // A broken file is refused; v2 keeps serving, and the refusal is visible.
    let failures_before = status.borrow().failures;
    put(
        dir.path(),
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let seen = within(
        "the broken certificate to be refused",
        status.wait_for(|s: &CertReloadStatus| s.failures > failures_before),
    )
    .await
    .expect("status")
    .clone();
    assert!(seen.last_error.is_some_and(|e| e.contains("server.pem")));
    let after = tls_connect(addr, client.clone(), "localhost")
        .await
        .expect("handshake");
    assert_eq!(served_names(&after), ["localhost", "v2.example.com"]);
    assert!(
        gw.metric("portico_tls_certificate_reloads_total{listener=\"secure\",outcome=\"failure\"}")
            .await
            >= 1
    );

    // The direct entry point (what SIGHUP calls) reports the refusal too.
    assert!(gw.certificates.reload(true).await.is_err());
    let v3 = ca.issue("v3", &["localhost", "v3.example.com"]);
    put(dir.path(), "server-key.pem", &v3.key);
    put(dir.path(), "server.pem", &v3.cert);
    let _ = gw.certificates.reload(true).await.expect("reload");
    let latest = tls_connect(addr, client, "localhost")
        .await
        .expect("handshake");
    assert_eq!(served_names(&latest), ["localhost", "v3.example.com"]);
}

#[tokio::test]
async fn redirect_listener_sends_clients_to_https_and_never_forwards() {
    let nowhere = closed_port().await;
    let yaml = format!(
        "{}listeners:
  - {{ name: redirect, address: 127.0.0.1:0, redirect_https: {{ port: 8443 }} }}
  - {{ name: default-port, address: 127.0.0.1:0, redirect_https: {{ status: 301 }} }}
clusters:
  - {{ name: b, endpoints: [\"{nowhere}\"] }}
routes:
  - {{ cluster: b }}
",
        preamble("0s")
    );
    let gw = TestGateway::start(&yaml).await;

    let reply = get(
        gw.listener("redirect"),
        "shop.example.com:8080",
        "/a/b?x=1&y=%20",
    )
    .await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.headers["location"],
        "https://shop.example.com:8443/a/b?x=1&y=%20"
    );
    let reply = get(gw.listener("default-port"), "[::1]:80", "/").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.headers["location"], "https://[::1]/");
    let reply = get(gw.listener("redirect"), "evil.example/phish", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_host");
}

#[tokio::test]
async fn plaintext_garbage_and_silence_on_a_tls_port_end_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let backend = echo_backend("b").await;
    let yaml = single_tls_listener(
        dir.path(),
        &ca,
        "      handshake_timeout: 300ms\n",
        backend,
        "  - { cluster: b }\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.listener("secure");

    // Plain HTTP: a JSON 400 that says what happened, then the connection closes.
    let answer = raw(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("plain_http_to_tls_port"), "{answer}");

    // Bytes that are neither TLS nor HTTP: closed without a word.
    let answer = raw(addr, &[0x00, 0x01, 0x02, 0x03]).await;
    assert_eq!(answer, "");

    // A client that connects and says nothing is cut at the handshake timeout.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let read = within("the silent client to be cut", silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok_and(|n| n == 0) || buf.is_empty());

    // A TLS client that stalls halfway is cut too: send a truncated ClientHello record.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x80, 0x01])
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = within(
        "the stalled client to be cut",
        stalled.read_to_end(&mut buf),
    )
    .await;

    // Everyone else is still served, and nothing of the above reached the backend.
    let client = client_config(&ca.pem(), &[b"http/1.1"], None);
    assert_eq!(
        https_get(addr, client, "localhost", "/").await.status,
        StatusCode::OK
    );
    for (outcome, count) in [("not_tls", 2), ("timeout", 2), ("success", 1)] {
        let series =
            format!("portico_tls_handshakes_total{{listener=\"secure\",outcome=\"{outcome}\"}}");
        gw.wait_metric(&series, count).await;
    }
    assert_eq!(
        gw.metric("portico_requests_total{route=\"route-0\",class=\"2xx\"}")
            .await,
        1
    );
}

#[test]
fn portico_certs_writes_a_ca_and_a_server_certificate_with_a_private_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("certs");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["certs", "--dir", target.to_str().expect("utf8")])
        .output()
        .expect("run portico");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--cacert"));
    let chain = portico::pki::read_certificates(&target.join("server.pem")).expect("chain");
    let facts = portico::pki::inspect(&chain[0]).expect("leaf");
    assert_eq!(facts.dns_names, ["localhost", "api.example.com"]);
    portico::pki::read_certificates(&target.join("ca.pem")).expect("ca");
    portico::pki::read_private_key(&target.join("server-key.pem")).expect("key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(target.join("server-key.pem"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
    }
}
