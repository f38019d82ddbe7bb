//! gRPC servers for the transcoding tests: an in-process tonic server built from the test
//! `.proto` files (messages handled through descriptors), and a Python grpcio server made by
//! protoc (tests/tools/grpc_peer.py) that shares no code with the gateway.
//!
//! Both serve `library.v1.Library` and `Greeter` (tests/protos) with the same behaviour:
//! most methods echo their request, with `x-served-by: <method>` in the response headers.

use crate::common::within;
use bytes::Bytes;
use futures_util::stream;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, Value};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

/// Opened by a test to let the tonic server's `ListBooks` with page token `gate` go on
/// after its first book.
pub static GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// tests/protos, absolute.
pub fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/protos")
}

/// The descriptors the test servers use (compiled the same way the gateway does, with the
/// gateway's embedded google/api files on the include path).
pub fn pool() -> DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let includes = [
            proto_dir(),
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/grpc/proto"),
        ];
        let mut compiler = protox::Compiler::new(includes).expect("compiler");
        compiler
            .open_files([
                "library/v1/library.proto",
                "greeter.proto",
                "google/rpc/status.proto",
                "google/rpc/error_details.proto",
            ])
            .expect("test protos compile");
        compiler.descriptor_pool()
    })
    .clone()
}

/// A codec for messages known only by descriptor.
#[derive(Clone)]
struct DynamicCodec {
    input: MessageDescriptor,
}

struct DynamicEncoder;
struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.input.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// A `tower_service::Service` from an async closure, as tonic's handlers take them.
#[derive(Clone)]
struct Handler<F>(F);

impl<F, Req, Res, Fut> tower_service::Service<Req> for Handler<F>
where
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Result<Res, Status>>,
{
    type Response = Res;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Fut {
        (self.0)(req)
    }
}

fn served<T>(message: T, method: &str) -> Response<T> {
    let mut response = Response::new(message);
    if let Ok(value) = MetadataValue::try_from(method) {
        response.metadata_mut().insert("x-served-by", value);
    }
    response
}

fn text(message: &DynamicMessage, field: &str) -> String {
    match message.get_field_by_name(field).as_deref() {
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    }
}

fn number(message: &DynamicMessage, field: &str) -> i64 {
    match message.get_field_by_name(field).as_deref() {
        Some(Value::I32(n)) => i64::from(*n),
        Some(Value::I64(n)) => *n,
        _ => 0,
    }
}

fn flag(message: &DynamicMessage, field: &str) -> bool {
    matches!(
        message.get_field_by_name(field).as_deref(),
        Some(Value::Bool(true))
    )
}

fn status_code(code: i64) -> tonic::Code {
    tonic::Code::from_i32(code as i32)
}

type BoxStream = Pin<Box<dyn futures_util::Stream<Item = Result<DynamicMessage, Status>> + Send>>;

