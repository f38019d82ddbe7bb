//! Consumers: the third-party apps that call the platform, and the credentials they call with.
//!
//! Off the request path when loaded: the `consumers` section (inline) and the
//! `consumers_file` section (a file of its own, reloaded on its own when it changes) are
//! checked into a [`ConsumerDirectory`]. On the request path an API key costs one SHA-256 and
//! one hash lookup ([`ConsumerDirectory::by_api_key`]), whatever the number of consumers; a
//! token names its consumer by client id ([`ConsumerDirectory::by_client_id`]).
//!
//! Credentials are never stored: an API key or a client secret appears in the config only as
//! its SHA-256 digest (`sha256:<64 hex digits>`, made by `portico keys`). Keys the gateway
//! generates are 256 random bits, so a plain digest is as good as a slow hash for them, and a
//! lookup by digest compares nothing an attacker chose the bytes of. A disabled consumer is
//! refused exactly like an unknown one.

use crate::config::check::{Checker, Section};
use crate::config::deserialize::deserialize;
use crate::config::source::KeyPath;
use crate::config::{parse_side_file, Problem, REDACTED};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The prefix of a digest as written in the config.
const DIGEST_PREFIX: &str = "sha256:";

/// A SHA-256 digest of a credential.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest([u8; 32]);

impl std::hash::Hash for Digest {
    /// A digest is uniformly distributed already: eight of its bytes are a hash. (Only
    /// digests the operator configured are stored; a presented key's digest is only looked
    /// up, so no caller can crowd a bucket.)
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(first));
    }
}

/// The hasher of maps whose keys are already hashes ([`Digest`], the token cache's keys):
/// the key's own bits.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type DigestMap = HashMap<Digest, usize, std::hash::BuildHasherDefault<DigestHasher>>;

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed whole: a digest is not a secret, but logs are no place for it.
        write!(f, "Digest({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl Digest {
    /// The digest of `credential`.
    pub(crate) fn of(credential: &[u8]) -> Digest {
        let hash = ring::digest::digest(&ring::digest::SHA256, credential);
        let mut out = [0u8; 32];
        out.copy_from_slice(hash.as_ref());
        Digest(out)
    }

    /// `sha256:<64 hex digits>`.
    pub(crate) fn parse(text: &str) -> Result<Digest, String> {
        let hex = text.strip_prefix(DIGEST_PREFIX).ok_or_else(|| {
            String::from(
                "expected a digest `sha256:<64 hex digits>` (make one with `portico keys hash`), \
                 never the credential itself",
            )
        })?;
        let nibble = |digit: u8| match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        };
        let wrong = || String::from("expected `sha256:` followed by exactly 64 hex digits");
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return Err(wrong());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte =
                (nibble(pair[0]).ok_or_else(wrong)? << 4) | nibble(pair[1]).ok_or_else(wrong)?;
        }
        Ok(Digest(out))
    }

    /// Whether `credential` hashes to this digest, compared in constant time.
    pub(crate) fn matches(&self, credential: &[u8]) -> bool {
        let other = Digest::of(credential);
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }

    /// `sha256:<hex>`.
    pub(crate) fn to_text(self) -> String {
        let mut out = String::with_capacity(DIGEST_PREFIX.len() + 64);
        out.push_str(DIGEST_PREFIX);
        for byte in self.0 {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

/// One consumer, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Consumer {
    pub(crate) id: Arc<str>,
    pub(crate) name: Option<Arc<str>>,
    /// The plan rate limits apply by.
    pub(crate) plan: Option<Arc<str>>,
    /// The scopes the consumer was granted.
    pub(crate) scopes: Vec<Arc<str>>,
    pub(crate) enabled: bool,
    pub(crate) api_keys: Vec<Digest>,
    pub(crate) client_id: Option<Arc<str>>,
    pub(crate) client_secret: Option<Digest>,
}

/// A consumer as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsumerFile {
    /// Required: unique, letters, digits and `-._`.
    id: String,
    name: Option<String>,
    plan: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// Default `true`.
    enabled: Option<bool>,
    /// `sha256:<hex>` digests of the consumer's API keys.
    #[serde(default)]
    api_keys: Vec<String>,
    oauth2: Option<OAuth2ClientFile>,
}

/// A consumer's OAuth2 client credentials as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct OAuth2ClientFile {
    client_id: String,
    /// `sha256:<hex>` digest of the client secret.
    client_secret: String,
}

/// What a client id names.
pub(crate) enum ClientLookup<'d> {
    Enabled(&'d Arc<Consumer>),
    Disabled,
    Unknown,
}

