//! Hostile HTTP/1.1 request heads over raw sockets, generated from a fixed seed.
//!
//! Each case is sent over a fresh TCP connection to a real gateway in front of a raw backend
//! that records every head it receives. What a case must produce depends on what RFC 9112 and
//! RFC 9110 say about it, so every generated input carries a [`Class`]: inputs the RFCs leave
//! no choice about must be refused and never forwarded; inputs they let a recipient either
//! reject or repair may be forwarded only repaired; valid inputs may go either way. Whatever
//! the class, no exchange hangs past [`CASE_BOUND`], no answer is a 5xx, a 2xx only ever comes
//! from the backend, every 4xx body is the gateway's JSON error, and whatever reaches the
//! backend is one clean HTTP/1.1 head. After all cases a well-formed request is still served.
//!
//! The generator is a tiny xorshift seeded with [`SEED`], so every run sends the same bytes
//! and a failure names the exact case.

use crate::common::*;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SEED: u64 = 0x5eed_f00d_ca11_ab1e;
/// 17 categories, 22 cases each.
const CASES: usize = 374;
/// The longest one exchange may take. The gateway's own budgets (1 s to read a head or a
/// body, below) close any stalled exchange long before this; hitting it is a hang.
const CASE_BOUND: Duration = Duration::from_secs(10);
const OPENED: &str = "portico_upstream_connections_opened_total{cluster=\"b\"}";

/// What a case is allowed to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Invalid per RFC 9112 / RFC 9110 with no repair the RFCs allow: answered with a 4xx (or
    /// the connection closed) and never forwarded.
    Refused,
    /// Valid syntax that a documented limit or policy refuses (431, 414, 413, unsafe paths,
    /// other hosts, CONNECT): the same assertions as `Refused`.
    Policy,
    /// A valid head followed by broken chunked framing. Bodies stream, so the head may
    /// already be on its way upstream; the client never gets a 2xx and the backend never
    /// receives a complete message.
    BrokenBody,
    /// Invalid, but the RFCs let a recipient either reject it or repair it (NUL or bare CR in
    /// a field value, obs-fold, whitespace before the first field line): refused, or
    /// forwarded repaired. `forbidden` (lowercase) must never reach the backend.
    Repairable { forbidden: Option<&'static str> },
    /// Valid HTTP, or a case the RFCs let a recipient accept for robustness (whitespace in the
    /// request line, bare LF line ends, an identical repeated Content-Length, a newer minor
    /// version): served or refused, either is fine.
    Tolerated,
    /// Valid syntax using a feature Portico does not implement (a transfer coding other than
    /// `chunked`): answered 501 (RFC 9112 §6.1) and never forwarded.
    Unsupported,
    /// Invalid, yet forwarded by the gateway today; named so a fix can move the case back to
    /// `Refused`. Left out of the never-forwarded assertion set:
    /// - "target: characters outside RFC 3986" (`"{}|^[]` in the path, `` ` ``, `\`, `^`,
    ///   `{`, `|`, `}` in the query, a `#fragment`, raw UTF-8; the http crate accepts them
    ///   and the path normaliser keeps raw UTF-8 on purpose);
    /// - "chunk extension with invalid bytes" (hyper skips extensions unchecked).
    KnownLeak(&'static str),
}

struct Case {
    label: String,
    bytes: Vec<u8>,
    class: Class,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 400;
        let shown = &self.bytes[..self.bytes.len().min(SHOWN)];
        write!(
            f,
            "case {} ({:?}): b\"{}\"",
            self.label,
            self.class,
            shown.escape_ascii()
        )?;
        if self.bytes.len() > SHOWN {
            write!(f, "... ({} bytes)", self.bytes.len())?;
        }
        Ok(())
    }
}

/// xorshift64*: enough variety for fuzzing, and the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn byte_from(&mut self, bytes: &[u8]) -> u8 {
        bytes[self.below(bytes.len())]
    }
}

/// A byte that never appears in a token (method, field name) and is neither whitespace, a
/// line break nor a colon, so inserting it anywhere in a token makes the token invalid and
/// nothing else.
fn non_token_byte(rng: &mut Rng) -> u8 {
    match rng.below(3) {
        0 => rng.byte_from(b"()<>@,;\\\"/[]?={}"),
        1 => rng.byte_from(&[0x00, 0x01, 0x02, 0x07, 0x08, 0x0e, 0x10, 0x1b, 0x1f, 0x7f]),
        _ => 0x80 + rng.below(0x80) as u8,
    }
}

/// `text` with `piece` inserted at a position in `from..=text.len()`.
fn insert(rng: &mut Rng, text: &[u8], from: usize, piece: &[u8]) -> Vec<u8> {
    let at = rng.range(from, text.len());
    [&text[..at], piece, &text[at..]].concat()
}

fn field(name: &[u8], value: &[u8]) -> Vec<u8> {
    [name, b": ", value].concat()
}

/// The fields of an ordinary request: `Host`, the case's request id (the gateway keeps a sane
/// one, so what the backend receives can be told apart) and a few harmless others.
fn base_fields(rng: &mut Rng, id: &str) -> Vec<Vec<u8>> {
    let mut fields = vec![field(b"Host", b"h"), field(b"X-Request-Id", id.as_bytes())];
    let extras: [&[u8]; 5] = [
        b"Accept: */*",
        b"User-Agent: portico-fuzz",
        b"Accept-Encoding: gzip",
        b"X-Pad: abcdefgh",
        b"Cache-Control: no-cache",
    ];
    for _ in 0..rng.below(4) {
        fields.push(extras[rng.below(extras.len())].to_vec());
    }
    // Fisher-Yates, so Host is not always first.
    for i in (1..fields.len()).rev() {
        let j = rng.below(i + 1);
        fields.swap(i, j);
    }
    fields
}

