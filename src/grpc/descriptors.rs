//! A gRPC cluster's descriptors: its `.proto` files compiled at load time, or a descriptor set.
//!
//! Off the request path: run while a config is checked — at start, by `portico validate`, and
//! by a reload on the background thread (`reload.rs`), never on an async worker. The cluster's
//! `grpc` section lists `.proto` files and include paths (or one descriptor-set file) and the
//! services to expose. The files are compiled with protox; `google/protobuf/*` come from
//! protox's built-ins, and `google/api/{annotations,http,httpbody}.proto` and
//! `google/rpc/{status,error_details}.proto` from copies compiled into the binary, so a
//! service's protos need nothing but themselves. A file that does not compile is a config
//! problem at the cluster's key that names the file and its line:column; the running
//! configuration keeps serving.
//!
//! Compiling is the expensive part of a load, and a reload usually leaves the protos alone:
//! the compiled result is kept for as long as a configuration uses it, keyed by the text of
//! every file the compiler read ([`DescriptorCache`]), so a reload with unchanged protos
//! reuses it without compiling again — and a changed import is noticed.

use super::http_rule::{BindingTable, RuleProblem};
use crate::config::check::Checker;
use crate::config::model::UpstreamProtocol;
use crate::config::source::KeyPath;
use miette::Diagnostic;
use prost_reflect::{DescriptorPool, ServiceDescriptor};
use protox::file::{File, FileResolver, GoogleFileResolver};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// The `grpc` section of a cluster, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrpcClusterFile {
    /// `.proto` files to compile, relative to the config file. Either this or
    /// `descriptor_set`.
    #[serde(default)]
    pub(crate) protos: Vec<String>,
    /// Where imports are looked up, relative to the config file. Default: the directory of
    /// each listed file.
    #[serde(default)]
    pub(crate) include_paths: Vec<String>,
    /// A binary `FileDescriptorSet` (`protoc --include_imports -o FILE`), instead of `protos`.
    pub(crate) descriptor_set: Option<String>,
    /// Fully qualified names of the services to expose (`pkg.Service`). Default: every
    /// service the listed files define.
    #[serde(default)]
    pub(crate) services: Vec<String>,
}

/// A cluster's gRPC API: the descriptor pool, the services exposed and their HTTP bindings.
pub(crate) struct GrpcApi {
    pub(crate) pool: DescriptorPool,
    pub(crate) services: Vec<ServiceDescriptor>,
    pub(crate) table: BindingTable,
    /// The text of every file the compile read, in order: what decides equality.
    sources: Vec<(PathBuf, String)>,
}

impl std::fmt::Debug for GrpcApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<&str> = self.services.iter().map(|s| s.full_name()).collect();
        f.debug_struct("GrpcApi")
            .field("services", &services)
            .finish_non_exhaustive()
    }
}

impl PartialEq for GrpcApi {
    fn eq(&self, other: &GrpcApi) -> bool {
        self.sources == other.sources && self.service_names() == other.service_names()
    }
}

impl GrpcApi {
    fn service_names(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.full_name()).collect()
    }
}

/// The embedded `google.api` and `google.rpc` files, by import name.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "google/api/annotations.proto",
        include_str!("proto/google/api/annotations.proto"),
    ),
    (
        "google/api/http.proto",
        include_str!("proto/google/api/http.proto"),
    ),
    (
        "google/api/httpbody.proto",
        include_str!("proto/google/api/httpbody.proto"),
    ),
    (
        "google/rpc/status.proto",
        include_str!("proto/google/rpc/status.proto"),
    ),
    (
        "google/rpc/error_details.proto",
        include_str!("proto/google/rpc/error_details.proto"),
    ),
];

