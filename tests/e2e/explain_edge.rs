//! `portico explain` shows the edge policies a request meets: declared answers and
//! redirects, fault injection, traffic split, mirroring, path and regex rewrites and query
//! parameter changes.

use std::process::Command;

const CONFIG: &str = r#"listeners: [{ name: public, address: "127.0.0.1:0" }]
clusters:
  - { name: users, endpoints: ["127.0.0.1:9001"] }
  - { name: canary, endpoints: ["127.0.0.1:9002"] }
  - { name: shadow, endpoints: ["127.0.0.1:9003"] }
routes:
  - name: down
    match: { path_prefix: /down }
    direct_response: { status: 503, body: back soon }
  - name: moved
    match: { path_template: "/v0/{rest=**}" }
    redirect: { status: 301, location: "https://api.example.com/v1/{rest}" }
  - name: chaos
    match: { path_prefix: /chaos }
    cluster: users
    fault: { delay: { duration: 2s, percent: 10 }, abort: { status: 503, percent: 5 }, header: x-fault }
  - name: canary
    match: { path_prefix: /canary }
    traffic_split: [{ cluster: users, weight: 3 }, { cluster: canary, weight: 1 }]
  - name: shadowed
    match: { path_prefix: /shadowed }
    cluster: users
    mirror: { cluster: shadow, percent: 50 }
  - name: profile
    match: { path_template: "/v1/users/{id}/profile" }
    cluster: users
    path_rewrite: "/profiles/{id}"
    query_params: { set: { format: json }, add: { via: portico }, remove: [debug] }
  - name: legacy
    match: { path_prefix: /legacy }
    cluster: users
    regex_rewrite: { pattern: '^/legacy/(\w+)$', substitution: '/modern/$1' }
"#;

/// `portico explain GET <path>` against [`CONFIG`]: its output.
fn explain(dir: &std::path::Path, path: &str) -> String {
    let config = dir.join("edge.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["explain", "-c", config.to_str().expect("utf8"), "GET"])
        .arg(format!("http://api.test{path}"))
        .output()
        .expect("run portico");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of `text` that starts (after its indent) with `label:`, with spaces collapsed.
fn line(text: &str, label: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no `{label}:` line in:\n{text}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn explain_shows_each_edge_policy_a_request_meets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();

    let text = explain(dir, "/down/x");
    assert!(text.contains("route down (answers by itself)"), "{text}");
    assert_eq!(
        line(&text, "direct response"),
        "direct response: 503 Service Unavailable with a 9-byte body; never forwarded"
    );

    let text = explain(dir, "/v0/users/7");
    assert!(text.contains("route moved (answers by itself)"), "{text}");
    assert_eq!(
        line(&text, "redirect"),
        "redirect: 301 Moved Permanently to https://api.example.com/v1/users/7; never forwarded"
    );

    let text = explain(dir, "/chaos");
    assert!(text.contains("route chaos -> cluster users"), "{text}");
    assert_eq!(
        line(&text, "fault injection"),
        "fault injection: delay 2s for 10%, abort 503 for 5%, or when `x-fault` asks"
    );

    let text = explain(dir, "/canary");
    assert!(
        text.contains("route canary (splits its traffic between clusters)"),
        "{text}"
    );
    assert_eq!(
        line(&text, "traffic split"),
        "traffic split: users 75.0%, canary 25.0%"
    );

    let text = explain(dir, "/shadowed");
    assert!(
        line(&text, "mirror").starts_with("mirror: 50% to cluster shadow (answers discarded"),
        "{text}"
    );

    let text = explain(dir, "/v1/users/42/profile");
    assert_eq!(line(&text, "upstream path"), "upstream path: /profiles/42");
    assert_eq!(
        line(&text, "query parameters"),
        "query parameters: remove debug; set format=json; add via=portico"
    );

    let text = explain(dir, "/legacy/orders");
    assert_eq!(
        line(&text, "upstream path"),
        "upstream path: /modern/orders"
    );
}

/// There are no listener-wide defaults for edge policies: a YAML anchor writes one policy
/// once for many routes (what the reference config advises).
#[test]
fn a_policy_written_once_is_shared_through_a_yaml_anchor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("anchors.yaml");
    std::fs::write(
        &config,
        r#"listeners: [{ name: public, address: "127.0.0.1:0" }]
clusters:
  - { name: users, endpoints: ["127.0.0.1:9001"] }
routes:
  - match: { path_prefix: /a }
    cluster: users
    cors: &browser { allow_origins: ["https://app.example"], max_age: 10m }
    compression: &compressed { encodings: [gzip], min_size: 2KiB }
  - match: { path_prefix: /b }
    cluster: users
    cors: *browser
    compression: *compressed
"#,
    )
    .expect("write config");
    let lines = |path: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["explain", "-c", config.to_str().expect("utf8"), "GET"])
            .arg(format!("http://api.test{path}"))
            .output()
            .expect("run portico");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (line(&text, "cors"), line(&text, "compression"))
    };
    let (cors, compression) = lines("/a");
    assert!(cors.contains("https://app.example"), "{cors}");
    assert!(compression.contains("gzip"), "{compression}");
    assert!(compression.contains("2048"), "{compression}");
    assert_eq!(lines("/b"), (cors, compression));
}
