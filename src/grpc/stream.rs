//! Client streaming: a JSON array or NDJSON request body → a stream of gRPC messages.
//!
//! On the request path of transcoding routes, for methods whose request is a stream. The
//! caller's body is cut into its elements as the bytes arrive ([`Splitter`]: a JSON array's
//! elements, or one JSON value per line for `application/x-ndjson`), each element becomes one
//! request message and is sent upstream as soon as it is whole. The upstream pulls: the
//! caller's body is read only as fast as the upstream takes messages, and nothing more than
//! one element is held. A bad element ends the upstream call; the caller gets a 400 naming
//! the element.

use super::framing::frame;
use super::http_rule::{Binding, PathVariable};
use super::request::{build_message, MessageTarget, RequestError, RequestRules};
use crate::body::{Body, BodyError};
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use prost_reflect::MessageDescriptor;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Finds where the elements of a streamed body begin and end, without parsing them.
#[derive(Debug)]
pub(crate) struct Splitter {
    ndjson: bool,
    buffer: BytesMut,
    /// How far `buffer` has been scanned.
    scanned: usize,
    /// Where the current element starts in `buffer`.
    start: Option<usize>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// JSON array: `[` seen; `]` seen.
    opened: bool,
    closed: bool,
    /// JSON array, between elements: what may come next.
    expect: Expect,
    /// Bytes looked at, for the tests that check each byte is looked at once.
    #[cfg(test)]
    examined: usize,
}

/// Between the elements of a JSON array, what the grammar allows next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Just after `[`: an element or `]`.
    First,
    /// After an element: `,` or `]`.
    Separator,
    /// After `,`: an element.
    Element,
}

/// A body that is not a stream of JSON values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SplitError {
    #[error("a streamed request body must be a JSON array of messages (or NDJSON)")]
    NotAnArray,
    #[error("unexpected {0:?} between the messages of the array")]
    Unexpected(char),
    #[error("the body ended before the array was closed")]
    Unterminated,
    #[error("a message of the stream is longer than {0} bytes")]
    TooLong(usize),
}

impl Splitter {
    pub(crate) fn new(ndjson: bool) -> Splitter {
        Splitter {
            ndjson,
            buffer: BytesMut::new(),
            scanned: 0,
            start: None,
            depth: 0,
            in_string: false,
            escaped: false,
            opened: false,
            closed: false,
            expect: Expect::First,
            #[cfg(test)]
            examined: 0,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole element, if one is in; elements longer than `limit` are refused.
    pub(crate) fn next(&mut self, limit: usize) -> Result<Option<Bytes>, SplitError> {
        if self.ndjson {
            return self.next_line(limit);
        }
        while self.scanned < self.buffer.len() {
            let byte = self.buffer[self.scanned];
            let at = self.scanned;
            self.scanned += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                    // A string element ends at its closing quote.
                    if let Some(start) = self.start.filter(|_| self.depth == 0) {
                        if self.buffer[start] == b'"' {
                            self.expect = Expect::Separator;
                            return Ok(Some(self.take(start, self.scanned)));
                        }
                    }
                }
                continue;
            }
            if !self.opened {
                match byte {
                    b'[' => self.opened = true,
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    _ => return Err(SplitError::NotAnArray),
                }
                continue;
            }
            if self.closed {
                match byte {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    other => return Err(SplitError::Unexpected(char::from(other))),
                }
            }
            match (self.start, byte) {
                (None, b' ' | b'\t' | b'\r' | b'\n') => {}
                (None, b',') if self.expect == Expect::Separator => self.expect = Expect::Element,
                (None, b']') if self.expect != Expect::Element => self.closed = true,
                (None, b',' | b']') => return Err(SplitError::Unexpected(char::from(byte))),
                (None, _) if self.expect == Expect::Separator => {
                    // `[{} {}]`: a JSON array separates its elements with commas.
                    return Err(SplitError::Unexpected(char::from(byte)));
                }
                (None, _) => {
                    self.start = Some(at);
                    match byte {
                        b'{' | b'[' => self.depth = 1,
                        b'"' => self.in_string = true,
                        _ => {}
                    }
                }
                (Some(start), _) => match byte {
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' if self.depth > 0 => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            self.expect = Expect::Separator;
                            return Ok(Some(self.take(start, self.scanned)));
                        }
                    }
                    b'"' => self.in_string = true,
                    b',' | b']' if self.depth == 0 => {
                        // The end of a scalar element.
                        let element = self.take(start, at);
                        if byte == b']' {
                            self.closed = true;
                        } else {
                            self.expect = Expect::Element;
                        }
                        return Ok(Some(element));
                    }
                    _ => {}
                },
            }
            if let Some(start) = self.start {
                if self.scanned - start > limit {
                    return Err(SplitError::TooLong(limit));
                }
            }
        }
        // Nothing whole yet: drop what was skipped, keep the current element.
        let keep_from = self.start.unwrap_or(self.scanned);
        let _ = self.buffer.split_to(keep_from);
        self.scanned -= keep_from;
        self.start = self.start.map(|_| 0);
        Ok(None)
    }

    fn take(&mut self, start: usize, end: usize) -> Bytes {
        let mut taken = self.buffer.split_to(end);
        let mut element = taken.split_off(start);
        // A scalar element runs up to the separator: without the blanks before it.
        while element.last().is_some_and(u8::is_ascii_whitespace) {
            element.truncate(element.len() - 1);
        }
        let element = element.freeze();
        self.scanned -= end;
        self.start = None;
        self.depth = 0;
        element
    }

    fn next_line(&mut self, limit: usize) -> Result<Option<Bytes>, SplitError> {
        loop {
            // Only the bytes that came since the last look: a long line sent in small
            // chunks is scanned once, not once per chunk.
            let fresh = &self.buffer[self.scanned..];
            let found = fresh.iter().position(|b| *b == b'\n');
            #[cfg(test)]
            {
                self.examined += found.map_or(fresh.len(), |end| end + 1);
            }
            let Some(end) = found else {
                self.scanned = self.buffer.len();
                if self.buffer.len() > limit {
                    return Err(SplitError::TooLong(limit));
                }
                return Ok(None);
            };
            let line = self.buffer.split_to(self.scanned + end + 1);
            self.scanned = 0;
            let trimmed = line.trim_ascii();
            if !trimmed.is_empty() {
                return Ok(Some(Bytes::copy_from_slice(trimmed)));
            }
        }
    }

    /// At the end of the body: the last NDJSON line, or a check that the array was closed.
    pub(crate) fn finish(&mut self) -> Result<Option<Bytes>, SplitError> {
        if self.ndjson {
            let rest = self.buffer.split();
            let trimmed = rest.trim_ascii();
            return Ok((!trimmed.is_empty()).then(|| Bytes::copy_from_slice(trimmed)));
        }
        if !self.opened && self.buffer.trim_ascii().is_empty() {
            // An empty body: no messages.
            return Ok(None);
        }
        if !self.closed {
            return Err(SplitError::Unterminated);
        }
        Ok(None)
    }
}

