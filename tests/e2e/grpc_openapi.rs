//! The OpenAPI documents of transcoding routes: valid OpenAPI 3.1 by a validator we did not
//! write (Python's openapi-spec-validator), listing every binding, served on the route and by
//! the admin listener, and made anew by a reload.

use crate::common::*;
use crate::grpc_peers::tonic_server;
use crate::grpc_transcode::library_config;
use http::StatusCode;
use serde_json::Value;

/// Every operation of the test library service as (method, path), mounted at `/api`.
fn library_operations() -> Vec<(&'static str, &'static str)> {
    vec![
        ("get", "/api/v1/{name}"),
        ("delete", "/api/v1/{name}"),
        ("patch", "/api/v1/{book.name}"),
        ("get", "/api/v1/shelves/special/books/{title}"),
        ("get", "/api/v1/{name}/title"),
        ("post", "/api/v1/{name}:publish"),
        ("post", "/api/v1/shelves/{shelf}/books"),
        ("put", "/api/v1/shelves/{shelf}/books/{book_id}"),
        ("get", "/api/v1/shelves/{shelf}/books"),
        ("post", "/api/v1/echo"),
        ("get", "/api/v1/echo/{text}"),
        ("get", "/api/v1/echo/{author.name}/{count}"),
        ("get", "/api/v1/files/{path}"),
        ("post", "/api/v1/upload"),
        ("post", "/api/v1/fail"),
        ("purge", "/api/v1/cache/{name}"),
        ("post", "/api/v1/books:batchAdd"),
        ("get", "/api/v1/metadata"),
        ("post", "/api/library.v1.Library/Unannotated"),
        ("post", "/api/library.v1.Library/Chat"),
        ("post", "/api/Greeter/SayHello"),
    ]
}

/// Validate `document` as OpenAPI 3.1 with openapi-spec-validator.
async fn validate(document: &str) {
    let script = r#"
import json, sys
try:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator
except ImportError:
    print("MISSING openapi-spec-validator (.ci/run installs it)")
    sys.exit(3)
spec = json.load(sys.stdin)
assert spec["openapi"].startswith("3.1"), spec["openapi"]
validate(spec, cls=OpenAPIV31SpecValidator)
print("VALID")
"#;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, document.as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let output = within("the OpenAPI validator", child.wait_with_output())
        .await
        .expect("output");
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("VALID"),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn operations(document: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if method == "x-additionalOperations" {
                // Methods OpenAPI 3.1 has no key for.
                for custom in operation.as_object().expect("operations").keys() {
                    out.push((custom.to_ascii_lowercase(), path.clone()));
                }
            } else {
                out.push((method.clone(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

fn expected(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn the_openapi_document_is_valid_31_and_lists_every_binding() {
    let addr = tonic_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let text = library_config(addr, "mount: /api, openapi_path: /api/openapi.json").replace(
        "access_log:",
        "admin: { address: \"127.0.0.1:0\" }\naccess_log:",
    );
    std::fs::write(&path, &text).expect("write");
    let gw = TestGateway::start_file(path.clone()).await;

    let served = get(gw.addr, "h", "/api/openapi.json").await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.headers["content-type"], "application/json");
    let document = served.json();
    validate(&served.text()).await;
    assert_eq!(operations(&document), expected(&library_operations()));

    // Parameters and schemas are typed like the transcoder reads them.
    let get_book = &document["paths"]["/api/v1/{name}"]["get"];
    assert_eq!(
        get_book["parameters"][0]["schema"]["pattern"],
        "^shelves/[^/]+/books/[^/]+$"
    );
    let echo_query = &document["paths"]["/api/v1/echo/{text}"]["get"]["parameters"];
    let names: Vec<&str> = echo_query
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    for name in [
        "text",
        "count",
        "big",
        "author.name",
        "author.born",
        "when",
        "genres",
        "maybe",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["library.v1.Everything"]["properties"]["big"]["type"],
        "string"
    );
    assert_eq!(
        schemas["library.v1.Everything"]["properties"]["when"]["format"],
        "date-time"
    );
    assert_eq!(schemas["library.v1.Genre"]["enum"][1], "FICTION");
    assert!(schemas["google.rpc.Status"]["properties"]["details"].is_object());
    let stream =
        &document["paths"]["/api/v1/shelves/{shelf}/books"]["get"]["responses"]["200"]["content"];
    assert!(stream["application/x-ndjson"].is_object() && stream["text/event-stream"].is_object());

    // The admin listener's document covers every transcoding route, and is valid too.
    let admin = get(gw.admin.expect("admin"), "admin", "/openapi.json").await;
    assert_eq!(admin.status, StatusCode::OK);
    validate(&admin.text()).await;
    assert_eq!(operations(&admin.json()), expected(&library_operations()));

    // A reload with another mount: both documents follow.
    std::fs::write(&path, text.replace("mount: /api", "mount: /v9")).expect("write");
    within("a reload", gw.reload.reload())
        .await
        .expect("reload");
    let admin = get(gw.admin.expect("admin"), "admin", "/openapi.json").await;
    assert!(admin.json()["paths"]["/v9/v1/echo"]["post"].is_object());
}
