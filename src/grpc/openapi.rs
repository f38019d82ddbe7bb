//! OpenAPI 3.1 documents generated from the descriptors and their HTTP bindings.
//!
//! Off the request path: a route's document (`grpc_transcode.openapi_path`) is made when its
//! stack is built, so a reload with changed protos makes it anew; the admin listener's
//! `/openapi.json` is made from the running configuration when asked, and covers every
//! transcoding route. Each binding is an operation: its path (a variable spanning segments,
//! `{name=shelves/*/books/*}`, is one parameter with a `pattern`, its value holding the
//! slashes), its path and query parameters typed like the transcoder reads them, its request
//! body and its responses — JSON schemas of the messages as proto3 JSON prints them (64-bit
//! integers as strings, well-known types in their JSON forms, enums by name), a JSON array,
//! NDJSON or server-sent events for server streams, and `google.rpc.Status` for errors.

use super::descriptors::GrpcApi;
use super::http_rule::{split_verb, template_variables, Binding, BodyRule};
use super::policy::{JsonPrint, TranscodeSettings};
use super::request::is_http_body;
use crate::config::Config;
use bytes::Bytes;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// OpenAPI 3.1 path items name eight methods; a binding with another (`custom { kind: "PURGE"
/// }`) is listed under this extension, by method, as OpenAPI 3.2's `additionalOperations`.
const CUSTOM_METHODS: &str = "x-additionalOperations";

/// How deep query parameters go into nested messages.
const QUERY_DEPTH: usize = 3;

/// The OpenAPI document of one transcoding route.
pub(crate) fn route_document(api: &GrpcApi, settings: &TranscodeSettings) -> Bytes {
    let mut builder = Builder::new(settings.print);
    builder.add(api, settings);
    let title = api
        .services
        .iter()
        .map(|s| s.full_name())
        .collect::<Vec<_>>()
        .join(", ");
    Bytes::from(builder.finish(&title).to_string())
}

/// One document for every transcoding route of `config` (the admin listener's).
pub(crate) fn admin_document(config: &Config) -> Bytes {
    let mut builder = Builder::new(JsonPrint::default());
    let mut titles = Vec::new();
    for route in &config.routes {
        let Some(settings) = &route.policies.grpc.transcode else {
            continue;
        };
        let Some(api) = route
            .cluster_index
            .and_then(|index| config.clusters.get(index))
            .and_then(|cluster| cluster.grpc.as_ref())
        else {
            continue;
        };
        builder.print = settings.print;
        builder.add(api, settings);
        titles.push(route.name.clone());
    }
    let title = if titles.is_empty() {
        String::from("no transcoding routes")
    } else {
        format!("Portico routes: {}", titles.join(", "))
    };
    Bytes::from(builder.finish(&title).to_string())
}

struct Builder {
    print: JsonPrint,
    paths: BTreeMap<String, Map<String, Value>>,
    schemas: BTreeMap<String, Value>,
    /// Operation ids in use.
    operations: Vec<String>,
}

impl Builder {
    fn new(print: JsonPrint) -> Builder {
        Builder {
            print,
            paths: BTreeMap::new(),
            schemas: BTreeMap::new(),
            operations: Vec::new(),
        }
    }

