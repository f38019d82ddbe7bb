//! Bodies stream both ways: chunks pass through as they are produced, and large bodies flow
//! without being held whole.

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::convert::Infallible;
use tokio::sync::mpsc;

/// A body whose frames the test feeds one at a time.
fn channel_body(rx: mpsc::Receiver<Bytes>) -> BoxBody {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    StreamBody::new(stream)
        .map_err(|never| match never {})
        .boxed()
}

#[tokio::test]
async fn a_slow_backends_chunks_arrive_one_by_one() {
    // The backend sends its next chunk only when the test says so: if the gateway buffered
    // the response, the client could not see chunk 1 before chunk 2 was released.
    let (release_tx, release_rx) = mpsc::channel::<Bytes>(1);
    let release_rx = std::sync::Mutex::new(Some(release_rx));
    let addr = backend(move |_req| {
        let rx = release_rx
            .lock()
            .expect("lock")
            .take()
            .expect("one request");
        async move { Response::new(channel_body(rx)) }
    })
    .await;
    let gw = TestGateway::start(&single_route(addr, "")).await;

    let mut sender = h1_connection(gw.addr).await;
    let req = Request::get("/")
        .header("host", "h")
        .body(full(""))
        .expect("req");
    let response_future = sender.send_request(req);
    release_tx
        .send(Bytes::from_static(b"chunk-1"))
        .await
        .expect("send");
    let response = within("the response head", response_future)
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    for i in 1..=3 {
        let frame = within("a chunk", body.frame())
            .await
            .expect("frame")
            .expect("ok");
        assert_eq!(frame.into_data().expect("data"), format!("chunk-{i}"));
        if i < 3 {
            release_tx
                .send(Bytes::from(format!("chunk-{}", i + 1)))
                .await
                .expect("send");
        }
    }
    drop(release_tx);
    assert!(within("the end", body.frame()).await.is_none());
}

#[tokio::test]
async fn a_request_body_reaches_the_backend_while_the_client_is_still_sending() {
    let (seen_tx, mut seen_rx) = mpsc::channel::<Bytes>(8);
    let addr = backend(move |req: Request<hyper::body::Incoming>| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut total = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    let _ = seen_tx.send(data).await;
                }
            }
            Response::new(full(format!("{total}")))
        }
    })
    .await;
    let gw = TestGateway::start(&single_route(addr, "")).await;

    let (body_tx, body_rx) = mpsc::channel::<Bytes>(1);
    let req = Request::post("/")
        .header("host", "h")
        .body(channel_body(body_rx))
        .expect("req");
    let exchange = tokio::spawn(send(gw.addr, req));
    for i in 0..3 {
        let chunk = Bytes::from(format!("part-{i};"));
        body_tx.send(chunk.clone()).await.expect("send");
        // The backend must have received this part before the client sends the next one.
        let mut received = Vec::new();
        while received.len() < chunk.len() {
            received.extend_from_slice(
                &within("a request chunk at the backend", seen_rx.recv())
                    .await
                    .expect("chunk"),
            );
        }
        assert_eq!(received, chunk.to_vec());
    }
    drop(body_tx);
    let reply = within("the response", exchange).await.expect("task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "21");
}

#[tokio::test]
async fn a_large_body_passes_through_intact() {
    const SIZE: usize = 64 * 1024 * 1024;
    let addr = backend(|_req| async {
        // 64 MiB generated on the fly, 64 KiB at a time.
        let stream =
            futures_util::stream::iter((0..SIZE / 65536).map(|i| {
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![(i % 251) as u8; 65536])))
            }));
        Response::new(
            StreamBody::new(stream)
                .map_err(|never| match never {})
                .boxed(),
        )
    })
    .await;
    let gw = TestGateway::start(&single_route(addr, "")).await;
    let mut sender = h1_connection(gw.addr).await;
    let req = Request::get("/")
        .header("host", "h")
        .body(full(""))
        .expect("req");
    let response = within("response", sender.send_request(req))
        .await
        .expect("response");
    let mut body = response.into_body();
    let (mut total, mut sum) = (0usize, 0u64);
    while let Some(frame) = within("a frame", body.frame()).await {
        let data = frame.expect("frame").into_data().expect("data");
        total += data.len();
        sum += data.iter().map(|b| u64::from(*b)).sum::<u64>();
    }
    let expected: u64 = (0..SIZE / 65536).map(|i| (i % 251) as u64 * 65536).sum();
    assert_eq!(total, SIZE);
    assert_eq!(sum, expected);
}
