//! Compression end to end: responses compressed as the client's Accept-Encoding asks, with
//! curl (which `.ci/run` installs) as the independent decoder; skipped where it must be;
//! request bodies decoded, and a decompression bomb refused with 413.

use crate::common::*;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;

/// Compressible text, long enough to be worth it.
fn text() -> String {
    "Portico compresses what it may. ".repeat(256)
}

/// `/text`, `/small`, `/png`, `/sse`, `/encoded` (already gzip), anything else: echo.
async fn content_backend() -> SocketAddr {
    backend(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_string();
        let (content_type, body, encoded) = match path.as_str() {
            "/text" => ("text/plain; charset=utf-8", text().into_bytes(), false),
            "/small" => ("application/json", b"{\"small\":true}".to_vec(), false),
            "/png" => ("image/png", vec![7u8; 8192], false),
            "/sse" => ("text/event-stream", text().into_bytes(), false),
            "/encoded" => ("text/plain", vec![b'z'; 4096], true),
            _ => ("text/plain", Vec::new(), false),
        };
        let mut response = http::Response::builder().header("content-type", content_type);
        if encoded {
            response = response.header("content-encoding", "gzip");
        }
        response.body(full(body)).expect("response")
    })
    .await
}

async fn gateway() -> TestGateway {
    let content = content_backend().await;
    let echo = echo_backend("echo").await;
    TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: content, endpoints: ["{content}"] }}
  - {{ name: echo, endpoints: ["{echo}"] }}
routes:
  - {{ match: {{ path_prefix: /plain }}, cluster: content, strip_prefix: /plain }}
  - {{ match: {{ path_prefix: /c }}, cluster: content, strip_prefix: /c, compression: {{ min_size: 1KiB }} }}
  - {{ match: {{ path_prefix: /upload }}, cluster: echo,
       request_decompression: {{ encodings: [gzip], max_size: 1MiB }} }}
"#
    )))
    .await
}

async fn get_encoded(addr: SocketAddr, path: &str, accept: &str) -> Reply {
    send(
        addr,
        Request::get(path)
            .header("host", "h")
            .header("accept-encoding", accept)
            .body(full(""))
            .expect("request"),
    )
    .await
}

/// curl's view of `url` asking for `accept`: the decoded body and the headers it saw.
async fn curl(url: &str, accept: &str) -> (String, String) {
    let output = within(
        "curl",
        tokio::process::Command::new("curl")
            .args(["-sS", "--compressed", "-D", "/dev/stderr", "-H"])
            .arg(format!("accept-encoding: {accept}"))
            .arg(url)
            .output(),
    )
    .await
    .expect("curl runs (.ci/run installs it)");
    assert!(output.status.success(), "curl failed: {output:?}");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).to_ascii_lowercase(),
    )
}

#[tokio::test]
async fn each_encoding_is_negotiated_and_decodes_to_the_original() {
    let gw = gateway().await;
    for encoding in ["gzip", "br", "zstd"] {
        let reply = get_encoded(gw.addr, "/c/text", encoding).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["content-encoding"], encoding);
        assert_eq!(reply.headers["vary"], "accept-encoding");
        assert!(
            reply.body.len() < text().len() / 4,
            "{encoding}: {} bytes",
            reply.body.len()
        );
        let (body, headers) = curl(&gw.url("/c/text"), encoding).await;
        assert!(
            headers.contains(&format!("content-encoding: {encoding}")),
            "{headers}"
        );
        assert_eq!(body, text(), "{encoding} decodes to what the backend sent");
    }
    // The same route without compression: untouched.
    let plain = get_encoded(gw.addr, "/plain/text", "gzip, br, zstd").await;
    assert!(!plain.headers.contains_key("content-encoding"));
    assert_eq!(plain.text(), text());
}