/// One call to the tonic server.
async fn dispatch(
    pool: DescriptorPool,
    method: MethodDescriptor,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<tonic::body::Body> {
    let codec = DynamicCodec {
        input: method.input(),
    };
    let mut grpc = tonic::server::Grpc::new(codec);
    let output = method.output();
    match method.name() {
        "ListBooks" => {
            let handler = Handler(move |req: Request<DynamicMessage>| {
                let output = output.clone();
                async move {
                    let request = req.into_inner();
                    let shelf = text(&request, "shelf");
                    let mut items: Vec<Result<DynamicMessage, Status>> =
                        (0..number(&request, "page_size"))
                            .map(|index| {
                                let mut book = DynamicMessage::new(output.clone());
                                book.set_field_by_name(
                                    "name",
                                    Value::String(format!("shelves/{shelf}/books/{index}")),
                                );
                                book.set_field_by_name(
                                    "title",
                                    Value::String(format!("Book {index}")),
                                );
                                Ok(book)
                            })
                            .collect();
                    let token = text(&request, "page_token");
                    if token == "fail" {
                        items.push(Err(Status::not_found("the shelf ran out")));
                    }
                    if token == "gate" {
                        // The first book at once; the rest once the test opens the gate, so it
                        // can see the first one arrive on its own.
                        let rest = items.split_off(1.min(items.len()));
                        let first = stream::iter(items);
                        let later = futures_util::StreamExt::flat_map(
                            stream::once(async { GATE.notified().await }),
                            move |()| stream::iter(rest.clone()),
                        );
                        let stream: BoxStream =
                            Box::pin(futures_util::StreamExt::chain(first, later));
                        return Ok(served(stream, "ListBooks"));
                    }
                    let stream: BoxStream = Box::pin(stream::iter(items));
                    Ok(served(stream, "ListBooks"))
                }
            });
            grpc.server_streaming(handler, req).await
        }
        "AddBooks" => {
            let handler = Handler(move |req: Request<Streaming<DynamicMessage>>| {
                let output = output.clone();
                async move {
                    let mut incoming = req.into_inner();
                    let mut books = Vec::new();
                    while let Some(book) = incoming.message().await? {
                        books.push(Value::Message(book));
                    }
                    let mut reply = DynamicMessage::new(output);
                    reply.set_field_by_name(
                        "next_page_token",
                        Value::String(books.len().to_string()),
                    );
                    reply.set_field_by_name("books", Value::List(books));
                    Ok(Response::new(reply))
                }
            });
            grpc.client_streaming(handler, req).await
        }
        "Fail" => {
            // Decide trailers-only or headers + trailers once the request is read: a
            // failure as the only item of a stream comes after the response headers.
            let handler = Handler(move |req: Request<DynamicMessage>| {
                let pool = pool.clone();
                async move {
                    let request = req.into_inner();
                    let code = status_code(number(&request, "code"));
                    let message = text(&request, "message");
                    let status = if flag(&request, "unknown_detail") {
                        Status::with_details(
                            code,
                            message.clone(),
                            unknown_detail(number(&request, "code"), &message),
                        )
                    } else if flag(&request, "with_details") {
                        Status::with_details(
                            code,
                            message.clone(),
                            details(&pool, number(&request, "code"), &message),
                        )
                    } else {
                        Status::new(code, message)
                    };
                    if flag(&request, "after_headers") {
                        let stream: BoxStream = Box::pin(stream::iter(vec![Err(status)]));
                        Ok(served(stream, "Fail"))
                    } else {
                        Err(status)
                    }
                }
            });
            grpc.server_streaming(handler, req).await
        }
        name => {
            let name = name.to_string();
            let handler = Handler(move |req: Request<DynamicMessage>| {
                let output = output.clone();
                let name = name.clone();
                async move {
                    let metadata = req.metadata().clone();
                    let request = req.into_inner();
                    let reply = match name.as_str() {
                        "DeleteBook" => DynamicMessage::new(output),
                        "GetFile" => {
                            let mut body = DynamicMessage::new(output);
                            body.set_field_by_name(
                                "content_type",
                                Value::String("text/plain".into()),
                            );
                            body.set_field_by_name(
                                "data",
                                Value::Bytes(Bytes::from(format!(
                                    "file:{}",
                                    text(&request, "path")
                                ))),
                            );
                            body
                        }
                        "SayHello" => {
                            let mut reply = DynamicMessage::new(output);
                            reply.set_field_by_name(
                                "message",
                                Value::String(format!("Hello, {}", text(&request, "name"))),
                            );
                            reply
                        }
                        "Metadata" => {
                            let mut fields = std::collections::BTreeMap::new();
                            for entry in metadata.clone().into_headers().iter() {
                                let key = entry.0.as_str();
                                if key.starts_with("x-")
                                    || key.starts_with("grpc-")
                                    || key == "authorization"
                                {
                                    fields.insert(
                                        key.to_string(),
                                        String::from_utf8_lossy(entry.1.as_bytes()).into_owned(),
                                    );
                                }
                            }
                            let json = serde_json::json!({ "extra": fields });
                            DynamicMessage::deserialize(output, json).expect("struct")
                        }
                        // Everything else echoes its request.
                        _ => request,
                    };
                    Ok(served(reply, &name))
                }
            });
            grpc.unary(handler, req).await
        }
    }
}

/// An encoded `google.rpc.Status` whose one detail is of a type no descriptor knows, written
/// field by field: `code` (1), `message` (2), `details` (3: an `Any`, type_url 1, value 2).
fn unknown_detail(code: i64, message: &str) -> Bytes {
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut any = Vec::new();
    field(&mut any, 0x0a, b"type.example.com/unknown.Detail");
    field(&mut any, 0x12, &[0x08, 0x01]);
    let mut status = vec![0x08, code as u8];
    field(&mut status, 0x12, message.as_bytes());
    field(&mut status, 0x1a, &any);
    Bytes::from(status)
}

/// An encoded `google.rpc.Status` with one `BadRequest` detail.
fn details(pool: &DescriptorPool, code: i64, message: &str) -> Bytes {
    let json = serde_json::json!({
        "code": code,
        "message": message,
        "details": [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": "name", "description": "must not be empty" }]
        }]
    });
    let status = pool
        .get_message_by_name("google.rpc.Status")
        .expect("status");
    let message = DynamicMessage::deserialize(status, json).expect("status json");
    Bytes::from(message.encode_to_vec())
}

/// The tonic server on 127.0.0.1:0 (h2c).
pub async fn tonic_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pool = pool();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let pool = pool.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let pool = pool.clone();
                    async move {
                        let path = req.uri().path().trim_start_matches('/').to_string();
                        let method = path.split_once('/').and_then(|(service, method)| {
                            pool.get_service_by_name(service)?
                                .methods()
                                .find(|m| m.name() == method)
                        });
                        let response = match method {
                            Some(method) => dispatch(pool.clone(), method, req).await,
                            None => Status::unimplemented(path).into_http(),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The Python grpcio server, started once for the whole test run and ended with it (it exits
/// when its stdin, held here, closes).
pub async fn python_server() -> SocketAddr {
    static SERVER: OnceLock<Result<SocketAddr, String>> = OnceLock::new();
    let started = tokio::task::spawn_blocking(|| {
        SERVER
            .get_or_init(|| {
                use std::io::BufRead;
                let out =
                    std::env::temp_dir().join(format!("portico-grpc-peer-{}", std::process::id()));
                let mut child = std::process::Command::new("python3")
                    .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/grpc_peer.py"))
                    .arg("server")
                    .arg(proto_dir())
                    .arg(&out)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("python3: {e}"))?;
                let stdout = child.stdout.take().ok_or("no stdout")?;
                let mut line = String::new();
                std::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .map_err(|e| e.to_string())?;
                let port: u16 = line
                    .trim()
                    .strip_prefix("PORT ")
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("the Python gRPC server did not start: {line:?}"))?;
                // Keep the child (and its stdin) for as long as the test process lives.
                Box::leak(Box::new(child));
                Ok(SocketAddr::from(([127, 0, 0, 1], port)))
            })
            .clone()
    });
    within("the Python gRPC server", started)
        .await
        .expect("joined")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Both servers: the tests run the same checks against each.
pub async fn both_servers() -> [(&'static str, SocketAddr); 2] {
    [
        ("tonic", tonic_server().await),
        ("python", python_server().await),
    ]
}
