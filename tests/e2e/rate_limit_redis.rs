//! Cluster-wide limits through a real `redis-server` that the tests start on a free loopback
//! port: two gateways sharing one Redis admit what the policy says between them (not twice
//! it), headers on 200 and 429, a script flushed from Redis's cache (NOSCRIPT) reloaded, and
//! Redis killed mid-run — each gateway does what its `on_error` declares, nothing hangs, and
//! the shared limit is back when Redis is.
//!
//! Redis itself is the independent witness: the tests read the counts it holds with a RESP
//! client of their own.

use crate::common::*;
use http::{Request, StatusCode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A `redis-server` of the test's own, in a temporary directory, persisting nothing.
struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn redis_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "redis-server is not installed: these tests run a real Redis. Install it with \
             `apt-get install redis-server` (.ci/run does)"
        )
    })
}

impl RedisServer {
    async fn start() -> RedisServer {
        let port = free_port().await;
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// Start (again) on the same port.
    async fn spawn(&mut self) {
        let child = Command::new(redis_binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        within("redis-server to answer PING", async {
            loop {
                if let Ok(reply) = self.try_command(&["PING"]).await {
                    if reply == "+PONG" {
                        return;
                    }
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
    }

    /// Send a signal (`STOP`, `CONT`) to the server.
    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success());
    }

    async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.expect("kill redis-server");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn command(&self, args: &[&str]) -> String {
        within("a Redis command", self.try_command(args))
            .await
            .expect("redis answers")
    }

    /// One command over a new connection: the reply's first line (with `*`: the elements'
    /// lines, joined by newlines).
    async fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut stream = BufReader::new(stream);
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        let line = line.trim_end().to_string();
        if let Some(count) = line.strip_prefix('*') {
            let mut items = Vec::new();
            for _ in 0..count.parse::<usize>().unwrap_or(0) {
                items.push(read_bulk(&mut stream).await?);
            }
            return Ok(items.join("\n"));
        }
        if let Some(len) = line.strip_prefix('$') {
            let len: i64 = len.parse().unwrap_or(-1);
            if len < 0 {
                return Ok(String::from("(nil)"));
            }
            let mut data = vec![0; len as usize + 2];
            stream.read_exact(&mut data).await?;
            return Ok(String::from_utf8_lossy(&data[..len as usize]).into_owned());
        }
        Ok(line)
    }
}

async fn read_bulk(stream: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut header = String::new();
    stream.read_line(&mut header).await?;
    let len: usize = header.trim_end()[1..].parse().unwrap_or(0);
    let mut data = vec![0; len + 2];
    stream.read_exact(&mut data).await?;
    Ok(String::from_utf8_lossy(&data[..len]).into_owned())
}

/// A gateway in front of `backend` whose `/shared` route counts in `redis` and `/alone`
/// route counts locally, both `limit` with key `route`.
fn limited(backend: SocketAddr, redis: &str, on_error: &str, limit: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\n{}",
        config(&format!(
            r#"rate_limiting:
  redis: {{ url: "{redis}", timeout: 500ms, connect_timeout: 500ms, on_error: {on_error} }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - name: shared
    match: {{ path_prefix: /shared }}
    cluster: b
    rate_limit: {{ key: route, store: redis, limits: [{{ name: global, rate: {limit} }}] }}
  - name: alone
    match: {{ path_prefix: /alone }}
    cluster: b
    rate_limit: {{ key: route, limits: [{{ name: global, rate: {limit} }}] }}
"#
        ))
    )
}

async fn call(addr: SocketAddr, path: &str) -> Reply {
    let req = Request::get(path).header("host", "api.test");
    send(addr, req.body(full("")).unwrap()).await
}

/// Fire `count` requests at once at each gateway; how many were admitted in all.
async fn burst(gateways: &[&TestGateway], path: &'static str, count: usize) -> usize {
    let mut tasks = Vec::new();
    for gateway in gateways {
        for _ in 0..count {
            let addr = gateway.addr;
            tasks.push(tokio::spawn(async move { call(addr, path).await.status }));
        }
    }
    let mut admitted = 0;
    for task in tasks {
        let status = within("a request of the burst", task).await.unwrap();
        match status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    admitted
}

#[tokio::test]
async fn two_gateways_sharing_one_redis_admit_the_policy_between_them_not_twice_it() {
    let redis = RedisServer::start().await;
    let backend = echo_backend("b").await;
    let yaml = limited(backend, &redis.url(), "refuse", "10/h");
    let one = TestGateway::start(&yaml).await;
    let two = TestGateway::start(&yaml).await;
    // 25 requests at once at each gateway: the shared limit admits 10 in all.
    assert_eq!(burst(&[&one, &two], "/shared", 25).await, 10);
    // The same limit counted by each gateway alone admits twice that: what sharing prevents.
    assert_eq!(burst(&[&one, &two], "/alone", 25).await, 20);
    // Redis holds the one bucket both gateways counted in.
    let keys = redis.command(&["KEYS", "portico:*"]).await;
    assert_eq!(keys, "portico:{r=shared}:r:shared:global", "{keys}");
    let decisions = one
        .metric("portico_rate_limit_decisions_total{route=\"shared\",outcome=\"allowed\"}")
        .await
        + two
            .metric("portico_rate_limit_decisions_total{route=\"shared\",outcome=\"allowed\"}")
            .await;
    assert_eq!(decisions, 10);
}

#[tokio::test]
async fn headers_come_from_the_shared_count_and_a_flushed_script_is_loaded_again() {
    let redis = RedisServer::start().await;
    let backend = echo_backend("b").await;
    let yaml = limited(backend, &redis.url(), "refuse", "3/min");
    let one = TestGateway::start(&yaml).await;
    let two = TestGateway::start(&yaml).await;
    let first = call(one.addr, "/shared").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["ratelimit-policy"], "\"global\";q=3;w=60");
    let state = first.headers["ratelimit"].to_str().unwrap();
    assert!(state.starts_with("\"global\";r=2;t="), "{state}");
    // Redis forgets every script: the next call gets NOSCRIPT and loads it again.
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).await, "+OK");
    let second = call(two.addr, "/shared").await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(second.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"global\";r=1;t="));
    assert_eq!(call(one.addr, "/shared").await.status, StatusCode::OK);
    let refused = call(two.addr, "/shared").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error_code(), "rate_limited");
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(refused.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"global\";r=0;t="));
    // The theoretical arrival time Redis holds: 3 requests of 20 s each ahead of its clock.
    let tat: u64 = redis
        .command(&["GET", "portico:{r=shared}:r:shared:global"])
        .await
        .parse()
        .unwrap();
    let now = redis.command(&["TIME"]).await;
    let now_us: u64 = {
        let mut parts = now.lines().map(|p| p.parse::<u64>().unwrap());
        parts.next().unwrap() * 1_000_000 + parts.next().unwrap()
    };
    let ahead = tat - now_us;
    assert!((40_000_000..=60_000_000).contains(&ahead), "{ahead}");
}