#[tokio::test]
async fn q_values_choose_the_encoding() {
    let gw = gateway().await;
    for (accept, chosen) in [
        ("gzip;q=0.5, br;q=1.0, zstd;q=0", Some("br")),
        ("br;q=0.1, gzip;q=0.9", Some("gzip")),
        ("zstd, gzip;q=0.2", Some("zstd")),
        ("gzip;q=0, identity", None),
        ("", None),
    ] {
        let reply = get_encoded(gw.addr, "/c/text", accept).await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}");
        assert_eq!(
            reply
                .headers
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            chosen,
            "{accept}"
        );
        if chosen.is_none() {
            assert_eq!(reply.text(), text(), "{accept}");
        }
    }
}

#[tokio::test]
async fn small_binary_streaming_and_encoded_answers_are_left_alone() {
    let gw = gateway().await;
    for (path, original) in [
        ("/c/small", b"{\"small\":true}".to_vec()),
        ("/c/png", vec![7u8; 8192]),
        ("/c/sse", text().into_bytes()),
        ("/c/encoded", vec![b'z'; 4096]),
    ] {
        let reply = get_encoded(gw.addr, path, "gzip, br, zstd").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let encodings: Vec<_> = reply.headers.get_all("content-encoding").iter().collect();
        if path == "/c/encoded" {
            assert_eq!(encodings, ["gzip"], "never compressed twice");
        } else {
            assert!(encodings.is_empty(), "{path}: {encodings:?}");
        }
        assert_eq!(reply.body, original, "{path}");
    }
}

#[tokio::test]
async fn a_client_that_accepts_no_coding_gets_the_answer_uncompressed_not_a_406() {
    let gw = gateway().await;
    for accept in [
        "identity;q=0",
        "*;q=0",
        "*;q=0, identity;q=0",
        "gzip;q=0, br;q=0, zstd;q=0, identity;q=0",
        "deflate, identity;q=0",
    ] {
        let reply = get_encoded(gw.addr, "/c/text", accept).await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}: {}", reply.text());
        assert!(
            reply.headers.get("content-encoding").is_none(),
            "{accept}: {:?}",
            reply.headers
        );
        assert_eq!(reply.text(), text(), "{accept}");
        let vary: Vec<_> = reply.headers.get_all("vary").iter().collect();
        assert!(
            vary.iter()
                .any(|v| v.to_str().unwrap().contains("accept-encoding")),
            "{accept}: {vary:?}"
        );
    }
    // Without compression on the route the same request is forwarded as it is, too.
    let reply = get_encoded(gw.addr, "/plain/text", "identity;q=0").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), text());
}

/// `data` gzip-compressed by Python's gzip module (not our code).
fn gzip(data_expr: &str) -> Vec<u8> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import gzip, sys; sys.stdout.buffer.write(gzip.compress({data_expr}))"),
        ])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    output.stdout
}

fn upload(body: Vec<u8>, encoding: &str) -> Request<BoxBody> {
    Request::post("/upload")
        .header("host", "h")
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(full(body))
        .expect("request")
}

#[tokio::test]
async fn request_bodies_are_decoded_and_a_bomb_is_refused() {
    let gw = gateway().await;
    let reply = send(gw.addr, upload(gzip("b'{\"name\": \"ada\"}'"), "gzip")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["body"], "{\"name\": \"ada\"}");
    assert!(seen["headers"].get("content-encoding").is_none(), "{seen}");

    // 64 MiB of zeros in about 64 KiB: refused once 1 MiB has been decoded.
    let bomb = gzip("bytes(64 * 1024 * 1024)");
    assert!(bomb.len() < 200 * 1024, "{}", bomb.len());
    let reply = send(gw.addr, upload(bomb, "gzip")).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "payload_too_large");

    let reply = send(gw.addr, upload(b"not gzip at all".to_vec(), "gzip")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "bad_content_encoding");

    // A coding named on an empty body: nothing to decode, forwarded without it.
    let reply = send(gw.addr, upload(Vec::new(), "gzip")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.json()["headers"].get("content-encoding").is_none());

    for coding in ["br", "compress", "gzip, gzip"] {
        let reply = send(gw.addr, upload(b"x".to_vec(), coding)).await;
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{coding}");
        assert_eq!(reply.error_code(), "unsupported_content_encoding");
    }
}