fn target(rng: &mut Rng, id: &str) -> Vec<u8> {
    match rng.below(3) {
        0 => format!("/fuzz/{id}?q={}", rng.below(100)).into_bytes(),
        _ => format!("/fuzz/{id}").into_bytes(),
    }
}

fn request(line: &[u8], fields: &[Vec<u8>], body: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    out.extend_from_slice(b"\r\n");
    for field in fields {
        out.extend_from_slice(field);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn line(method: &[u8], target: &[u8], version: &[u8]) -> Vec<u8> {
    [method, b" ", target, b" ", version].concat()
}

const CHUNKED_BODY: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";

type Generator = fn(&mut Rng, &str) -> Case;

const GENERATORS: [Generator; 17] = [
    bad_method,
    bad_target,
    policy_target,
    bad_version,
    request_line_whitespace,
    bad_field_name,
    control_in_value,
    folded_or_indented,
    content_length,
    transfer_encoding,
    length_and_chunked,
    broken_chunks,
    too_many_or_too_large,
    garbage,
    host,
    lenient_target,
    broken_h2_preface,
];

fn generate(index: usize, rng: &mut Rng) -> Case {
    let id = format!("fuzz-{index}");
    let mut case = GENERATORS[index % GENERATORS.len()](rng, &id);
    case.label = format!("#{index} {}", case.label);
    case
}

fn bad_method(rng: &mut Rng, id: &str) -> Case {
    let method = match rng.below(3) {
        0 => {
            let mut method = rng
                .pick(&["GET", "POST", "DELETE", "OPTIONS"])
                .as_bytes()
                .to_vec();
            for _ in 0..rng.range(1, 3) {
                let byte = non_token_byte(rng);
                method = insert(rng, &method, 0, &[byte]);
            }
            method
        }
        1 => (0..rng.range(1, 6)).map(|_| non_token_byte(rng)).collect(),
        // The line starts with the separator.
        _ => Vec::new(),
    };
    let bytes = request(
        &line(&method, &target(rng, id), b"HTTP/1.1"),
        &base_fields(rng, id),
        b"",
    );
    Case {
        label: "method: not a token".into(),
        bytes,
        class: Class::Refused,
    }
}

fn bad_target(rng: &mut Rng, id: &str) -> Case {
    let path = format!("/fuzz/{id}").into_bytes();
    let (what, target) = match rng.below(5) {
        0 => {
            let byte =
                rng.byte_from(&[0x00, 0x01, 0x08, 0x0e, 0x1f, 0x7f, b'<', b'>', b'`', b'\\']);
            (
                "target: control or excluded character",
                insert(rng, &path, 1, &[byte]),
            )
        }
        1 => {
            let bad: &[u8] = rng.pick(&[
                &[0x80][..],
                &[0xbf],
                &[0xc0, 0x41],
                &[0xff],
                &[0xe2, 0x82],
                &[0xed, 0xa0, 0x80],
                &[0xf5, 0x80, 0x80, 0x80],
            ]);
            (
                "target: bytes that are not UTF-8",
                insert(rng, &path, 1, bad),
            )
        }
        2 => {
            let escape = rng.pick(&["%zz", "%g1", "%1g", "%%", "%-1"]).as_bytes();
            (
                "target: malformed percent-escape",
                insert(rng, &path, 1, escape),
            )
        }
        3 => {
            let tail = rng.pick(&["%", "%4", "%a"]).as_bytes();
            (
                "target: truncated percent-escape",
                [&path[..], tail].concat(),
            )
        }
        _ => {
            // Only CONNECT takes authority-form and only OPTIONS asterisk-form.
            let target = rng.pick(&["fuzz", "*", "h:80", "fuzz/a", "?q=1", "./fuzz"]);
            (
                "target: not origin-form for GET",
                target.as_bytes().to_vec(),
            )
        }
    };
    Case {
        label: what.into(),
        bytes: request(
            &line(b"GET", &target, b"HTTP/1.1"),
            &base_fields(rng, id),
            b"",
        ),
        class: Class::Refused,
    }
}

fn policy_target(rng: &mut Rng, id: &str) -> Case {
    let path = format!("/fuzz/{id}").into_bytes();
    let mut fields = base_fields(rng, id);
    let (what, request_line) = match rng.below(5) {
        0 => {
            let escape = rng.pick(&["/%00", "/%0a", "/%1F", "/%7f", "/%5c", "/%5C"]);
            let target = insert(rng, &path, 1, escape.as_bytes());
            (
                "target: encoded control or backslash",
                line(b"GET", &target, b"HTTP/1.1"),
            )
        }
        1 => {
            let segment = rng.pick(&["/..;", "/.;x", "/..%3b", "/.%3B", "/x%2F..%2Fy", "/x%2f.."]);
            let target = [&path[..], segment.as_bytes(), b"/admin"].concat();
            (
                "target: dot segment a backend might resolve",
                line(b"GET", &target, b"HTTP/1.1"),
            )
        }
        2 => {
            let target = format!("http://evil.example/fuzz/{id}").into_bytes();
            (
                "target: absolute-form naming another host",
                line(b"GET", &target, b"HTTP/1.1"),
            )
        }
        3 => {
            fields = vec![field(b"Host", b"evil.example:443")];
            (
                "method: CONNECT",
                b"CONNECT evil.example:443 HTTP/1.1".to_vec(),
            )
        }
        _ => {
            let long = vec![b'a'; rng.range(8 * 1024, 60 * 1024)];
            let target = [&path[..], b"/", &long].concat();
            (
                "target: longer than max_uri_length",
                line(b"GET", &target, b"HTTP/1.1"),
            )
        }
    };
    Case {
        label: what.into(),
        bytes: request(&request_line, &fields, b""),
        class: Class::Policy,
    }
}

fn bad_version(rng: &mut Rng, id: &str) -> Case {
    let target = target(rng, id);
    let fields = base_fields(rng, id);
    if rng.below(3) == 0 {
        // Well-formed versions this server does not speak: a newer minor version is to be
        // processed as HTTP/1.1 (RFC 9110 §6.2), others may get 505 or 400.
        let version = rng.pick(&["HTTP/1.2", "HTTP/1.9", "HTTP/2.0", "HTTP/3.0", "HTTP/0.9"]);
        return Case {
            label: "version: well-formed but unsupported".into(),
            bytes: request(&line(b"GET", &target, version.as_bytes()), &fields, b""),
            class: Class::Tolerated,
        };
    }
    let version: &[u8] = rng.pick(&[
        &b"http/1.1"[..],
        b"HTTP/1.10",
        b"HTTP/1.",
        b"HTTP/11",
        b"HTTPS/1.1",
        b"HTTP/1.1x",
        b"HTTP/1,1",
        b"HTTP/a.b",
        b"HTTP/1.1\0",
        b"HTTP/\xff\xfe",
        b"HTTP",
        b"HTTP/1",
        b"HTP/1.1",
        b"HTTP/-1.1",
        b"HTTP/1.1.1",
    ]);
    let request_line = if rng.below(4) == 0 {
        // No version at all (an HTTP/0.9 request line).
        [&b"GET "[..], &target].concat()
    } else {
        line(b"GET", &target, version)
    };
    Case {
        label: "version: malformed or missing".into(),
        bytes: request(&request_line, &fields, b""),
        class: Class::Refused,
    }
}

/// RFC 9112 §2.2 and §3: a recipient MAY parse the request line on any whitespace, MAY
/// accept a bare LF as a line end and SHOULD ignore empty lines before the request line.
fn request_line_whitespace(rng: &mut Rng, id: &str) -> Case {
    let target = target(rng, id);
    let fields = base_fields(rng, id);
    let (what, bytes) = match rng.below(4) {
        0 => {
            let separators: [(&[u8], &[u8]); 6] = [
                (b"  ", b" "),
                (b"\t", b"\t"),
                (b" ", b"  "),
                (b"\x0b", b" "),
                (b" ", b"\x0c"),
                (b"\r", b" "),
            ];
            let (a, b) = separators[rng.below(separators.len())];
            let request_line = [&b"GET"[..], a, &target, b, b"HTTP/1.1"].concat();
            (
                "request line: other whitespace",
                request(&request_line, &fields, b""),
            )
        }
        1 => {
            let around = rng.pick(&[" ", "\t", "  "]).as_bytes();
            let request_line = if rng.below(2) == 0 {
                [around, &line(b"GET", &target, b"HTTP/1.1")].concat()
            } else {
                [&line(b"GET", &target, b"HTTP/1.1")[..], around].concat()
            };
            (
                "request line: leading or trailing whitespace",
                request(&request_line, &fields, b""),
            )
        }
        2 => {
            let empty_lines = b"\r\n".repeat(rng.range(1, 3));
            let bytes = [
                empty_lines,
                request(&line(b"GET", &target, b"HTTP/1.1"), &fields, b""),
            ];
            ("empty lines before the request line", bytes.concat())
        }
        _ => {
            let crlf = request(&line(b"GET", &target, b"HTTP/1.1"), &fields, b"");
            let bare_lf: Vec<u8> = crlf.into_iter().filter(|b| *b != b'\r').collect();
            ("bare LF line ends", bare_lf)
        }
    };
    Case {
        label: what.into(),
        bytes,
        class: Class::Tolerated,
    }
}

fn bad_field_name(rng: &mut Rng, id: &str) -> Case {
    let mut fields = base_fields(rng, id);
    let name = rng
        .pick(&["X-Fuzz", "Accept", "Content-Type", "Te", "X"])
        .as_bytes();
    let (what, broken) = match rng.below(6) {
        0 => {
            let byte = non_token_byte(rng);
            (
                "field name: not a token",
                field(&insert(rng, name, 0, &[byte]), b"v"),
            )
        }
        1 if name.len() > 1 => {
            let space = rng.pick(&[" ", "\t"]).as_bytes();
            let at = rng.range(1, name.len() - 1);
            let name = [&name[..at], space, &name[at..]].concat();
            ("field name: whitespace inside", field(&name, b"v"))
        }
        1 | 2 => {
            // RFC 9112 §5.1: a server MUST reject whitespace between name and colon.
            let space = rng.pick(&[" ", "\t", "  "]).as_bytes();
            let name = [name, space].concat();
            (
                "field name: whitespace before the colon",
                field(&name, b"v"),
            )
        }
        3 => ("field name: empty", field(b"", b"v")),
        4 => {
            let line = rng.pick(&["X-Fuzz", "X-Fuzz value", "no colon here"]);
            ("field line: no colon", line.as_bytes().to_vec())
        }
        _ => {
            // A line break inside a value leaves a line without a colon.
            let (eol, rest) = *rng.pick(&[&("\n", "tail"), &("\r", "tail"), &("\n", "more text")]);
            let value = ["v", eol, rest].concat();
            (
                "field line: line break inside",
                field(name, value.as_bytes()),
            )
        }
    };
    let at = rng.below(fields.len() + 1);
    fields.insert(at, broken);
    Case {
        label: what.into(),
        bytes: request(&line(b"GET", &target(rng, id), b"HTTP/1.1"), &fields, b""),
        class: Class::Refused,
    }
}

/// RFC 9110 §5.5: CR, LF and NUL in a field value make it invalid; a recipient MUST reject
/// the message or replace them with SP (other controls MAY be kept).
fn control_in_value(rng: &mut Rng, id: &str) -> Case {
    let mut fields = base_fields(rng, id);
    let control: &[u8] = match rng.below(4) {
        0 => b"\0",
        1 => b"\rx",
        _ => &[rng.byte_from(&[0x01, 0x07, 0x08, 0x0b, 0x0c, 0x0e, 0x1b, 0x1f, 0x7f])],
    };
    let value = insert(rng, b"some value", 0, control);
    let at = rng.below(fields.len() + 1);
    fields.insert(at, field(b"X-Fuzz", &value));
    Case {
        label: "field value: control character".into(),
        bytes: request(&line(b"GET", &target(rng, id), b"HTTP/1.1"), &fields, b""),
        class: Class::Repairable { forbidden: None },
    }
}

/// RFC 9112 §5.2: obs-fold MUST be rejected or replaced by SP; §2.2: a line starting with
/// whitespace right after the request line MUST be rejected or ignored.
fn folded_or_indented(rng: &mut Rng, id: &str) -> Case {
    let request_line = line(b"GET", &target(rng, id), b"HTTP/1.1");
    let mut fields = base_fields(rng, id);
    if rng.below(3) == 0 {
        let indent = rng.pick(&[" ", "\t", "  "]);
        let injected = format!("{indent}X-Injected: yes").into_bytes();
        fields.insert(0, injected);
        return Case {
            label: "field line: whitespace before the first".into(),
            bytes: request(&request_line, &fields, b""),
            class: Class::Repairable {
                forbidden: Some("x-injected"),
            },
        };
    }
    let mut value = b"first".to_vec();
    for _ in 0..rng.range(1, 3) {
        let fold = rng.pick(&["\r\n ", "\r\n\t", "\r\n   "]);
        value.extend_from_slice(fold.as_bytes());
        value.extend_from_slice(b"folded");
    }
    let at = rng.below(fields.len() + 1);
    fields.insert(at, field(b"X-Fuzz", &value));
    Case {
        label: "field value: obs-fold".into(),
        bytes: request(&request_line, &fields, b""),
        class: Class::Repairable { forbidden: None },
    }
}

fn content_length(rng: &mut Rng, id: &str) -> Case {
    let request_line = line(b"POST", &target(rng, id), b"HTTP/1.1");
    let mut fields = base_fields(rng, id);
    let (what, class, body): (&str, Class, &[u8]) = match rng.below(6) {
        0 | 1 => {
            let value = rng.pick(&[
                &b"-1"[..],
                b"-0",
                b"+5",
                b"5.0",
                b"0x5",
                b"1e3",
                b"",
                b"five",
                b"5 5",
                b"5,6",
                b"5;5",
                b"18446744073709551616",
                b"99999999999999999999999",
                b"5\x00",
                "\u{665}".as_bytes(),
            ]);
            fields.push(field(b"Content-Length", value));
            ("Content-Length: not a length", Class::Refused, b"hello")
        }
        2 => {
            // A non-digit inside the digits (never at either end, where it would be OWS).
            let digits = rng.range(10, 99_999).to_string().into_bytes();
            let junk = rng.byte_from(b"-+.xe ;/a");
            let at = rng.range(1, digits.len() - 1);
            let value = [&digits[..at], &[junk], &digits[at..]].concat();
            fields.push(field(b"Content-Length", &value));
            (
                "Content-Length: junk among digits",
                Class::Refused,
                b"hello",
            )
        }
        3 => {
            let first = rng.range(0, 9);
            let second = (first + rng.range(1, 9)) % 10;
            fields.push(field(b"Content-Length", first.to_string().as_bytes()));
            fields.push(field(b"Content-Length", second.to_string().as_bytes()));
            (
                "Content-Length: two different values",
                Class::Refused,
                b"hello",
            )
        }
        4 => {
            // RFC 9110 §8.6: identical repeats may be rejected or merged.
            if rng.below(2) == 0 {
                fields.push(field(b"Content-Length", b"5"));
                fields.push(field(b"Content-Length", b"5"));
            } else {
                fields.push(field(b"Content-Length", b"5, 5"));
            }
            (
                "Content-Length: the same value twice",
                Class::Tolerated,
                b"hello",
            )
        }
        _ => {
            // Over the route's max_body_size (1KiB): refused from the header alone.
            let length = if rng.below(4) == 0 {
                u64::MAX
            } else {
                rng.range(1025, 1 << 40) as u64
            };
            fields.push(field(b"Content-Length", length.to_string().as_bytes()));
            ("Content-Length: over the body limit", Class::Policy, b"")
        }
    };
    Case {
        label: what.into(),
        bytes: request(&request_line, &fields, body),
        class,
    }
}

fn transfer_encoding(rng: &mut Rng, id: &str) -> Case {
    let target = target(rng, id);
    let mut fields = base_fields(rng, id);
    let mut version: &[u8] = b"HTTP/1.1";
    let (what, class) = match rng.below(7) {
        0 | 1 => {
            // RFC 9112 §6.3: chunked not last in a request MUST be answered 400.
            let value = rng.pick(&[
                &b"chunked, identity"[..],
                b"xchunked",
                b"chunkedx",
                b"identity",
                b"gzip",
                b"chunked, gzip",
                b"",
                b"chunk ed",
                b"\x0bchunked",
                b"chunked\x0b",
                b"chunked;",
                b"chun\x00ked",
                b"\"chunked\"",
            ]);
            fields.push(field(b"Transfer-Encoding", value));
            (
                "Transfer-Encoding: chunked is not the final coding",
                Class::Refused,
            )
        }
        2 => {
            let last = rng.pick(&["identity", "gzip", "", "xchunked"]);
            fields.push(field(b"Transfer-Encoding", b"chunked"));
            fields.push(field(b"Transfer-Encoding", last.as_bytes()));
            (
                "Transfer-Encoding: the last field line is not chunked",
                Class::Refused,
            )
        }
        3 => {
            // RFC 9112 §6.1: framing of an HTTP/1.0 message with Transfer-Encoding is faulty.
            version = b"HTTP/1.0";
            fields.push(field(b"Transfer-Encoding", b"chunked"));
            ("Transfer-Encoding: in HTTP/1.0", Class::Refused)
        }
        4 => {
            let value = rng.pick(&["chunked,", ", chunked", "chunked;x=1", "CHUNKED", "Chunked"]);
            fields.push(field(b"Transfer-Encoding", value.as_bytes()));
            (
                "Transfer-Encoding: valid spelling of chunked",
                Class::Tolerated,
            )
        }
        5 => {
            if rng.below(2) == 0 {
                fields.push(field(b"Transfer-Encoding", b"chunked, chunked"));
            } else {
                fields.push(field(b"Transfer-Encoding", b"chunked"));
                fields.push(field(b"Transfer-Encoding", b"chunked"));
            }
            ("Transfer-Encoding: chunked applied twice", Class::Refused)
        }
        _ => {
            let value = rng.pick(&["gzip, chunked", "identity, chunked", "x-custom, chunked"]);
            fields.push(field(b"Transfer-Encoding", value.as_bytes()));
            (
                "Transfer-Encoding: another coding before chunked",
                Class::Unsupported,
            )
        }
    };
    Case {
        label: what.into(),
        bytes: request(&line(b"POST", &target, version), &fields, CHUNKED_BODY),
        class,
    }
}

/// RFC 9112 §6.1: a sender MUST NOT send both; Portico refuses such a request (and closes)
/// rather than pick one, since it is a smuggling attempt far more often than not.
fn length_and_chunked(rng: &mut Rng, id: &str) -> Case {
    let mut fields = base_fields(rng, id);
    let length_name = rng.pick(&[
        "Content-Length",
        "content-length",
        "CONTENT-LENGTH",
        "cOnTeNt-LeNgTh",
    ]);
    let length = rng.pick(&["5", "0", "15", "100", "abc"]);
    let coding_name = rng.pick(&[
        "Transfer-Encoding",
        "transfer-encoding",
        "TRANSFER-ENCODING",
    ]);
    let coding = rng.pick(&["chunked", "CHUNKED", "gzip, chunked", " chunked"]);
    let mut pair = vec![
        field(length_name.as_bytes(), length.as_bytes()),
        field(coding_name.as_bytes(), coding.as_bytes()),
    ];
    if rng.below(2) == 0 {
        pair.reverse();
    }
    for (i, extra) in pair.into_iter().enumerate() {
        let at = rng.range(i, fields.len());
        fields.insert(at, extra);
    }
    Case {
        label: "Content-Length and Transfer-Encoding".into(),
        bytes: request(
            &line(b"POST", &target(rng, id), b"HTTP/1.1"),
            &fields,
            CHUNKED_BODY,
        ),
        class: Class::Refused,
    }
}

fn broken_chunks(rng: &mut Rng, id: &str) -> Case {
    let mut fields = base_fields(rng, id);
    fields.push(field(b"Transfer-Encoding", b"chunked"));
    let mut body = b"3\r\nabc\r\n".repeat(rng.below(3));
    let (what, class, last): (&str, Class, &[u8]) = if rng.below(8) == 0 {
        let extension = rng.pick(&[
            &b"2;\x00\r\nab\r\n"[..],
            b"2;\xff\r\nab\r\n",
            b"2;=\r\nab\r\n",
        ]);
        body.extend_from_slice(extension);
        let leak = "chunk extension with invalid bytes";
        (leak, Class::KnownLeak(leak), b"0\r\n\r\n")
    } else if rng.below(4) == 0 {
        let trailer = rng.pick(&[
            &b"0\r\nno colon\r\n\r\n"[..],
            b"0\r\nX: \x00\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
        ]);
        ("chunked: invalid trailer", Class::BrokenBody, trailer)
    } else {
        let broken = rng.pick(&[
            &b"zz\r\nab\r\n"[..],
            b"g\r\nab\r\n",
            b"-1\r\nab\r\n",
            b"0x2\r\nab\r\n",
            b"fffffffffffffffff\r\n",
            b"10000000000000000\r\n",
            b" 2\r\nab\r\n",
            b"2 x\r\nab\r\n",
            b"2\r\nabc\r\n",
            b"3\r\nab\r\n",
            b"2\nab\r\n",
            b"2\rab\r\n",
            b"2\r\nab",
            b"\r\n",
        ]);
        body.extend_from_slice(broken);
        ("chunked: invalid chunk", Class::BrokenBody, b"0\r\n\r\n")
    };
    body.extend_from_slice(last);
    Case {
        label: what.into(),
        bytes: request(
            &line(b"POST", &target(rng, id), b"HTTP/1.1"),
            &fields,
            &body,
        ),
        class,
    }
}

/// Over the listener's defaults: 100 fields, a 64 KiB head.
fn too_many_or_too_large(rng: &mut Rng, id: &str) -> Case {
    let mut fields = base_fields(rng, id);
    let what = if rng.below(3) == 0 {
        let size = rng.range(64 * 1024, 128 * 1024);
        fields.push(field(b"X-Big", &vec![b'v'; size]));
        "head: larger than max_header_bytes"
    } else {
        let count = if rng.below(2) == 0 {
            rng.range(101, 400)
        } else {
            *rng.pick(&[&1_000, &5_000, &20_000])
        };
        fields.extend((0..count).map(|k| format!("X-F{k}: {k}").into_bytes()));
        "head: more fields than max_headers"
    };
    Case {
        label: what.into(),
        bytes: request(&line(b"GET", &target(rng, id), b"HTTP/1.1"), &fields, b""),
        class: Class::Policy,
    }
}

fn garbage(rng: &mut Rng, id: &str) -> Case {
    if rng.below(2) == 0 {
        // Starts with a byte no request line can start with, then anything.
        let mut bytes = vec![non_token_byte(rng)];
        bytes.extend((0..rng.below(120)).map(|_| rng.next() as u8));
        bytes.extend_from_slice(b"\r\n\r\n");
        return Case {
            label: "garbage: binary".into(),
            bytes,
            class: Class::Refused,
        };
    }
    // A good request line, then field lines that each start with a non-token byte.
    let mut fields = base_fields(rng, id);
    for _ in 0..rng.range(1, 3) {
        let mut junk = vec![non_token_byte(rng)];
        junk.extend((0..rng.below(40)).map(|_| match rng.next() as u8 {
            b'\r' | b'\n' => b'.',
            byte => byte,
        }));
        let at = rng.below(fields.len() + 1);
        fields.insert(at, junk);
    }
    Case {
        label: "garbage: field lines".into(),
        bytes: request(&line(b"GET", &target(rng, id), b"HTTP/1.1"), &fields, b""),
        class: Class::Refused,
    }
}

fn host(rng: &mut Rng, id: &str) -> Case {
    let request_line = line(b"GET", &target(rng, id), b"HTTP/1.1");
    let mut fields: Vec<Vec<u8>> = base_fields(rng, id)
        .into_iter()
        .filter(|f| !f.starts_with(b"Host:"))
        .collect();
    let (what, class) = match rng.below(3) {
        // RFC 9112 §3.2: an HTTP/1.1 request without Host MUST be answered 400.
        0 => ("Host: missing", Class::Refused),
        1 => {
            let second = rng.pick(&["h", "other.example", "evil.example:8080"]);
            fields.push(field(b"Host", b"h"));
            let at = rng.below(fields.len() + 1);
            fields.insert(at, field(b"Host", second.as_bytes()));
            ("Host: more than one field line", Class::Refused)
        }
        _ => {
            let value = rng.pick(&[
                "a b", "a/b", "user@h", "h?x", "h#f", "[::1", "h:port", "h:-1", "h\\x", "\"h\"",
                "h,h2", "<h>",
            ]);
            fields.push(field(b"Host", value.as_bytes()));
            ("Host: invalid field value", Class::Refused)
        }
    };
    Case {
        label: what.into(),
        bytes: request(&request_line, &fields, b""),
        class,
    }
}

fn lenient_target(rng: &mut Rng, id: &str) -> Case {
    let path = format!("/fuzz/{id}").into_bytes();
    let target = match rng.below(4) {
        0 => {
            let byte = rng.byte_from(b"\"{}|^[]");
            insert(rng, &path, 1, &[byte])
        }
        1 => {
            let byte = rng.byte_from(b"`\\^{|}");
            [&path[..], b"?q=", &[byte]].concat()
        }
        2 => [&path[..], b"#fragment"].concat(),
        _ => [
            &path[..],
            rng.pick(&["/caf\u{e9}", "/\u{65e5}\u{672c}"]).as_bytes(),
        ]
        .concat(),
    };
    let leak = "target: characters outside RFC 3986";
    Case {
        label: leak.into(),
        bytes: request(
            &line(b"GET", &target, b"HTTP/1.1"),
            &base_fields(rng, id),
            b"",
        ),
        class: Class::KnownLeak(leak),
    }
}

/// Starts like the HTTP/2 connection preface but is not one.
fn broken_h2_preface(rng: &mut Rng, id: &str) -> Case {
    let bytes = match rng.below(3) {
        0 => {
            let tail = rng.pick(&["XX\r\n\r\n", "SM\r\n\r\r", "sm\r\n\r\n", "SM\n\n\n\n\n\n"]);
            [&b"PRI * HTTP/2.0\r\n\r\n"[..], tail.as_bytes()].concat()
        }
        1 => request(b"PRI * HTTP/2.0", &base_fields(rng, id), b""),
        // An HTTP/1.1 request line with the preface's method: asterisk-form is OPTIONS only.
        _ => request(b"PRI * HTTP/1.1", &base_fields(rng, id), b""),
    };
    Case {
        label: "HTTP/2 preface: broken".into(),
        bytes,
        class: Class::Refused,
    }
}

/// What the backend saw on one connection.
#[derive(Debug, Clone)]
struct Seen {
    /// The head, or what arrived of it before the connection closed.
    head: Vec<u8>,
    /// The whole message arrived, as its head framed it.
    complete: bool,
}

/// A backend that reads raw bytes: it records each head as it arrived and whether the message
/// was complete, answers `200 ok` and closes (so every forwarded request is one connection).
struct RawBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// How many connections have been recorded in `seen`.
    finished: watch::Receiver<usize>,
}

async fn raw_backend() -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (finished_tx, finished) = watch::channel(0usize);
    let finished_tx = Arc::new(finished_tx);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (log, finished_tx) = (log.clone(), finished_tx.clone());
            tokio::spawn(async move {
                let seen = serve_raw(stream).await;
                log.lock().expect("log").push(seen);
                finished_tx.send_modify(|n| *n += 1);
            });
        }
    });
    RawBackend {
        addr,
        seen,
        finished,
    }
}

