//! The gateway's own OAuth2 server (client credentials), end to end: a consumer gets a token
//! with its secret, PyJWT verifies that token against the key set the gateway publishes, the
//! token opens the routes its scopes allow; signing keys rotate without invalidating tokens;
//! brute force is slowed. And introspection of opaque tokens against a loopback IdP.

use crate::auth_jwt::jwt_tool;
use crate::common::*;
use base64::Engine as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const ISSUER: &str = "http://api.test";
const SECRET: &str = "sk_acme_app_secret_0123456789";

/// A config with consumer `acme` (client `acme-app`, scopes orders:read and profile), the
/// gateway as OAuth2 server with its keys in `keys`, and routes `/orders` (orders:read) and
/// `/admin` (orders:admin) to `backend`.
fn oauth2_config(backend: SocketAddr, keys: &Path, extra: &str) -> String {
    format!(
        r#"runtime: {{ watch_interval: 0s }}
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0" }}
consumers:
  - id: acme
    plan: gold
    scopes: [orders:read, profile]
    oauth2: {{ client_id: acme-app, client_secret: "{digest}" }}
auth_providers:
  - name: portico
    oauth2_server:
      issuer: {ISSUER}
      signing_keys: "{keys}"
      token_lifetime: 5m
      publish_ahead: 0s
{extra}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - match: {{ path_prefix: /orders }}
    cluster: b
    auth: {{ providers: [portico], scopes: [orders:read], forward: {{ consumer: x-consumer-id }} }}
  - match: {{ path_prefix: /admin }}
    cluster: b
    auth: {{ providers: [portico], scopes: [orders:admin] }}
  - {{ cluster: b }}
"#,
        digest = portico::keys::digest(SECRET),
        keys = keys.display(),
    )
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// `POST /oauth2/token` with a form body and optional Basic credentials.
async fn token_request(gw: &TestGateway, form: &str, authorization: Option<&str>) -> Reply {
    let mut req = Request::post("/oauth2/token")
        .header("host", "api.test")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    send(gw.addr, req.body(full(form.to_string())).unwrap()).await
}

async fn get_token(gw: &TestGateway) -> String {
    let reply = token_request(
        gw,
        "grant_type=client_credentials",
        Some(&basic("acme-app", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["access_token"].as_str().unwrap().to_string()
}

async fn get_with(gw: &TestGateway, path: &str, token: &str) -> Reply {
    let req = Request::get(path)
        .header("host", "api.test")
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    send(gw.addr, req).await
}

async fn jwks(gw: &TestGateway) -> Value {
    let reply = get(gw.addr, "api.test", "/.well-known/jwks.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

#[tokio::test]
async fn a_consumer_gets_a_token_with_its_secret_and_calls_what_its_scopes_allow() {
    let backend = echo_backend("b").await;
    let keys = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&oauth2_config(backend, keys.path(), "")).await;

    let reply = token_request(
        &gw,
        "grant_type=client_credentials",
        Some(&basic("acme-app", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["cache-control"], "no-store");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "orders:read profile");
    let token = body["access_token"].as_str().unwrap().to_string();

    // PyJWT, which shares no code with Portico, verifies the token with the published keys.
    let claims = &jwt_tool(&json!([["verify", token, jwks(&gw).await, ISSUER, ISSUER]]))[0];
    assert_eq!(claims["sub"], "acme");
    assert_eq!(claims["client_id"], "acme-app");
    assert_eq!(claims["scope"], "orders:read profile");

    let reply = get_with(&gw, "/orders/1", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["headers"]["x-consumer-id"][0], "acme");
    let reply = get_with(&gw, "/admin", &token).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "insufficient_scope");

    // client_secret_post, narrowed to one scope; a scope never granted is refused.
    let reply = token_request(
        &gw,
        &format!(
            "grant_type=client_credentials&client_id=acme-app&client_secret={SECRET}&scope=profile"
        ),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let narrowed = reply.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        get_with(&gw, "/orders", &narrowed).await.status,
        StatusCode::FORBIDDEN
    );
    let reply = token_request(
        &gw,
        "grant_type=client_credentials&scope=orders:admin",
        Some(&basic("acme-app", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_scope");

    // RFC 6749 §5.2 errors.
    let wrong = token_request(
        &gw,
        "grant_type=client_credentials",
        Some(&basic("acme-app", "nope")),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert_eq!(wrong.headers["www-authenticate"], "Basic realm=\"oauth2\"");
    let grant = token_request(&gw, "grant_type=password", Some(&basic("acme-app", SECRET))).await;
    assert_eq!(grant.json()["error"], "unsupported_grant_type");
    let twice = token_request(
        &gw,
        "grant_type=client_credentials&grant_type=x",
        Some(&basic("acme-app", SECRET)),
    )
    .await;
    assert_eq!(twice.json()["error"], "invalid_request");
    let not_post = get(gw.addr, "api.test", "/oauth2/token").await;
    assert_eq!(not_post.status, StatusCode::METHOD_NOT_ALLOWED);

    let discovery = get(gw.addr, "api.test", "/.well-known/openid-configuration")
        .await
        .json();
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(
        discovery["token_endpoint"],
        format!("{ISSUER}/oauth2/token")
    );
    assert_eq!(
        discovery["jwks_uri"],
        format!("{ISSUER}/.well-known/jwks.json")
    );
    gw.wait_metric(r#"portico_token_requests_total{outcome="issued"}"#, 2)
        .await;
}

#[tokio::test]
async fn a_new_signing_key_takes_over_and_tokens_of_the_old_one_stay_valid() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let config = dir.path().join("portico.yaml");
    std::fs::write(&config, oauth2_config(backend, &keys, "")).unwrap();
    let gw = TestGateway::start_file(config).await;
    let old = get_token(&gw).await;
    assert_eq!(jwks(&gw).await["keys"].as_array().unwrap().len(), 1);

    // An operator adds a key (what `portico keys signing-key` does) and reloads.
    portico::keys::new_signing_key(&keys, portico::keys::SigningAlgorithm::EdDsa).unwrap();
    gw.reload.reload().await.unwrap();
    let published = jwks(&gw).await;
    assert_eq!(
        published["keys"].as_array().unwrap().len(),
        2,
        "both published"
    );

    let new = get_token(&gw).await;
    let kid = |token: &str| {
        let header = token.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        (
            header["kid"].as_str().unwrap().to_string(),
            header["alg"].as_str().unwrap().to_string(),
        )
    };
    assert_ne!(kid(&old).0, kid(&new).0, "the new key signs");
    assert_eq!(kid(&new).1, "EdDSA");
    assert_eq!(
        get_with(&gw, "/orders", &old).await.status,
        StatusCode::OK,
        "old token still valid"
    );
    assert_eq!(get_with(&gw, "/orders", &new).await.status, StatusCode::OK);
    // PyJWT verifies both against the published set.
    let verified = jwt_tool(&json!([
        ["verify", old, published, ISSUER, ISSUER],
        ["verify", new, published, ISSUER, ISSUER],
    ]));
    assert!(verified.iter().all(|claims| claims["sub"] == "acme"));
}

#[tokio::test]
async fn repeated_failures_lock_out_the_client_and_the_address() {
    let backend = echo_backend("b").await;
    let keys = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&oauth2_config(
        backend,
        keys.path(),
        "      max_failed_attempts: 3\n      lockout: 10m\n",
    ))
    .await;
    for _ in 0..3 {
        let reply = token_request(
            &gw,
            "grant_type=client_credentials",
            Some(&basic("acme-app", "guess")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right secret is not looked at.
    let reply = token_request(
        &gw,
        "grant_type=client_credentials",
        Some(&basic("acme-app", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["error"], "slow_down");
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    // The same address trying another client id is slowed too.
    let reply = token_request(
        &gw,
        "grant_type=client_credentials",
        Some(&basic("other-app", "x")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    gw.wait_metric(r#"portico_token_requests_total{outcome="slowed"}"#, 2)
        .await;
}

/// A loopback RFC 7662 endpoint: checks the gateway's own credentials, knows token `good`
/// (active, for client `acme-app`) and `revoked` (inactive), and counts calls.
async fn introspection_idp() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let addr = backend(move |req: Request<Incoming>| {
        let counted = counted.clone();
        async move {
            use http_body_util::BodyExt;
            counted.fetch_add(1, Ordering::SeqCst);
            let authorized = req.headers().get("authorization").and_then(|v| v.to_str().ok())
                == Some(&*basic("gateway", "gateway-secret"));
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let form = String::from_utf8_lossy(&body).into_owned();
            if !authorized {
                return Response::builder().status(401).body(full("{}")).unwrap();
            }
            let answer = if form.contains("token=good&") {
                json!({"active": true, "client_id": "acme-app", "sub": "user-7", "scope": "orders:read", "exp": crate::auth_jwt::now() + 600})
            } else {
                json!({"active": false})
            };
            Response::new(full(answer.to_string()))
        }
    })
    .await;
    (addr, calls)
}

fn introspection_config(backend: SocketAddr, endpoint: &str) -> String {
    config(&format!(
        r#"consumers:
  - {{ id: acme, scopes: [orders:read], oauth2: {{ client_id: acme-app, client_secret: "{digest}" }} }}
auth_providers:
  - name: opaque
    introspection:
      endpoint: {endpoint}
      client_id: gateway
      client_secret: gateway-secret
      timeout: 1s
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ cluster: b, auth: {{ providers: [opaque], scopes: [orders:read], forward: {{ consumer: x-consumer-id, subject: x-subject }} }} }}
"#,
        digest = portico::keys::digest(SECRET),
    ))
}

#[tokio::test]
async fn opaque_tokens_are_introspected_cached_and_a_dead_idp_is_503() {
    let backend = echo_backend("b").await;
    let (idp, calls) = introspection_idp().await;
    let gw = TestGateway::start(&introspection_config(
        backend,
        &format!("http://{idp}/introspect"),
    ))
    .await;

    let reply = get_with(&gw, "/x", "good").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-consumer-id"][0], "acme");
    assert_eq!(reply.json()["headers"]["x-subject"][0], "user-7");
    assert_eq!(get_with(&gw, "/x", "good").await.status, StatusCode::OK);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second answer came from the cache"
    );

    let reply = get_with(&gw, "/x", "revoked").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error_code(), "invalid_credentials");

    let dead = closed_port().await;
    let down = TestGateway::start(&introspection_config(
        backend,
        &format!("http://{dead}/introspect"),
    ))
    .await;
    let reply = get_with(&down, "/x", "good").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "auth_provider_unavailable");
}