/// Every consumer, indexed for the request path.
#[derive(Debug, Default)]
pub(crate) struct ConsumerDirectory {
    consumers: Vec<Arc<Consumer>>,
    by_api_key: DigestMap,
    by_client_id: HashMap<Arc<str>, usize>,
    by_id: HashMap<Arc<str>, usize>,
}

impl ConsumerDirectory {
    /// Index consumers made up by a test.
    #[cfg(test)]
    pub(crate) fn new(consumers: Vec<Consumer>) -> ConsumerDirectory {
        let mut directory = ConsumerDirectory::default();
        for (index, consumer) in consumers.into_iter().enumerate() {
            for key in &consumer.api_keys {
                directory.by_api_key.insert(*key, index);
            }
            if let Some(client_id) = &consumer.client_id {
                directory.by_client_id.insert(client_id.clone(), index);
            }
            directory.by_id.insert(consumer.id.clone(), index);
            directory.consumers.push(Arc::new(consumer));
        }
        directory
    }

    /// The enabled consumer an API key belongs to.
    pub(crate) fn by_api_key(&self, key: &[u8]) -> Option<&Arc<Consumer>> {
        let index = *self.by_api_key.get(&Digest::of(key))?;
        self.consumers.get(index).filter(|c| c.enabled)
    }

    /// The consumer a token's `client_id` names (its OAuth2 client id, or its consumer id).
    pub(crate) fn lookup_client(&self, client_id: &str) -> ClientLookup<'_> {
        let found = self
            .by_client_id
            .get(client_id)
            .or_else(|| self.by_id.get(client_id))
            .and_then(|index| self.consumers.get(*index));
        match found {
            Some(consumer) if consumer.enabled => ClientLookup::Enabled(consumer),
            Some(_) => ClientLookup::Disabled,
            None => ClientLookup::Unknown,
        }
    }

    /// Each consumer's id and plan, for those with a plan (for config checks).
    pub(crate) fn plans(&self) -> impl Iterator<Item = (&str, &str)> {
        self.consumers
            .iter()
            .filter_map(|c| Some((&*c.id, c.plan.as_deref()?)))
    }

    /// A consumer by id, enabled or not (for config checks).
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }
}

impl PartialEq for ConsumerDirectory {
    /// The same consumers (the indexes follow from them).
    fn eq(&self, other: &ConsumerDirectory) -> bool {
        self.consumers == other.consumers
    }
}

/// Checks a list of consumers, building their directory as it goes: the directory's
/// indexes are what uniqueness is checked against. Used only when every consumer checked out
/// (then a consumer's index in the list is its index in the directory).
#[derive(Default)]
pub(crate) struct ConsumerChecks {
    directory: ConsumerDirectory,
    /// Plans and scopes, shared by the many consumers that name the same one.
    names: HashMap<String, Arc<str>>,
}

impl ConsumerChecks {
    /// One `Arc` per distinct name.
    fn name(&mut self, text: &str) -> Arc<str> {
        if let Some(name) = self.names.get(text) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(text);
        self.names.insert(text.to_string(), name.clone());
        name
    }

    /// Check consumer `index` of a list; `report(path below the element, message)` for each
    /// problem. Returns whether it checked out.
    pub(crate) fn check(
        &mut self,
        index: usize,
        file: &ConsumerFile,
        report: &mut dyn FnMut(&[&str], String),
    ) -> bool {
        let mut ok = true;
        let id_ok = !file.id.is_empty()
            && file
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        let id: Arc<str> = Arc::from(file.id.as_str());
        if !id_ok {
            report(
                &["id"],
                format!(
                    "{:?} is not a consumer id: letters, digits, `-`, `.` and `_`, not empty",
                    file.id
                ),
            );
            ok = false;
        } else if let Some(first) = self.directory.by_id.insert(id.clone(), index) {
            report(
                &["id"],
                format!("duplicate consumer id `{}` (also [{first}])", file.id),
            );
            ok = false;
        }
        let mut scopes = Vec::with_capacity(file.scopes.len());
        for scope in &file.scopes {
            if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c == '"') {
                report(
                    &["scopes"],
                    format!("{scope:?} is not a scope: no spaces or quotes, not empty"),
                );
                ok = false;
            } else {
                scopes.push(self.name(scope));
            }
        }
        let mut api_keys = Vec::with_capacity(file.api_keys.len());
        for text in &file.api_keys {
            match Digest::parse(text) {
                Ok(digest) => {
                    if let Some(first) = self.directory.by_api_key.insert(digest, index) {
                        report(
                            &["api_keys"],
                            format!("this API key digest is also one of [{first}]'s"),
                        );
                        ok = false;
                    }
                    api_keys.push(digest);
                }
                Err(message) => {
                    report(&["api_keys"], message);
                    ok = false;
                }
            }
        }
        let (client_id, client_secret) = match &file.oauth2 {
            None => (None, None),
            Some(oauth2) => {
                let client_id: Arc<str> = Arc::from(oauth2.client_id.as_str());
                if oauth2.client_id.is_empty() {
                    report(&["oauth2", "client_id"], String::from("cannot be empty"));
                    ok = false;
                } else if let Some(first) =
                    self.directory.by_client_id.insert(client_id.clone(), index)
                {
                    report(
                        &["oauth2", "client_id"],
                        format!(
                            "duplicate client id `{}` (also [{first}])",
                            oauth2.client_id
                        ),
                    );
                    ok = false;
                }
                let secret = match Digest::parse(&oauth2.client_secret) {
                    Ok(digest) => Some(digest),
                    Err(message) => {
                        report(&["oauth2", "client_secret"], message);
                        ok = false;
                        None
                    }
                };
                (Some(client_id), secret)
            }
        };
        let plan = file.plan.as_deref().map(|plan| self.name(plan));
        self.directory.consumers.push(Arc::new(Consumer {
            id,
            name: file.name.as_deref().map(Arc::from),
            plan,
            scopes,
            enabled: file.enabled.unwrap_or(true),
            api_keys,
            client_id,
            client_secret,
        }));
        ok
    }

    /// The directory of the consumers checked (meaningful when each checked out).
    pub(crate) fn into_directory(self) -> ConsumerDirectory {
        self.directory
    }
}

