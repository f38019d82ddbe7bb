//! `portico demo`'s gRPC part answers as its instructions print: each printed command is run
//! as printed (curl, and the shipped native gRPC client) against the demo's gateway and
//! backends, and must show the answer its comment promises.

use crate::common::within;
use std::net::SocketAddr;

#[tokio::test]
async fn the_demos_grpc_commands_answer_as_printed() {
    let backends = portico::demo::start_backends()
        .await
        .expect("demo backends");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let config = portico::demo::config_on(&backends, None, Some((any, any))).expect("demo config");
    let gateway = portico::Gateway::bind(config, None)
        .await
        .expect("gateway binds");
    let text = portico::demo::instructions(&gateway, None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(gateway.run(async move {
        let _ = stopped.await;
    }));

    let section = text
        .split("gRPC:")
        .nth(1)
        .and_then(|rest| rest.split("Admin:").next())
        .expect("a gRPC section");
    let mut ran = 0;
    for line in section.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((command, comment)) = line.split_once("# ") else {
            continue;
        };
        // What the comment promises, before its explanation in parentheses.
        let promise = comment.split("  (").next().expect("promise").trim();
        let command = match command.split_once(" grpc-hello ") {
            Some((_, rest)) => format!("{} grpc-hello {rest}", env!("CARGO_BIN_EXE_portico")),
            None => command.to_string(),
        };
        let output = within(
            &command,
            tokio::process::Command::new("sh")
                .args(["-c", &command])
                .output(),
        )
        .await
        .expect("sh runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{command}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let compact: String = stdout.split_whitespace().collect();
        let promised: String = promise.split_whitespace().collect();
        assert!(
            compact.contains(&promised),
            "{command}\npromised {promise}\ngot {stdout}"
        );
        ran += 1;
    }
    assert_eq!(ran, 7, "every gRPC command of the demo was run:\n{section}");
    let _ = stop.send(());
    within("the demo gateway to stop", running)
        .await
        .expect("joined");
}

/// `portico explain` shows a transcoding route's gRPC policy.
#[test]
fn explain_shows_the_grpc_policy() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["explain", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.yaml"))
        .args(["POST", "http://api.example.com/v1/hello"])
        .output()
        .expect("portico explain runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("route greeter-rest -> cluster greeter-http"),
        "{text}"
    );
    assert!(
        text.contains("grpc transcode:     HTTP/JSON → gRPC from the cluster's descriptors"),
        "{text}"
    );
    assert!(text.contains("messages ≤ 4MiB in, ≤ 4MiB out"), "{text}");
    assert!(
        text.contains("openapi:            GET /v1/hello/openapi.json"),
        "{text}"
    );
}