/// Turns one element of the body into an encoded request message.
type MakeMessage = dyn Fn(&[u8]) -> Result<Vec<u8>, RequestError> + Send + Sync;

/// A client-streaming call's request body: the caller's elements as gRPC messages.
pub(crate) struct RequestStream {
    client: Body,
    splitter: Splitter,
    /// Each element becomes a message for this binding (path and query fields included).
    make: Box<MakeMessage>,
    max_message: usize,
    ready: VecDeque<Bytes>,
    index: usize,
    done: bool,
    failure: StreamFailure,
}

/// Where a streamed request's body records why it stopped. The body's own error reaches the
/// upstream client, which only resets the stream; the transcoder reads the reason here to
/// answer the caller with it.
pub(crate) type StreamFailure = Arc<std::sync::OnceLock<Arc<StreamElementError>>>;

/// Why a streamed request was cut off: carried as the body's error to the upstream client,
/// and recovered from its error chain as the caller's answer (`error.rs`).
#[derive(Debug, thiserror::Error)]
#[error("message {index} of the request stream: {source}")]
pub(crate) struct StreamElementError {
    pub(crate) index: usize,
    #[source]
    pub(crate) source: RequestError,
}

impl RequestStream {
    fn fail(&mut self, error: RequestError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.done = true;
        let error = Arc::new(StreamElementError {
            index: self.index,
            source: error,
        });
        let _ = self.failure.set(error.clone());
        Poll::Ready(Some(Err(BodyError::Transcode(error))))
    }
}

impl http_body::Body for RequestStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if let Some(message) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(message))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            // Elements already in the buffer first: one at a time, as the upstream pulls.
            let element = match this
                .splitter
                .next(this.max_message.saturating_mul(8).max(1 << 16))
            {
                Ok(element) => element,
                Err(error) => return this.fail(error.into()),
            };
            let element = match element {
                Some(element) => Some(element),
                None => match http_body::Body::poll_frame(Pin::new(&mut this.client), cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Err(error))) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            this.splitter.push(&data);
                        }
                        continue;
                    }
                    Poll::Ready(None) => {
                        this.done = true;
                        match this.splitter.finish() {
                            Ok(last) => last,
                            Err(error) => return this.fail(error.into()),
                        }
                    }
                },
            };
            let Some(element) = element else {
                continue;
            };
            this.index += 1;
            let encoded = match (this.make)(&element) {
                Ok(encoded) => encoded,
                Err(error) => return this.fail(error),
            };
            if encoded.len() > this.max_message {
                return this.fail(RequestError::MessageTooLarge {
                    limit: this.max_message,
                });
            }
            this.ready.push_back(frame(&encoded));
        }
    }
}

