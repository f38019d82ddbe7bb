//! YAML text → a tree that remembers where everything was → `serde_json::Value` plus a
//! [`SourceMap`] from key paths to line:column.
//!
//! Part of config loading (read → **parse with positions → env substitution** → structural
//! deserialise → semantic validation → typed `Config`). serde alone reports one error and
//! forgets positions, so this module keeps its own spanned tree built from yaml-rust2's event
//! parser, and every later stage looks positions up by key path (`routes[1].timeout`).
//!
//! YAML decisions, each to keep one file meaning one thing:
//! - Exactly one document; a second `---` document is an error (it would be silently ignored).
//! - Duplicate keys are errors (YAML says so; most loaders keep the last one quietly).
//! - Anchors and aliases are resolved: `*name` is a copy of the anchored node, so shared
//!   header sets can be written once. The copy keeps the positions of the anchored text (that
//!   is where a fix goes) while its key path is where it is used. Expansion is capped at
//!   [`MAX_NODES`] nodes so a "billion laughs" file cannot exhaust memory. The YAML 1.1
//!   merge key `<<` is not part of YAML 1.2 and is reported as an unknown key.
//! - Plain scalars are resolved with the YAML 1.2 core schema (`null`/`~`/empty, `true`/
//!   `false`, decimal/`0o`/`0x` integers, floats; everything else is a string); quoted and
//!   block scalars are always strings. So `yes`, `on` and `no` stay strings (no "Norway
//!   problem"). Core tags (`!!str`, `!!int`, ...) are honoured; other tags are errors.
//! - `${...}` substitution (see `env.rs`) applies to scalar *values*, never to keys: keys are
//!   the file's structure, and a key coming from the environment would defeat strict checking.
//! - Where the file type is a string but users naturally write a number (sizes, header and
//!   condition values), the caller's `wants_text` makes a plain number or boolean its literal
//!   text, so `max_body_size: 1048576` and `X-Version: 2` work as written.

use super::env::{self, Substituted};
use super::Problem;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::fmt;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Nesting deeper than this (aliased copies included) is refused: no sane config needs it,
/// and the tree builder and converter recurse once per level.
pub(crate) const MAX_DEPTH: usize = 64;
/// Upper bound on nodes after alias expansion, for a file of up to this many bytes; a larger
/// file (a consumers file with 100,000 entries) may have one node per byte of it, which no
/// file reaches without aliases.
pub(crate) const MAX_NODES: usize = 1_000_000;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub(crate) const START: Pos = Pos { line: 1, column: 1 };

    /// yaml-rust2 markers have 1-based lines and 0-based columns.
    fn from_marker(mark: Marker) -> Pos {
        Pos {
            line: mark.line().max(1),
            column: mark.col() + 1,
        }
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `routes[1].match.path_prefix`: the address every problem is reported
/// under and the key into the [`SourceMap`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.to_string()));
        path
    }

    /// This path extended by a sequence index.
    pub(crate) fn index(&self, index: usize) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    pub(crate) fn push(&mut self, seg: Seg) {
        self.0.push(seg);
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }

    pub(crate) fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// The last mapping key on the path, if it ends in one.
    pub(crate) fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(key)) => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Where each value and key of the file was, plus which values were secrets.
///
/// The parsed tree itself, kept after conversion: a position is found by walking it along
/// the path, so recording positions costs nothing per node (a file of 100,000 consumers
/// would otherwise build a million path-keyed entries only to look up a handful).
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceMap {
    root: Option<Node>,
    /// Paths of scalars that contained `${...}`; redacted in every dump.
    pub secrets: Vec<KeyPath>,
}

impl SourceMap {
    /// Position of the value at `path`; for a value that is not in the file (a default), the
    /// position of the nearest enclosing value that is, so every problem has a place.
    pub(crate) fn locate(&self, path: &KeyPath) -> Pos {
        let Some(mut node) = self.root.as_ref() else {
            return Pos::START;
        };
        for seg in &path.0 {
            match node.child(seg) {
                Some((_, child)) => node = child,
                None => break,
            }
        }
        node.pos
    }

    /// Position of the key that ends `path` (for unknown or misspelt keys), falling back to
    /// [`SourceMap::locate`].
    pub(crate) fn locate_key(&self, path: &KeyPath) -> Pos {
        let key_pos = self.root.as_ref().and_then(|root| {
            let (last, parents) = path.0.split_last()?;
            let parent = parents
                .iter()
                .try_fold(root, |node, seg| node.child(seg).map(|(_, child)| child))?;
            parent.child(last)?.0
        });
        key_pos.unwrap_or_else(|| self.locate(path))
    }

