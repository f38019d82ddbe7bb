//! JWT providers, end to end, with keys and tokens made by PyJWT (an implementation Portico
//! shares no code with) and key sets served by a real HTTP server on loopback: each
//! algorithm family, every way a token can be wrong, unknown `kid`s (refetched once, and at
//! most once per interval under a flood), key rotation, the IdP down, OIDC discovery, and
//! scopes, claims and consumers from tokens.

use crate::common::*;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "https://api.test";

/// Run the PyJWT tool once over a batch of commands.
pub fn jwt_tool(commands: &Value) -> Vec<Value> {
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/jwt_tool.py"
        ))
        .arg("batch")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "jwt_tool failed (is PyJWT installed? .ci/run installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass: right issuer and audience, valid for ten minutes.
pub fn good_claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": now() + 600, "iat": now()})
}

/// A key made by PyJWT: its private PEM, public PEM and public JWK.
#[derive(Clone)]
pub struct Key {
    pub alg: &'static str,
    pub kid: String,
    pub private_pem: String,
    pub public_pem: String,
    pub jwk: Value,
}

pub fn keygen(specs: &[(&'static str, &str)]) -> Vec<Key> {
    let commands: Vec<Value> = specs
        .iter()
        .map(|(alg, kid)| json!(["keygen", alg, kid]))
        .collect();
    jwt_tool(&json!(commands))
        .into_iter()
        .zip(specs)
        .map(|(made, (alg, kid))| Key {
            alg,
            kid: kid.to_string(),
            private_pem: made["private_pem"].as_str().unwrap().to_string(),
            public_pem: made["public_pem"].as_str().unwrap().to_string(),
            jwk: made["jwk"].clone(),
        })
        .collect()
}

/// A `sign` command: `key` signs `claims` with its own algorithm and kid, plus `headers`.
pub fn sign(key: &Key, claims: Value, headers: Value) -> Value {
    json!(["sign", key.alg, key.private_pem, key.kid, claims, headers])
}

pub fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A loopback IdP: serves a key set that tests can change, counts fetches, can be taken
/// down, and serves an OpenID discovery document for itself.
#[derive(Clone)]
pub struct Idp {
    pub addr: SocketAddr,
    pub keys: Arc<Mutex<String>>,
    pub fetches: Arc<AtomicUsize>,
    pub down: Arc<AtomicBool>,
}

impl Idp {
    pub async fn start(keys: String) -> Idp {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (served, counted, is_down) = (keys.clone(), fetches.clone(), down.clone());
        let issuer = Arc::new(Mutex::new(String::new()));
        let own_issuer = issuer.clone();
        let addr = backend(move |req: Request<Incoming>| {
            let (served, counted, is_down, issuer) = (
                served.clone(),
                counted.clone(),
                is_down.clone(),
                own_issuer.clone(),
            );
            async move {
                if is_down.load(Ordering::SeqCst) {
                    return Response::builder().status(503).body(full("down")).unwrap();
                }
                match req.uri().path() {
                    "/jwks" => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let body = served.lock().unwrap().clone();
                        Response::builder()
                            .header("content-type", "application/json")
                            .header("cache-control", "max-age=3600")
                            .body(full(body))
                            .unwrap()
                    }
                    "/.well-known/openid-configuration" => {
                        let issuer = issuer.lock().unwrap().clone();
                        let document = json!({
                            "issuer": issuer,
                            "jwks_uri": format!("{issuer}/jwks"),
                        });
                        Response::new(full(document.to_string()))
                    }
                    _ => Response::builder().status(404).body(full("")).unwrap(),
                }
            }
        })
        .await;
        *issuer.lock().unwrap() = format!("http://{addr}");
        Idp {
            addr,
            keys,
            fetches,
            down,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }
}

/// A listener that must never be contacted: counts connections.
async fn trap() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, hits)
}

/// A gateway with one JWT provider (`extra` adds keys to it) in front of an echo backend;
/// route `api` takes its tokens and forwards the subject and scopes.
async fn gateway(provider: &str, route_auth: &str) -> (TestGateway, SocketAddr) {
    let backend = echo_backend("b").await;
    let yaml = format!(
        r#"access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0" }}
consumers:
  - {{ id: acme, plan: gold, scopes: [orders:read] }}
  - {{ id: gone, enabled: false }}
auth_providers:
  - name: idp
    jwt:
{provider}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - name: api
    cluster: b
    auth:
      providers: [idp]
      forward: {{ subject: x-subject, scopes: x-scopes, consumer: x-consumer-id, plan: x-plan }}
{route_auth}
"#
    );
    (TestGateway::start(&yaml).await, backend)
}

