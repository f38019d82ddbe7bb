//! HTTP/JSON request → protobuf request message.
//!
//! On the request path of transcoding routes, once the binding is known (`http_rule.rs`):
//! the body (per the rule's `body`), the path variables and the query parameters become one
//! request message. Everything is typed by the field's descriptor — a query value for an
//! `int64` field is parsed as one, an enum accepts its value names or numbers, a `bytes` field
//! base64 — and every refusal names the field or parameter and says what was expected.
//!
//! The pieces are put together as one proto3 JSON document and read by prost-reflect. Before
//! that, the document is walked once against the descriptors: unknown fields are allowed (and
//! ignored), but an enum value name the enum does not have is refused (prost-reflect would
//! drop it silently), and so is nesting deeper than the route allows.

use super::http_rule::{field_path, Binding, BodyRule, PathVariable};
use super::status::hex;
use base64::Engine;
use bytes::Bytes;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json};

/// Why a request cannot become a request message: answered with 400, the message naming the
/// field or parameter.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("the request body is not valid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    #[error("the request body is not valid UTF-8")]
    NotUtf8,
    #[error("the request body must be a JSON object")]
    NotAnObject,
    #[error("the request body nests deeper than the limit of {limit}")]
    TooDeep { limit: usize },
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error("path variable `{variable}`: {message}")]
    Path { variable: String, message: String },
    #[error("query parameter `{parameter}`: {message}")]
    Query { parameter: String, message: String },
    #[error("unknown query parameter `{0}`")]
    UnknownQueryParameter(String),
    #[error(transparent)]
    Stream(#[from] super::stream::SplitError),
    #[error("a gRPC-Web text body is not base64")]
    NotBase64,
    #[error("the message is larger than the {limit}-byte limit")]
    MessageTooLarge { limit: usize },
}

/// The message a request is mapped into: the method's input type and the rule's `body`.
pub(crate) struct MessageTarget<'a> {
    pub(crate) input: &'a MessageDescriptor,
    pub(crate) body: &'a BodyRule,
}

impl<'a> MessageTarget<'a> {
    pub(crate) fn of(binding: &'a Binding) -> MessageTarget<'a> {
        MessageTarget {
            input: &binding.method.input,
            body: &binding.body,
        }
    }
}

/// What the route's settings say about request mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestRules {
    pub(crate) reject_unknown_query: bool,
    pub(crate) max_depth: usize,
}

/// The request message for `binding` from the request's parts. `captures` are the path
/// variables' raw text; `content_type` is only read for `google.api.HttpBody` bodies.
pub(crate) fn build_message(
    target: &MessageTarget<'_>,
    captures: &[(&PathVariable, &str)],
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
    rules: RequestRules,
) -> Result<DynamicMessage, RequestError> {
    let input = target.input;
    let mut root = Map::new();
    // An HttpBody (the whole message or the body field) takes the body as it is.
    let mut raw_body: Option<(Option<FieldDescriptor>, DynamicMessage)> = None;
    match target.body {
        BodyRule::None => {}
        BodyRule::Whole if is_http_body(input) => {
            raw_body = Some((None, http_body(input, body, content_type)));
        }
        BodyRule::Whole => {
            if !body.is_empty() {
                match parse_json(body, rules.max_depth)? {
                    Json::Object(fields) => root = fields,
                    _ => return Err(RequestError::NotAnObject),
                }
            }
        }
        BodyRule::Field(field) => match field.kind() {
            Kind::Message(message) if is_http_body(&message) && !field.is_list() => {
                raw_body = Some((Some(field.clone()), http_body(&message, body, content_type)));
            }
            _ => {
                if !body.is_empty() {
                    let value = parse_json(body, rules.max_depth)?;
                    root.insert(field.name().to_string(), value);
                }
            }
        },
    }

    // Path variables: decoded, typed by their field, set below whatever the body said.
    for (variable, raw) in captures {
        let text = if variable.multi_segment {
            decode_keeping_reserved(raw)
        } else {
            decode_fully(raw)
        }
        .ok_or_else(|| RequestError::Path {
            variable: variable.name.to_string(),
            message: String::from("is not valid UTF-8 once percent-decoded"),
        })?;
        let Some(field) = variable.fields.last() else {
            continue;
        };
        let value = scalar_json(field, &text).map_err(|message| RequestError::Path {
            variable: variable.name.to_string(),
            message,
        })?;
        set_at(&mut root, &variable.fields, value, false).map_err(|message| {
            RequestError::Path {
                variable: variable.name.to_string(),
                message,
            }
        })?;
    }

    if let Some(query) = query.filter(|q| !q.is_empty()) {
        apply_query(target, captures, query, &mut root, rules)?;
    }

    let document = Json::Object(root);
    check_document(&document, input, rules.max_depth)?;
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&document, &mut track);
    let read = DynamicMessage::deserialize_with_options(input.clone(), deserializer, &options);
    let mut message = read.map_err(|error| {
        let field = track.path().to_string();
        RequestError::Field {
            field: if field == "." {
                String::from("(body)")
            } else {
                field
            },
            message: error.to_string(),
        }
    })?;
    if let Some((field, http_body)) = raw_body {
        match field {
            None => message = http_body,
            Some(field) => message.set_field(&field, prost_reflect::Value::Message(http_body)),
        }
    }
    Ok(message)
}