    /// Every position recorded, of values and keys.
    #[cfg(test)]
    pub(crate) fn positions(&self) -> Vec<Pos> {
        fn walk(node: &Node, out: &mut Vec<Pos>) {
            out.push(node.pos);
            match &node.kind {
                NodeKind::Scalar { .. } => {}
                NodeKind::Sequence(items) => items.iter().for_each(|item| walk(item, out)),
                NodeKind::Mapping(entries) => {
                    for entry in entries {
                        out.push(entry.key_pos);
                        walk(&entry.value, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            walk(root, &mut out);
        }
        out
    }
}

/// How a scalar was written: only plain scalars are resolved to non-strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarStyle {
    Plain,
    /// `'...'` or `"..."`.
    Quoted,
    /// `|` or `>`.
    Block,
}

/// A node of the spanned YAML tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    /// The tag as written, `!!` expanded back to its short form (`!!str`).
    pub tag: Option<String>,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    Scalar { text: String, style: ScalarStyle },
    Sequence(Vec<Node>),
    Mapping(Vec<Entry>),
}

/// One `key: value` pair. Keys are kept in file order, duplicates included, so the converter
/// can report them with their paths.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// `None` when the key was a mapping or a sequence, which this config never uses.
    pub key: Option<String>,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// The value one step down `seg`, with its key's position when `seg` is a key. The first
    /// of duplicate keys, as the converter keeps it.
    fn child(&self, seg: &Seg) -> Option<(Option<Pos>, &Node)> {
        match (&self.kind, seg) {
            (NodeKind::Sequence(items), Seg::Index(index)) => Some((None, items.get(*index)?)),
            (NodeKind::Mapping(entries), Seg::Key(key)) => entries
                .iter()
                .find(|entry| entry.key.as_deref() == Some(key.as_str()))
                .map(|entry| (Some(entry.key_pos), &entry.value)),
            _ => None,
        }
    }

    fn is_empty_plain(&self) -> bool {
        self.tag.is_none()
            && matches!(&self.kind, NodeKind::Scalar { text, style: ScalarStyle::Plain } if text.is_empty())
    }

    /// Levels from this node down to its deepest value (a scalar is 1).
    fn height(&self) -> usize {
        1 + match &self.kind {
            NodeKind::Scalar { .. } => 0,
            NodeKind::Sequence(items) => items.iter().map(Node::height).max().unwrap_or(0),
            NodeKind::Mapping(entries) => {
                entries.iter().map(|e| e.value.height()).max().unwrap_or(0)
            }
        }
    }

    fn count(&self) -> usize {
        1 + match &self.kind {
            NodeKind::Scalar { .. } => 0,
            NodeKind::Sequence(items) => items.iter().map(Node::count).sum(),
            NodeKind::Mapping(entries) => entries.iter().map(|e| 1 + e.value.count()).sum(),
        }
    }
}

/// Parse the text into a tree. `Ok(None)` is an empty file (or one with only comments).
/// A YAML syntax error, a second document, over-deep nesting or too many nodes stop parsing
/// and come back as the single problem.
pub(crate) fn parse_tree(text: &str) -> Result<Option<Node>, Problem> {
    // The scanner puts the end of the stream on a line of its own, one past the last line of
    // a file that does not end with a line break; whatever it marks there (an error, an empty
    // value) is placed at the end of the text instead.
    let end = end_of_text(text);
    match build_tree(text) {
        Ok(mut root) => {
            if let Some(root) = &mut root {
                clamp_positions(root, end);
            }
            Ok(root)
        }
        Err(mut problem) => {
            if (problem.line, problem.column) > (end.line, end.column) {
                problem.line = end.line;
                problem.column = end.column;
            }
            Err(problem)
        }
    }
}

fn clamp_positions(node: &mut Node, end: Pos) {
    node.pos = node.pos.min(end);
    match &mut node.kind {
        NodeKind::Scalar { .. } => {}
        NodeKind::Sequence(items) => {
            for item in items {
                clamp_positions(item, end);
            }
        }
        NodeKind::Mapping(entries) => {
            for entry in entries {
                entry.key_pos = entry.key_pos.min(end);
                clamp_positions(&mut entry.value, end);
            }
        }
    }
}

/// Where the text ends, counting lines as YAML does (CRLF, CR and LF each end one).
fn end_of_text(text: &str) -> Pos {
    let mut end = Pos::START;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            end = Pos {
                line: end.line + 1,
                column: 1,
            };
        } else {
            end.column += 1;
        }
    }
    end
}

fn build_tree(text: &str) -> Result<Option<Node>, Problem> {
    let mut builder = TreeBuilder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        max_nodes: MAX_NODES.max(text.len()),
    };
    let (event, mark) = builder.next()?;
    if event != Event::StreamStart {
        return Err(unexpected(&event, mark));
    }
    let (event, mark) = builder.next()?;
    let root = match event {
        Event::StreamEnd => return Ok(None),
        Event::DocumentStart => {
            let (event, mark) = builder.next()?;
            builder.node(event, mark, 0)?
        }
        other => return Err(unexpected(&other, mark)),
    };
    let (event, mark) = builder.next()?;
    if event != Event::DocumentEnd {
        return Err(unexpected(&event, mark));
    }
    match builder.next()? {
        (Event::StreamEnd, _) => Ok(Some(root)),
        (Event::DocumentStart, mark) => Err(fatal(
            mark,
            "a second YAML document (after `---`) is not allowed: the config is one document",
        )),
        (other, mark) => Err(unexpected(&other, mark)),
    }
}

fn fatal(mark: Marker, message: impl Into<String>) -> Problem {
    let pos = Pos::from_marker(mark);
    Problem::new(&KeyPath::root(), pos, message)
}

fn unexpected(event: &Event, mark: Marker) -> Problem {
    fatal(mark, format!("unexpected YAML event {event:?}"))
}

struct TreeBuilder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    max_nodes: usize,
}