fn remote_provider(idp: &Idp, extra: &str) -> String {
    format!(
        "      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      jwks_url: {}\n{extra}",
        idp.url()
    )
}

async fn call_with(gw: &TestGateway, token: &str) -> Reply {
    let req = Request::get("/orders")
        .header("host", "api.test")
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    send(gw.addr, req).await
}

fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        reply.text()
    );
    assert_eq!(reply.error_code(), "invalid_credentials", "{what}");
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{what}: {challenge}"
    );
}

#[tokio::test]
async fn each_algorithm_family_is_accepted_and_the_token_is_not_forwarded() {
    let keys = keygen(&[
        ("RS256", "rs"),
        ("PS256", "ps"),
        ("ES256", "es"),
        ("ES384", "es384"),
        ("EdDSA", "ed"),
    ]);
    let idp = Idp::start(jwks(&keys.iter().collect::<Vec<_>>())).await;
    let (gw, _) = gateway(&remote_provider(&idp, ""), "").await;
    let commands: Vec<Value> = keys
        .iter()
        .map(|k| sign(k, good_claims(), json!({})))
        .collect();
    let tokens = jwt_tool(&json!(commands));
    for (key, token) in keys.iter().zip(&tokens) {
        let reply = call_with(&gw, token.as_str().unwrap()).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}: {}",
            key.alg,
            reply.text()
        );
        let seen = reply.json();
        assert_eq!(seen["headers"]["x-subject"][0], "user-1", "{}", key.alg);
        assert!(
            seen["headers"].get("authorization").is_none(),
            "token stripped"
        );
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1, "one fetch at start");
}