/// `len` bytes of pseudo-random hex digits: half of it compresses away, never all of it, so
/// a coder has output to give as its input arrives.
fn noisy_text(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b"0123456789abcdef"[(state >> 60) as usize]
        })
        .collect()
}

/// A backend whose one streamed answer the test feeds through `chunks`; it ends when the
/// sender is dropped.
async fn fed_backend(chunks: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> SocketAddr {
    use http_body_util::BodyExt;
    let chunks = std::sync::Mutex::new(Some(chunks));
    backend(move |_req: Request<Incoming>| {
        let rx = chunks.lock().expect("lock").take().expect("one request");
        async move {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| {
                    (
                        Ok::<_, std::convert::Infallible>(http_body::Frame::data(chunk)),
                        rx,
                    )
                })
            });
            http::Response::builder()
                .header("content-type", "text/plain")
                .body(
                    http_body_util::StreamBody::new(stream)
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .expect("response")
        }
    })
    .await
}

#[tokio::test]
async fn a_compressed_answer_streams_while_the_backend_is_still_sending() {
    use http_body_util::BodyExt;
    for coding in ["gzip", "br", "zstd"] {
        let (feed, chunks) = tokio::sync::mpsc::channel(1);
        let backend = fed_backend(chunks).await;
        let gw = TestGateway::start(&single_route(
            backend,
            &format!(", compression: {{ encodings: [{coding}] }}"),
        ))
        .await;
        // 1 MiB the backend sends at once; the end only when the test says so.
        let head: Vec<u8> = noisy_text(1024 * 1024, 7);
        let tail = noisy_text(4096, 11);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        {
            let (head, tail) = (head.clone(), tail.clone());
            tokio::spawn(async move {
                for chunk in head.chunks(64 * 1024) {
                    if feed
                        .send(bytes::Bytes::copy_from_slice(chunk))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // The answer ends only once the test has seen compressed bytes.
                if released.await.is_ok() {
                    let _ = feed.send(bytes::Bytes::from(tail)).await;
                }
            });
        }
        let mut sender = h1_connection(gw.addr).await;
        let response = within(
            "the response head",
            sender.send_request(
                Request::get("/")
                    .header("host", "h")
                    .header("accept-encoding", coding)
                    .body(full(""))
                    .expect("request"),
            ),
        )
        .await
        .expect("response");
        assert_eq!(response.headers()["content-encoding"], coding);
        let mut body = response.into_body();
        let mut compressed = Vec::new();
        // The backend's answer cannot end before `release`: compressed bytes that arrive
        // now were streamed, not held until the end.
        while compressed.is_empty() {
            let frame = within(
                "compressed bytes while the backend is still sending",
                body.frame(),
            )
            .await
            .expect("a frame before the end")
            .expect("a good frame");
            if let Ok(data) = frame.into_data() {
                compressed.extend_from_slice(&data);
            }
        }
        release.send(()).expect("the backend is still sending");
        let rest = within("the rest", body.collect())
            .await
            .expect("the rest")
            .to_bytes();
        compressed.extend_from_slice(&rest);
        if coding == "gzip" {
            // Python's gzip (not our code) decodes it to what the backend sent.
            let mut python = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3 runs");
            {
                use std::io::Write;
                python
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(&compressed)
                    .expect("write");
            }
            let output = python.wait_with_output().expect("python3");
            assert!(output.status.success(), "{output:?}");
            let mut original = head.clone();
            original.extend_from_slice(&tail);
            assert!(output.stdout == original, "gzip decodes to the original");
        }
    }
}