    fn add(&mut self, api: &GrpcApi, settings: &TranscodeSettings) {
        let mount = settings.mount.as_deref().unwrap_or("");
        for binding in api.table.bindings(settings.auto_mapping) {
            let path = format!("{mount}{}", openapi_path(&binding.path).0);
            let method = binding.http_method.as_str().to_ascii_lowercase();
            let standard = matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
            );
            let item = self.paths.entry(path.clone()).or_default();
            let taken = if standard {
                item.contains_key(&method)
            } else {
                item.get(CUSTOM_METHODS)
                    .is_some_and(|custom| custom.get(binding.http_method.as_str()).is_some())
            };
            if taken {
                // Another route already describes this operation.
                continue;
            }
            let operation = self.operation(binding);
            let item = self.paths.entry(path).or_default();
            if standard {
                item.insert(method, operation);
            } else if let Value::Object(custom) = item
                .entry(CUSTOM_METHODS)
                .or_insert_with(|| Value::Object(Map::new()))
            {
                custom.insert(binding.http_method.as_str().to_string(), operation);
            }
        }
        // The error shape every operation refers to.
        if let Some(status) = api.pool.get_message_by_name("google.rpc.Status") {
            self.message_schema(&status);
        }
    }

    fn operation(&mut self, binding: &Binding) -> Value {
        let info = &binding.method;
        let service = info.desc.parent_service().full_name().to_string();
        let base = info.desc.full_name().to_string();
        let mut id = base.clone();
        let mut n = 1;
        while self.operations.contains(&id) {
            n += 1;
            id = format!("{base}_{n}");
        }
        self.operations.push(id.clone());

        let mut parameters = Vec::new();
        // Wildcards outside variables are matched but set nothing.
        for index in 1..=openapi_path(&binding.path).1 {
            parameters.push(json!({
                "name": format!("_{index}"),
                "in": "path",
                "required": true,
                "schema": {"type": "string"},
                "description": "Matched by a wildcard of the rule; not part of the request message.",
            }));
        }
        let mut bound: Vec<Vec<FieldDescriptor>> = Vec::new();
        let (template, _) = split_verb(&binding.path);
        for (name, multi) in template_variables(template) {
            let Some(variable) = binding.variables.iter().find(|v| *v.name == *name) else {
                continue;
            };
            let Some(field) = variable.fields.last() else {
                continue;
            };
            let mut schema = self.field_schema(field, false);
            if multi {
                if let (Some(object), Some(pattern)) =
                    (schema.as_object_mut(), variable_pattern(template, &name))
                {
                    object.insert("pattern".into(), Value::String(pattern));
                }
            }
            parameters.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": schema,
                "description": if multi {
                    "Spans path segments: its `/` are part of the value."
                } else {
                    "One path segment, percent-decoded."
                },
            }));
            bound.push(variable.fields.clone());
        }
        let input = &info.input;
        let query_from: Option<(Vec<FieldDescriptor>, bool)> = match &binding.body {
            BodyRule::Whole => None,
            BodyRule::None => Some((Vec::new(), false)),
            BodyRule::Field(field) => Some((vec![field.clone()], true)),
        };
        if let Some((skip, _)) = query_from {
            let mut prefix = Vec::new();
            self.query_parameters(input, &mut prefix, &bound, &skip, &mut parameters, 0);
        }

        let mut operation = Map::new();
        operation.insert("operationId".into(), Value::String(id));
        operation.insert("tags".into(), json!([service]));
        operation.insert(
            "summary".into(),
            Value::String(format!(
                "{} ({})",
                info.desc.name(),
                info.grpc_path.as_str()
            )),
        );
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = self.request_body(binding) {
            operation.insert("requestBody".into(), body);
        }
        let ok = self.response(binding);
        operation.insert(
            "responses".into(),
            json!({
                "200": ok,
                "default": {
                    "description": "The call failed: its gRPC status as an HTTP status and a \
                                    google.rpc.Status body (or the gateway's own error body).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}
                }
            }),
        );
        Value::Object(operation)
    }

    fn request_body(&mut self, binding: &Binding) -> Option<Value> {
        let input = &binding.method.input;
        let schema = match &binding.body {
            BodyRule::None => return None,
            BodyRule::Whole if is_http_body(input) => {
                return Some(
                    json!({"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}),
                )
            }
            BodyRule::Whole => self.message_ref(input),
            BodyRule::Field(field) => {
                if let Kind::Message(message) = field.kind() {
                    if is_http_body(&message) {
                        return Some(
                            json!({"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}),
                        );
                    }
                }
                self.field_schema(field, false)
            }
        };
        let content = if binding.method.client_streaming() {
            json!({
                "application/json": {"schema": {"type": "array", "items": schema}},
                "application/x-ndjson": {"schema": schema},
            })
        } else {
            json!({"application/json": {"schema": schema}})
        };
        Some(json!({"required": true, "content": content}))
    }

    fn response(&mut self, binding: &Binding) -> Value {
        let output = &binding.method.output;
        let schema = match &binding.response_body {
            Some(field) => self.field_schema(field, false),
            None => self.message_ref(output),
        };
        let raw = is_http_body(output)
            || binding
                .response_body
                .as_ref()
                .is_some_and(|f| matches!(f.kind(), Kind::Message(m) if is_http_body(&m)));
        if raw {
            return json!({
                "description": "The body as the method returned it (google.api.HttpBody).",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}
            });
        }
        if binding.method.server_streaming() {
            return json!({
                "description": "A stream of messages, each sent as it arrives; a failure after the \
                                first ends the stream with {\"error\": google.rpc.Status}.",
                "content": {
                    "application/json": {"schema": {"type": "array", "items": schema}},
                    "application/x-ndjson": {"schema": schema},
                    "text/event-stream": {"schema": {"type": "string"}},
                }
            });
        }
        json!({"description": "OK", "content": {"application/json": {"schema": schema}}})
    }

    /// The query parameters of `message`'s fields below `prefix`, except those bound by the
    /// path (`bound`) or the body (`skip`).
    fn query_parameters(
        &mut self,
        message: &MessageDescriptor,
        prefix: &mut Vec<FieldDescriptor>,
        bound: &[Vec<FieldDescriptor>],
        skip: &[FieldDescriptor],
        out: &mut Vec<Value>,
        depth: usize,
    ) {
        for field in message.fields() {
            if prefix.is_empty() && skip.contains(&field) {
                continue;
            }
            prefix.push(field.clone());
            let taken = bound
                .iter()
                .any(|path| path.as_slice() == prefix.as_slice());
            let name = prefix
                .iter()
                .map(|f| self.field_name(f))
                .collect::<Vec<_>>()
                .join(".");
            if !taken && !field.is_map() {
                match field.kind() {
                    Kind::Message(inner) if !super::http_rule::is_scalar_wrapper(&inner) => {
                        let recursive = prefix[..prefix.len() - 1]
                            .iter()
                            .any(|f| matches!(f.kind(), Kind::Message(m) if m == inner));
                        if !field.is_list()
                            && depth + 1 < QUERY_DEPTH
                            && !recursive
                            && !is_free_form(&inner)
                        {
                            self.query_parameters(&inner, prefix, bound, &[], out, depth + 1);
                        }
                    }
                    _ => {
                        let schema = self.field_schema(&field, false);
                        let mut parameter = json!({"name": name, "in": "query", "schema": schema});
                        if field.is_list() {
                            parameter["explode"] = Value::Bool(true);
                        }
                        out.push(parameter);
                    }
                }
            }
            prefix.pop();
        }
    }

    fn field_name(&self, field: &FieldDescriptor) -> String {
        if self.print.proto_field_names {
            field.name().to_string()
        } else {
            field.json_name().to_string()
        }
    }

    /// A field's schema (`element`: of one element of a list).
    fn field_schema(&mut self, field: &FieldDescriptor, element: bool) -> Value {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => entry
                    .get_field_by_name("value")
                    .map(|value| self.field_schema(&value, true))
                    .unwrap_or_else(|| json!({})),
                _ => json!({}),
            };
            return json!({"type": "object", "additionalProperties": value});
        }
        if field.is_list() && !element {
            return json!({"type": "array", "items": self.field_schema(field, true)});
        }
        self.kind_schema(&field.kind())
    }

    fn kind_schema(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(enumeration) => {
                let name = enumeration.full_name().to_string();
                if !self.schemas.contains_key(&name) {
                    let schema = if self.print.enums_as_ints {
                        json!({"type": "integer", "enum": enumeration.values().map(|v| v.number()).collect::<Vec<_>>()})
                    } else {
                        json!({"type": "string", "enum": enumeration.values().map(|v| v.name().to_string()).collect::<Vec<_>>()})
                    };
                    self.schemas.insert(name.clone(), schema);
                }
                json!({"$ref": format!("#/components/schemas/{name}")})
            }
            Kind::Message(message) => self.message_ref(message),
        }
    }

    /// A reference to a message's schema (well-known types inline).
    fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(message) {
            return schema;
        }
        self.message_schema(message);
        json!({"$ref": format!("#/components/schemas/{}", message.full_name())})
    }

    fn message_schema(&mut self, message: &MessageDescriptor) {
        let name = message.full_name().to_string();
        if self.schemas.contains_key(&name) {
            return;
        }
        // Placeholder first: recursive messages refer to themselves.
        self.schemas.insert(name.clone(), json!({}));
        let mut properties = Map::new();
        for field in message.fields() {
            let schema = self.field_schema(&field, false);
            properties.insert(self.field_name(&field), schema);
        }
        self.schemas
            .insert(name, json!({"type": "object", "properties": properties}));
    }

    fn finish(self, title: &str) -> Value {
        let paths: Map<String, Value> = self
            .paths
            .into_iter()
            .map(|(path, operations)| (path, Value::Object(operations)))
            .collect();
        let schemas: Map<String, Value> = self.schemas.into_iter().collect();
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": title,
                "version": "1",
                "description": "Generated by Portico from the services' .proto files and their \
                                google.api.http rules.",
            },
            "paths": paths,
            "components": {"schemas": schemas},
        })
    }
}

