//! HTTP bindings of gRPC methods: `google.api.http` rules read from the descriptors, and the
//! table a transcoding route dispatches on.
//!
//! Built off the request path, once per compiled API (`descriptors.rs`); read on it by the
//! transcoder (`transcode.rs`), which looks up every JSON request's method and path here.
//!
//! A transcoding route is one gateway route: the router sends it every request under its
//! match, and this table — not the router — picks the gRPC method by HTTP method and path
//! template, so that `GET /v1/shelves/{shelf}` and `POST /v1/shelves` of one service are one
//! route with one set of policies. Templates use the route templates' syntax
//! (`routing/template.rs`: `{var}`, `{var=*}`, `{name=shelves/*/books/*}`, `{path=**}`,
//! nested field names `{a.b}`), plus the `:verb` suffix. Bindings are tried most specific
//! first — at the first segment where two templates differ, a literal beats `*`, which beats
//! `**`; then a template with a verb beats one without; then declaration order — and the
//! first whose method and template both match wins. A path some binding matches under another
//! method is a 405 (with `Allow`), a path none matches a 404.
//!
//! Methods without any rule are bound as `POST /package.Service/Method` (`/Service/Method`
//! for a proto without a package) when the route allows auto-mapping.

use crate::routing::{Element, PathTemplate};
use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor, Value,
};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

/// One gRPC method as the transcoder calls it.
#[derive(Debug)]
pub(crate) struct MethodInfo {
    pub(crate) desc: MethodDescriptor,
    /// `/package.Service/Method`: the gRPC request's path.
    pub(crate) grpc_path: http::uri::PathAndQuery,
    pub(crate) input: MessageDescriptor,
    pub(crate) output: MessageDescriptor,
}

impl MethodInfo {
    fn new(desc: MethodDescriptor) -> Option<MethodInfo> {
        let grpc_path = format!("/{}/{}", desc.parent_service().full_name(), desc.name());
        Some(MethodInfo {
            grpc_path: http::uri::PathAndQuery::try_from(grpc_path).ok()?,
            input: desc.input(),
            output: desc.output(),
            desc,
        })
    }

    pub(crate) fn client_streaming(&self) -> bool {
        self.desc.is_client_streaming()
    }

    pub(crate) fn server_streaming(&self) -> bool {
        self.desc.is_server_streaming()
    }
}

/// Where the HTTP request body goes in the request message.
#[derive(Debug, Clone)]
pub(crate) enum BodyRule {
    /// No body: every field not bound by the path comes from the query.
    None,
    /// `body: "*"`: the whole message; the query sets nothing.
    Whole,
    /// `body: "field"`: that top-level field.
    Field(FieldDescriptor),
}

/// A path variable: the (nested) field it sets, and how its text is decoded.
#[derive(Debug, Clone)]
pub(crate) struct PathVariable {
    /// `a.b` as written.
    pub(crate) name: Box<str>,
    /// The fields from the request message down to the one set.
    pub(crate) fields: Vec<FieldDescriptor>,
    /// `{x=a/*}` or `{x=**}`: spans segments, so `/` stays and reserved characters stay
    /// percent-encoded; `{x}` is decoded whole.
    pub(crate) multi_segment: bool,
}

/// One HTTP binding of a method.
#[derive(Debug)]
pub(crate) struct Binding {
    pub(crate) http_method: Method,
    /// The template as written, verb included (for OpenAPI and explain).
    pub(crate) path: Box<str>,
    template: PathTemplate,
    verb: Option<Box<str>>,
    pub(crate) variables: Vec<PathVariable>,
    pub(crate) body: BodyRule,
    pub(crate) response_body: Option<FieldDescriptor>,
    pub(crate) method: Arc<MethodInfo>,
}

/// What a request's method and path found.
pub(crate) enum Lookup<'t, 'p> {
    Found {
        binding: &'t Binding,
        /// Each variable with its raw (still percent-encoded) text.
        captures: Vec<(&'t PathVariable, &'p str)>,
    },
    /// Some binding has this path, none this method.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// A problem with a method's HTTP rule, found when the descriptors are loaded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuleProblem {
    /// `file.proto:line:column: pkg.Service.Method` (the position of the method's rule, when
    /// the descriptors kept their source positions: compiled from `.proto` files, not from a
    /// descriptor set).
    pub(crate) method: String,
    pub(crate) message: String,
}

impl std::fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: google.api.http: {}", self.method, self.message)
    }
}

/// The field number of the `google.api.http` extension of `MethodOptions`.
const HTTP_RULE_FIELD: i32 = 72_295_728;
/// The field number of `options` in `MethodDescriptorProto`.
const METHOD_OPTIONS_FIELD: i32 = 4;

