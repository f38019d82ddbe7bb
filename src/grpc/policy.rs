//! The gRPC route policy: the `grpc_transcode` and `grpc_web` route keys.
//!
//! Off the request path: checked when a config loads, turned into the route's gRPC layer
//! (`transcode.rs`) when its stack is built. The descriptors belong to the cluster (its `grpc`
//! section, `descriptors.rs`); what a route decides is how its callers reach them — HTTP/JSON
//! under an optional mount prefix, with which JSON options and limits, and whether browsers
//! may call with gRPC-Web. Native gRPC calls pass through every route to an HTTP/2 cluster
//! without any of this.

use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::config::model::UpstreamProtocol;
use crate::config::source::Seg;
use crate::config::units::format_size;
use serde::{Deserialize, Serialize};

const DEFAULT_MAX_MESSAGE: u64 = 4 * 1024 * 1024;
const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// serde_json refuses to nest deeper than this anyway.
const MAX_JSON_DEPTH: usize = 100;

/// A route's gRPC settings, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct GrpcPolicy {
    /// HTTP/JSON → gRPC for the cluster's descriptors.
    pub(crate) transcode: Option<TranscodeSettings>,
    /// Translate gRPC-Web for browser clients.
    pub(crate) web: bool,
}

/// How a route transcodes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TranscodeSettings {
    /// A path prefix in front of every binding (`/api` + `/v1/books` = `/api/v1/books`).
    pub(crate) mount: Option<String>,
    /// Methods without an HTTP rule are callable as `POST /package.Service/Method`.
    pub(crate) auto_mapping: bool,
    /// A query parameter that names no field is a 400 (rather than ignored).
    pub(crate) reject_unknown_query: bool,
    pub(crate) print: JsonPrint,
    /// Server streaming's default shape (a request's `Accept` may choose another).
    pub(crate) streaming: StreamFormat,
    pub(crate) max_request_message: usize,
    pub(crate) max_response_message: usize,
    pub(crate) max_json_depth: usize,
    /// Serve the route's OpenAPI document at this path (below the route's match).
    pub(crate) openapi_path: Option<String>,
}

/// proto3 JSON print options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct JsonPrint {
    pub(crate) emit_defaults: bool,
    pub(crate) proto_field_names: bool,
    pub(crate) enums_as_ints: bool,
    pub(crate) pretty: bool,
}

/// How server streaming is written to an HTTP caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum StreamFormat {
    /// One JSON array, an element per message, sent as each arrives.
    #[default]
    JsonArray,
    /// One JSON object per line (`application/x-ndjson`).
    Ndjson,
    /// Server-sent events (`text/event-stream`), a `data:` event per message.
    Sse,
}

impl StreamFormat {
    pub(crate) fn word(self) -> &'static str {
        match self {
            StreamFormat::JsonArray => "json_array",
            StreamFormat::Ndjson => "ndjson",
            StreamFormat::Sse => "sse",
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            StreamFormat::JsonArray => "application/json",
            StreamFormat::Ndjson => "application/x-ndjson",
            StreamFormat::Sse => "text/event-stream",
        }
    }
}