async fn serve_raw(stream: TcpStream) -> Seen {
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let start = head.len();
        match reader.read_until(b'\n', &mut head).await {
            Ok(0) | Err(_) => {
                return Seen {
                    head,
                    complete: false,
                }
            }
            Ok(_) => {}
        }
        if matches!(&head[start..], b"\r\n" | b"\n") {
            break;
        }
    }
    let complete = read_body(&mut reader, &head).await.is_some();
    if complete {
        let stream = reader.get_mut();
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        let _ = stream.shutdown().await;
    }
    Seen { head, complete }
}

/// Read the body the head announces; `None` if it does not arrive whole and well framed.
async fn read_body(reader: &mut BufReader<TcpStream>, head: &[u8]) -> Option<()> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    match (value("content-length:"), value("transfer-encoding:")) {
        (None, None) => Some(()),
        (Some(length), None) => {
            let mut body = vec![0; length.parse().ok()?];
            reader.read_exact(&mut body).await.ok().map(drop)
        }
        (None, Some(coding)) if coding == "chunked" => loop {
            let mut size_line = Vec::new();
            reader.read_until(b'\n', &mut size_line).await.ok()?;
            let size_line = std::str::from_utf8(&size_line).ok()?.strip_suffix("\r\n")?;
            let size = usize::from_str_radix(size_line.split(';').next()?, 16).ok()?;
            if size == 0 {
                loop {
                    let mut trailer = Vec::new();
                    reader.read_until(b'\n', &mut trailer).await.ok()?;
                    match trailer.as_slice() {
                        b"\r\n" => return Some(()),
                        [.., b'\r', b'\n'] => continue,
                        _ => return None,
                    }
                }
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.ok()?;
            if !chunk.ends_with(b"\r\n") {
                return None;
            }
        },
        _ => None,
    }
}