/// The `consumers` section: a list of consumers, or `{file: path}` naming a file that holds
/// the list (JSON when its name ends in `.json`, the fastest to load for a large directory;
/// YAML otherwise). A file is watched and reloaded on its own (`ConsumerStore::refresh`).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ConsumersSection {
    /// The file the consumers came from, if they did not come from the main config.
    pub(crate) file: Option<PathBuf>,
    /// The digest of the file's contents as loaded, to tell when it changes.
    pub(crate) file_digest: Option<Digest>,
    /// The consumers when the config was checked.
    pub(crate) directory: Arc<ConsumerDirectory>,
}

/// `consumers: {file: …}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ConsumersFileRef {
    file: String,
}

impl Section for ConsumersSection {
    const KEY: &'static str = "consumers";
    /// A list or a mapping: told apart in `check`, where each form gets precise messages.
    type File = Value;

    fn check(file: &Value, path: &KeyPath, checker: &mut Checker<'_>) -> Option<Self> {
        match file {
            Value::Null => Some(ConsumersSection::default()),
            Value::Array(items) => {
                let mut checks = ConsumerChecks::default();
                let mut ok = true;
                for (index, item) in items.iter().enumerate() {
                    let at = path.index(index);
                    let Some(file) = checker.deserialize::<ConsumerFile>(item, &at) else {
                        ok = false;
                        continue;
                    };
                    let mut report = |keys: &[&str], message: String| {
                        let path = keys.iter().fold(at.clone(), |path, key| path.key(key));
                        checker.report(&path, message);
                    };
                    ok &= checks.check(index, &file, &mut report);
                }
                ok.then(|| ConsumersSection {
                    file: None,
                    file_digest: None,
                    directory: Arc::new(checks.into_directory()),
                })
            }
            Value::Object(_) => {
                let reference = checker.deserialize::<ConsumersFileRef>(file, path)?;
                let at = path.key("file");
                if reference.file.is_empty() {
                    checker.report(
                        &at,
                        "cannot be empty: expected the path of a consumers file",
                    );
                    return None;
                }
                let file_path = checker.file_path(&reference.file);
                match load_consumers_file(&file_path) {
                    Ok((directory, digest)) => Some(ConsumersSection {
                        file: Some(file_path),
                        file_digest: Some(digest),
                        directory: Arc::new(directory),
                    }),
                    Err(problems) => {
                        let count = problems.len();
                        let mut message = format!(
                            "the consumers file has {count} problem{}:",
                            if count == 1 { "" } else { "s" }
                        );
                        for problem in problems {
                            message.push_str("\n  ");
                            message.push_str(&problem);
                        }
                        checker.report(&at, message);
                        None
                    }
                }
            }
            other => {
                checker.report(
                    path,
                    format!(
                        "expected a list of consumers or `file: <path>`, found {}",
                        crate::config::deserialize::describe_value(other)
                    ),
                );
                None
            }
        }
    }