#[tokio::test]
async fn redis_killed_mid_run_each_gateway_does_what_it_declared_and_recovers() {
    let mut redis = RedisServer::start().await;
    let backend = echo_backend("b").await;
    let open = TestGateway::start(&limited(backend, &redis.url(), "local", "2/h")).await;
    let closed = TestGateway::start(&limited(backend, &redis.url(), "refuse", "2/h")).await;
    assert_eq!(call(open.addr, "/shared").await.status, StatusCode::OK);
    assert_eq!(call(closed.addr, "/shared").await.status, StatusCode::OK);
    assert_eq!(
        call(open.addr, "/shared").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A Redis that does not answer (stopped): each call gives up at the timeout.
    redis.signal("STOP");
    let refused = call(closed.addr, "/shared").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error_code(), "rate_limit_unavailable");
    assert!(
        closed
            .metric("portico_rate_limit_redis_calls_total{outcome=\"timeout\"}")
            .await
            >= 1
    );
    redis.signal("CONT");

    redis.kill().await;
    // Fail closed: 503 with its own code, never a hang.
    let refused = call(closed.addr, "/shared").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error_code(), "rate_limit_unavailable");
    // Fail open: the local safety net counts the same limit in this gateway alone.
    assert_eq!(call(open.addr, "/shared").await.status, StatusCode::OK);
    assert_eq!(call(open.addr, "/shared").await.status, StatusCode::OK);
    assert_eq!(
        call(open.addr, "/shared").await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the safety net limits too"
    );
    assert!(
        open.metric("portico_rate_limit_decisions_total{route=\"shared\",outcome=\"fail_open\"}")
            .await
            >= 3
    );
    assert!(
        closed
            .metric("portico_rate_limit_decisions_total{route=\"shared\",outcome=\"fail_closed\"}")
            .await
            >= 1
    );
    let failures = closed
        .metric("portico_rate_limit_redis_calls_total{outcome=\"error\"}")
        .await
        + closed
            .metric("portico_rate_limit_redis_calls_total{outcome=\"timeout\"}")
            .await;
    assert!(failures >= 1);

    // Redis is back (empty: it persisted nothing): the shared limit is too, once the client
    // has reconnected.
    redis.spawn().await;
    within("the fail-closed gateway to use Redis again", async {
        loop {
            let reply = call(closed.addr, "/shared").await;
            if reply.status == StatusCode::OK {
                return;
            }
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The fail-open gateway reconnects on its own schedule; until it has, its local safety
    // net (spent above) answers 429. Its first answer from Redis is the shared limit's
    // second request: admitted.
    let ok_calls = r#"portico_rate_limit_redis_calls_total{outcome="ok"}"#;
    let before = open.metric(ok_calls).await;
    within("the fail-open gateway to use Redis again", async {
        loop {
            let reply = call(open.addr, "/shared").await;
            if reply.status == StatusCode::OK {
                return;
            }
            assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(
        open.metric(ok_calls).await,
        before + 1,
        "admitted by Redis, not by the safety net"
    );
    assert_eq!(
        call(closed.addr, "/shared").await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "both gateways count in the new Redis: 2 in all"
    );
    let held = redis
        .command(&["GET", "portico:{r=shared}:r:shared:global"])
        .await;
    assert_ne!(held, "(nil)", "the count is Redis's again");
}

/// The one key of the current calendar window of the quota whose keys start with `prefix`.
async fn window_key(redis: &RedisServer, prefix: &str) -> String {
    let found = redis.command(&["KEYS", &format!("{prefix}:w*")]).await;
    assert_eq!(found.lines().count(), 1, "one window key: {found:?}");
    found
}

/// Microseconds that the theoretical arrival time Redis holds at `key` is ahead of its clock.
async fn ahead_us(redis: &RedisServer, key: &str) -> u64 {
    let tat: u64 = redis.command(&["GET", key]).await.parse().unwrap();
    let now = redis.command(&["TIME"]).await;
    let mut parts = now.lines().map(|p| p.parse::<u64>().unwrap());
    let now_us = parts.next().unwrap() * 1_000_000 + parts.next().unwrap();
    tat.saturating_sub(now_us)
}

#[tokio::test]
async fn several_limits_are_decided_in_one_script_and_a_refusal_spends_none_of_them() {
    const ACME: &str = "pk_test_acme_0123456789";
    let redis = RedisServer::start().await;
    let backend = echo_backend("b").await;
    let url = redis.url();
    let gw = TestGateway::start(&format!(
        "admin: {{ address: 127.0.0.1:0 }}\n{}",
        config(&format!(
            r#"consumers:
  - {{ id: acme, plan: gold, api_keys: ["{acme}"] }}
auth_providers:
  - {{ name: keys, api_key: {{ header: x-api-key }} }}
rate_limiting:
  redis: {{ url: "{url}", timeout: 500ms, on_error: refuse }}
  plans:
    - {{ name: gold, store: redis, limits: [{{ name: daily, quota: 1/day }}] }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - name: quota-refuses
    match: {{ path_prefix: /quota-refuses }}
    cluster: b
    rate_limit: {{ key: route, store: redis, limits: [{{ name: hourly, rate: 5/h }}, {{ name: daily, quota: 2/day }}] }}
  - name: rate-refuses
    match: {{ path_prefix: /rate-refuses }}
    cluster: b
    rate_limit: {{ key: route, store: redis, limits: [{{ name: hourly, rate: 2/h }}, {{ name: daily, quota: 10/day }}] }}
  - name: plan
    match: {{ path_prefix: /plan }}
    cluster: b
    auth: {{ providers: [keys] }}
    rate_limit: {{ key: route, store: redis, plan: true, limits: [{{ name: hourly, rate: 10/h }}] }}
"#,
            acme = portico::keys::digest(ACME),
        ))
    ))
    .await;
    let key_of = |route: &str, limit: &str| format!("portico:{{r={route}}}:r:{route}:{limit}");
    // A quota through the script: two a day, the third refused with its headers.
    for remaining in [1, 0] {
        let reply = call(gw.addr, "/quota-refuses").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers["ratelimit-policy"],
            "\"hourly\";q=5;w=3600, \"daily\";q=2;w=86400"
        );
        let state = reply.headers["ratelimit"].to_str().unwrap();
        assert!(
            state.contains(&format!("\"daily\";r={remaining};t=")),
            "{state}"
        );
    }
    let refused = call(gw.addr, "/quota-refuses").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("daily"));
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=86_400).contains(&retry),
        "until the UTC day ends: {retry}"
    );
    // Redis holds the window's count, expiring after the window, and the rate's arrival
    // time of two requests (720 s each), not three: the refused one spent nothing.
    let window = window_key(&redis, &key_of("quota-refuses", "daily")).await;
    assert_eq!(redis.command(&["GET", &window]).await, "2");
    let ttl: u64 = redis
        .command(&["TTL", &window])
        .await
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!((1..=86_400 + 60).contains(&ttl), "{ttl}");
    let ahead = ahead_us(&redis, &key_of("quota-refuses", "hourly")).await;
    assert!((720_000_000..=1_440_000_000).contains(&ahead), "{ahead}");

    // The other way round: the rate refuses the third, and the quota counted two.
    for _ in 0..2 {
        assert_eq!(call(gw.addr, "/rate-refuses").await.status, StatusCode::OK);
    }
    assert_eq!(
        call(gw.addr, "/rate-refuses").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let window = window_key(&redis, &key_of("rate-refuses", "daily")).await;
    assert_eq!(redis.command(&["GET", &window]).await, "2");

    // A route's limit and the caller's plan, both in Redis, in one call: the plan refuses
    // the second request and the route's rate is spent once.
    let plan_call = || {
        let req = Request::get("/plan")
            .header("host", "api.test")
            .header("x-api-key", ACME);
        send(gw.addr, req.body(full("")).unwrap())
    };
    assert_eq!(plan_call().await.status, StatusCode::OK);
    let refused = plan_call().await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gold/daily"));
    let window = window_key(&redis, "portico:{c=acme}:p:gold:gold/daily").await;
    assert_eq!(redis.command(&["GET", &window]).await, "1");
    let ahead = ahead_us(&redis, &key_of("plan", "hourly")).await;
    assert!(
        (1..=360_000_000).contains(&ahead),
        "one request of 360 s: {ahead}"
    );
    let calls = gw
        .metric(r#"portico_rate_limit_redis_calls_total{outcome="ok"}"#)
        .await;
    assert_eq!(
        calls, 8,
        "one Redis call per request, whatever the number of limits"
    );
}
