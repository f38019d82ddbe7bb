//! The connection guard: per-connection budgets and the parser's own error answers.
//!
//! Every accepted socket is wrapped in a [`GuardedIo`] before hyper sees it. The wrapper
//! watches the bytes go by and keeps a little state ([`ConnState`]) that the request path
//! updates too (request started / finished). From it, one timer per connection — never one
//! per request — enforces:
//! - the **header read timeout**: a *total* budget from the first byte of a request head to
//!   its end, so a client trickling a byte every few seconds is cut off;
//! - the **idle timeout**: a keep-alive connection with no request in flight is closed.
//!
//! It also makes hyper's parser-level refusals look like every other gateway answer: when
//! hyper rejects a request head before a request exists (oversized head → 431, malformed
//! request line, headers or framing → 400), it writes a bare status line; the guard
//! replaces that write with the gateway's JSON error body. And it flags a head that carries
//! both `Content-Length` and `Transfer-Encoding` (hyper resolves that per RFC 9112 by
//! dropping the length, but such a request is a smuggling attempt far more often than
//! not), so the gateway answers 400 and closes instead of forwarding it.

use crate::error::GatewayError;
use http::StatusCode;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the process epoch, never 0 (0 means "unset" below).
fn now_ms() -> u64 {
    ms_since_epoch(Instant::now())
}

fn ms_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// What the connection is doing, as far as its budgets are concerned.
#[derive(Default)]
pub(crate) struct ConnState {
    in_flight: AtomicU32,
    /// When the first byte of the current request head arrived (0 = not reading a head).
    head_started_ms: AtomicU64,
    /// When the last request finished (or the connection opened).
    idle_since_ms: AtomicU64,
    /// Set by [`ConnState::mark_http2`] once the protocol is known (ALPN or the h2c preface,
    /// decided by the server before hyper runs): HTTP/2 has no request heads to time.
    http2: AtomicBool,
    /// The head being read carries both Content-Length and Transfer-Encoding.
    conflicting_framing: AtomicBool,
    /// What the watchdog asked the connection task to do ([`Close`]), and how to wake it.
    close: std::sync::atomic::AtomicU8,
    waker: atomic_waker::AtomicWaker,
}

/// A request from the connection's watchdog to the task serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Close {
    None = 0,
    /// Finish in-flight requests, then close (HTTP/2: GOAWAY).
    Graceful = 1,
    /// Close now.
    Abort = 2,
}

/// What the watchdog decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing expired; look again after this long.
    Wait(Duration),
    /// No request in flight for the idle timeout: close gracefully.
    Idle,
    /// A request head took longer than its budget: close now.
    HeadTimeout,
}

impl ConnState {
    pub(crate) fn new() -> ConnState {
        let state = ConnState::default();
        state.idle_since_ms.store(now_ms(), Relaxed);
        state
    }

    /// The connection speaks HTTP/2 (decided from ALPN or the h2c preface).
    pub(crate) fn mark_http2(&self) {
        self.http2.store(true, Relaxed);
        self.head_started_ms.store(0, Relaxed);
    }

    /// Ask the connection task to close (the watchdog's side).
    pub(crate) fn request_close(&self, how: Close) {
        self.close.fetch_max(how as u8, Relaxed);
        self.waker.wake();
    }

    /// What the watchdog asked for, registering the connection task to be woken when that
    /// changes (the connection task's side, on every poll).
    pub(crate) fn poll_close(&self, waker: &std::task::Waker) -> Close {
        self.waker.register(waker);
        match self.close.load(Relaxed) {
            0 => Close::None,
            1 => Close::Graceful,
            _ => Close::Abort,
        }
    }

    /// A request head has been parsed and handed to the gateway. Returns true when that head
    /// had conflicting framing headers.
    pub(crate) fn request_started(&self) -> bool {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_started_ms.store(0, Relaxed);
        self.conflicting_framing.swap(false, Relaxed)
    }