/// What came back on the client's connection.
struct Answer {
    bytes: Vec<u8>,
    /// The status of a complete HTTP/1.x response; `None` when the gateway closed without
    /// one (possibly after HTTP/2 frames, for a broken preface).
    status: Option<u16>,
}

/// Send `input` on a fresh connection and read until a complete response or the close. The
/// write half stays open (a client that half-closes is a different test).
async fn exchange(addr: SocketAddr, input: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.split();
    let write = async {
        // The gateway may refuse and close before reading everything (431): that is fine.
        let _ = writer.write_all(input).await;
        std::future::pending::<()>().await
    };
    let read = async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let status = response_status(&bytes).map(|(status, _)| status);
                    return Answer { bytes, status };
                }
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
            if let Some((status, true)) = response_status(&bytes) {
                return Answer {
                    bytes,
                    status: Some(status),
                };
            }
        }
    };
    tokio::select! {
        answer = read => answer,
        () = write => unreachable!("the write future never completes"),
    }
}

/// The status of the HTTP/1.x response at the start of `bytes`, and whether all of its body
/// (by Content-Length) has arrived.
fn response_status(bytes: &[u8]) -> Option<(u16, bool)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let status_line = head.lines().next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let status = rest.get(..3)?.parse().ok()?;
    let length: usize = header(head, "content-length").map_or(Some(0), |v| v.parse().ok())?;
    Some((status, bytes.len() >= end + 4 + length))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whatever the gateway forwards is one clean HTTP/1.1 head: CRLF line ends only, no NUL, no