/// The route keys as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrpcPolicyFile {
    /// Serve the cluster's gRPC methods as HTTP/JSON. Absent: no transcoding.
    grpc_transcode: Option<TranscodeFile>,
    /// Translate gRPC-Web (`application/grpc-web`, `-text`) for browsers. Default `false`.
    grpc_web: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TranscodeFile {
    /// A path prefix in front of every binding. Default: none.
    mount: Option<String>,
    /// Methods without a `google.api.http` rule as `POST /package.Service/Method`. Default
    /// `true`.
    auto_mapping: Option<bool>,
    /// `ignore` (default) or `reject` (400) query parameters that name no field.
    unknown_query_parameters: Option<String>,
    /// proto3 JSON print options.
    json: Option<JsonPrintFile>,
    /// `json_array` (default), `ndjson` or `sse`: server streaming's default shape.
    streaming: Option<String>,
    /// Largest request body as read and request message once encoded; 413 above. Default
    /// `4MiB`.
    max_request_message: Option<String>,
    /// Largest response message; 502 above. Default `4MiB`.
    max_response_message: Option<String>,
    /// Deepest nesting of a JSON request body; 400 above. Default `64`.
    max_json_depth: Option<usize>,
    /// Serve the route's OpenAPI 3.1 document at this path. Default: not served on the route
    /// (the admin listener serves every route's at `/openapi.json`).
    openapi_path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonPrintFile {
    /// Print fields at their default value (0, "", false, []). Default `false`.
    emit_defaults: Option<bool>,
    /// Print the `.proto` field names instead of lowerCamelCase. Default `false`.
    proto_field_names: Option<bool>,
    /// Print enums as numbers instead of names. Default `false`.
    enums_as_ints: Option<bool>,
    /// Indent the JSON. Default `false`.
    pretty: Option<bool>,
}

impl RoutePolicy for GrpcPolicy {
    const KEYS: &'static [&'static str] = &["grpc_transcode", "grpc_web"];
    type File = GrpcPolicyFile;

    fn adds_layer(&self) -> bool {
        self.transcode.is_some() || self.web
    }

    fn check(file: &GrpcPolicyFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let web = file.grpc_web.unwrap_or(false);
        let cluster = route
            .route_cluster()
            .map(|c| (c.protocol, c.grpc.is_some()));
        let mut ok = true;
        if web && cluster.is_some_and(|(protocol, _)| protocol != Some(UpstreamProtocol::Http2)) {
            let path = route.key("grpc_web");
            route.report(
                &path,
                "gRPC-Web is translated to gRPC, which needs an HTTP/2 cluster (`protocol: http2`)",
            );
            ok = false;
        }
        let transcode = match &file.grpc_transcode {
            None => None,
            Some(transcode) => {
                if cluster.is_some_and(|(_, grpc)| !grpc) {
                    let path = route.key("grpc_transcode");
                    route.report(
                        &path,
                        "the route's cluster has no `grpc` section: transcoding needs its \
                         descriptors (clusters[].grpc.protos or descriptor_set)",
                    );
                    ok = false;
                }
                Some(check_transcode(transcode, route))
            }
        };
        let transcode = match transcode {
            None => None,
            Some(checked) => Some(checked?),
        };
        ok.then_some(GrpcPolicy { transcode, web })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        if let Some(transcode) = &self.transcode {
            let mut text = String::from("HTTP/JSON → gRPC from the cluster's descriptors");
            if let Some(mount) = &transcode.mount {
                text.push_str(&format!(", mounted at {mount}"));
            }
            if transcode.auto_mapping {
                text.push_str(", unannotated methods as POST /package.Service/Method");
            }
            text.push_str(&format!(
                "; streams as {}; messages ≤ {} in, ≤ {} out",
                transcode.streaming.word(),
                format_size(transcode.max_request_message as u64),
                format_size(transcode.max_response_message as u64)
            ));
            out.line("grpc transcode", text);
            if let Some(path) = &transcode.openapi_path {
                out.line("openapi", format!("GET {path}"));
            }
        }
        if self.web {
            out.line("grpc-web", "application/grpc-web(-text) translated to gRPC");
        }
    }

    fn wants_text(path: &[Seg]) -> bool {
        matches!(
            path,
            [Seg::Key(top), Seg::Key(key)]
                if top == "grpc_transcode"
                    && matches!(key.as_str(), "max_request_message" | "max_response_message" | "mount" | "openapi_path")
        )
    }
}

fn check_transcode(
    file: &TranscodeFile,
    route: &mut RouteCheck<'_, '_>,
) -> Option<TranscodeSettings> {
    let base = route.key("grpc_transcode");
    let mut ok = true;
    let mount = match file.mount.as_deref() {
        None | Some("/") => None,
        Some(text) => {
            let path = base.key("mount");
            match route.literal_path(&path, text) {
                Some(()) => Some(crate::config::check::normalise_prefix(text)),
                None => {
                    ok = false;
                    None
                }
            }
        }
    };
    let reject_unknown_query = match file.unknown_query_parameters.as_deref() {
        None | Some("ignore") => false,
        Some("reject") => true,
        Some(other) => {
            let path = base.key("unknown_query_parameters");
            route.report(
                &path,
                format!("unknown value {other:?}: expected ignore or reject"),
            );
            ok = false;
            false
        }
    };
    let streaming = match file.streaming.as_deref() {
        None | Some("json_array") => StreamFormat::JsonArray,
        Some("ndjson") => StreamFormat::Ndjson,
        Some("sse") => StreamFormat::Sse,
        Some(other) => {
            let path = base.key("streaming");
            route.report(
                &path,
                format!("unknown value {other:?}: expected json_array, ndjson or sse"),
            );
            ok = false;
            StreamFormat::JsonArray
        }
    };
    let limits = (1, 1024 * 1024 * 1024);
    let max_request_message = route.size_in_range(
        &base.key("max_request_message"),
        file.max_request_message.as_deref(),
        DEFAULT_MAX_MESSAGE,
        limits,
    );
    let max_response_message = route.size_in_range(
        &base.key("max_response_message"),
        file.max_response_message.as_deref(),
        DEFAULT_MAX_MESSAGE,
        limits,
    );
    let max_json_depth = route.count(
        &base.key("max_json_depth"),
        file.max_json_depth,
        DEFAULT_MAX_JSON_DEPTH,
        (1, MAX_JSON_DEPTH),
    );
    let openapi_path = match file.openapi_path.as_deref() {
        None => None,
        Some(text) => {
            let path = base.key("openapi_path");
            match route.literal_path(&path, text) {
                Some(()) => Some(text.to_string()),
                None => {
                    ok = false;
                    None
                }
            }
        }
    };
    let json = file.json.clone().unwrap_or_default();
    let print = JsonPrint {
        emit_defaults: json.emit_defaults.unwrap_or(false),
        proto_field_names: json.proto_field_names.unwrap_or(false),
        enums_as_ints: json.enums_as_ints.unwrap_or(false),
        pretty: json.pretty.unwrap_or(false),
    };
    let settings = TranscodeSettings {
        mount,
        auto_mapping: file.auto_mapping.unwrap_or(true),
        reject_unknown_query,
        print,
        streaming,
        max_request_message: max_request_message?,
        max_response_message: max_response_message?,
        max_json_depth: max_json_depth?,
        openapi_path,
    };
    ok.then_some(settings)
}