impl TreeBuilder<'_> {
    fn next(&mut self) -> Result<(Event, Marker), Problem> {
        self.parser.next_token().map_err(|err| {
            let mark = *err.marker();
            fatal(mark, format!("YAML syntax error: {}", err.info()))
        })
    }

    /// Count nodes as they are created (aliases by the size of their copy).
    fn add_nodes(&mut self, count: usize, mark: Marker) -> Result<(), Problem> {
        self.nodes = self.nodes.saturating_add(count);
        if self.nodes > self.max_nodes {
            let max = self.max_nodes;
            return Err(fatal(
                mark,
                format!("the file expands to more than {max} values (through aliases?)"),
            ));
        }
        Ok(())
    }

    /// Build the node that starts with `event`, consuming events up to its end.
    fn node(&mut self, event: Event, mark: Marker, depth: usize) -> Result<Node, Problem> {
        if depth > MAX_DEPTH {
            return Err(fatal(
                mark,
                format!("values are nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.add_nodes(1, mark)?;
                let style = match style {
                    TScalarStyle::Plain => ScalarStyle::Plain,
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => ScalarStyle::Quoted,
                    TScalarStyle::Literal | TScalarStyle::Folded => ScalarStyle::Block,
                };
                let node = Node {
                    pos: Pos::from_marker(mark),
                    tag: tag.map(tag_name),
                    kind: NodeKind::Scalar { text, style },
                };
                (node, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.add_nodes(1, mark)?;
                let mut items = Vec::new();
                loop {
                    let (event, item_mark) = self.next()?;
                    if event == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(event, item_mark, depth + 1)?);
                }
                let node = Node {
                    pos: Pos::from_marker(mark),
                    tag: tag.map(tag_name),
                    kind: NodeKind::Sequence(items),
                };
                (node, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                self.add_nodes(1, mark)?;
                let mut entries = Vec::new();
                loop {
                    let (event, key_mark) = self.next()?;
                    if event == Event::MappingEnd {
                        break;
                    }
                    let key_node = self.node(event, key_mark, depth + 1)?;
                    let (event, value_mark) = self.next()?;
                    let mut value = self.node(event, value_mark, depth + 1)?;
                    // An empty value (`limits:` with nothing after it) is marked by the parser
                    // where the next token starts, often lines later; its key is the useful
                    // place to point at.
                    if value.is_empty_plain() {
                        value.pos = key_node.pos;
                    }
                    let key = match key_node.kind {
                        NodeKind::Scalar { text, .. } => Some(text),
                        NodeKind::Sequence(_) | NodeKind::Mapping(_) => None,
                    };
                    entries.push(Entry {
                        key,
                        key_pos: key_node.pos,
                        value,
                    });
                }
                // The parser's mark for a block mapping is not where its text starts; the
                // first key is, and that is where "missing key" problems should point.
                let pos = entries
                    .first()
                    .map_or(Pos::from_marker(mark), |entry| entry.key_pos);
                let node = Node {
                    pos,
                    tag: tag.map(tag_name),
                    kind: NodeKind::Mapping(entries),
                };
                (node, anchor)
            }
            Event::Alias(id) => {
                let Some(original) = self.anchors.get(&id) else {
                    return Err(fatal(mark, "alias to an unknown anchor"));
                };
                // The copy's values sit deeper than the alias: without counting them, a chain
                // of anchors, each aliasing the previous one further down, nests without bound.
                if depth + original.height() > MAX_DEPTH + 1 {
                    return Err(fatal(
                        mark,
                        format!(
                            "values are nested more than {MAX_DEPTH} levels deep (through aliases)"
                        ),
                    ));
                }
                let copy = original.clone();
                self.add_nodes(copy.count(), mark)?;
                (copy, 0)
            }
            other => return Err(unexpected(&other, mark)),
        };
        // Anchor ids start at 1; 0 means "no anchor".
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

fn tag_name(tag: yaml_rust2::parser::Tag) -> String {
    if tag.handle == "tag:yaml.org,2002:" {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// The JSON form of the file and everything learnt while converting it.
#[derive(Debug)]
pub(crate) struct Converted {
    pub value: Value,
    pub map: SourceMap,
    /// Duplicate keys, bad tags, failed substitutions.
    pub problems: Vec<Problem>,
    /// Values whose `${...}` could not be substituted. Later stages would only report
    /// follow-on errors about their placeholder text, so those are dropped.
    pub poisoned: Vec<KeyPath>,
}

/// Convert the tree, substituting environment variables and recording positions.
/// `wants_text` names the string-typed places where a plain number or boolean is kept as
/// its literal text.
pub(crate) fn to_json(
    root: Option<Node>,
    env: &dyn Fn(&str) -> Option<String>,
    wants_text: &dyn Fn(&KeyPath) -> bool,
) -> Converted {
    let mut converter = Converter {
        env,
        wants_text,
        map: SourceMap::default(),
        problems: Vec::new(),
        poisoned: Vec::new(),
    };
    let value = match &root {
        Some(root) => converter.convert(root, &mut KeyPath::root()),
        None => Value::Null,
    };
    let mut map = converter.map;
    map.root = root;
    Converted {
        value,
        map,
        problems: converter.problems,
        poisoned: converter.poisoned,
    }
}

struct Converter<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    wants_text: &'a dyn Fn(&KeyPath) -> bool,
    map: SourceMap,
    problems: Vec<Problem>,
    poisoned: Vec<KeyPath>,
}

/// The keys of one mapping seen so far, to report duplicates. Most mappings have a handful
/// of keys: those are searched in place instead of hashed (a file of 100,000 consumers has
/// 100,000 small mappings).
enum FirstSeen<'a> {
    Few,
    Many(HashMap<&'a str, Pos>),
}

impl<'a> FirstSeen<'a> {
    const FEW: usize = 16;

    fn new(entries: usize) -> FirstSeen<'a> {
        if entries <= Self::FEW {
            FirstSeen::Few
        } else {
            FirstSeen::Many(HashMap::with_capacity(entries))
        }
    }

    /// Where `key` was first seen among the mapping's `earlier` entries (those before the
    /// one being converted, in file order).
    fn get(&self, earlier: &[Entry], key: &str) -> Option<Pos> {
        match self {
            FirstSeen::Few => earlier
                .iter()
                .find(|entry| entry.key.as_deref() == Some(key))
                .map(|entry| entry.key_pos),
            FirstSeen::Many(map) => map.get(key).copied(),
        }
    }

    fn insert(&mut self, key: &'a str, pos: Pos) {
        match self {
            FirstSeen::Few => {}
            FirstSeen::Many(map) => {
                map.insert(key, pos);
            }
        }
    }
}

const CORE_SCALAR_TAGS: [&str; 5] = ["!!str", "!!int", "!!float", "!!bool", "!!null"];

impl Converter<'_> {
    fn report(&mut self, path: &KeyPath, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem::new(path, pos, message));
    }

    fn convert(&mut self, node: &Node, path: &mut KeyPath) -> Value {
        match &node.kind {
            NodeKind::Scalar { text, style } => {
                self.scalar(text, *style, node.tag.as_deref(), node.pos, path)
            }
            NodeKind::Sequence(items) => {
                self.check_collection_tag(node, "!!seq", path);
                let mut values = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    path.push(Seg::Index(index));
                    values.push(self.convert(item, path));
                    path.pop();
                }
                Value::Array(values)
            }
            NodeKind::Mapping(entries) => {
                self.check_collection_tag(node, "!!map", path);
                let mut object = Map::new();
                let mut first_seen = FirstSeen::new(entries.len());
                for (index, entry) in entries.iter().enumerate() {
                    let Some(key) = entry.key.as_deref() else {
                        self.report(
                            path,
                            entry.key_pos,
                            "a key must be a plain name, not a list or a mapping",
                        );
                        continue;
                    };
                    if let Some(first) = first_seen.get(&entries[..index], key) {
                        let message = format!(
                            "duplicate key `{key}` (first defined at line {})",
                            first.line
                        );
                        self.report(&path.key(key), entry.key_pos, message);
                        continue;
                    }
                    first_seen.insert(key, entry.key_pos);
                    path.push(Seg::Key(key.to_string()));
                    let value = self.convert(&entry.value, path);
                    path.pop();
                    object.insert(key.to_string(), value);
                }
                Value::Object(object)
            }
        }
    }

    fn check_collection_tag(&mut self, node: &Node, allowed: &str, path: &KeyPath) {
        if let Some(tag) = node.tag.as_deref() {
            if tag != allowed {
                let message = format!("tag `{tag}` is not supported here");
                self.report(path, node.pos, message);
            }
        }
    }

    fn scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&str>,
        pos: Pos,
        path: &KeyPath,
    ) -> Value {
        let Substituted {
            text: substituted,
            has_reference,
            whole_reference,
        } = match env::substitute(text, self.env) {
            Ok(substituted) => substituted,
            Err(errors) => {
                for error in errors {
                    self.report(path, pos, error.to_string());
                }
                // It named a variable, so whatever it held is a secret; keep the raw text as
                // a stand-in so the rest of its section can still be checked.
                self.map.secrets.push(path.clone());
                self.poisoned.push(path.clone());
                return Value::String(text.to_string());
            }
        };
        if has_reference {
            self.map.secrets.push(path.clone());
        }
        let value = match tag {
            None if style == ScalarStyle::Plain && (!has_reference || whole_reference) => {
                resolve_plain(&substituted)
            }
            None | Some("!!str") => return Value::String(substituted),
            Some(tag) if CORE_SCALAR_TAGS.contains(&tag) => {
                let value = resolve_plain(&substituted);
                let matches = match tag {
                    "!!int" => value.as_i64().is_some() || value.as_u64().is_some(),
                    "!!float" => value.is_number(),
                    "!!bool" => value.is_boolean(),
                    _ => value.is_null(),
                };
                if !matches {
                    let message = format!("{substituted:?} is not a valid `{tag}`");
                    self.report(path, pos, message);
                }
                value
            }
            Some(tag) => {
                let message = format!(
                    "tag `{tag}` is not supported; only the YAML core tags {} are",
                    CORE_SCALAR_TAGS.join(", ")
                );
                self.report(path, pos, message);
                return Value::String(substituted);
            }
        };
        if (value.is_number() || value.is_boolean()) && (self.wants_text)(path) {
            return Value::String(substituted);
        }
        value
    }
}