/// `file.proto:line:column` of the method's `google.api.http` option, or of the method when
/// the option has no position of its own; just `file.proto` when the descriptors carry no
/// source positions (a descriptor set made without them).
fn rule_location(method: &MethodDescriptor) -> String {
    let file = method.parent_file();
    let name = file.name().to_string();
    let Some(info) = file.file_descriptor_proto().source_code_info.as_ref() else {
        return name;
    };
    let method_path = method.path();
    let mut option_path = method_path.to_vec();
    option_path.extend([METHOD_OPTIONS_FIELD, HTTP_RULE_FIELD]);
    let span = info
        .location
        .iter()
        .find(|location| location.path == option_path)
        .or_else(|| {
            info.location
                .iter()
                .find(|location| location.path == method_path)
        })
        .map(|location| location.span.as_slice());
    match span {
        // Spans are zero-based: [line, column, …].
        Some([line, column, ..]) => format!("{name}:{}:{}", line + 1, column + 1),
        _ => name,
    }
}

/// Every binding of a cluster's exposed services.
#[derive(Debug, Default)]
pub(crate) struct BindingTable {
    /// Annotated bindings, most specific first.
    bindings: Vec<Binding>,
    /// Auto-mapped bindings of the methods without a rule, by gRPC path.
    auto: HashMap<String, Binding>,
}

impl BindingTable {
    /// Read the rules of `services` in `pool`; every problem is reported.
    pub(crate) fn build(
        pool: &DescriptorPool,
        services: &[ServiceDescriptor],
    ) -> Result<BindingTable, Vec<RuleProblem>> {
        let extension = pool.get_extension_by_name("google.api.http");
        let mut table = BindingTable::default();
        let mut problems = Vec::new();
        for service in services {
            for method in service.methods() {
                let where_ = format!("{}: {}", rule_location(&method), method.full_name());
                let Some(info) = MethodInfo::new(method.clone()) else {
                    problems.push(RuleProblem {
                        method: where_,
                        message: String::from("the method's name cannot be a request path"),
                    });
                    continue;
                };
                let info = Arc::new(info);
                let rule = extension.as_ref().and_then(|extension| {
                    let options = method.options();
                    if !options.has_extension(extension) {
                        return None;
                    }
                    match options.get_extension(extension).as_ref() {
                        Value::Message(rule) => Some(rule.clone()),
                        _ => None,
                    }
                });
                match rule {
                    None => {
                        let path = info.grpc_path.as_str().to_string();
                        match binding(&info, Method::POST, &path, "*", "", true) {
                            Ok(binding) => {
                                table.auto.insert(path, binding);
                            }
                            Err(message) => problems.push(RuleProblem {
                                method: where_,
                                message,
                            }),
                        }
                    }
                    Some(rule) => {
                        read_rule(&info, &rule, true, &mut table.bindings).unwrap_or_else(
                            |message| {
                                problems.push(RuleProblem {
                                    method: where_.clone(),
                                    message,
                                })
                            },
                        );
                    }
                }
            }
        }
        // Most specific first; the sort is stable, so declaration order breaks ties.
        table.bindings.sort_by(specificity);
        for (index, later) in table.bindings.iter().enumerate() {
            if let Some(earlier) = table.bindings[..index].iter().find(|earlier| {
                earlier.http_method == later.http_method
                    && specificity(earlier, later).is_eq()
                    && same_shape(earlier, later)
            }) {
                problems.push(RuleProblem {
                    method: format!(
                        "{}: {}",
                        rule_location(&later.method.desc),
                        later.method.desc.full_name()
                    ),
                    message: format!(
                        "{} {} is also bound to {}",
                        later.http_method,
                        later.path,
                        earlier.method.desc.full_name()
                    ),
                });
            }
        }
        if problems.is_empty() {
            Ok(table)
        } else {
            Err(problems)
        }
    }