/// Files every pool holds, whatever the service imports: status details are rendered from
/// them, and `HttpBody` is recognised by name.
const ALWAYS: &[&str] = &[
    "google/api/annotations.proto",
    "google/api/httpbody.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

/// Finds files for protox: `google/protobuf/*` from protox's built-ins (protox cannot parse
/// every `descriptor.proto` a protoc installation ships, so those on disk are never read),
/// then the include paths in order (a service that vendors its own `google/api` files gets
/// them), then the embedded `google/api` and `google/rpc` files.
/// Records the text of every file it reads from disk, as it was compiled.
struct SourceResolver {
    includes: Vec<PathBuf>,
    google: GoogleFileResolver,
    read: Rc<RefCell<Vec<(PathBuf, String)>>>,
}

impl FileResolver for SourceResolver {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.includes
            .iter()
            .find_map(|include| import_name(include, path))
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name.starts_with("google/protobuf/") {
            return self.google.open_file(name);
        }
        for include in &self.includes {
            let path = include.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let file = File::from_source(name, &text);
                    self.read.borrow_mut().push((path, text));
                    return file;
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(protox::Error::new(std::io::Error::new(
                        error.kind(),
                        format!("cannot read {}: {error}", path.display()),
                    )))
                }
            }
        }
        match EMBEDDED.iter().find(|(embedded, _)| *embedded == name) {
            Some((_, text)) => File::from_source(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// `path` as an import name below `include` (`/protos/a/b.proto` under `/protos` → `a/b.proto`).
fn import_name(include: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(include).ok()?;
    let parts: Vec<&str> = relative
        .components()
        .map(|c| match c {
            std::path::Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Where a compile problem is: the file it is in and its line:column, when protox says.
fn locate(error: &protox::Error) -> String {
    let file = error.file().map(str::to_string);
    let position = error.labels().and_then(|mut labels| {
        let label = labels.next()?;
        let source = error.source_code()?;
        let span = source.read_span(label.inner(), 0, 0).ok()?;
        Some((span.line() + 1, span.column() + 1))
    });
    match (file, position) {
        (Some(file), Some((line, column))) => format!("{file}:{line}:{column}: "),
        (Some(file), None) => format!("{file}: "),
        (None, _) => String::new(),
    }
}

/// Compiled APIs still in use by some configuration, so that a reload with the same protos
/// finds them. Weak: an API no configuration holds any more is gone.
#[derive(Default)]
pub(crate) struct DescriptorCache {
    entries: Mutex<Vec<CacheEntry>>,
}

struct CacheEntry {
    /// What the compile was asked for.
    request: CompileRequest,
    api: Weak<GrpcApi>,
}

#[derive(Debug, Clone, PartialEq)]
struct CompileRequest {
    protos: Vec<PathBuf>,
    includes: Vec<PathBuf>,
    services: Vec<String>,
}

static CACHE: std::sync::OnceLock<DescriptorCache> = std::sync::OnceLock::new();

impl DescriptorCache {
    fn global() -> &'static DescriptorCache {
        CACHE.get_or_init(DescriptorCache::default)
    }

    /// A compiled API for `request` whose every source file still reads the same.
    fn find(&self, request: &CompileRequest) -> Option<Arc<GrpcApi>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|entry| entry.api.strong_count() > 0);
        entries
            .iter()
            .filter(|entry| entry.request == *request)
            .filter_map(|entry| entry.api.upgrade())
            .find(|api| {
                api.sources
                    .iter()
                    .all(|(path, text)| std::fs::read_to_string(path).ok().as_ref() == Some(text))
            })
    }

    fn keep(&self, request: CompileRequest, api: &Arc<GrpcApi>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.push(CacheEntry {
            request,
            api: Arc::downgrade(api),
        });
    }
}

/// Check a cluster's `grpc` section (found at `path`) and compile its descriptors.
pub(crate) fn check_cluster(
    checker: &mut Checker<'_>,
    cluster: &KeyPath,
    file: &GrpcClusterFile,
    protocol: UpstreamProtocol,
) -> Option<Arc<GrpcApi>> {
    let path = &cluster.key("grpc");
    let mut ok = true;
    if protocol != UpstreamProtocol::Http2 {
        checker.report(
            &cluster.key("protocol"),
            "a cluster with a `grpc` section speaks gRPC, which needs HTTP/2: set `protocol: \
             http2` (h2c, or h2 by ALPN with `tls`)",
        );
        ok = false;
    }
    let pool = match (&file.descriptor_set, file.protos.is_empty()) {
        (Some(_), false) => {
            checker.report(
                &path.key("descriptor_set"),
                "give either `protos` or `descriptor_set`, not both",
            );
            return None;
        }
        (None, true) => {
            checker.report(
                path,
                "list the service's `.proto` files in `protos` (or give a `descriptor_set`)",
            );
            return None;
        }
        (Some(set), true) => {
            if !file.include_paths.is_empty() {
                checker.report(
                    &path.key("include_paths"),
                    "include paths are for `protos`; a descriptor set is already compiled",
                );
                ok = false;
            }
            let set_path = path.key("descriptor_set");
            let pool = descriptor_set(checker, &set_path, set)?;
            let api = build_api(checker, path, pool, Vec::new(), file)?;
            return ok.then(|| Arc::new(api));
        }
        (None, false) => compile(checker, path, file)?,
    };
    ok.then_some(pool)
}

/// Compile `protos`, or take the compiled API from the cache.
fn compile(
    checker: &mut Checker<'_>,
    path: &KeyPath,
    file: &GrpcClusterFile,
) -> Option<Arc<GrpcApi>> {
    let protos: Vec<PathBuf> = file.protos.iter().map(|p| checker.file_path(p)).collect();
    let includes: Vec<PathBuf> = if file.include_paths.is_empty() {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for proto in &protos {
            let dir = proto
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    } else {
        file.include_paths
            .iter()
            .map(|p| checker.file_path(p))
            .collect()
    };
    let request = CompileRequest {
        protos: protos.clone(),
        includes: includes.clone(),
        services: file.services.clone(),
    };
    if let Some(api) = DescriptorCache::global().find(&request) {
        return Some(api);
    }
    let mut names = Vec::with_capacity(protos.len());
    let mut ok = true;
    for (index, proto) in protos.iter().enumerate() {
        if let Err(error) = std::fs::metadata(proto) {
            let message = format!("cannot read {}: {error}", proto.display());
            checker.report(&path.key("protos").index(index), message);
            ok = false;
            continue;
        }
        match includes
            .iter()
            .find_map(|include| import_name(include, proto))
        {
            Some(name) => names.push(name),
            None => {
                let message = format!(
                    "{} is not inside any of the include paths ({})",
                    proto.display(),
                    includes
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                checker.report(&path.key("protos").index(index), message);
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let read = Rc::new(RefCell::new(Vec::new()));
    let resolver = SourceResolver {
        includes,
        google: GoogleFileResolver::new(),
        read: read.clone(),
    };
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    // The descriptors keep the source positions, so rule problems can point into the file.
    compiler.include_source_info(true);
    let always = ALWAYS.iter().map(|name| name.to_string());
    for (index, name) in names.into_iter().chain(always).enumerate() {
        if let Err(error) = compiler.open_file(&name) {
            // A problem in a listed file (or its imports) is reported at its entry.
            let key = if index < file.protos.len() {
                path.key("protos").index(index)
            } else {
                path.key("protos")
            };
            checker.report(&key, format!("{}{error}", locate(&error)));
            return None;
        }
    }
    let pool = compiler.descriptor_pool();
    drop(compiler);
    let sources = std::mem::take(&mut *read.borrow_mut());
    let api = build_api(checker, path, pool, sources, file)?;
    let api = Arc::new(api);
    DescriptorCache::global().keep(request, &api);
    Some(api)
}

/// Read a binary descriptor set.
fn descriptor_set(checker: &mut Checker<'_>, path: &KeyPath, text: &str) -> Option<DescriptorPool> {
    let file = checker.file_path(text);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(error) => {
            checker.report(path, format!("cannot read {}: {error}", file.display()));
            return None;
        }
    };
    match DescriptorPool::decode(bytes.as_slice()) {
        Ok(mut pool) => {
            add_status_types(&mut pool);
            Some(pool)
        }
        Err(error) => {
            let message = format!(
                "{} is not a usable descriptor set: {error} (make it with `protoc \
                 --include_imports --descriptor_set_out=FILE`)",
                file.display()
            );
            checker.report(path, message);
            None
        }
    }
}

/// A descriptor set made elsewhere holds what its service imports; status details are
/// rendered through `google.rpc.*` and `HttpBody` is recognised by name, so the embedded
/// files it lacks are added (those it has are its own and stay).
fn add_status_types(pool: &mut DescriptorPool) {
    let resolver = SourceResolver {
        includes: Vec::new(),
        google: GoogleFileResolver::new(),
        read: Rc::new(RefCell::new(Vec::new())),
    };
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    for name in ALWAYS {
        // The embedded files compile: a unit test says so.
        if compiler.open_file(name).is_err() {
            return;
        }
    }
    for file in compiler.descriptor_pool().files() {
        if pool.get_file_by_name(file.name()).is_none() {
            let _ = pool.add_file_descriptor_proto(file.file_descriptor_proto().clone());
        }
    }
}

/// Pick the services and read their HTTP rules.
fn build_api(
    checker: &mut Checker<'_>,
    path: &KeyPath,
    pool: DescriptorPool,
    sources: Vec<(PathBuf, String)>,
    file: &GrpcClusterFile,
) -> Option<GrpcApi> {
    let services: Vec<ServiceDescriptor> = if file.services.is_empty() {
        // Every service of the files the operator listed (not of their imports).
        pool.services()
            .filter(|service| {
                let name = service.parent_file().name().to_string();
                !name.starts_with("google/")
            })
            .collect()
    } else {
        let mut found = Vec::new();
        let mut ok = true;
        for (index, name) in file.services.iter().enumerate() {
            match pool.get_service_by_name(name) {
                Some(service) => found.push(service),
                None => {
                    let known: Vec<String> =
                        pool.services().map(|s| s.full_name().to_string()).collect();
                    checker.report(
                        &path.key("services").index(index),
                        format!(
                            "no service `{name}` in the descriptors (services: {})",
                            if known.is_empty() {
                                String::from("none")
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        found
    };
    if services.is_empty() {
        checker.report(path, "the descriptors define no service to expose");
        return None;
    }
    let table = match BindingTable::build(&pool, &services) {
        Ok(table) => table,
        Err(problems) => {
            for problem in problems {
                report_rule(checker, path, problem);
            }
            return None;
        }
    };
    Some(GrpcApi {
        pool,
        services,
        table,
        sources,
    })
}

fn report_rule(checker: &mut Checker<'_>, path: &KeyPath, problem: RuleProblem) {
    checker.report(&path.key("protos"), problem.to_string());
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_embedded_files_compile_and_fill_in_a_bare_pool() {
        let mut pool = prost_reflect::DescriptorPool::new();
        super::add_status_types(&mut pool);
        for name in [
            "google.rpc.Status",
            "google.rpc.BadRequest",
            "google.api.HttpBody",
        ] {
            assert!(pool.get_message_by_name(name).is_some(), "{name}");
        }
        assert!(pool.get_extension_by_name("google.api.http").is_some());
    }
    use std::path::Path;
    use std::sync::Arc;

    fn load(dir: &Path) -> Config {
        let text = "listeners: [{name: p, address: 127.0.0.1:0}]\n\
                    clusters:\n  - {name: g, endpoints: [\"127.0.0.1:1\"], protocol: http2, \
                    grpc: {protos: [protos/a.proto]}}\n\
                    routes:\n  - {cluster: g, grpc_transcode: {}}\n";
        crate::config::load_str_in(text, "t.yaml", &|_| None, Some(dir)).expect("valid")
    }

    fn api(config: &Config) -> Arc<super::GrpcApi> {
        config.clusters[0].grpc.clone().expect("grpc")
    }

    #[test]
    fn unchanged_protos_are_not_compiled_again_and_a_changed_import_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("protos")).expect("mkdir");
        let a = "syntax = \"proto3\"; package t; import \"b.proto\";\n\
                 service S { rpc M(B) returns (B); }\n";
        std::fs::write(dir.path().join("protos/a.proto"), a).expect("write");
        std::fs::write(
            dir.path().join("protos/b.proto"),
            "syntax = \"proto3\"; package t; message B { string x = 1; }\n",
        )
        .expect("write");
        let first = load(dir.path());
        let second = load(dir.path());
        assert!(
            Arc::ptr_eq(&api(&first), &api(&second)),
            "same files: reused"
        );
        std::fs::write(
            dir.path().join("protos/b.proto"),
            "syntax = \"proto3\"; package t; message B { string x = 1; int32 y = 2; }\n",
        )
        .expect("write");
        let third = load(dir.path());
        assert!(
            !Arc::ptr_eq(&api(&second), &api(&third)),
            "an import changed"
        );
        let b = third.clusters[0]
            .grpc
            .as_ref()
            .expect("grpc")
            .pool
            .get_message_by_name("t.B");
        assert_eq!(b.expect("t.B").fields().count(), 2);
        // Once no configuration holds it, nothing is kept.
        drop((first, second, third));
        let fourth = load(dir.path());
        assert_eq!(
            api(&fourth)
                .pool
                .get_message_by_name("t.B")
                .expect("t.B")
                .fields()
                .count(),
            2
        );
    }
}