#[tokio::test]
async fn every_bad_token_is_refused_with_a_challenge_and_its_reason_counted() {
    let keys = keygen(&[("RS256", "rs"), ("ES256", "es"), ("RS256", "rs")]);
    let (rs, es, impostor) = (&keys[0], &keys[1], &keys[2]);
    let idp = Idp::start(jwks(&[rs, es])).await;
    let (trap_addr, trap_hits) = trap().await;
    let (gw, _) = gateway(&remote_provider(&idp, ""), "").await;
    let claims = |change: Value| {
        let mut claims = good_claims();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    let mut es_as_rs = rs.clone();
    es_as_rs.kid = String::from("es");
    let mut attacker = impostor.clone();
    attacker.kid = String::from("attacker");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "expired",
            sign(rs, claims(json!({"exp": now() - 3600})), json!({})),
            "expired",
        ),
        (
            "not yet valid",
            sign(rs, claims(json!({"nbf": now() + 3600})), json!({})),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            sign(rs, claims(json!({"iss": "https://evil.test"})), json!({})),
            "issuer",
        ),
        (
            "missing issuer",
            sign(rs, claims(json!({"iss": null})), json!({})),
            "issuer",
        ),
        (
            "wrong audience",
            sign(rs, claims(json!({"aud": "https://other.test"})), json!({})),
            "audience",
        ),
        (
            "missing audience",
            sign(rs, claims(json!({"aud": null})), json!({})),
            "audience",
        ),
        (
            "missing exp",
            sign(rs, claims(json!({"exp": null})), json!({})),
            "missing_claim",
        ),
        (
            "bad signature",
            sign(impostor, good_claims(), json!({})),
            "bad_signature",
        ),
        ("alg none", json!(["none", good_claims()]), "algorithm"),
        (
            "HS256 keyed with the RSA public key",
            json!([
                "hmac-with-public",
                "HS256",
                rs.public_pem,
                "rs",
                good_claims()
            ]),
            "algorithm",
        ),
        (
            "an RSA signature under the EC key's kid",
            sign(&es_as_rs, good_claims(), json!({})),
            "algorithm",
        ),
        (
            "jku and x5u pointing elsewhere",
            sign(
                &attacker,
                good_claims(),
                json!({"jku": format!("http://{trap_addr}/jwks"), "x5u": format!("http://{trap_addr}/cert"), "jwk": attacker.jwk, "x5c": ["MIIB"]}),
            ),
            "kid_not_found",
        ),
        (
            "unknown crit",
            sign(
                rs,
                good_claims(),
                json!({"crit": ["exp-ext"], "exp-ext": 1}),
            ),
            "unsupported_crit",
        ),
    ];
    let commands: Vec<Value> = cases
        .iter()
        .map(|(_, command, _)| command.clone())
        .collect();
    let tokens = jwt_tool(&json!(commands));
    for (index, ((what, _, reason), token)) in cases.iter().zip(&tokens).enumerate() {
        let reply = call_with(&gw, token.as_str().unwrap()).await;
        assert_refused(&reply, what);
        // Counted under its precise reason: as many as the cases so far with that reason.
        let so_far = cases[..=index]
            .iter()
            .filter(|(_, _, r)| r == reason)
            .count();
        let series = format!("portico_auth_total{{route=\"api\",outcome=\"{reason}\"}}");
        gw.wait_metric(&series, so_far as u64).await;
    }
    // The messages say only what a client may know.
    let expired = call_with(&gw, tokens[0].as_str().unwrap()).await;
    assert_eq!(
        expired.json()["error"]["message"],
        "the access token has expired"
    );
    let forged = call_with(&gw, tokens[7].as_str().unwrap()).await;
    assert_eq!(
        forged.json()["error"]["message"],
        "the access token is not valid"
    );

    // Malformed tokens of several shapes, and one too large to look at.
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(1000)
    );
    for token in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.###.$$$",
        "eyJhbGciOiJSUzI1NiJ9.e30.x",
    ] {
        assert_refused(&call_with(&gw, token).await, token);
    }
    gw.wait_metric(r#"portico_auth_total{route="api",outcome="malformed"}"#, 5)
        .await;
    assert_refused(&call_with(&gw, &huge).await, "oversized");
    gw.wait_metric(r#"portico_auth_total{route="api",outcome="oversized"}"#, 1)
        .await;
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "a token's own key URLs are never fetched"
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refetched_once_and_a_flood_of_them_stays_bounded() {
    let keys = keygen(&[("ES256", "old"), ("ES256", "forger")]);
    let idp = Idp::start(jwks(&[&keys[0]])).await;
    let (gw, _) = gateway(&remote_provider(&idp, ""), "").await;
    let commands: Vec<Value> = (0..40)
        .map(|i| {
            let mut forger = keys[1].clone();
            forger.kid = format!("random-{i}");
            sign(&forger, good_claims(), json!({}))
        })
        .collect();
    let tokens = jwt_tool(&json!(commands));
    let mut flood = Vec::new();
    for token in tokens {
        let addr = gw.addr;
        flood.push(tokio::spawn(async move {
            let req = Request::get("/")
                .header("host", "api.test")
                .header(
                    "authorization",
                    format!("Bearer {}", token.as_str().unwrap()),
                )
                .body(full(""))
                .unwrap();
            send(addr, req).await.status
        }));
    }
    for request in flood {
        assert_eq!(request.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    // One fetch at start, and at most one more for the whole flood (the refetch interval is
    // 10 s by default).
    let fetches = idp.fetches.load(Ordering::SeqCst);
    assert!((1..=2).contains(&fetches), "{fetches} fetches");
    gw.wait_metric(
        r#"portico_auth_total{route="api",outcome="kid_not_found"}"#,
        40,
    )
    .await;
}

/// Keys `k1` (published) and `k2` (not yet), a gateway whose provider may refetch at once,
/// and a token signed by each.
async fn two_keys(alg: &'static str) -> (Vec<Key>, Idp, TestGateway, String, String) {
    let keys = keygen(&[(alg, "k1"), (alg, "k2")]);
    let idp = Idp::start(jwks(&[&keys[0]])).await;
    let (gw, _) = gateway(
        &remote_provider(&idp, "      jwks_refetch_interval: 0s\n"),
        "",
    )
    .await;
    let tokens = jwt_tool(&json!([
        sign(&keys[0], good_claims(), json!({})),
        sign(&keys[1], good_claims(), json!({}))
    ]));
    let text = |i: usize| tokens[i].as_str().unwrap().to_string();
    (keys, idp, gw, text(0), text(1))
}

#[tokio::test]
async fn a_rotated_in_key_is_accepted_once_the_key_set_has_it() {
    let (keys, idp, gw, old, new) = two_keys("RS256").await;
    let (old, new) = (old.as_str(), new.as_str());
    assert_eq!(call_with(&gw, old).await.status, StatusCode::OK);
    assert_refused(&call_with(&gw, new).await, "k2 not published yet");

    // The IdP publishes k2 next to k1: the next token naming k2 makes the gateway fetch.
    *idp.keys.lock().unwrap() = jwks(&[&keys[0], &keys[1]]);
    assert_eq!(call_with(&gw, new).await.status, StatusCode::OK);
    assert_eq!(
        call_with(&gw, old).await.status,
        StatusCode::OK,
        "k1 still good"
    );
    gw.wait_metric(
        r#"portico_jwks_refreshes_total{provider="idp",outcome="success"}"#,
        3,
    )
    .await;
}

#[tokio::test]
async fn with_the_idp_down_the_last_keys_keep_working_and_without_any_it_is_503() {
    let (keys, idp, gw, known, unknown) = two_keys("ES256").await;
    assert_eq!(call_with(&gw, &known).await.status, StatusCode::OK);
    idp.down.store(true, Ordering::SeqCst);
    // An unknown kid tries the IdP, which fails; known keys still verify.
    assert_refused(&call_with(&gw, &unknown).await, "kid unknown, IdP down");
    gw.wait_metric(
        r#"portico_jwks_refreshes_total{provider="idp",outcome="failure"}"#,
        1,
    )
    .await;
    // A token not seen before (so not from the cache), signed by the known key.
    let fresh = jwt_tool(&json!([sign(
        &keys[0],
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "other", "exp": now() + 60}),
        json!({})
    )]));
    assert_eq!(
        call_with(&gw, fresh[0].as_str().unwrap()).await.status,
        StatusCode::OK
    );

    // An IdP that was never reachable: the gateway cannot verify anything, and says so.
    let dead = closed_port().await;
    let (cold, _) = gateway(
        &format!(
            "      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      jwks_url: http://{dead}/jwks\n      fetch_timeout: 500ms\n"
        ),
        "",
    )
    .await;
    let reply = call_with(&cold, &known).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "auth_provider_unavailable");
}

#[tokio::test]
async fn oidc_discovery_finds_the_key_set() {
    let keys = keygen(&[("EdDSA", "d1")]);
    let idp = Idp::start(jwks(&[&keys[0]])).await;
    let issuer = format!("http://{}", idp.addr);
    let (gw, _) = gateway(
        &format!("      issuer: {issuer}\n      audiences: [{AUDIENCE}]\n      discovery: true\n"),
        "",
    )
    .await;
    let mut claims = good_claims();
    claims["iss"] = json!(issuer);
    let tokens = jwt_tool(&json!([sign(&keys[0], claims, json!({}))]));
    let reply = call_with(&gw, tokens[0].as_str().unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn scopes_claims_and_consumers_come_from_the_token() {
    let keys = keygen(&[("ES256", "k")]);
    let idp = Idp::start(jwks(&[&keys[0]])).await;
    let (gw, _) = gateway(
        &remote_provider(&idp, ""),
        "      scopes: [orders:read]\n      claims: { tenant: [t1, t2] }\n",
    )
    .await;
    let with = |extra: Value| {
        let mut claims = good_claims();
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sign(&keys[0], claims, json!({}))
    };
    let tokens = jwt_tool(&json!([
        with(json!({"scope": "orders:read profile", "tenant": "t1"})),
        with(json!({"scp": ["orders:read"], "tenant": "t2"})),
        with(json!({"scope": "profile", "tenant": "t1"})),
        with(json!({"scope": "orders:read", "tenant": "t9"})),
        with(json!({"scope": "orders:read orders:write", "tenant": "t1", "client_id": "acme"})),
        with(json!({"scope": "orders:read", "tenant": "t1", "azp": "gone"})),
    ]));
    let token = |i: usize| tokens[i].as_str().unwrap().to_string();

    let reply = call_with(&gw, &token(0)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["headers"]["x-scopes"][0],
        "orders:read profile"
    );
    assert_eq!(
        call_with(&gw, &token(1)).await.status,
        StatusCode::OK,
        "scp array"
    );

    let reply = call_with(&gw, &token(2)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "insufficient_scope");
    assert!(reply.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .ends_with("scope=\"orders:read\""));

    let reply = call_with(&gw, &token(3)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "access_denied");

    // A token whose client_id names a consumer is that consumer: its plan, and its grant
    // caps the token's scopes.
    let reply = call_with(&gw, &token(4)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-consumer-id"][0], "acme");
    assert_eq!(seen["headers"]["x-plan"][0], "gold");
    assert_eq!(seen["headers"]["x-scopes"][0], "orders:read");

    // A disabled consumer's token is refused like any invalid token.
    assert_refused(&call_with(&gw, &token(5)).await, "disabled consumer");
}

#[tokio::test]
async fn an_hmac_provider_verifies_with_its_secret_only() {
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    let (gw, _) = gateway(
        &format!(
            "      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      secret: \"{secret}\"\n"
        ),
        "",
    )
    .await;
    let tokens = jwt_tool(&json!([
        ["sign", "HS256", secret, "", good_claims(), {}],
        [
            "sign",
            "HS256",
            "another-secret-that-is-long-enough!!",
            "",
            good_claims(),
            {}
        ],
    ]));
    assert_eq!(
        call_with(&gw, tokens[0].as_str().unwrap()).await.status,
        StatusCode::OK
    );
    assert_refused(
        &call_with(&gw, tokens[1].as_str().unwrap()).await,
        "other secret",
    );
}