    /// The binding for `method` and `path` (the request path below the route's mount).
    /// `auto_mapping` lets the unannotated methods be found too.
    pub(crate) fn lookup<'t, 'p>(
        &'t self,
        method: &Method,
        path: &'p str,
        auto_mapping: bool,
    ) -> Lookup<'t, 'p> {
        let mut allowed: Vec<Method> = Vec::new();
        for binding in &self.bindings {
            let Some(captures) = binding.captures(path) else {
                continue;
            };
            if binding.http_method == *method {
                return Lookup::Found { binding, captures };
            }
            if !allowed.contains(&binding.http_method) {
                allowed.push(binding.http_method.clone());
            }
        }
        if auto_mapping {
            if let Some(binding) = self.auto.get(path) {
                if *method == Method::POST {
                    return Lookup::Found {
                        binding,
                        captures: Vec::new(),
                    };
                }
                if !allowed.contains(&Method::POST) {
                    allowed.push(Method::POST);
                }
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed(allowed)
        }
    }
}

impl BindingTable {
    /// Every binding: the annotated ones most specific first, then (with `auto_mapping`) the
    /// auto-mapped ones by path.
    pub(crate) fn bindings(&self, auto_mapping: bool) -> Vec<&Binding> {
        let mut all: Vec<&Binding> = self.bindings.iter().collect();
        if auto_mapping {
            let mut auto: Vec<&Binding> = self.auto.values().collect();
            auto.sort_by(|a, b| a.path.cmp(&b.path));
            all.extend(auto);
        }
        all
    }
}

impl Binding {
    /// The variables' raw text if `path` matches this binding's template and verb.
    fn captures<'t, 'p>(&'t self, path: &'p str) -> Option<Vec<(&'t PathVariable, &'p str)>> {
        let path = match &self.verb {
            Some(verb) => {
                let rest = path.strip_suffix(&**verb)?.strip_suffix(':')?;
                // A verb follows a segment, never a bare `/`.
                if rest.ends_with('/') {
                    return None;
                }
                rest
            }
            None => path,
        };
        let raw = self.template.captures(path)?;
        Some(
            raw.into_iter()
                .filter_map(|(name, value)| {
                    let variable = self.variables.iter().find(|v| &*v.name == name)?;
                    Some((variable, value))
                })
                .collect(),
        )
    }
}

/// Lower sorts first: more specific.
fn specificity(a: &Binding, b: &Binding) -> Ordering {
    fn rank(element: Option<&Element>) -> u8 {
        match element {
            None => 0,
            Some(Element::Literal(_)) => 1,
            Some(Element::Star) => 2,
            Some(Element::DoubleStar) => 3,
        }
    }
    let (ea, eb) = (a.template.elements(), b.template.elements());
    for i in 0..ea.len().max(eb.len()) {
        match rank(ea.get(i)).cmp(&rank(eb.get(i))) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    // A verb narrows the match.
    b.verb.is_some().cmp(&a.verb.is_some())
}

/// Two templates that match exactly the same paths (same literals in the same places).
fn same_shape(a: &Binding, b: &Binding) -> bool {
    a.template.elements() == b.template.elements() && a.verb == b.verb
}

/// Read one rule (and, at the top level, its additional bindings) into `out`.
fn read_rule(
    info: &Arc<MethodInfo>,
    rule: &DynamicMessage,
    top: bool,
    out: &mut Vec<Binding>,
) -> Result<(), String> {
    let text = |name: &str| -> String {
        match rule.get_field_by_name(name).as_deref() {
            Some(Value::String(text)) => text.clone(),
            _ => String::new(),
        }
    };
    let mut pattern = None;
    for (field, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(field) {
            pattern = Some((method, text(field)));
        }
    }
    if rule.has_field_by_name("custom") {
        if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref() {
            let field = |name: &str| match custom.get_field_by_name(name).as_deref() {
                Some(Value::String(text)) => text.clone(),
                _ => String::new(),
            };
            let kind = field("kind");
            let method = Method::from_bytes(kind.as_bytes())
                .map_err(|_| format!("custom kind {kind:?} is not an HTTP method"))?;
            pattern = Some((method, field("path")));
        }
    }
    let additional: Vec<DynamicMessage> =
        match rule.get_field_by_name("additional_bindings").as_deref() {
            Some(Value::List(list)) => list
                .iter()
                .filter_map(|value| match value {
                    Value::Message(message) => Some(message.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
    if !top && !additional.is_empty() {
        return Err(String::from(
            "additional_bindings cannot have additional_bindings of their own",
        ));
    }
    match pattern {
        Some((method, path)) => {
            out.push(binding(
                info,
                method,
                &path,
                &text("body"),
                &text("response_body"),
                false,
            )?);
        }
        None if top && additional.is_empty() => {
            return Err(String::from(
                "the rule has no pattern (get, put, post, delete, patch or custom)",
            ))
        }
        None => {}
    }
    for extra in &additional {
        read_rule(info, extra, false, out)?;
    }
    Ok(())
}

/// One binding from its parts, checked against the method's messages.
fn binding(
    info: &Arc<MethodInfo>,
    http_method: Method,
    path: &str,
    body: &str,
    response_body: &str,
    auto: bool,
) -> Result<Binding, String> {
    let (template_text, verb) = split_verb(path);
    // An auto-mapped path is the gRPC path itself: literals only (`pkg.Service`, `Method`),
    // and its method names are never taken for a verb.
    let (template_text, verb) = if auto {
        (path, None)
    } else {
        (template_text, verb)
    };
    let template =
        PathTemplate::parse(template_text).map_err(|error| format!("{path:?}: {error}"))?;
    let mut variables = Vec::new();
    for (name, multi_segment) in template_variables(template_text) {
        let fields = field_path(&info.input, &name)
            .map_err(|message| format!("{path:?}: variable {{{name}}}: {message}"))?;
        let Some(last) = fields.last() else {
            return Err(format!("{path:?}: variable {{{name}}} names no field"));
        };
        if last.is_list() || last.is_map() {
            return Err(format!(
                "{path:?}: variable {{{name}}} is a repeated field; a path segment sets one value"
            ));
        }
        if matches!(last.kind(), Kind::Message(ref m) if !is_scalar_wrapper(m)) {
            return Err(format!(
                "{path:?}: variable {{{name}}} is a message field; a path segment sets a scalar"
            ));
        }
        variables.push(PathVariable {
            name: name.into(),
            fields,
            multi_segment,
        });
    }
    let body = match body {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => BodyRule::Field(info.input.get_field_by_name(name).ok_or_else(|| {
            format!("body {name:?} is not a field of {}", info.input.full_name())
        })?),
    };
    let response_body = match response_body {
        "" => None,
        name => Some(info.output.get_field_by_name(name).ok_or_else(|| {
            format!(
                "response_body {name:?} is not a field of {}",
                info.output.full_name()
            )
        })?),
    };
    Ok(Binding {
        http_method,
        path: path.into(),
        template,
        verb: verb.map(Into::into),
        variables,
        body,
        response_body,
        method: info.clone(),
    })
}

/// `/v1/{name=books/*}:publish` → (`/v1/{name=books/*}`, `publish`): the verb is what follows
/// the last `:` of the last segment, outside braces.
pub(crate) fn split_verb(path: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut colon = None;
    for (index, byte) in path.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b'/' if depth == 0 => colon = None,
            b':' if depth == 0 => colon = Some(index),
            _ => {}
        }
    }
    match colon {
        Some(index) if index + 1 < path.len() => (&path[..index], Some(&path[index + 1..])),
        _ => (path, None),
    }
}

/// The variables of a template: each name, and whether it spans more than one segment.
pub(crate) fn template_variables(template: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let inside = &rest[start + 1..start + end];
        let (name, pattern) = match inside.split_once('=') {
            Some((name, pattern)) => (name, pattern),
            None => (inside, "*"),
        };
        out.push((name.to_string(), pattern != "*"));
        rest = &rest[start + end + 1..];
    }
    out
}

/// The fields a dotted name walks through, from `message` down.
pub(crate) fn field_path(
    message: &MessageDescriptor,
    name: &str,
) -> Result<Vec<FieldDescriptor>, String> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let parts: Vec<&str> = name.split('.').collect();
    for (index, part) in parts.iter().enumerate() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| format!("{} has no field `{part}`", current.full_name()))?;
        if index + 1 < parts.len() {
            match field.kind() {
                Kind::Message(next) if !field.is_list() && !field.is_map() => current = next,
                _ => {
                    return Err(format!(
                        "`{part}` is not a message field, so `{name}` cannot go below it"
                    ))
                }
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// `google.protobuf.*Value` wrappers hold one scalar, so a path or query value can set them.
pub(crate) fn is_scalar_wrapper(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verb_is_the_last_segments_colon_suffix() {
        assert_eq!(
            split_verb("/v1/{name=books/*}:publish"),
            ("/v1/{name=books/*}", Some("publish"))
        );
        assert_eq!(
            split_verb("/v1/things:batchGet"),
            ("/v1/things", Some("batchGet"))
        );
        assert_eq!(split_verb("/v1/a:b/c"), ("/v1/a:b/c", None));
        assert_eq!(split_verb("/v1/{x=a:b}"), ("/v1/{x=a:b}", None));
        assert_eq!(
            split_verb("/v1/{path=**}:get"),
            ("/v1/{path=**}", Some("get"))
        );
    }

    #[test]
    fn variables_know_whether_they_span_segments() {
        assert_eq!(
            template_variables("/v1/{a}/{b=*}/{c.d=shelves/*}/{e=**}"),
            vec![
                ("a".to_string(), false),
                ("b".to_string(), false),
                ("c.d".to_string(), true),
                ("e".to_string(), true)
            ]
        );
    }
}
