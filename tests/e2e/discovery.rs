//! DNS discovery end to end: a DNS server started by the test on loopback (a few lines of
//! UDP, answering A queries from a list the test changes) and two backends on 127.0.0.1 and
//! 127.0.0.2; endpoints come and go with the answers, and a request in flight to an
//! endpoint that leaves still completes; answers' TTLs are held within `min_ttl..=max_ttl`;
//! a failing server keeps the last addresses; a reload that changes the DNS settings keeps
//! serving the addresses already found.

use crate::balancing::Client;
use crate::common::*;
use http::StatusCode;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

/// What the test's DNS server answers, changed by the test as it goes.
#[derive(Default)]
struct DnsControl {
    /// The A records of every name.
    answers: Mutex<Vec<Ipv4Addr>>,
    /// The TTL of those records, in seconds.
    ttl: AtomicU32,
    /// Answer SERVFAIL instead.
    servfail: AtomicBool,
    /// Drop the queries (a server that does not answer).
    silent: AtomicBool,
    /// A queries received, by name.
    queries: Mutex<HashMap<String, usize>>,
}

impl DnsControl {
    fn set(&self, answers: Vec<Ipv4Addr>) {
        *self.answers.lock().expect("answers") = answers;
    }

    fn queries(&self, name: &str) -> usize {
        self.queries
            .lock()
            .expect("queries")
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

/// A DNS server on 127.0.0.1:0 answering A queries as `control` says (by default: its
/// answers, TTL 0, so the gateway asks again after its `min_ttl`), and AAAA queries with no
/// records.
async fn dns_server(control: Arc<DnsControl>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let query = &buf[..len];
            if len < 12 {
                continue;
            }
            // The question: labels up to the root, then type and class.
            let mut end = 12;
            let mut labels = Vec::new();
            while end < len && query[end] != 0 {
                let label_end = (end + 1 + query[end] as usize).min(len);
                labels.push(String::from_utf8_lossy(&query[end + 1..label_end]).to_string());
                end = label_end;
            }
            let question_end = end + 5;
            if question_end > len {
                continue;
            }
            let qtype = u16::from_be_bytes([query[end + 1], query[end + 2]]);
            if qtype == 1 {
                *control
                    .queries
                    .lock()
                    .expect("queries")
                    .entry(labels.join("."))
                    .or_insert(0) += 1;
            }
            if control.silent.load(Relaxed) {
                continue;
            }
            let servfail = control.servfail.load(Relaxed);
            let records: Vec<Ipv4Addr> = if qtype == 1 && !servfail {
                control.answers.lock().expect("answers").clone()
            } else {
                Vec::new()
            };
            let mut reply = Vec::with_capacity(512);
            reply.extend_from_slice(&query[..2]); // id
                                                  // A response, recursion available; no error or "server failure".
            reply.extend_from_slice(&[0x81, if servfail { 0x82 } else { 0x80 }]);
            reply.extend_from_slice(&[0, 1]);
            reply.extend_from_slice(&(records.len() as u16).to_be_bytes());
            reply.extend_from_slice(&[0, 0, 0, 0]);
            reply.extend_from_slice(&query[12..question_end]);
            for ip in records {
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]); // the name, A, IN
                reply.extend_from_slice(&control.ttl.load(Relaxed).to_be_bytes());
                reply.extend_from_slice(&[0, 4]);
                reply.extend_from_slice(&ip.octets());
            }
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    addr
}