/// The request body of a client-streaming call. Each element of the body is one message, read
/// as the rule's `body` says (`*`: the element is the message); path variables and query
/// parameters apply to every message.
pub(crate) fn request_stream(
    binding: &Binding,
    captures: &[(&PathVariable, &str)],
    query: Option<&str>,
    client: Body,
    content_type: Option<&str>,
    rules: RequestRules,
    max_message: usize,
) -> Result<(Body, StreamFailure), GatewayError> {
    let ndjson = content_type.is_some_and(|ct| {
        let media = ct.split(';').next().unwrap_or("").trim();
        matches!(
            media,
            "application/x-ndjson" | "application/jsonl" | "application/json-seq"
        )
    });
    // What each message is made from, owned, so the body can outlive the request's parts.
    let input: MessageDescriptor = binding.method.input.clone();
    let body_rule = binding.body.clone();
    let variables: Vec<(PathVariable, String)> = captures
        .iter()
        .map(|(variable, raw)| ((*variable).clone(), raw.to_string()))
        .collect();
    let query = query.map(str::to_string);
    let content_type = content_type.map(str::to_string);
    let make = move |element: &[u8]| -> Result<Vec<u8>, RequestError> {
        let captures: Vec<(&PathVariable, &str)> =
            variables.iter().map(|(v, raw)| (v, raw.as_str())).collect();
        let target = MessageTarget {
            input: &input,
            body: &body_rule,
        };
        let message = build_message(
            &target,
            &captures,
            query.as_deref(),
            element,
            content_type.as_deref(),
            rules,
        )?;
        Ok(message.encode_to_vec())
    };
    let failure = StreamFailure::default();
    let body = Body::Stream {
        body: Box::pin(RequestStream {
            client,
            splitter: Splitter::new(ndjson),
            make: Box::new(make),
            max_message,
            ready: VecDeque::new(),
            index: 0,
            done: false,
            failure: failure.clone(),
        }),
    };
    Ok((body, failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(ndjson: bool, chunks: &[&[u8]]) -> Result<Vec<String>, SplitError> {
        let mut splitter = Splitter::new(ndjson);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(chunk);
            while let Some(element) = splitter.next(1 << 20)? {
                out.push(String::from_utf8_lossy(&element).into_owned());
            }
        }
        if let Some(last) = splitter.finish()? {
            out.push(String::from_utf8_lossy(&last).into_owned());
        }
        Ok(out)
    }

    #[test]
    fn array_elements_come_out_however_the_bytes_are_split() {
        let body = br#" [ {"a":"x,]}"}, {"b":[1,{"c":2}]} ,3, "s\"]" ] "#;
        let whole = split_all(false, &[body]).expect("splits");
        assert_eq!(
            whole,
            [r#"{"a":"x,]}"}"#, r#"{"b":[1,{"c":2}]}"#, "3", r#""s\"]""#]
        );
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(split_all(false, &bytes).expect("splits"), whole);
    }

    #[test]
    fn ndjson_lines_are_elements() {
        let out = split_all(true, &[b"{\"a\":1}\n\n{\"a\"", b":2}\n{\"a\":3}"]).expect("splits");
        assert_eq!(out, [r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#]);
    }

    #[test]
    fn what_is_not_an_array_is_refused() {
        assert_eq!(
            split_all(false, &[b"{\"a\":1}"]),
            Err(SplitError::NotAnArray)
        );
        assert_eq!(
            split_all(false, &[b"[{\"a\":1}"]),
            Err(SplitError::Unterminated)
        );
        assert_eq!(
            split_all(false, &[b"[1] x"]),
            Err(SplitError::Unexpected('x'))
        );
        assert_eq!(
            split_all(false, &[b"  "]).expect("empty"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn array_elements_must_be_separated_by_commas() {
        for (body, unexpected) in [
            (&b"[{} {}]"[..], '{'),
            (br#"[{"a":1} {"a":2}]"#, '{'),
            (br#"["x" "y"]"#, '"'),
            (b"[,{}]", ','),
            (b"[{},]", ']'),
            (b"[{},,{}]", ','),
        ] {
            let whole = split_all(false, &[body]);
            assert_eq!(
                whole,
                Err(SplitError::Unexpected(unexpected)),
                "{}",
                String::from_utf8_lossy(body)
            );
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(split_all(false, &bytes), whole);
        }
        assert_eq!(
            split_all(false, &[b"[ {} , {} ]"]).expect("splits"),
            ["{}", "{}"]
        );
        assert_eq!(
            split_all(false, &[b"[]"]).expect("empty"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_long_ndjson_line_in_small_chunks_is_looked_at_once() {
        let mut splitter = Splitter::new(true);
        let line = format!("{{\"title\":\"{}\"}}\n", "x".repeat(100_000));
        for chunk in line.as_bytes().chunks(16) {
            splitter.push(chunk);
            if let Some(element) = splitter.next(1 << 20).expect("within the limit") {
                assert_eq!(element.len(), line.len() - 1);
            }
        }
        // Every byte once, not once per chunk that came after it.
        assert_eq!(splitter.examined, line.len());
        assert_eq!(splitter.finish().expect("finishes"), None);
    }
}