/// Messages whose JSON form is not an object of their fields.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    let wrapper = |inner: Value| {
        let mut inner = inner;
        if let Some(object) = inner.as_object_mut() {
            let kind = object.get("type").cloned().unwrap_or(Value::Null);
            object.insert("type".into(), json!([kind, "null"]));
        }
        inner
    };
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"})
        }
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": {"@type": {"type": "string"}},
            "required": ["@type"],
        }),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            wrapper(json!({"type": "number"}))
        }
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            wrapper(json!({"type": "integer"}))
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            wrapper(json!({"type": "string"}))
        }
        "google.protobuf.BoolValue" => wrapper(json!({"type": "boolean"})),
        "google.protobuf.StringValue" => wrapper(json!({"type": "string"})),
        "google.protobuf.BytesValue" => {
            wrapper(json!({"type": "string", "contentEncoding": "base64"}))
        }
        _ => return None,
    })
}

/// Messages printed as free-form JSON: no query parameters below them.
fn is_free_form(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Any"
    )
}

/// `/v1/{name=shelves/*/books/*}:publish` → `/v1/{name}:publish`; an anonymous `*` or `**`
/// becomes a parameter of its own.
fn openapi_path(template: &str) -> (String, usize) {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut anonymous = 0;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let end = after.find('}').unwrap_or(after.len());
            let inside = &after[..end];
            let name = inside.split_once('=').map_or(inside, |(name, _)| name);
            out.push('{');
            out.push_str(name);
            out.push('}');
            rest = after.get(end + 1..).unwrap_or("");
            continue;
        }
        let segment_end = rest[1..]
            .find(['/', '{', ':'])
            .map_or(rest.len(), |i| i + 1);
        let segment = &rest[..segment_end];
        match segment {
            "/*" | "/**" => {
                anonymous += 1;
                out.push_str(&format!("/{{_{anonymous}}}"));
            }
            _ => out.push_str(segment),
        }
        rest = &rest[segment_end..];
    }
    (out, anonymous)
}