/// A backend on `ip`:`port` (0: any) that names itself, and holds `/hold` requests until
/// `release` has a permit (telling `held` which backend took one).
async fn named_backend(
    ip: Ipv4Addr,
    port: u16,
    name: &'static str,
    release: Arc<tokio::sync::Semaphore>,
    held: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (release, held) = (release.clone(), held.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let (release, held) = (release.clone(), held.clone());
                    async move {
                        if req.uri().path() == "/hold" {
                            let _ = held.send(name);
                            let _permit = release.acquire().await;
                        }
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("x-backend", name)
                                .body(full(name))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Poll `/clusters` until the cluster has `count` endpoints.
async fn wait_endpoints(gw: &TestGateway, count: usize) {
    within(&format!("{count} discovered endpoints"), async {
        loop {
            let clusters = get(gw.admin.expect("admin"), "admin", "/clusters")
                .await
                .json();
            let endpoints = clusters["clusters"][0]["endpoints"]
                .as_array()
                .map_or(0, Vec::len);
            if endpoints == count {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test]
async fn endpoints_follow_dns_answers_and_in_flight_requests_finish() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (held_tx, mut held) = tokio::sync::mpsc::unbounded_channel();
    let localhost = Ipv4Addr::new(127, 0, 0, 1);
    let second = Ipv4Addr::new(127, 0, 0, 2);
    let a = named_backend(localhost, 0, "a", release.clone(), held_tx.clone()).await;
    let b = named_backend(second, a.port(), "b", release.clone(), held_tx).await;
    assert_eq!(a.port(), b.port());
    let answers = Arc::new(DnsControl::default());
    answers.set(vec![localhost]);
    let dns = dns_server(answers.clone()).await;
    let gw = TestGateway::start(&config(&format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
clusters:
  - name: discovered
    endpoints: ["backends.test:{port}"]
    dns: {{ nameservers: ["{dns}"], min_ttl: 20ms, refresh: 20ms }}
routes:
  - {{ cluster: discovered }}
"#,
        port = a.port()
    )))
    .await;

    wait_endpoints(&gw, 1).await;
    let mut client = Client::new(gw.addr).await;
    for _ in 0..4 {
        assert_eq!(client.get("/", &[]).await.headers["x-backend"], "a");
    }

    answers.set(vec![localhost, second]);
    wait_endpoints(&gw, 2).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let reply = client.get("/", &[]).await;
        seen.insert(
            reply.headers["x-backend"]
                .to_str()
                .expect("name")
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 2, "both discovered endpoints get requests");

    // A request in flight to one endpoint; that endpoint leaves the answers.
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { get(addr, "h", "/hold").await });
    let holder = within("the held request", held.recv())
        .await
        .expect("a backend");
    let stays = if holder == "a" { second } else { localhost };
    answers.set(vec![stays]);
    wait_endpoints(&gw, 1).await;
    for _ in 0..4 {
        let reply = client.get("/", &[]).await;
        assert_ne!(
            reply.headers["x-backend"], holder,
            "the removed endpoint gets nothing"
        );
    }
    release.add_permits(1);
    let finished = within("the held request's answer", in_flight)
        .await
        .expect("task");
    assert_eq!(finished.status, StatusCode::OK);
    assert_eq!(finished.headers["x-backend"], holder);

    // No address at all: the cluster answers at once rather than hanging.
    answers.set(Vec::new());
    wait_endpoints(&gw, 0).await;
    let empty = client.get("/", &[]).await;
    assert_eq!(empty.status, StatusCode::BAD_GATEWAY);
    assert_eq!(empty.error_code(), "upstream_connect_failed");
}

/// Write a config with one DNS cluster resolving `backends.test` (`settings`: its `dns`
/// and other keys).
fn write_dns_config(path: &std::path::Path, port: u16, settings: &str) {
    std::fs::write(
        path,
        config(&format!(
            r#"admin: {{ address: 127.0.0.1:0 }}
runtime: {{ watch_interval: 0s }}
clusters:
  - name: discovered
    endpoints: ["backends.test:{port}"]
{settings}
routes:
  - {{ cluster: discovered }}
"#
        )),
    )
    .expect("write config");
}

#[tokio::test]
async fn a_reload_that_changes_dns_settings_keeps_the_endpoints_and_their_state() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (held_tx, _held) = tokio::sync::mpsc::unbounded_channel();
    let localhost = Ipv4Addr::new(127, 0, 0, 1);
    let a = named_backend(localhost, 0, "a", release, held_tx).await;
    let control = Arc::new(DnsControl::default());
    control.set(vec![localhost]);
    let dns = dns_server(control.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    // The health check (TCP, once an hour) makes the cluster count requests per endpoint.
    write_dns_config(
        &path,
        a.port(),
        &format!(
            "    dns: {{ nameservers: [\"{dns}\"], min_ttl: 1h, refresh: 1h }}\n    health_check: {{ type: tcp, interval: 1h }}"
        ),
    );
    let gw = TestGateway::start_file(path.clone()).await;
    wait_endpoints(&gw, 1).await;
    let requests = format!(
        "portico_upstream_endpoint_requests_total{{cluster=\"discovered\",endpoint=\"{a}\"}}"
    );

    // Traffic all along: GETs one after another, each must be answered by the backend.
    let sent = Arc::new(AtomicUsize::new(0));
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let traffic = tokio::spawn({
        let (sent, addr) = (sent.clone(), gw.addr);
        async move {
            let mut client = Client::new(addr).await;
            loop {
                let reply = client.get("/", &[]).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                sent.fetch_add(1, Relaxed);
                if stop.try_recv().is_ok() {
                    return sent.load(Relaxed);
                }
            }
        }
    });
    let reached = |count: usize| {
        let sent = sent.clone();
        within("traffic", async move {
            while sent.load(Relaxed) < count {
                tokio::task::yield_now().await;
            }
        })
    };
    reached(20).await;

    // The DNS server stops answering, and a reload changes the DNS settings and the health
    // check: the new resolver's first lookup cannot answer, so the endpoint it serves
    // meanwhile can only be the one the old resolver found.
    control.silent.store(true, Relaxed);
    write_dns_config(
        &path,
        a.port(),
        &format!(
            "    dns: {{ nameservers: [\"{dns}\"], min_ttl: 2h, refresh: 2h }}\n    health_check: {{ type: tcp, interval: 2h }}"
        ),
    );
    within("a reload", gw.reload.reload())
        .await
        .expect("reload");
    let after_reload = sent.load(Relaxed);
    reached(after_reload + 20).await;
    let _ = stop_tx.send(());
    let total = within("the traffic's end", traffic)
        .await
        .expect("no failed request");

    // The endpoint kept its state: its request count goes on from before the reload.
    assert_eq!(gw.metric(&requests).await, total as u64);
}

/// A DNS cluster of one name on `dns`, with `settings` for its `dns` key.
fn dns_cluster(name: &str, host: &str, port: u16, dns: SocketAddr, settings: &str) -> String {
    format!(
        r#"  - name: {name}
    endpoints: ["{host}:{port}"]
    dns: {{ nameservers: ["{dns}"], {settings} }}
"#
    )
}

#[tokio::test]
async fn answers_ttls_are_held_within_min_ttl_and_max_ttl() {
    let backend = echo_backend("a").await;
    let localhost = Ipv4Addr::new(127, 0, 0, 1);
    // One server gives a day-long TTL, the other a zero TTL.
    let long = Arc::new(DnsControl::default());
    long.set(vec![localhost]);
    long.ttl.store(86_400, Relaxed);
    let zero = Arc::new(DnsControl::default());
    zero.set(vec![localhost]);
    let (long_server, zero_server) = (
        dns_server(long.clone()).await,
        dns_server(zero.clone()).await,
    );
    let _gw = TestGateway::start(&config(&format!(
        "clusters:\n{}{}routes:\n  - {{ cluster: capped }}\n",
        dns_cluster(
            "capped",
            "capped.test",
            backend.port(),
            long_server,
            "min_ttl: 10ms, max_ttl: 20ms, refresh: 1h"
        ),
        dns_cluster(
            "floored",
            "floored.test",
            backend.port(),
            zero_server,
            "min_ttl: 1h, max_ttl: 2h, refresh: 1h"
        ),
    )))
    .await;
    // The day-long TTL is cut to max_ttl: the name is asked again and again.
    within("capped.test asked again", async {
        while long.queries("capped.test") < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Meanwhile the zero TTL was raised to min_ttl (an hour): asked once.
    assert_eq!(zero.queries("floored.test"), 1);
}

#[tokio::test]
async fn a_failing_dns_server_keeps_the_last_addresses() {
    let localhost = Ipv4Addr::new(127, 0, 0, 1);
    let backend = echo_backend("a").await;
    let control = Arc::new(DnsControl::default());
    control.set(vec![localhost]);
    let dns = dns_server(control.clone()).await;
    let gw = TestGateway::start(&config(&format!(
        "admin: {{ address: 127.0.0.1:0 }}\nclusters:\n{}routes:\n  - {{ cluster: discovered }}\n",
        dns_cluster(
            "discovered",
            "backends.test",
            backend.port(),
            dns,
            "min_ttl: 10ms, max_ttl: 10ms, refresh: 10ms"
        ),
    )))
    .await;
    wait_endpoints(&gw, 1).await;
    // SERVFAIL from now on; wait for several failed lookups to have been answered.
    control.servfail.store(true, Relaxed);
    let before = control.queries("backends.test");
    within("failed lookups", async {
        while control.queries("backends.test") < before + 6 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let clusters = get(gw.admin.expect("admin"), "admin", "/clusters")
        .await
        .json();
    assert_eq!(
        clusters["clusters"][0]["endpoints"]
            .as_array()
            .map_or(0, Vec::len),
        1,
        "{clusters}"
    );
    let reply = get(gw.addr, "h", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