/// folded or indented lines, token names, and unambiguous framing.
fn assert_clean_head(case: &Case, head: &[u8]) {
    let shown = head.escape_ascii();
    assert!(
        head.ends_with(b"\r\n\r\n"),
        "{case}: head cut short: {shown}"
    );
    // Up to the CR of the last field line's CRLF, so every line ends with its CR.
    let lines: Vec<&[u8]> = head[..head.len() - 3].split(|b| *b == b'\n').collect();
    for line in &lines {
        let line = line.strip_suffix(b"\r").unwrap_or_else(|| {
            panic!("{case}: forwarded a bare LF: {shown}");
        });
        assert!(
            !line.contains(&b'\r') && !line.contains(&0),
            "{case}: forwarded a bare CR or a NUL: {shown}"
        );
    }
    let request_line: Vec<&[u8]> = lines[0].trim_ascii_end().split(|b| *b == b' ').collect();
    assert!(
        request_line.len() == 3
            && !request_line[0].is_empty()
            && request_line[0].iter().all(|b| is_tchar(*b))
            && request_line[1].starts_with(b"/")
            && request_line[2] == b"HTTP/1.1",
        "{case}: forwarded a malformed request line: {shown}"
    );
    let mut lengths = 0;
    let mut codings = 0;
    for line in &lines[1..] {
        let line = line.trim_ascii_end();
        let colon = line.iter().position(|b| *b == b':');
        let name = &line[..colon.unwrap_or(0)];
        assert!(
            !name.is_empty() && name.iter().all(|b| is_tchar(*b)),
            "{case}: forwarded a malformed field line: {shown}"
        );
        lengths += usize::from(name.eq_ignore_ascii_case(b"content-length"));
        codings += usize::from(name.eq_ignore_ascii_case(b"transfer-encoding"));
    }
    assert!(
        lengths + codings <= 1,
        "{case}: forwarded ambiguous framing: {shown}"
    );
}