/// A query string's parameters applied to `root`, typed by the fields they name.
fn apply_query(
    target: &MessageTarget<'_>,
    captures: &[(&PathVariable, &str)],
    query: &str,
    root: &mut Map<String, Json>,
    rules: RequestRules,
) -> Result<(), RequestError> {
    let input = target.input;
    // Fields the query may not set: all of them under `body: "*"`, the body field, and the
    // fields the path set.
    let mut seen: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode_query(raw_name).ok_or_else(|| RequestError::Query {
            parameter: raw_name.to_string(),
            message: String::from("the name is not valid UTF-8 once percent-decoded"),
        })?;
        let value = decode_query(raw_value).ok_or_else(|| RequestError::Query {
            parameter: name.clone(),
            message: String::from("the value is not valid UTF-8 once percent-decoded"),
        })?;
        let fields = match field_path(input, &name) {
            Ok(fields) => fields,
            Err(_) => {
                if rules.reject_unknown_query {
                    return Err(RequestError::UnknownQueryParameter(name));
                }
                continue;
            }
        };
        let bound_elsewhere = match target.body {
            BodyRule::Whole => true,
            BodyRule::Field(body) => fields.first().is_some_and(|f| f == body),
            BodyRule::None => false,
        } || captures.iter().any(|(variable, _)| {
            variable
                .fields
                .iter()
                .map(FieldDescriptor::full_name)
                .eq(fields
                    .iter()
                    .take(variable.fields.len())
                    .map(FieldDescriptor::full_name))
        });
        if bound_elsewhere {
            if rules.reject_unknown_query {
                return Err(RequestError::Query {
                    parameter: name,
                    message: String::from(
                        "this field is set by the path or the body, not the query",
                    ),
                });
            }
            continue;
        }
        let Some(field) = fields.last() else {
            continue;
        };
        if field.is_map() {
            return Err(RequestError::Query {
                parameter: name,
                message: String::from("a map field cannot be set from the query"),
            });
        }
        if let Kind::Message(message) = field.kind() {
            if !super::http_rule::is_scalar_wrapper(&message) {
                return Err(RequestError::Query {
                    message: format!(
                        "is a message ({}); set its fields as `{name}.<field>`",
                        message.full_name()
                    ),
                    parameter: name,
                });
            }
        }
        let typed = scalar_json(field, &value).map_err(|message| RequestError::Query {
            parameter: name.clone(),
            message,
        })?;
        if !field.is_list() {
            if seen.contains(&name) {
                return Err(RequestError::Query {
                    parameter: name,
                    message: String::from("is given more than once, but the field is not repeated"),
                });
            }
            seen.push(name.clone());
        }
        set_at(root, &fields, typed, field.is_list()).map_err(|message| RequestError::Query {
            parameter: name,
            message,
        })?;
    }
    Ok(())
}