/// Resolve a plain scalar with the YAML 1.2 core schema. Integers that do not fit 64 bits
/// and the special floats (`.inf`, `.nan`), which JSON cannot hold, stay strings; every
/// place in this config that takes a number rejects them with a "expected a number" error.
pub(crate) fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(number) = resolve_int(text) {
        return number.map_or_else(|| Value::String(text.to_string()), Value::Number);
    }
    if is_core_float(text) {
        if let Some(number) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(number);
        }
    }
    Value::String(text.to_string())
}

/// `None`: not an integer. `Some(None)`: an integer that does not fit in 64 bits.
fn resolve_int(text: &str) -> Option<Option<Number>> {
    let digits_in = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(octal) = text.strip_prefix("0o") {
        return digits_in(octal, 8).then(|| u64::from_str_radix(octal, 8).ok().map(Number::from));
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return digits_in(hex, 16).then(|| u64::from_str_radix(hex, 16).ok().map(Number::from));
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits_in(unsigned, 10) {
        return None;
    }
    let number = if text.starts_with('-') {
        text.parse::<i64>().ok().map(Number::from)
    } else {
        unsigned.parse::<u64>().ok().map(Number::from)
    };
    Some(number)
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < bytes.len() && (bytes[i] == b'-' || bytes[i] == b'+') {
        i += 1;
    }
    let whole = digits(&mut i);
    let mut fraction = 0;
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        fraction = digits(&mut i);
    }
    if whole == 0 && fraction == 0 {
        return false;
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        if i < bytes.len() && (bytes[i] == b'-' || bytes[i] == b'+') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn never_text(_: &KeyPath) -> bool {
        false
    }

    fn convert(text: &str) -> Converted {
        let root = parse_tree(text).expect("valid YAML");
        to_json(root, &no_env, &never_text)
    }

    fn path(text: &str) -> KeyPath {
        // Test helper: "a.b[2].c" → segments.
        let mut path = KeyPath::root();
        for part in text.split('.') {
            let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
            path = path.key(key);
            for index in indexes.split('[').filter(|s| !s.is_empty()) {
                path = path.index(index.trim_end_matches(']').parse().unwrap());
            }
        }
        path
    }

    #[test]
    fn key_paths_display_like_the_file() {
        let p = KeyPath::root()
            .key("routes")
            .index(1)
            .key("match")
            .key("path_prefix");
        assert_eq!(p.to_string(), "routes[1].match.path_prefix");
        assert_eq!(
            path("clusters[0].endpoints[2]").to_string(),
            "clusters[0].endpoints[2]"
        );
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn positions_of_values_and_keys() {
        let c = convert("a: 1\nb:\n  c: \"x\"\n  d: [1, 2]\n  e:\n    - f: g\n      h: i\n");
        assert_eq!(c.map.locate(&path("a")), Pos { line: 1, column: 4 });
        assert_eq!(c.map.locate(&path("b")), Pos { line: 3, column: 3 });
        assert_eq!(c.map.locate(&path("b.c")), Pos { line: 3, column: 6 });
        assert_eq!(c.map.locate(&path("b.d")), Pos { line: 4, column: 6 });
        assert_eq!(
            c.map.locate(&path("b.d[1]")),
            Pos {
                line: 4,
                column: 10
            }
        );
        assert_eq!(c.map.locate(&path("b.e[0]")), Pos { line: 6, column: 7 });
        assert_eq!(
            c.map.locate(&path("b.e[0].h")),
            Pos {
                line: 7,
                column: 10
            }
        );
        assert_eq!(
            c.map.locate_key(&path("b.e[0].h")),
            Pos { line: 7, column: 7 }
        );
        // An empty value is placed at its key, not at the next token.
        let c2 = convert("a:\n\nb: 1\n");
        assert_eq!(c2.map.locate(&path("a")), Pos { line: 1, column: 1 });
        // Absent values fall back to the nearest enclosing one.
        assert_eq!(c.map.locate(&path("b.e[0].zz")), Pos { line: 6, column: 7 });
        assert_eq!(
            c.map.locate(&path("nothing.here")),
            Pos { line: 1, column: 1 }
        );
        assert!(c.problems.is_empty());
    }

    #[test]
    fn core_schema_resolution() {
        let cases = [
            ("", json!(null)),
            ("~", json!(null)),
            ("null", json!(null)),
            ("NULL", json!(null)),
            ("true", json!(true)),
            ("False", json!(false)),
            ("yes", json!("yes")),
            ("no", json!("no")),
            ("on", json!("on")),
            ("42", json!(42)),
            ("-7", json!(-7)),
            ("+7", json!(7)),
            ("007", json!(7)),
            ("0o17", json!(15)),
            ("0x1F", json!(31)),
            ("1.5", json!(1.5)),
            ("-.5", json!(-0.5)),
            ("1e3", json!(1000.0)),
            ("2.", json!(2.0)),
            ("18446744073709551615", json!(u64::MAX)),
            ("18446744073709551616", json!("18446744073709551616")),
            (".inf", json!(".inf")),
            ("0x", json!("0x")),
            ("1_000", json!("1_000")),
            ("5s", json!("5s")),
            ("1.2.3", json!("1.2.3")),
            ("e5", json!("e5")),
            ("127.0.0.1:8080", json!("127.0.0.1:8080")),
        ];
        for (text, expected) in cases {
            assert_eq!(resolve_plain(text), expected, "{text:?}");
        }
    }

    #[test]
    fn quoted_and_block_scalars_stay_strings() {
        let c = convert("a: '5'\nb: \"true\"\nc: |\n  7\nd: !!str 8\ne: !!int 9\n");
        assert_eq!(
            c.value,
            json!({"a": "5", "b": "true", "c": "7\n", "d": "8", "e": 9})
        );
        assert!(c.problems.is_empty());
    }

    #[test]
    fn unsupported_and_mismatched_tags_are_problems() {
        let c = convert("a: !custom 5\nb: !!int five\nc: !!map [1]\n");
        let messages: Vec<_> = c
            .problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].1.starts_with("tag `!custom` is not supported"));
        assert_eq!(messages[1], (2, "\"five\" is not a valid `!!int`"));
        assert_eq!(messages[2], (3, "tag `!!map` is not supported here"));
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second_key() {
        let c = convert("a: 1\nb:\n  x: 1\n  x: 2\na: 3\n");
        let problems: Vec<_> = c
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.line, p.column, p.message.as_str()))
            .collect();
        assert_eq!(
            problems,
            [
                ("b.x", 4, 3, "duplicate key `x` (first defined at line 3)"),
                ("a", 5, 1, "duplicate key `a` (first defined at line 1)"),
            ]
        );
        // The first definition wins in the value, so later stages see a consistent file.
        assert_eq!(c.value, json!({"a": 1, "b": {"x": 1}}));
    }

    #[test]
    fn complex_keys_are_problems() {
        let c = convert("? [a, b]\n: 1\n");
        assert_eq!(c.problems.len(), 1);
        assert_eq!(c.problems[0].line, 1);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse_tree("a: b: c\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 5));
        assert_eq!(
            err.message,
            "YAML syntax error: mapping values are not allowed in this context"
        );
        let err = parse_tree("a:\n  - x\n b: 2\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        let err = parse_tree("a: \"open\n").unwrap_err();
        assert_eq!(err.line, 1);
        assert_eq!(err.path, "");
    }

    #[test]
    fn only_one_document() {
        let err = parse_tree("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 1));
        assert!(err.message.contains("second YAML document"));
        // A leading `---` is just the start of the one document.
        assert!(parse_tree("---\na: 1\n").unwrap().is_some());
        assert_eq!(parse_tree("").unwrap(), None);
        assert_eq!(parse_tree("# nothing\n").unwrap(), None);
    }

    #[test]
    fn aliases_are_copies_with_their_own_paths() {
        let c = convert("a: &h {x: 1, y: [2]}\nb: *h\nc: &s text\nd: *s\n");
        assert_eq!(
            c.value,
            json!({"a": {"x": 1, "y": [2]}, "b": {"x": 1, "y": [2]}, "c": "text", "d": "text"})
        );
        // The copy is addressed where it is used, positioned where its text is.
        assert_eq!(
            c.map.locate(&path("b.y[0]")),
            Pos {
                line: 1,
                column: 18
            }
        );
        assert!(c.problems.is_empty());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let prev = level - 1;
            text.push_str(&format!(
                "a{level}: &a{level} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, \
                 *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse_tree(&text).unwrap_err();
        assert!(
            err.message.contains("more than 1000000 values"),
            "{}",
            err.message
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = parse_tree(&text).unwrap_err();
        assert!(
            err.message.contains("nested more than 64"),
            "{}",
            err.message
        );
    }

    #[test]
    fn substitution_types_and_secrets() {
        let env = |name: &str| match name {
            "N" => Some("4".to_string()),
            "TOKEN" => Some("abc".to_string()),
            _ => None,
        };
        let text = "n: ${N}\nq: \"${N}\"\nmixed: v${N}\nt: Bearer ${TOKEN}\nplain: 5\n\
                    dollar: $$5\nd: ${NOPE:-7}\nmissing: x ${NOPE}\n";
        let root = parse_tree(text).unwrap();
        let c = to_json(root, &env, &never_text);
        assert_eq!(
            c.value,
            json!({"n": 4, "q": "4", "mixed": "v4", "t": "Bearer abc", "plain": 5,
                   "dollar": "$5", "d": 7, "missing": "x ${NOPE}"})
        );
        let secrets: Vec<String> = c.map.secrets.iter().map(ToString::to_string).collect();
        assert_eq!(secrets, ["n", "q", "mixed", "t", "d", "missing"]);
        assert_eq!(c.poisoned, [path("missing")]);
        assert_eq!(c.problems.len(), 1);
        assert_eq!(
            c.problems[0].message,
            "environment variable NOPE is not set"
        );
        assert_eq!((c.problems[0].line, c.problems[0].column), (8, 10));
        // Keys are never substituted.
        let c = convert("${X}: 1\n");
        assert_eq!(c.value, json!({"${X}": 1}));
    }

    #[test]
    fn wanted_text_keeps_numbers_as_written() {
        let wants = |p: &KeyPath| p.last_key() == Some("size");
        let root = parse_tree("size: 0x10\nother: 0x10\nflag_size: true\nsize2: 1.50\n").unwrap();
        let c = to_json(root, &no_env, &wants);
        assert_eq!(
            c.value,
            json!({"size": "0x10", "other": 16, "flag_size": true, "size2": 1.5})
        );
    }

    #[test]
    fn the_end_of_a_file_without_a_final_line_break_is_inside_it() {
        // The scanner marks the end of the stream at 2:1 here; there is no line 2.
        let err = parse_tree("a: [b, ").unwrap_err();
        assert_eq!((err.line, err.column), (1, 8));
        let err = parse_tree("a: 1\r\nb: [").unwrap_err();
        assert_eq!((err.line, err.column), (2, 5));
        // With the line break, 2:1 exists.
        let err = parse_tree("a: [b,\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 1));
        // An empty value marked at the end of the stream.
        let root = parse_tree("!!str ").unwrap().expect("a document");
        assert_eq!(root.pos, Pos { line: 1, column: 7 });
    }

    #[test]
    fn aliased_copies_count_towards_the_nesting_limit() {
        let mut text = String::from("x0: &x0 1\n");
        for i in 1..10 {
            text.push_str(&format!("x{i}: &x{i} [[[[[[[[*x{}]]]]]]]]\n", i - 1));
        }
        let err = parse_tree(&text).unwrap_err();
        assert_eq!(
            err.message,
            "values are nested more than 64 levels deep (through aliases)"
        );
        assert_eq!(err.line, 9);
    }

    use proptest::prelude::*;

    /// The text's lines as YAML counts them (CRLF, CR and LF each end a line), in chars.
    fn line_lengths(text: &str) -> Vec<usize> {
        let mut lengths = vec![0];
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' | '\n' => {
                    if c == '\r' && chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    lengths.push(0);
                }
                _ => *lengths.last_mut().expect("one line") += 1,
            }
        }
        lengths
    }

    /// A position points into the text: at a character of an existing line, or just past its
    /// end.
    fn assert_within(text: &str, line: usize, column: usize, what: &str) {
        let lengths = line_lengths(text);
        assert!(
            line >= 1 && column >= 1,
            "{what}: {line}:{column} in {text:?}"
        );
        assert!(
            line <= lengths.len() && column <= lengths[line - 1] + 1,
            "{what}: {line}:{column} is outside {text:?} (line lengths {lengths:?})"
        );
    }

    /// Parse, convert, and check that every position reported lies within the text.
    fn check_positions(text: &str) {
        match parse_tree(text) {
            Err(problem) => {
                assert_within(text, problem.line, problem.column, &problem.message);
                assert_eq!(problem.path, "");
            }
            Ok(root) => {
                let env = |name: &str| (name == "SET").then(|| "value".to_string());
                let wants = |path: &KeyPath| path.last_key() == Some("size");
                let converted = to_json(root, &env, &wants);
                for problem in &converted.problems {
                    assert_within(text, problem.line, problem.column, &problem.message);
                }
                for pos in converted.map.positions() {
                    assert_within(text, pos.line, pos.column, "a recorded position");
                }
            }
        }
    }

    /// Pieces of YAML syntax, so random concatenations reach far more of the parser than
    /// random bytes do.
    fn yaml_piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a",
            "key",
            "b",
            "1",
            "-1",
            "0x1F",
            "1.5",
            "~",
            "true",
            ":",
            ": ",
            " ",
            "  ",
            "\n",
            "\n  ",
            "\r\n",
            "\r",
            "\t",
            "- ",
            "-",
            "[",
            "]",
            "{",
            "}",
            ", ",
            ",",
            "&a ",
            "*a",
            "&b ",
            "*b",
            "!!str ",
            "!!int ",
            "!!map ",
            "!x ",
            "!<tag:x> ",
            "'",
            "''",
            "\"",
            "\\",
            "\\u00e9",
            "#",
            " # c",
            "|",
            "|-",
            ">",
            "---",
            "...",
            "? ",
            "%YAML 1.2\n",
            "%TAG ! tag:x:\n",
            "${SET}",
            "${UNSET}",
            "${X:-d}",
            "$$",
            "\u{e9}",
            "\u{feff}",
            "\u{85}",
            "\u{2028}",
            "\0",
            "\u{7f}",
            "<<: ",
            "size: ",
            "size: 0x10",
        ])
    }

    fn yaml_like() -> impl Strategy<Value = String> {
        prop::collection::vec(yaml_piece(), 0..40).prop_map(|pieces| pieces.concat())
    }

    /// A piece of YAML syntax repeated many times: deep nesting, long scalars, many entries.
    fn yaml_runs() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["[", "{", "- ", "a: ", "&a [*a, ", "'", "\n", " ", "a"]),
            0..2000usize,
            yaml_like(),
        )
            .prop_map(|(piece, count, tail)| format!("{}{tail}", piece.repeat(count)))
    }

    /// Keys as the config writes them.
    fn key() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_]{0,8}"
    }

    /// A plain scalar that the core schema keeps a string.
    fn plain_string() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_-]{0,10}".prop_filter("resolves to a string", |s| {
            resolve_plain(s) == json!(s.as_str())
        })
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(Value::Number),
            plain_string().prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ]
    }

    /// A mapping of simple keys to scalars, lists and mappings, a few levels deep.
    fn document() -> impl Strategy<Value = Value> {
        let value = scalar().prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map(key(), value, 1..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// `value` with every `$` in its strings written `$$`, which substitution turns back
    /// into one.
    fn escape_dollars(value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(s.replace('$', "$$")),
            Value::Array(items) => Value::Array(items.iter().map(escape_dollars).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), escape_dollars(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Block-style YAML for `value`, recording where each key and each inline value starts.
    struct Block {
        text: String,
        line: usize,
        keys: Vec<(KeyPath, Pos)>,
        values: Vec<(KeyPath, Pos)>,
        /// Choices for how to write null and strings, consumed in order.
        style: u64,
    }

    impl Block {
        fn next_style(&mut self, n: u64) -> u64 {
            self.style = self.style.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
            self.style % n
        }

        fn is_inline(value: &Value) -> bool {
            match value {
                Value::Array(items) => items.is_empty(),
                Value::Object(map) => map.is_empty(),
                _ => true,
            }
        }

        /// The inline text of a scalar or empty collection. `in_mapping`: an empty null is
        /// allowed (a mapping value may be left out).
        fn inline(&mut self, value: &Value, in_mapping: bool) -> String {
            match value {
                Value::Null => ["~", "null", "Null", ""]
                    [self.next_style(3 + u64::from(in_mapping)) as usize]
                    .to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => {
                    // `$` starts a substitution; `$$` is a literal one.
                    let s = &s.replace('$', "$$");
                    let plain = !s.is_empty()
                        && s.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                        })
                        && s.as_bytes()[0].is_ascii_lowercase()
                        && resolve_plain(s) == json!(s.as_str());
                    let single = s.chars().all(|c| c == ' ' || c.is_ascii_graphic());
                    match self.next_style(3) {
                        0 if plain => s.to_string(),
                        1 if single => format!("'{}'", s.replace('\'', "''")),
                        _ => serde_json::to_string(s).expect("a string"),
                    }
                }
                Value::Array(_) => "[]".to_string(),
                Value::Object(_) => "{}".to_string(),
            }
        }

        /// `key: value` (with `key`) or `- value`, nested values on the following lines.
        fn push_line(&mut self, indent: usize, path: &KeyPath, value: &Value, key: Option<&str>) {
            let mut line = " ".repeat(indent);
            if let Some(key) = key {
                self.keys.push((
                    path.clone(),
                    Pos {
                        line: self.line,
                        column: indent + 1,
                    },
                ));
                line.push_str(key);
                line.push(':');
            } else {
                line.push('-');
            }
            if Self::is_inline(value) {
                let text = self.inline(value, key.is_some());
                let column = if text.is_empty() {
                    // An empty value is placed at its key.
                    indent + 1
                } else {
                    line.chars().count() + 2
                };
                self.values.push((
                    path.clone(),
                    Pos {
                        line: self.line,
                        column,
                    },
                ));
                line.push(' ');
                line.push_str(&text);
                self.text.push_str(line.trim_end());
                self.text.push('\n');
                self.line += 1;
            } else {
                self.text.push_str(&line);
                self.text.push('\n');
                self.line += 1;
                self.nested(value, indent + 2, path);
            }
        }

        fn nested(&mut self, value: &Value, indent: usize, path: &KeyPath) {
            match value {
                Value::Object(map) => {
                    for (key, item) in map {
                        self.push_line(indent, &path.key(key), item, Some(key));
                    }
                }
                Value::Array(items) => {
                    for (index, item) in items.iter().enumerate() {
                        self.push_line(indent, &path.index(index), item, None);
                    }
                }
                _ => unreachable!("only collections are nested"),
            }
        }

        fn render(value: &Value, style: u64) -> Block {
            let mut block = Block {
                text: String::new(),
                line: 1,
                keys: Vec::new(),
                values: Vec::new(),
                style,
            };
            block.nested(value, 0, &KeyPath::root());
            block
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check_positions(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            check_positions(&text);
        }

        #[test]
        fn yaml_like_text_never_panics(text in prop_oneof![yaml_like(), yaml_runs()]) {
            check_positions(&text);
        }

        #[test]
        fn generated_documents_round_trip_with_positions(doc in document(), style in any::<u64>()) {
            let block = Block::render(&doc, style);
            let root = parse_tree(&block.text).unwrap_or_else(|p| panic!("{p:?} in\n{}", block.text));
            let converted = to_json(root, &no_env, &never_text);
            prop_assert!(converted.problems.is_empty(), "{:?}", converted.problems);
            prop_assert_eq!(&converted.value, &doc, "{}", block.text);
            for (path, pos) in &block.keys {
                prop_assert_eq!(converted.map.locate_key(path), *pos, "key {} in\n{}", path, block.text);
            }
            for (path, pos) in &block.values {
                prop_assert_eq!(converted.map.locate(path), *pos, "value {} in\n{}", path, block.text);
            }
            // JSON is YAML too (flow style, every string double-quoted).
            let json = serde_json::to_string(&escape_dollars(&doc)).expect("json");
            let converted = convert(&json);
            prop_assert!(converted.problems.is_empty(), "{:?}", converted.problems);
            prop_assert_eq!(&converted.value, &doc, "{}", json);
        }

        #[test]
        fn alias_chains_respect_the_nesting_limit(levels in 1..300usize, nesting in 1..80usize) {
            // `xN` nests `nesting` lists around an alias of `x(N-1)`: a short file whose
            // values nest `1 + nesting * (levels - 1)` deep once the aliases are copied.
            let mut text = String::from("x0: &x0 1\n");
            for i in 1..levels {
                let (open, close) = ("[".repeat(nesting), "]".repeat(nesting));
                text.push_str(&format!("x{i}: &x{i} {open}*x{}{close}\n", i - 1));
            }
            let deepest = 1 + nesting * (levels - 1);
            match parse_tree(&text) {
                Ok(root) => {
                    prop_assert!(deepest <= MAX_DEPTH, "{} levels accepted", deepest);
                    let root = root.expect("a document");
                    prop_assert!(root.height() <= MAX_DEPTH + 1);
                    prop_assert!(to_json(Some(root), &no_env, &never_text).problems.is_empty());
                }
                Err(problem) => {
                    prop_assert!(deepest > MAX_DEPTH, "{}: {}", deepest, problem.message);
                    prop_assert!(problem.message.contains("nested more than 64"), "{}", problem.message);
                }
            }
        }

        #[test]
        fn numbers_resolve_as_written(int in any::<i64>(), uint in any::<u64>(), float in any::<f64>()) {
            prop_assert_eq!(resolve_plain(&int.to_string()), json!(int));
            prop_assert_eq!(resolve_plain(&uint.to_string()), json!(uint));
            if let Some(number) = Number::from_f64(float) {
                let expected = Value::Number(number);
                prop_assert_eq!(&resolve_plain(&serde_json::to_string(&float).expect("json")), &expected);
                prop_assert_eq!(&resolve_plain(&format!("{float:e}")), &expected);
            }
        }
    }
}