/// A 4xx with a body carries the gateway's JSON error.
fn assert_error_shape(case: &Case, answer: &Answer) {
    let end = answer
        .bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&answer.bytes[..end]);
    let body = &answer.bytes[end + 4..];
    if body.is_empty() {
        return;
    }
    assert_eq!(
        header(&head, "content-type"),
        Some("application/json"),
        "{case}: {head}"
    );
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{case}: error body is not JSON ({e}): {}",
            body.escape_ascii()
        )
    });
    for key in ["code", "message", "request_id"] {
        assert!(
            json["error"][key].as_str().is_some_and(|v| !v.is_empty()),
            "{case}: error body without {key}: {json}"
        );
    }
}

fn check(case: &Case, answer: &Answer, forwarded: &[Seen]) {
    let received: Vec<&Seen> = forwarded.iter().filter(|s| !s.head.is_empty()).collect();
    for seen in &received {
        assert_clean_head(case, &seen.head);
    }
    let complete = forwarded.iter().any(|s| s.complete);
    let shown = || {
        let heads: Vec<String> = received
            .iter()
            .map(|s| s.head.escape_ascii().to_string())
            .collect();
        format!(
            "answer: {}\nbackend received: {heads:?}",
            answer.bytes[..answer.bytes.len().min(300)].escape_ascii()
        )
    };
    match answer.status {
        None => {}
        Some(200..=299) => assert!(complete, "{case}: a 2xx not from the backend\n{}", shown()),
        Some(400..=499) => assert_error_shape(case, answer),
        Some(501) if case.class == Class::Unsupported => assert_error_shape(case, answer),
        Some(status) => panic!("{case}: answered {status}\n{}", shown()),
    }
    let refused = matches!(answer.status, None | Some(400..=499));
    match case.class {
        Class::Refused | Class::Policy => {
            assert!(refused, "{case}: not refused\n{}", shown());
            assert!(received.is_empty(), "{case}: forwarded\n{}", shown());
        }
        Class::BrokenBody => {
            assert!(refused, "{case}: not refused\n{}", shown());
            assert!(
                !complete,
                "{case}: the backend got a whole message\n{}",
                shown()
            );
        }
        Class::Repairable { forbidden } => {
            if let Some(text) = forbidden {
                for seen in &received {
                    let head = String::from_utf8_lossy(&seen.head).to_ascii_lowercase();
                    assert!(
                        !head.contains(text),
                        "{case}: forwarded {text}\n{}",
                        shown()
                    );
                }
            }
        }
        Class::Unsupported => {
            assert_eq!(answer.status, Some(501), "{case}: not 501\n{}", shown());
            assert!(received.is_empty(), "{case}: forwarded\n{}", shown());
        }
        Class::Tolerated | Class::KnownLeak(_) => {}
    }
}