    fn redact_dump(value: &mut Value) {
        let Value::Array(consumers) = value else {
            return;
        };
        for consumer in consumers {
            if let Some(Value::Array(keys)) = consumer.get_mut("api_keys") {
                for key in keys {
                    *key = Value::String(REDACTED.to_string());
                }
            }
            if let Some(secret) = consumer
                .get_mut("oauth2")
                .and_then(|oauth2| oauth2.get_mut("client_secret"))
            {
                *secret = Value::String(REDACTED.to_string());
            }
        }
    }
}

/// A check another concern makes of every consumers file reloaded on its own (a rate-limit
/// plan must be declared, for instance): the problems that refuse the file, or `Ok`.
pub(crate) type ConsumerGuard =
    Box<dyn Fn(&ConsumerDirectory) -> Result<(), Vec<String>> + Send + Sync>;

/// The consumers a runtime authenticates against. A consumers file is reloaded into it on
/// its own ([`ConsumerStore::refresh`]), without rebuilding the runtime; requests read the
/// directory that is current when they look.
pub(crate) struct ConsumerStore {
    directory: ArcSwap<ConsumerDirectory>,
    file: Option<PathBuf>,
    /// The digest of the file's contents last loaded (or refused), so an unchanged file is
    /// not parsed again.
    seen: Mutex<Option<Digest>>,
    /// What the config load checks of consumers beyond this file's own rules (set once, by
    /// the runtime that owns the store), checked again on each refresh.
    guard: OnceLock<ConsumerGuard>,
}

impl ConsumerStore {
    pub(crate) fn new(section: &ConsumersSection) -> ConsumerStore {
        ConsumerStore {
            directory: ArcSwap::new(section.directory.clone()),
            file: section.file.clone(),
            seen: Mutex::new(section.file_digest),
            guard: OnceLock::new(),
        }
    }

    /// Check every reloaded file with `guard` too (only the first guard given is kept).
    pub(crate) fn guard_with(&self, guard: ConsumerGuard) {
        let _ = self.guard.set(guard);
    }

    /// The directory now.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<ConsumerDirectory>> {
        self.directory.load()
    }

    /// Reload the consumers file if its contents changed. `Ok(Some(n))`: reloaded, `n`
    /// consumers; `Ok(None)`: no file, or unchanged; `Err`: the new contents are refused
    /// (every problem), and the consumers loaded before stay in effect. Reads and parses the
    /// file: run it on the background thread.
    pub(crate) fn refresh(&self) -> Result<Option<usize>, Vec<String>> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let bytes = std::fs::read(path)
            .map_err(|error| vec![format!("cannot read {}: {error}", path.display())])?;
        let digest = Digest::of(&bytes);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == Some(digest) {
            return Ok(None);
        }
        *seen = Some(digest);
        drop(seen);
        let text = String::from_utf8(bytes)
            .map_err(|_| vec![format!("{} is not UTF-8 text", path.display())])?;
        let directory = load_consumers(&text, &path.display().to_string())?;
        if let Some(guard) = self.guard.get() {
            guard(&directory).map_err(|problems| {
                problems
                    .into_iter()
                    .map(|problem| format!("{}: {problem}", path.display()))
                    .collect::<Vec<_>>()
            })?;
        }
        let count = directory.consumers.len();
        self.directory.store(Arc::new(directory));
        Ok(Some(count))
    }
}

/// Read and check a consumers file: a list of consumers, as in the `consumers` section.
/// Problems are `file:line:col: [i].key: message`, every one of them. Also the digest of
/// what was read, to tell later whether the file changed.
pub(crate) fn load_consumers_file(path: &Path) -> Result<(ConsumerDirectory, Digest), Vec<String>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|error| vec![format!("cannot read {origin}: {error}")])?;
    let digest = Digest::of(text.as_bytes());
    Ok((load_consumers(&text, &origin)?, digest))
}