/// Set `value` at the nested position `fields` names, making objects on the way and
/// replacing whatever was there under either of the field's names. With `append`, add to the
/// list there instead.
fn set_at(
    root: &mut Map<String, Json>,
    fields: &[FieldDescriptor],
    value: Json,
    append: bool,
) -> Result<(), String> {
    let Some((last, parents)) = fields.split_last() else {
        return Ok(());
    };
    let mut object = root;
    for field in parents {
        let existing = take_field(object, field);
        let child = match existing {
            None | Some(Json::Null) => Json::Object(Map::new()),
            Some(Json::Object(map)) => Json::Object(map),
            Some(_) => {
                return Err(format!("`{}` in the body is not an object", field.name()));
            }
        };
        object.insert(field.name().to_string(), child);
        object = match object.get_mut(field.name()) {
            Some(Json::Object(map)) => map,
            _ => return Err(String::from("cannot be set")),
        };
    }
    if append {
        match take_field(object, last) {
            Some(Json::Array(mut items)) => {
                items.push(value);
                object.insert(last.name().to_string(), Json::Array(items));
            }
            _ => {
                object.insert(last.name().to_string(), Json::Array(vec![value]));
            }
        }
    } else {
        take_field(object, last);
        object.insert(last.name().to_string(), value);
    }
    Ok(())
}

/// Remove and return a field's entry, under its proto or JSON name.
fn take_field(object: &mut Map<String, Json>, field: &FieldDescriptor) -> Option<Json> {
    let by_name = object.remove(field.name());
    let by_json = object.remove(field.json_name());
    by_name.or(by_json)
}

/// A path or query value as proto3 JSON for `field` (its element type, for a list).
pub(crate) fn scalar_json(field: &FieldDescriptor, text: &str) -> Result<Json, String> {
    kind_json(&field.kind(), text)
}

fn kind_json(kind: &Kind, text: &str) -> Result<Json, String> {
    fn int<T: std::str::FromStr + Into<Json>>(text: &str, what: &str) -> Result<Json, String> {
        text.parse::<T>()
            .map(Into::into)
            .map_err(|_| format!("{text:?} is not a valid {what}"))
    }
    fn long<T: std::str::FromStr + ToString>(text: &str, what: &str) -> Result<Json, String> {
        // 64-bit integers are strings in proto3 JSON, so no precision is lost.
        text.parse::<T>()
            .map(|value| Json::String(value.to_string()))
            .map_err(|_| format!("{text:?} is not a valid {what}"))
    }
    match kind {
        Kind::String => Ok(Json::String(text.to_string())),
        Kind::Bool => match text {
            "true" | "True" | "TRUE" | "1" => Ok(Json::Bool(true)),
            "false" | "False" | "FALSE" | "0" => Ok(Json::Bool(false)),
            _ => Err(format!("{text:?} is not a boolean (true or false)")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => int::<i32>(text, "32-bit integer"),
        Kind::Uint32 | Kind::Fixed32 => int::<u32>(text, "unsigned 32-bit integer"),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => long::<i64>(text, "64-bit integer"),
        Kind::Uint64 | Kind::Fixed64 => long::<u64>(text, "unsigned 64-bit integer"),
        Kind::Double | Kind::Float => match text {
            "NaN" | "Infinity" | "-Infinity" => Ok(Json::String(text.to_string())),
            _ => text
                .parse::<f64>()
                .ok()
                .filter(|value| value.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Json::Number)
                .ok_or_else(|| format!("{text:?} is not a number")),
        },
        Kind::Bytes => {
            let decoded = decode_any_base64(text)
                .ok_or_else(|| format!("{text:?} is not base64 (standard or URL-safe)"))?;
            Ok(Json::String(
                base64::engine::general_purpose::STANDARD.encode(decoded),
            ))
        }
        Kind::Enum(enumeration) => {
            if let Ok(number) = text.parse::<i32>() {
                return Ok(Json::from(number));
            }
            match enumeration.get_value_by_name(text) {
                Some(_) => Ok(Json::String(text.to_string())),
                None => Err(unknown_enum(enumeration, text)),
            }
        }
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask" => Ok(Json::String(text.to_string())),
            _ => match message.get_field_by_name("value") {
                Some(inner) if super::http_rule::is_scalar_wrapper(message) => {
                    kind_json(&inner.kind(), text)
                }
                _ => Err(format!("{} cannot be set from text", message.full_name())),
            },
        },
    }
}

fn unknown_enum(enumeration: &prost_reflect::EnumDescriptor, text: &str) -> String {
    let names: Vec<String> = enumeration.values().map(|v| v.name().to_string()).collect();
    format!(
        "{text:?} is not a value of {} (expected one of {}, or a number)",
        enumeration.full_name(),
        names.join(", ")
    )
}

fn decode_any_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .ok()
}

