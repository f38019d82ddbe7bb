//! A listener's `tls.cipher_suites`, witnessed by clients that share no code with Portico:
//! `openssl s_client` reports the suite it negotiated (or that the handshake failed), and
//! curl (built with OpenSSL) carries a request over the chosen suite. The gateway's own
//! handshake counter says why a refused handshake was refused.

use crate::common::*;
use http::Response;
use std::net::SocketAddr;
use std::path::Path;

/// A self-signed ECDSA P-256 certificate for `localhost` and its key, written into `dir`.
fn write_certificate(dir: &Path) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
}

/// One TLS listener `name` with the certificate of `dir` and these extra `tls` keys.
fn tls_listener(dir: &Path, name: &str, tls_keys: &str) -> String {
    let cert = serde_json::to_string(&dir.join("cert.pem").display().to_string()).expect("json");
    let key = serde_json::to_string(&dir.join("key.pem").display().to_string()).expect("json");
    format!(
        "  - name: {name}\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{ cert: {cert}, key: {key} }}]\n{tls_keys}"
    )
}

async fn gateway(dir: &Path) -> TestGateway {
    let origin = backend(|_| async { Response::new(full("served over TLS\n")) }).await;
    let listeners = [
        tls_listener(
            dir,
            "aes128-only",
            "      cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        ),
        tls_listener(
            dir,
            "aes128-first",
            "      cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384]\n",
        ),
        tls_listener(dir, "defaults", ""),
        tls_listener(
            dir,
            "tls12",
            "      cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n",
        ),
    ]
    .concat();
    TestGateway::start(&format!(
        "access_log: {{ enabled: false }}\nadmin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n{listeners}clusters:\n  - {{ name: b, endpoints: [\"{origin}\"] }}\nroutes:\n  - {{ cluster: b }}\n"
    ))
    .await
}

/// What `openssl s_client` made of a handshake: the suite, or `None` when it failed.
async fn openssl_suite(addr: SocketAddr, protocol_and_suites: &[&str]) -> Option<String> {
    let output = within(
        "openssl s_client",
        tokio::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .args(["-servername", "localhost"])
            .args(protocol_and_suites)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("openssl runs (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // "New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256"; "Cipher is (NONE)" when it failed.
    let suite = stdout
        .lines()
        .find_map(|line| line.split_once(", Cipher is ").map(|(_, s)| s.trim()))
        .filter(|suite| *suite != "(NONE)")
        .map(str::to_string);
    assert_eq!(
        suite.is_some(),
        output.status.success(),
        "the exit status and the report disagree: {output:?}"
    );
    suite
}

/// curl's GET of `https://localhost:port/` offering `tls13_suites`: the body, and the suite
/// curl reports in its verbose output.
async fn curl_get(addr: SocketAddr, tls13_suites: &str) -> (String, String) {
    let output = within(
        "curl",
        tokio::process::Command::new("curl")
            .args([
                "-sS",
                "-v",
                "-k",
                "--tlsv1.3",
                "--tls13-ciphers",
                tls13_suites,
            ])
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", addr.port()))
            .arg(format!("https://localhost:{}/", addr.port()))
            .output(),
    )
    .await
    .expect("curl runs (.ci/run installs it)");
    assert!(output.status.success(), "curl failed: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // "* SSL connection using TLSv1.3 / TLS_AES_128_GCM_SHA256"
    let suite = stderr
        .lines()
        .find_map(|line| line.strip_prefix("* SSL connection using TLSv1.3 / "))
        .unwrap_or_else(|| panic!("no negotiated suite in curl's output:\n{stderr}"))
        .trim()
        .to_string();
    (String::from_utf8_lossy(&output.stdout).into_owned(), suite)
}

const OFFER_ALL_TLS13: &str =
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";

#[tokio::test]
async fn a_listener_with_one_suite_negotiates_it_and_refuses_clients_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_certificate(dir.path());
    let gw = gateway(dir.path()).await;
    let listener = gw.listener("aes128-only");

    // A client offering several suites, AES-256 first, gets the one configured.
    let suite = openssl_suite(listener, &["-tls1_3", "-ciphersuites", OFFER_ALL_TLS13]).await;
    assert_eq!(suite.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
    let (body, suite) = curl_get(listener, OFFER_ALL_TLS13).await;
    assert_eq!(suite, "TLS_AES_128_GCM_SHA256");
    assert_eq!(body, "served over TLS\n");

    // A client offering only AES-256 cannot complete a handshake, and the gateway counts
    // it as incompatible (not as a timeout or a closed connection).
    let incompatible =
        "portico_tls_handshakes_total{listener=\"aes128-only\",outcome=\"incompatible\"}";
    assert_eq!(gw.metric(incompatible).await, 0);
    let suite = openssl_suite(
        listener,
        &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
    )
    .await;
    assert_eq!(suite, None);
    gw.wait_metric(incompatible, 1).await;
    // Nor can a TLS 1.2 client: the listener has no TLS 1.2 suite.
    let suite = openssl_suite(listener, &["-tls1_2"]).await;
    assert_eq!(suite, None);
    gw.wait_metric(incompatible, 2).await;
}

#[tokio::test]
async fn listed_suites_are_chosen_in_the_servers_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_certificate(dir.path());
    let gw = gateway(dir.path()).await;

    // The client prefers AES-256; the listener lists AES-128 first, and its order wins.
    let prefers_aes256 = ["-tls1_3", "-ciphersuites", OFFER_ALL_TLS13];
    let suite = openssl_suite(gw.listener("aes128-first"), &prefers_aes256).await;
    assert_eq!(suite.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
    // Without cipher_suites the client's order is followed, as before the key existed.
    let suite = openssl_suite(gw.listener("defaults"), &prefers_aes256).await;
    assert_eq!(suite.as_deref(), Some("TLS_AES_256_GCM_SHA384"));

    // TLS 1.2 suites too (OpenSSL names them its own way).
    let prefers_aes256 = [
        "-tls1_2",
        "-cipher",
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
    ];
    let suite = openssl_suite(gw.listener("tls12"), &prefers_aes256).await;
    assert_eq!(suite.as_deref(), Some("ECDHE-ECDSA-AES128-GCM-SHA256"));
    let suite = openssl_suite(gw.listener("defaults"), &prefers_aes256).await;
    assert_eq!(suite.as_deref(), Some("ECDHE-ECDSA-AES256-GCM-SHA384"));
}

#[tokio::test]
async fn changing_the_suites_needs_a_restart_and_the_running_ones_keep_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_certificate(dir.path());
    let origin = backend(|_| async { Response::new(full("served over TLS\n")) }).await;
    let listener = tls_listener(
        dir.path(),
        "secure",
        "      cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
    );
    let text = format!(
        "access_log: {{ enabled: false }}\nlisteners:\n{listener}clusters:\n  - {{ name: b, endpoints: [\"{origin}\"] }}\nroutes:\n  - {{ cluster: b }}\n"
    );
    let path = dir.path().join("portico.yaml");
    std::fs::write(&path, &text).expect("write config");
    let gw = TestGateway::start_file(path.clone()).await;
    let secure = gw.listener("secure");

    let changed = text.replace("[TLS_AES_128_GCM_SHA256]", "[TLS_AES_256_GCM_SHA384]");
    assert_ne!(changed, text);
    std::fs::write(&path, changed).expect("write config");
    let error = within("a reload", gw.reload.reload())
        .await
        .expect_err("a listener's TLS settings cannot change on reload");
    assert!(error.to_string().contains("listeners"), "{error}");
    let suite = openssl_suite(secure, &["-tls1_3", "-ciphersuites", OFFER_ALL_TLS13]).await;
    assert_eq!(suite.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
}