/// The regular expression a multi-segment variable's value matches.
fn variable_pattern(template: &str, name: &str) -> Option<String> {
    let start = template.find(&format!("{{{name}="))?;
    let after = &template[start + name.len() + 2..];
    let pattern = &after[..after.find('}')?];
    let parts: Vec<String> = pattern
        .split('/')
        .map(|part| match part {
            "*" => String::from("[^/]+"),
            "**" => String::from(".*"),
            literal => regex_escape(literal),
        })
        .collect();
    Some(format!("^{}$", parts.join("/")))
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_openapi_paths() {
        let path = |template| openapi_path(template).0;
        assert_eq!(
            path("/v1/{name=shelves/*/books/*}:publish"),
            "/v1/{name}:publish"
        );
        assert_eq!(path("/v1/{book.name=shelves/*}"), "/v1/{book.name}");
        assert_eq!(
            openapi_path("/v1/*/x/**"),
            ("/v1/{_1}/x/{_2}".to_string(), 2)
        );
        assert_eq!(path("/pkg.Service/Method"), "/pkg.Service/Method");
        assert_eq!(
            variable_pattern("/v1/{name=shelves/*/books/*}", "name").as_deref(),
            Some("^shelves/[^/]+/books/[^/]+$")
        );
        assert_eq!(
            variable_pattern("/v1/{path=**}", "path").as_deref(),
            Some("^.*$")
        );
    }
}