/// Parse a JSON body: one value and nothing after it, valid UTF-8, nested no deeper than
/// `max_depth`.
pub(crate) fn parse_json(body: &[u8], max_depth: usize) -> Result<Json, RequestError> {
    if std::str::from_utf8(body).is_err() {
        return Err(RequestError::NotUtf8);
    }
    // `from_slice` checks that only whitespace follows the value.
    let value: Json = serde_json::from_slice(body).map_err(RequestError::Syntax)?;
    if depth(&value) > max_depth {
        return Err(RequestError::TooDeep { limit: max_depth });
    }
    Ok(value)
}

/// How deeply objects and arrays nest in `value` (a scalar is 0). Iterative: a document is
/// only as deep as serde_json allowed, but this needs no stack for it.
fn depth(value: &Json) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Json::Object(fields) => {
                deepest = deepest.max(level + 1);
                stack.extend(fields.values().map(|v| (v, level + 1)));
            }
            Json::Array(items) => {
                deepest = deepest.max(level + 1);
                stack.extend(items.iter().map(|v| (v, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Walk `document` against `message`: enum value names must exist.
fn check_document(
    document: &Json,
    message: &MessageDescriptor,
    max_depth: usize,
) -> Result<(), RequestError> {
    if depth(document) > max_depth {
        return Err(RequestError::TooDeep { limit: max_depth });
    }
    let mut path = String::new();
    check_message(document, message, &mut path)
        .map_err(|(field, message)| RequestError::Field { field, message })
}

fn check_message(
    value: &Json,
    message: &MessageDescriptor,
    path: &mut String,
) -> Result<(), (String, String)> {
    if message.full_name() == "google.protobuf.Any" {
        return check_any(value, message, path);
    }
    // The other well-known types have JSON forms of their own, which prost-reflect checks,
    // and hold no enums.
    if message.full_name().starts_with("google.protobuf.") {
        return Ok(());
    }
    let Json::Object(fields) = value else {
        return Ok(());
    };
    for (key, value) in fields {
        let Some(field) = message
            .get_field_by_json_name(key)
            .or_else(|| message.get_field_by_name(key))
        else {
            continue;
        };
        let length = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        let kind = field.kind();
        let result = if field.is_map() {
            match (value, map_value_kind(&kind)) {
                (Json::Object(entries), Some(value_kind)) => entries
                    .values()
                    .try_for_each(|entry| check_kind(entry, &value_kind, path)),
                _ => Ok(()),
            }
        } else if field.is_list() {
            match value {
                Json::Array(items) => items
                    .iter()
                    .try_for_each(|item| check_kind(item, &kind, path)),
                _ => Ok(()),
            }
        } else {
            check_kind(value, &kind, path)
        };
        result?;
        path.truncate(length);
    }
    Ok(())
}

/// An `Any` is checked as the message its `@type` names: its fields beside `@type`, or its
/// `value` when that type is a well-known type with a JSON form of its own. A type the
/// descriptors do not know is left to prost-reflect, which refuses it.
fn check_any(
    value: &Json,
    any: &MessageDescriptor,
    path: &mut String,
) -> Result<(), (String, String)> {
    let Json::Object(fields) = value else {
        return Ok(());
    };
    let Some(Json::String(type_url)) = fields.get("@type") else {
        return Ok(());
    };
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let Some(packed) = any.parent_pool().get_message_by_name(name) else {
        return Ok(());
    };
    if packed.full_name().starts_with("google.protobuf.") {
        return match fields.get("value") {
            Some(inner) => check_message(inner, &packed, path),
            None => Ok(()),
        };
    }
    check_message(value, &packed, path)
}

fn map_value_kind(kind: &Kind) -> Option<Kind> {
    match kind {
        Kind::Message(entry) => entry.get_field_by_name("value").map(|f| f.kind()),
        _ => None,
    }
}

fn check_kind(value: &Json, kind: &Kind, path: &mut String) -> Result<(), (String, String)> {
    match (kind, value) {
        (Kind::Enum(enumeration), Json::String(text)) => {
            if enumeration.get_value_by_name(text).is_none() {
                return Err((path.clone(), unknown_enum(enumeration, text)));
            }
            Ok(())
        }
        (Kind::Message(message), _) => check_message(value, message, path),
        _ => Ok(()),
    }
}

/// An `HttpBody` message holding the request body as it is.
fn http_body(
    message: &MessageDescriptor,
    body: &[u8],
    content_type: Option<&str>,
) -> DynamicMessage {
    let mut http_body = DynamicMessage::new(message.clone());
    if let Some(content_type) = content_type {
        http_body.set_field_by_name(
            "content_type",
            prost_reflect::Value::String(content_type.to_string()),
        );
    }
    http_body.set_field_by_name(
        "data",
        prost_reflect::Value::Bytes(Bytes::copy_from_slice(body)),
    );
    http_body
}

pub(crate) fn is_http_body(message: &MessageDescriptor) -> bool {
    message.full_name() == "google.api.HttpBody"
}

/// A single-segment variable: every escape decoded.
fn decode_fully(raw: &str) -> Option<String> {
    percent_decode_with(raw, |_| true, false)
}

/// A multi-segment variable: escapes decoded except those of reserved characters (RFC 6570's
/// reserved set, `/` included), which stay encoded so the segments stay apart.
fn decode_keeping_reserved(raw: &str) -> Option<String> {
    percent_decode_with(raw, |byte| !b":/?#[]@!$&'()*+,;=".contains(&byte), false)
}

/// A query component: `+` is a space, every escape decoded.
fn decode_query(raw: &str) -> Option<String> {
    percent_decode_with(raw, |_| true, true)
}

fn percent_decode_with(
    raw: &str,
    decode: impl Fn(u8) -> bool,
    plus_is_space: bool,
) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(high), Some(low)) if decode(high << 4 | low) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_segments_decode_fully_and_multi_segments_keep_reserved_characters() {
        assert_eq!(decode_fully("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(
            decode_keeping_reserved("a%2Fb%20c/d").as_deref(),
            Some("a%2Fb c/d")
        );
        assert_eq!(decode_fully("%FF"), None, "not UTF-8");
        assert_eq!(decode_query("a+b%2B").as_deref(), Some("a b+"));
    }

    #[test]
    fn nesting_is_measured_without_recursion() {
        let value: Json = serde_json::from_str(r#"{"a":[{"b":1}],"c":2}"#).expect("json");
        assert_eq!(depth(&value), 3);
        assert_eq!(depth(&Json::from(1)), 0);
    }

    #[test]
    fn json_bodies_are_one_value_of_valid_utf8() {
        assert!(matches!(
            parse_json(b"{} x", 10),
            Err(RequestError::Syntax(_))
        ));
        assert!(matches!(
            parse_json(b"{\"a\":\"\xff\"}", 10),
            Err(RequestError::NotUtf8)
        ));
        assert!(matches!(
            parse_json(b"[[[1]]]", 2),
            Err(RequestError::TooDeep { limit: 2 })
        ));
        assert!(parse_json(b" {\"a\": 1} \n", 10).is_ok());
    }
}