    /// The response has been sent (or abandoned) at `now` (the caller has just read the
    /// clock for its own purposes; reading it again would cost as much again).
    pub(crate) fn request_finished(&self, now: Instant) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.idle_since_ms.store(ms_since_epoch(now), Relaxed);
        }
    }

    fn on_read(&self, bytes: &[u8], scan: &mut HeadScan) {
        if bytes.is_empty() {
            return;
        }
        if self.http2.load(Relaxed) {
            return;
        }
        if self.in_flight.load(Relaxed) == 0 && self.head_started_ms.load(Relaxed) == 0 {
            self.head_started_ms.store(now_ms(), Relaxed);
            *scan = HeadScan::default();
        }
        if self.head_started_ms.load(Relaxed) != 0 && !scan.done && scan.feed(bytes) {
            self.conflicting_framing.store(true, Relaxed);
        }
    }

    /// A write while a head is being read and no request is in flight can only be hyper
    /// answering a parse error itself.
    fn parser_is_answering(&self) -> bool {
        !self.http2.load(Relaxed)
            && self.in_flight.load(Relaxed) == 0
            && self.head_started_ms.load(Relaxed) != 0
    }

    /// Decide what the connection's single timer should do now.
    pub(crate) fn check(&self, idle_timeout: Duration, header_timeout: Duration) -> Verdict {
        let now = now_ms();
        if self.in_flight.load(Relaxed) > 0 {
            return Verdict::Wait(idle_timeout);
        }
        let head_started = self.head_started_ms.load(Relaxed);
        if head_started != 0 {
            let deadline = head_started + header_timeout.as_millis() as u64;
            return if now >= deadline {
                Verdict::HeadTimeout
            } else {
                Verdict::Wait(Duration::from_millis(deadline - now))
            };
        }
        let deadline = self.idle_since_ms.load(Relaxed) + idle_timeout.as_millis() as u64;
        if now >= deadline {
            Verdict::Idle
        } else {
            Verdict::Wait(Duration::from_millis(deadline - now))
        }
    }
}

/// Looks for `Content-Length` and `Transfer-Encoding` header lines in a request head that may
/// arrive over several reads. Only lines are inspected, and only up to the blank line that
/// ends the head, so a body that happens to contain such text is never looked at.
#[derive(Default)]
struct HeadScan {
    /// The first bytes of the unfinished last line of the previous read (header names we
    /// look for are shorter than this).
    carry: [u8; 20],
    carry_len: usize,
    /// Full length of that unfinished line.
    carry_total: usize,
    saw_content_length: bool,
    saw_transfer_encoding: bool,
    /// The blank line that ends the head has been seen.
    done: bool,
}

impl HeadScan {
    /// Returns true once both headers have been seen.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', bytes) {
            let piece = &bytes[start..newline];
            if self.carry_total > 0 {
                self.append_to_carry(piece);
                let (carry, len, total) = (self.carry, self.carry_len, self.carry_total);
                self.carry_len = 0;
                self.carry_total = 0;
                self.inspect(&carry[..len], total);
            } else {
                self.inspect(piece, piece.len());
            }
            if self.done {
                return self.saw_both();
            }
            start = newline + 1;
        }
        self.append_to_carry(&bytes[start..]);
        self.saw_both()
    }

    fn append_to_carry(&mut self, piece: &[u8]) {
        let take = piece.len().min(self.carry.len() - self.carry_len);
        self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&piece[..take]);
        self.carry_len += take;
        self.carry_total += piece.len();
    }

    /// `line` is the beginning of a complete line (without `\n`); `len` its full length.
    fn inspect(&mut self, line: &[u8], len: usize) {
        if len == 0 || (len == 1 && line.first() == Some(&b'\r')) {
            self.done = true;
            return;
        }
        if has_name(line, b"content-length") {
            self.saw_content_length = true;
        } else if has_name(line, b"transfer-encoding") {
            self.saw_transfer_encoding = true;
        }
    }

    fn saw_both(&self) -> bool {
        self.saw_content_length && self.saw_transfer_encoding
    }
}

/// `Name:` or `Name :`, case-insensitively.
fn has_name(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && matches!(line[name.len()], b':' | b' ' | b'\t')
}

/// The accepted socket, as hyper sees it.
pub(crate) struct GuardedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    scan: HeadScan,
    /// Replacement bytes being written instead of hyper's bare error response.
    rewrite: Option<(bytes::Bytes, usize)>,
    /// Bytes already read (to choose the protocol) that hyper must still see first.
    replay: Vec<u8>,
    replayed: usize,
    on_parser_error: Arc<dyn Fn(&GatewayError) -> bytes::Bytes + Send + Sync>,
}