#[tokio::test]
async fn hostile_request_heads_are_refused_and_never_forwarded() {
    let backend = raw_backend().await;
    let gw = TestGateway::start(&config(&format!(
        "    limits: {{ header_read_timeout: 1s, request_body_timeout: 1s }}\n\
         admin: {{ address: \"127.0.0.1:0\" }}\n\
         clusters:\n  - {{ name: b, endpoints: [\"{}\"] }}\n\
         routes:\n  - {{ cluster: b, max_body_size: 1KiB }}\n",
        backend.addr
    )))
    .await;
    let mut rng = Rng(SEED);
    let mut done = 0;
    let mut leaked = std::collections::BTreeMap::<&str, usize>::new();
    for index in 0..CASES {
        let case = generate(index, &mut rng);
        let answer = tokio::time::timeout(CASE_BOUND, exchange(gw.addr, &case.bytes))
            .await
            .unwrap_or_else(|_| panic!("{case}: neither answered nor closed in {CASE_BOUND:?}"));
        // Every upstream connection opened for this case is finished at the backend before
        // the next case starts, so what the backend recorded since the last case is this one's.
        let opened = usize::try_from(gw.metric(OPENED).await).expect("count");
        let mut finished = backend.finished.clone();
        within(
            &format!("the backend to finish {case}"),
            finished.wait_for(|n| *n >= opened),
        )
        .await
        .expect("backend running");
        let forwarded: Vec<Seen> = {
            let seen = backend.seen.lock().expect("log");
            let new = seen[done..].to_vec();
            done = seen.len();
            new
        };
        check(&case, &answer, &forwarded);
        if let Class::KnownLeak(what) = case.class {
            if forwarded.iter().any(|s| s.complete) {
                *leaked.entry(what).or_default() += 1;
            }
        }
    }
    eprintln!("invalid but forwarded (known, see Class::KnownLeak): {leaked:?}");

    // After all that, the gateway still serves a well-formed request.
    let reply = get(gw.addr, "h", "/fine").await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(reply.text(), "ok");
}
