//! The command line: `validate` lists every problem with its location, `explain` tells which
//! route a request takes, and every shipped config is valid.

use std::process::Command;
use tokio::io::{AsyncBufReadExt, BufReader};

fn portico(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .output()
        .expect("run portico")
}

#[test]
fn validate_lists_every_problem_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        r#"listeners:
  - name: public
    address: "not an address"
clusters:
  - name: users
    endpoints: [127.0.0.1:9001]
    conect_timeout: 1s
routes:
  - cluster: user
    match: { path_prefix: v1 }
    timeout: 5 sec
"#,
    )
    .expect("write");
    let out = portico(&["validate", path.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "broken.yaml:3:14: listeners[0].address",
        "broken.yaml:7:5: clusters[0].conect_timeout",
        "broken.yaml:9:14: routes[0].cluster",
        "broken.yaml:10:27: routes[0].match.path_prefix",
        "broken.yaml:11:14: routes[0].timeout",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn every_shipped_config_is_valid() {
    let mut checked = 0;
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).expect("config dir")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let out = portico(&["validate", path.to_str().expect("utf8")]);
            assert!(
                out.status.success(),
                "{}:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "the reference and demo configs at least");
}

#[test]
fn explain_shows_the_selected_route_and_why() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.yaml");
    let out = portico(&[
        "explain",
        "-c",
        path,
        "GET",
        "http://api.example.com/v1/users/%2e/42",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/v1/users/42 (normalised from /v1/users/%2e/42)"),
        "{text}"
    );
    assert!(text.contains("route users-read -> cluster users"), "{text}");
    assert!(text.contains("upstream path:      /users/42"), "{text}");
    assert!(text.contains("SELECTED"), "{text}");

    let out = portico(&[
        "explain",
        "-c",
        path,
        "DELETE",
        "/v1/users/42",
        "-H",
        "Host: api.example.com",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("405 method_not_allowed"), "{text}");
}

/// The real binary: SIGHUP reloads the file, SIGTERM drains and exits 0.
#[tokio::test]
async fn the_binary_reloads_on_sighup_and_exits_cleanly_on_sigterm() {
    let backend = crate::common::echo_backend("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let write = |tag: &str| {
        std::fs::write(
            &path,
            format!(
                "runtime: {{ watch_interval: 0s, drain_timeout: 5s }}\naccess_log: {{ enabled: false }}\nadmin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: public, address: \"127.0.0.1:0\" }}\nclusters:\n  - {{ name: b, endpoints: [\"{backend}\"] }}\nroutes:\n  - {{ cluster: b, response_headers: {{ set: {{ x-config: {tag} }} }} }}\n"
            ),
        )
        .expect("write config");
    };
    write("one");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["run", "-c", path.to_str().expect("utf8")])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start portico");
    let pid = child.id().expect("pid") as libc::pid_t;
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // The log says where it listens (the config asked for port 0).
    let listening = line_with(&mut lines, "listening").await;
    let addr: std::net::SocketAddr = listening
        .split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {listening:?}"));
    assert_eq!(
        crate::common::get(addr, "h", "/").await.headers["x-config"],
        "one"
    );

    write("two");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    line_with(&mut lines, "configuration reloaded").await;
    assert_eq!(
        crate::common::get(addr, "h", "/").await.headers["x-config"],
        "two"
    );

    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = crate::common::within("portico to exit", child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
}

/// The next line of the child's log that contains `needle`.
async fn line_with(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    needle: &str,
) -> String {
    crate::common::within(needle, async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read")
                .expect("portico still running");
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
}