impl<T> GuardedIo<T> {
    /// `on_parser_error` renders the full HTTP/1.1 response (head and JSON body) that
    /// replaces hyper's own answer, and counts it.
    pub(crate) fn new(
        inner: T,
        state: Arc<ConnState>,
        on_parser_error: Arc<dyn Fn(&GatewayError) -> bytes::Bytes + Send + Sync>,
    ) -> GuardedIo<T> {
        GuardedIo {
            inner,
            state,
            scan: HeadScan::default(),
            rewrite: None,
            replay: Vec::new(),
            replayed: 0,
            on_parser_error,
        }
    }

    /// Serve `bytes` (already read from the stream and already seen by the guard) before
    /// anything else is read.
    pub(crate) fn replay(&mut self, bytes: Vec<u8>) {
        self.replay = bytes;
        self.replayed = 0;
    }
}

/// hyper's parse-error answers: `HTTP/1.x 400|414|431 …` with an empty body.
fn parser_status(buf: &[u8]) -> Option<StatusCode> {
    if buf.len() > 1024 || !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    match &buf[9..12] {
        b"400" => Some(StatusCode::BAD_REQUEST),
        b"414" => Some(StatusCode::URI_TOO_LONG),
        b"431" => Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        _ => None,
    }
}

fn parser_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request head is larger than this listener accepts (max_header_bytes / max_headers)"
        }
        StatusCode::URI_TOO_LONG => "the request target is too long",
        _ => "the request could not be parsed: malformed request line, header or message framing",
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.state.on_read(&buf.filled()[before..], &mut this.scan);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Drive the replacement response out. Ready(Ok) once all of it is written.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.rewrite.as_mut() {
            if *written >= bytes.len() {
                return Poll::Ready(Ok(()));
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    fn start_rewrite_if_parser_error(&mut self, first: &[u8]) {
        if self.rewrite.is_none() && self.state.parser_is_answering() {
            if let Some(status) = parser_status(first) {
                let error = GatewayError::Parser {
                    status,
                    message: parser_message(status),
                };
                self.rewrite = Some(((self.on_parser_error)(&error), 0));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.start_rewrite_if_parser_error(buf);
        if this.rewrite.is_some() {
            std::task::ready!(this.poll_rewrite(cx))?;
            // hyper's own bytes are swallowed: the connection closes after this answer.
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.start_rewrite_if_parser_error(first);
        }
        if this.rewrite.is_some() {
            std::task::ready!(this.poll_rewrite(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_rewrite(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_rewrite(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> bool {
        let mut scan = HeadScan::default();
        chunks.iter().any(|c| scan.feed(c))
    }

    #[test]
    fn finds_both_framing_headers_in_any_case() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(scan_all(&[head]));
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH : 5\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(scan_all(&[head]));
    }

    #[test]
    fn finds_them_across_reads_split_mid_name() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        for split in 1..head.len() {
            assert!(
                scan_all(&[&head[..split], &head[split..]]),
                "split at {split}"
            );
        }
    }

    #[test]
    fn one_framing_header_is_fine_and_bodies_are_not_scanned() {
        assert!(!scan_all(&[
            b"POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\nTransfer-Encoding: chunked\r\n"
        ]));
        assert!(!scan_all(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 3\r\n\r\n"
        ]));
    }

    #[test]
    fn recognises_only_hypers_bare_error_answers() {
        assert_eq!(
            parser_status(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
            ),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        assert_eq!(
            parser_status(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(parser_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(
            parser_status(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nabc"),
            None
        );
    }

    #[test]
    fn watchdog_budgets() {
        let state = ConnState::new();
        assert!(matches!(
            state.check(Duration::from_secs(60), Duration::from_secs(10)),
            Verdict::Wait(_)
        ));
        assert_eq!(
            state.check(Duration::ZERO, Duration::from_secs(10)),
            Verdict::Idle
        );
        state.on_read(b"GET / HT", &mut HeadScan::default());
        assert_eq!(
            state.check(Duration::ZERO, Duration::ZERO),
            Verdict::HeadTimeout
        );
        assert!(!state.request_started());
        assert!(matches!(
            state.check(Duration::ZERO, Duration::ZERO),
            Verdict::Wait(_)
        ));
        state.request_finished(Instant::now());
        assert_eq!(state.check(Duration::ZERO, Duration::ZERO), Verdict::Idle);
    }
}