/// Check the text of a consumers file read from `origin`.
fn load_consumers(text: &str, origin: &str) -> Result<ConsumerDirectory, Vec<String>> {
    if origin.ends_with(".json") {
        // The fast path for a large directory: one serde pass. Anything wrong, and the reader
        // below says what and where.
        if let Ok(files) = serde_json::from_str::<Vec<ConsumerFile>>(text) {
            let mut checks = ConsumerChecks::default();
            let mut ok = true;
            for (index, file) in files.iter().enumerate() {
                ok &= checks.check(index, file, &mut |_, _| {});
            }
            if ok {
                return Ok(checks.into_directory());
            }
        }
    }
    let render = |mut problems: Vec<Problem>| {
        problems.sort_by_key(|problem| (problem.line, problem.column));
        problems
            .iter()
            .map(|problem| problem.with_origin(origin).to_string())
            .collect::<Vec<_>>()
    };
    let (value, map) = parse_side_file(text).map_err(render)?;
    let mut problems = Vec::new();
    let items = match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        _ => {
            let root = KeyPath::root();
            let message = "expected a list of consumers (`- id: …` entries)";
            return Err(render(vec![Problem::new(
                &root,
                map.locate(&root),
                message,
            )]));
        }
    };
    let mut checks = ConsumerChecks::default();
    for (index, item) in items.iter().enumerate() {
        let at = KeyPath::root().index(index);
        let Some(file) = deserialize::<ConsumerFile>(item, &at, &map, &mut problems) else {
            continue;
        };
        let mut report = |keys: &[&str], message: String| {
            let path = keys.iter().fold(at.clone(), |path, key| path.key(key));
            problems.push(Problem::new(&path, map.locate(&path), message));
        };
        checks.check(index, &file, &mut report);
    }
    if problems.is_empty() {
        Ok(checks.into_directory())
    } else {
        Err(render(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_print_and_match() {
        let digest = Digest::of(b"pk_test");
        let text = digest.to_text();
        assert!(text.starts_with("sha256:") && text.len() == 71);
        assert_eq!(Digest::parse(&text), Ok(digest));
        assert!(Digest::parse("pk_test").is_err());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "g".repeat(64))).is_err());
    }

    fn consumer(id: &str, key: &[u8], enabled: bool) -> Consumer {
        Consumer {
            id: id.into(),
            name: None,
            plan: None,
            scopes: Vec::new(),
            enabled,
            api_keys: vec![Digest::of(key)],
            client_id: Some(format!("{id}-client").into()),
            client_secret: None,
        }
    }

    #[test]
    fn lookups_find_enabled_consumers_only() {
        let directory = ConsumerDirectory::new(vec![
            consumer("a", b"key-a", true),
            consumer("b", b"key-b", false),
        ]);
        assert_eq!(directory.by_api_key(b"key-a").map(|c| &*c.id), Some("a"));
        assert!(directory.by_api_key(b"key-b").is_none(), "disabled");
        assert!(directory.by_api_key(b"key-c").is_none(), "unknown");
        let enabled = |id: &str| match directory.lookup_client(id) {
            ClientLookup::Enabled(consumer) => Some(consumer.id.to_string()),
            _ => None,
        };
        assert_eq!(enabled("a-client").as_deref(), Some("a"));
        assert_eq!(
            enabled("a").as_deref(),
            Some("a"),
            "a consumer id names it too"
        );
        assert!(matches!(
            directory.lookup_client("b-client"),
            ClientLookup::Disabled
        ));
        assert!(matches!(
            directory.lookup_client("c"),
            ClientLookup::Unknown
        ));
        assert!(directory.knows("b"));
    }

    #[test]
    fn a_consumers_file_loads_fast_as_json_and_reports_problems_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let key = Digest::of(b"k").to_text();
        let json = dir.path().join("consumers.json");
        std::fs::write(
            &json,
            format!(r#"[{{"id": "a", "plan": "gold", "api_keys": ["{key}"]}}]"#),
        )
        .unwrap();
        let (loaded, digest) = load_consumers_file(&json).unwrap();
        assert_eq!(digest, Digest::of(&std::fs::read(&json).unwrap()));
        let consumer = loaded.by_api_key(b"k").expect("found by its key");
        assert_eq!(consumer.plan.as_deref(), Some("gold"));

        // The same mistakes in JSON and in YAML are reported alike, with positions.
        std::fs::write(
            &json,
            "[\n{\"id\": \"a\"},\n{\"id\": \"a\", \"plann\": 1}\n]",
        )
        .unwrap();
        let problems = load_consumers_file(&json).unwrap_err();
        let origin = json.display().to_string();
        assert_eq!(
            problems,
            [
                format!("{origin}:3:8: [1].id: duplicate consumer id `a` (also [0])"),
                format!(
                    "{origin}:3:13: [1].plann: unknown key `plann`, did you mean `plan`? \
                     (expected one of `id`, `name`, `plan`, `scopes`, `enabled`, `api_keys`, \
                     `oauth2`)"
                )
            ]
        );
        let yaml = dir.path().join("consumers.yaml");
        std::fs::write(&yaml, "- id: a\n- id: a\n  api_keys: [nope]\n").unwrap();
        let problems = load_consumers_file(&yaml).unwrap_err();
        let origin = yaml.display().to_string();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with(&format!("{origin}:2:7: [1].id: duplicate consumer id")));
        assert!(problems[1].starts_with(&format!("{origin}:3:13: [1].api_keys: expected a digest")));
    }
}
