//! The connection guard: per-connection time budgets, hostile request heads, and the
//! parser's own error answers.
//!
//! Every connection's (decrypted) stream is wrapped in a [`GuardedIo`] before hyper sees it.
//! The wrapper watches the bytes go by and keeps a little state ([`ConnState`]) that the
//! request path updates too (request started / finished). From it, one timer per
//! connection — never one per request — enforces the budgets below.
//!
//! # Time budgets
//!
//! Both are *total* budgets: bytes trickling in never extend them. While a request is in
//! flight neither applies (the request body and upstream budgets do).
//!
//! **`limits.header_read_timeout`** bounds the time until a complete request head:
//! - *First request of a connection*: counted from the moment HTTP serving begins, and it
//!   covers the wait for the first byte as well as reading the whole head. On a plaintext
//!   listener that moment is the accept (the connection task starts with it). On a TLS
//!   listener it is the end of the handshake, which has its own `handshake_timeout`; the
//!   header budget starts after it so that a slow but honest handshake does not eat into
//!   it, and a client can hold a TLS connection without a request for at most
//!   `handshake_timeout + header_read_timeout`. A connection that has not delivered a
//!   complete head in time is closed at once, without an answer. HTTP/2 (h2c prior
//!   knowledge or ALPN `h2`) has no heads the guard can see, but the same budget applies to
//!   its first request: the first stream's headers must reach the gateway in time, so a
//!   peer that sends the preface (or nothing) and then waits is cut like a silent HTTP/1
//!   client.
//! - *Later requests on an HTTP/1.1 keep-alive connection*: counted from the first byte of
//!   the next head, or from the moment the previous response finished if that byte arrived
//!   earlier (a pipelined head), whichever is later; it covers reading that head to its
//!   end. HTTP/2 has no later heads to time.
//!
//! **`limits.idle_timeout`** bounds the wait *between* requests: on a connection that has
//! started at least one request, with nothing in flight and no byte of a next head
//! received, the budget runs from the moment the last response finished. Once the first
//! byte of the next head arrives, the header budget takes over for that head. On expiry the
//! connection is closed gracefully (HTTP/1.1: at once; HTTP/2: GOAWAY); a connection still
//! open one more `idle_timeout` later (an HTTP/2 peer that never answers the GOAWAY's
//! PING) is cut.
//!
//! # Parking idle keep-alive connections
//!
//! An HTTP/1 connection that has been idle for [`PARK_AFTER`] (nothing in flight, no byte
//! of a next head, hyper waiting to read at a message boundary) is *parked*: the watchdog
//! asks for it ([`WatchdogDecision::Park`]), the connection task ends hyper's connection
//! without closing the socket ([`ConnState::begin_parking`] makes the guard skip the
//! shutdown), keeps only the socket's readiness registration, and starts a fresh hyper
//! connection over the same guard when the client sends its next request. hyper's read and
//! write buffers (16 KiB) are freed meanwhile; the budgets above run on unchanged. A parked
//! connection is a single task: its watchdog ends when it parks, the parked task keeps the
//! one timer (the idle deadline) and the shutdown signal itself, and a new watchdog starts
//! when it wakes.
//!
//! To know where heads begin, the guard follows the HTTP/1 byte stream: a head, then a
//! body whose length the head gives by a single `Content-Length` (or none), then the next
//! head — so pipelined heads are timed and inspected too. After a head it cannot follow
//! (chunked body, unusual lengths) it stops looking and starts again with the first read
//! once no request is in flight; a head that hyper read ahead during that stretch is
//! governed by the idle budget until more of it arrives. Once hyper answers `101` to a
//! head that asked for an upgrade, the bytes are the tunnel's and the guard leaves them
//! alone.
//!
//! # Hostile request heads
//!
//! HTTP/1 header lines are inspected as they are read (only heads, never bodies). A head is
//! refused — answered 400 `malformed_request` with `connection: close`, never forwarded —
//! when it carries:
//! - both `Content-Length` and `Transfer-Encoding` (hyper resolves that per RFC 9112 by
//!   dropping the length, but such a request is a smuggling attempt far more often than
//!   not);
//! - a header whose name contains `_` and, reading `_` as `-` and ignoring case, is one of
//!   `transfer-encoding`, `content-length`, `connection`, `keep-alive`,
//!   `proxy-connection`, `te`, `upgrade`, `trailer`, `host` (e.g. `Transfer_Encoding`): a
//!   backend or CGI layer that folds `_` into `-` would see a second framing or a
//!   hop-by-hop header the gateway never treated as one. (Of these, only names with a `-`
//!   have an underscore twin.) Other underscore headers are not this module's business.
//!
//! HTTP/2 header blocks are compressed and never seen here; HTTP/2 requests (and HTTP/1
//! heads pipelined behind a chunked body) need the same check in the request path.
//!
//! The refusal is recorded for the head that carries it and handed to the request path when
//! hyper dispatches that head ([`ConnState::start_request`]), which answers it like any
//! other gateway error: the refused request gets its request id, its access-log line and
//! its metrics, and earlier pipelined requests are served normally.
//!
//! # The parser's answers
//!
//! When hyper rejects a request head before a request exists (head larger than its buffer
//! or too many fields → 431, malformed request line, headers or framing → 400), it writes a
//! bare status line; the guard replaces that write with the gateway's JSON error body.
//! hyper's buffer is `max_header_bytes` (at least 8 KiB, hyper's floor), and hyper answers
//! 431 as soon as it is full, even when what filled it is a request line that never ended;
//! the guard, which has seen those bytes, answers 414 `uri_too_long` instead when the
//! request line had not ended within them. (A request line that does end within the
//! buffer but is longer than `max_uri_length` gets 414 from the request path.)

use crate::error::GatewayError;
use http::StatusCode;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicU8,
    Ordering::{Acquire, Relaxed, Release},
};
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

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How long an HTTP/1 keep-alive connection waits idle before it is parked (see the module
/// documentation): long enough that a connection in steady use never is, short enough that
/// a large population of mostly idle clients holds little memory.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// What the connection is doing, as far as its budgets are concerned.
#[derive(Default)]
pub(crate) struct ConnState {
    in_flight: AtomicU32,
    /// Requests the gateway has started ([`ConnState::start_request`]); for HTTP/1 these
    /// are the heads hyper has parsed and dispatched, in order.
    requests_started: AtomicU64,
    /// HTTP/1 request heads whose first byte the guard has seen. More of them than
    /// requests started means a head is being read (or waits in hyper's buffer).
    heads_begun: AtomicU64,
    /// When the first byte of the latest head arrived.
    head_begun_ms: AtomicU64,
    /// When HTTP serving began (the first request's header budget starts here).
    opened_ms: u64,
    /// When the last request finished (or the connection opened).
    idle_since_ms: AtomicU64,
    /// Set by [`ConnState::mark_http2`] once the protocol is known (ALPN or the h2c preface,
    /// decided by the server before hyper runs): HTTP/2 has no request heads to time.
    http2: AtomicBool,
    /// The first refused head of the connection: its number (counting from 1) shifted
    /// left by 8, or'ed with the [`HeadRefusal`] code; 0 = none.
    refused_head: AtomicU64,
    /// The guard's last read found nothing while at a message boundary: hyper is waiting
    /// for the next head (HTTP/1).
    waiting_for_head: AtomicBool,
    /// The idle period (its `idle_since_ms`) for which the watchdog asked the connection
    /// task to park the connection; 0 = never asked.
    park_requested: AtomicU64,
    /// The connection task is ending hyper's connection to park it: the guard must not
    /// shut the socket down.
    parking: AtomicBool,
    /// The connection's stream cannot be parked (TLS): it is watched like HTTP/2.
    unparkable: AtomicBool,
    /// The connection is parked: nothing can happen on it until it wakes, so its timer
    /// need not look at it before its idle deadline.
    parked: AtomicBool,
    /// What the watchdog asked the connection task to do ([`Close`]), and how to wake it.
    close: AtomicU8,
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

/// What the watchdog should do, as [`ConnState::check`] sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WatchdogDecision {
    /// Nothing expired; look again after this long.
    Wait(Duration),
    /// Nothing in flight for the idle timeout: close gracefully.
    Idle,
    /// An HTTP/1 connection has been idle for [`PARK_AFTER`]: park it
    /// ([`ConnState::request_park`] with this idle period).
    Park(u64),
    /// A request head (for a new connection: its first request) was not received within the
    /// header budget: close now.
    HeadTimeout,
}

/// Why the guard refuses a request head (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadRefusal {
    /// Both `Content-Length` and `Transfer-Encoding`.
    ConflictingFraming,
    /// A header name that, reading `_` as `-`, is the framing or hop-by-hop header named
    /// here (in lower case, with its `-`).
    UnderscoreLookalike(&'static str),
}

/// Header names whose underscore twins are refused.
const PROTECTED_NAMES: [&str; 9] = [
    "transfer-encoding",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "trailer",
    "host",
];

/// The longest of [`PROTECTED_NAMES`].
const LONGEST_PROTECTED_NAME: usize = 17;

impl HeadRefusal {
    /// The message of the 400 answer.
    pub(crate) fn message(self) -> &'static str {
        match self {
            HeadRefusal::ConflictingFraming => {
                "the request has both Content-Length and Transfer-Encoding"
            }
            HeadRefusal::UnderscoreLookalike(name) => match name {
                "transfer-encoding" => {
                    "a header name imitates Transfer-Encoding with an underscore"
                }
                "content-length" => "a header name imitates Content-Length with an underscore",
                "keep-alive" => "a header name imitates Keep-Alive with an underscore",
                "proxy-connection" => "a header name imitates Proxy-Connection with an underscore",
                _ => "a header name imitates a hop-by-hop header with an underscore",
            },
        }
    }

    /// The gateway's answer: 400 `malformed_request`, connection closed.
    pub(crate) fn error(self) -> GatewayError {
        GatewayError::Parser {
            status: StatusCode::BAD_REQUEST,
            message: self.message(),
        }
    }

    fn code(self) -> u8 {
        match self {
            HeadRefusal::ConflictingFraming => 1,
            HeadRefusal::UnderscoreLookalike(name) => {
                2 + PROTECTED_NAMES.iter().position(|n| *n == name).unwrap_or(0) as u8
            }
        }
    }

    fn from_code(code: u8) -> Option<HeadRefusal> {
        match code {
            0 => None,
            1 => Some(HeadRefusal::ConflictingFraming),
            n => PROTECTED_NAMES
                .get(usize::from(n - 2))
                .copied()
                .map(HeadRefusal::UnderscoreLookalike),
        }
    }
}

impl ConnState {
    /// The state of a connection whose HTTP serving begins now.
    #[cfg(test)]
    pub(crate) fn new() -> ConnState {
        ConnState::opened_at(now_ms())
    }

    /// The state of a connection whose HTTP serving began at `opened` (a plaintext
    /// connection's accept, before it was handed to its serving task).
    pub(crate) fn opened_since(opened: Instant) -> ConnState {
        ConnState::opened_at(ms_since_epoch(opened))
    }

    fn opened_at(ms: u64) -> ConnState {
        let state = ConnState {
            opened_ms: ms,
            ..ConnState::default()
        };
        state.idle_since_ms.store(ms, Relaxed);
        state
    }

    /// The connection speaks HTTP/2 (decided from ALPN or the h2c preface).
    pub(crate) fn mark_http2(&self) {
        self.http2.store(true, Relaxed);
        self.heads_begun.store(0, Relaxed);
    }

    /// The connection's stream cannot be parked (decided before hyper runs).
    pub(crate) fn mark_unparkable(&self) {
        self.unparkable.store(true, Relaxed);
    }

    /// Whether idle periods of this connection end in a park.
    fn parks(&self, idle_timeout: Duration, park_after: Duration) -> bool {
        !self.http2.load(Relaxed) && !self.unparkable.load(Relaxed) && park_after < idle_timeout
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

    /// Ask the connection task to park the connection, idle since `idle_since` (the
    /// watchdog's side).
    pub(crate) fn request_park(&self, idle_since: u64) {
        self.park_requested.store(idle_since, Relaxed);
        self.waker.wake();
    }

    /// The idle period for which a park was last requested (0: none).
    pub(crate) fn park_requested(&self) -> u64 {
        self.park_requested.load(Relaxed)
    }

    /// Whether hyper's HTTP/1 connection is idle between messages, so that ending it loses
    /// nothing and writes nothing (the connection task's side: it runs on the task that does
    /// hyper's reads and dispatch, so nothing can change under it).
    pub(crate) fn may_park(&self) -> bool {
        !self.http2.load(Relaxed)
            && !self.unparkable.load(Relaxed)
            && self.in_flight.load(Acquire) == 0
            && self.heads_begun.load(Acquire) == self.requests_started.load(Acquire)
            && self.waiting_for_head.load(Relaxed)
    }

    /// The connection task ends hyper's connection to park it (`true`), or has its socket
    /// back (`false`): while set, the guard does not shut the socket down.
    pub(crate) fn begin_parking(&self, parking: bool) {
        self.parking.store(parking, Relaxed);
    }

    /// The connection is parked (`true`: its own task keeps its timer) or has woken up
    /// (`false`: a new watchdog watches it closely again).
    pub(crate) fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Relaxed);
    }

    /// Whether hyper's connection ended because it was being parked.
    pub(crate) fn is_parking(&self) -> bool {
        self.parking.load(Relaxed)
    }

    /// A request has been handed to the gateway (for HTTP/1: hyper has parsed its head).
    /// Returns why the guard refuses that head, if it does: the gateway must then answer
    /// [`HeadRefusal::error`] and not forward the request.
    pub(crate) fn start_request(&self) -> Option<HeadRefusal> {
        self.in_flight.fetch_add(1, Relaxed);
        let number = self.requests_started.fetch_add(1, Release) + 1;
        let refused = self.refused_head.load(Relaxed);
        if refused >> 8 == number {
            HeadRefusal::from_code(refused as u8)
        } else {
            None
        }
    }

    /// The response has been sent (or abandoned) at `now` (the caller has just read the
    /// clock for its own purposes; reading it again would cost as much again).
    pub(crate) fn request_finished(&self, now: Instant) {
        self.finished_at(ms_since_epoch(now));
    }

    fn finished_at(&self, ms: u64) {
        // Stored before the count drops, so that the watchdog never sees "nothing in
        // flight" together with the previous idle start.
        self.idle_since_ms.store(ms, Relaxed);
        self.in_flight.fetch_sub(1, Release);
    }

    fn on_read(&self, bytes: &[u8], scan: &mut HeadScan) {
        self.on_read_at(bytes, scan, now_ms);
    }

    /// The guard has read `bytes`; `now` gives the time in ms if needed (once per head).
    fn on_read_at(&self, bytes: &[u8], scan: &mut HeadScan, now: impl Fn() -> u64) {
        if bytes.is_empty() || self.http2.load(Relaxed) {
            return;
        }
        if scan.is_lost() {
            // The stream was not followed: a head starts with the first read once nothing
            // is in flight and hyper has dispatched every head seen so far.
            let started = self.requests_started.load(Acquire);
            if self.in_flight.load(Acquire) != 0 || self.heads_begun.load(Relaxed) > started {
                return;
            }
            self.heads_begun.store(started, Relaxed);
            scan.resume();
        }
        scan.feed(bytes, |event| match event {
            HeadEvent::Begun => {
                // The time first, so that whoever sees the new count sees its time.
                self.head_begun_ms.store(now(), Relaxed);
                self.heads_begun.fetch_add(1, Release);
            }
            HeadEvent::Refused(refusal) => {
                let number = self.heads_begun.load(Relaxed);
                let _ = self.refused_head.compare_exchange(
                    0,
                    number << 8 | u64::from(refusal.code()),
                    Relaxed,
                    Relaxed,
                );
            }
        });
    }

    /// A write while a head is being read and no request is in flight can only be hyper
    /// answering a parse error itself (or finishing a response whose body has ended, which
    /// [`parser_status`] tells apart by its `x-request-id`).
    fn parser_is_answering(&self) -> bool {
        !self.http2.load(Relaxed)
            && self.in_flight.load(Acquire) == 0
            && self.heads_begun.load(Acquire) > self.requests_started.load(Acquire)
    }

    /// Decide what the connection's single timer should do now.
    pub(crate) fn check(
        &self,
        idle_timeout: Duration,
        header_timeout: Duration,
    ) -> WatchdogDecision {
        self.decide(now_ms(), idle_timeout, header_timeout, PARK_AFTER)
    }

    fn decide(
        &self,
        now: u64,
        idle_timeout: Duration,
        header_timeout: Duration,
        park_after: Duration,
    ) -> WatchdogDecision {
        // An HTTP/1 connection that is not parked may become idle at any moment without the
        // watchdog hearing of it (telling it would cost every request a wake-up): the
        // watchdog looks at least every `park_after`, to park it in time.
        let parks = self.parks(idle_timeout, park_after);
        let watch_every = if parks && !self.parked.load(Relaxed) {
            millis(park_after)
        } else {
            u64::MAX
        };
        if self.in_flight.load(Acquire) > 0 {
            return WatchdogDecision::Wait(idle_timeout.min(Duration::from_millis(watch_every)));
        }
        let started = self.requests_started.load(Acquire);
        let idle_since = self.idle_since_ms.load(Relaxed);
        let (deadline, on_expiry) = if started == 0 {
            // A new connection: its first request (head) is due within the header budget
            // from the moment HTTP serving began, bytes or no bytes.
            (
                self.opened_ms.saturating_add(millis(header_timeout)),
                WatchdogDecision::HeadTimeout,
            )
        } else if !self.http2.load(Relaxed) && self.heads_begun.load(Acquire) > started {
            // A head has begun: from its first byte, or from the end of the previous
            // response if that byte came earlier.
            let begun = self.head_begun_ms.load(Relaxed).max(idle_since);
            (
                begun.saturating_add(millis(header_timeout)),
                WatchdogDecision::HeadTimeout,
            )
        } else {
            let idle_deadline = idle_since.saturating_add(millis(idle_timeout));
            let park_at = idle_since.saturating_add(millis(park_after));
            if parks && self.park_requested.load(Relaxed) != idle_since {
                // Parking comes first, once per idle period.
                (park_at, WatchdogDecision::Park(idle_since))
            } else {
                (idle_deadline, WatchdogDecision::Idle)
            }
        };
        if now >= deadline {
            on_expiry
        } else {
            WatchdogDecision::Wait(Duration::from_millis((deadline - now).min(watch_every)))
        }
    }
}

/// What [`HeadScan::feed`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadEvent {
    /// The first byte of a request head.
    Begun,
    /// The current head is refused (reported once per head, when the offending line ends).
    Refused(HeadRefusal),
}

/// Where in the HTTP/1 byte stream the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// In a head, or between messages waiting for one.
    #[default]
    Head,
    /// In a body with this many bytes to go.
    Body(u64),
    /// After a head whose body the scanner does not follow (chunked, unusual lengths):
    /// nothing is looked at until [`HeadScan::resume`].
    Lost,
}

/// What the head said about its body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Length {
    #[default]
    Absent,
    Exactly(u64),
    /// Several, or not a plain number: hyper decides (or refuses), the scanner gives up.
    Unusable,
}

/// How many bytes of a line are kept when it arrives over several reads: enough for every
/// name looked at and a `Content-Length` value.
const CARRY: usize = 64;

/// Follows the HTTP/1 request stream as it is read: finds where heads begin, inspects
/// their header lines (never body bytes), and skips bodies of known length so the next
/// head is found too. Heads may arrive over several reads, split anywhere.
struct HeadScan {
    phase: Phase,
    /// [`HeadEvent::Begun`] has been reported for the current head.
    begun: bool,
    /// The request line of the current head has ended (what follows are header lines).
    request_line_ended: bool,
    /// The first bytes of the unfinished last line of the previous read.
    carry: [u8; CARRY],
    carry_len: usize,
    /// Full length of that unfinished line.
    carry_total: usize,
    length: Length,
    transfer_encoding: bool,
    /// The current head carries an `Upgrade` header.
    upgrade: bool,
    /// The last complete head asked for an upgrade; cleared by the next write the guard
    /// sees (see [`GuardedIo::inspect_write`]).
    upgrade_asked: bool,
    refused: bool,
}

impl Default for HeadScan {
    fn default() -> HeadScan {
        HeadScan {
            phase: Phase::Head,
            begun: false,
            request_line_ended: false,
            carry: [0; CARRY],
            carry_len: 0,
            carry_total: 0,
            length: Length::Absent,
            transfer_encoding: false,
            upgrade: false,
            upgrade_asked: false,
            refused: false,
        }
    }
}

impl HeadScan {
    fn is_lost(&self) -> bool {
        self.phase == Phase::Lost
    }

    /// Between two messages: the last one (head and body) read whole, nothing of the next.
    fn between_messages(&self) -> bool {
        self.phase == Phase::Head && !self.begun && !self.upgrade_asked
    }

    /// Start over at the beginning of a head.
    fn resume(&mut self) {
        *self = HeadScan::default();
    }

    /// In a head whose request line has not ended yet.
    fn in_request_line(&self) -> bool {
        self.phase == Phase::Head && self.begun && !self.request_line_ended
    }

    fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(HeadEvent)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.phase {
                Phase::Lost => return,
                Phase::Body(remaining) => {
                    let skip = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    rest = &rest[skip..];
                    let remaining = remaining - skip as u64;
                    self.phase = if remaining == 0 {
                        Phase::Head
                    } else {
                        Phase::Body(remaining)
                    };
                }
                Phase::Head => {
                    if !self.begun {
                        self.begun = true;
                        on_event(HeadEvent::Begun);
                    }
                    let Some(newline) = memchr::memchr(b'\n', rest) else {
                        self.append_to_carry(rest);
                        return;
                    };
                    let piece = &rest[..newline];
                    rest = &rest[newline + 1..];
                    if self.carry_total > 0 {
                        self.append_to_carry(piece);
                        let (carry, len, total) = (self.carry, self.carry_len, self.carry_total);
                        self.carry_len = 0;
                        self.carry_total = 0;
                        self.line(&carry[..len], total, &mut on_event);
                    } else {
                        let kept = &piece[..piece.len().min(CARRY)];
                        self.line(kept, piece.len(), &mut on_event);
                    }
                }
            }
        }
    }

    fn append_to_carry(&mut self, piece: &[u8]) {
        let take = piece.len().min(CARRY - self.carry_len);
        self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&piece[..take]);
        self.carry_len += take;
        self.carry_total += piece.len();
    }

    /// `line` is the beginning (up to [`CARRY`] bytes) of a complete line without its `\n`;
    /// `len` its full length.
    fn line(&mut self, line: &[u8], len: usize, on_event: &mut impl FnMut(HeadEvent)) {
        let empty = len == 0 || (len == 1 && line.first() == Some(&b'\r'));
        if !self.request_line_ended {
            // Empty lines before a request line are skipped, as hyper (httparse) does.
            self.request_line_ended = !empty;
            return;
        }
        if empty {
            self.end_of_head();
            return;
        }
        // One pass over the name: where it ends, and whether it has an underscore (header
        // names are short, and this runs for every line of every head).
        let mut colon = None;
        let mut underscore = false;
        for (index, byte) in line.iter().enumerate() {
            match byte {
                b':' => {
                    colon = Some(index);
                    break;
                }
                b'_' => underscore = true,
                _ => {}
            }
        }
        let Some(colon) = colon else {
            return;
        };
        let name = trim_end(&line[..colon]);
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let value = (line.len() == len).then(|| trim(&line[colon + 1..]));
                self.length = match (self.length, value.and_then(parse_length)) {
                    (Length::Absent, Some(n)) => Length::Exactly(n),
                    _ => Length::Unusable,
                };
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.transfer_encoding = true;
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade = true,
            _ => {}
        }
        if self.length != Length::Absent && self.transfer_encoding {
            self.refuse(HeadRefusal::ConflictingFraming, on_event);
        }
        if underscore {
            if let Some(protected) = underscore_lookalike(name) {
                self.refuse(HeadRefusal::UnderscoreLookalike(protected), on_event);
            }
        }
    }

    fn refuse(&mut self, refusal: HeadRefusal, on_event: &mut impl FnMut(HeadEvent)) {
        if !self.refused {
            self.refused = true;
            on_event(HeadEvent::Refused(refusal));
        }
    }

    /// The blank line: what follows is the body (if any), then the next head.
    fn end_of_head(&mut self) {
        self.phase = match (self.transfer_encoding, self.length) {
            (false, Length::Absent | Length::Exactly(0)) => Phase::Head,
            (false, Length::Exactly(n)) => Phase::Body(n),
            _ => Phase::Lost,
        };
        self.begun = false;
        self.request_line_ended = false;
        self.length = Length::Absent;
        self.transfer_encoding = false;
        self.upgrade_asked = self.upgrade;
        self.upgrade = false;
        self.refused = false;
    }
}

/// Whether a header name contains `_`. Names are short and this runs for every header of
/// every request: a plain loop, which the compiler unrolls, costs less than the call into
/// `memchr` that `contains` makes.
#[allow(clippy::manual_contains)]
pub(crate) fn has_underscore(name: &[u8]) -> bool {
    name.iter().any(|b| *b == b'_')
}

/// If `name` contains `_` and, reading `_` as `-`, equals a protected header name
/// (ignoring case), that name.
pub(crate) fn underscore_lookalike(name: &[u8]) -> Option<&'static str> {
    if name.len() > LONGEST_PROTECTED_NAME || !has_underscore(name) {
        return None;
    }
    PROTECTED_NAMES.into_iter().find(|protected| {
        protected.len() == name.len()
            && name.iter().zip(protected.bytes()).all(|(&b, p)| {
                let b = if b == b'_' { b'-' } else { b };
                b.eq_ignore_ascii_case(&p)
            })
    })
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    trim_end(&bytes[start..])
}

/// A plain decimal length, as hyper accepts it on a single header line.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |length, byte| {
        let digit = byte.checked_sub(b'0').filter(|d| *d <= 9)?;
        length.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The accepted socket, as hyper sees it.
pub(crate) struct GuardedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    scan: HeadScan,
    /// Replacement bytes being written instead of hyper's bare error response.
    rewrite: Option<(bytes::Bytes, usize)>,
    /// hyper switched protocols (101): the bytes are a tunnel's, not HTTP's.
    tunnel: bool,
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
            tunnel: false,
            replay: Vec::new(),
            replayed: 0,
            on_parser_error,
        }
    }

    /// The stream underneath (to wait for readiness while the connection is parked).
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Serve `bytes` (already read from the stream and already seen by the guard) before
    /// anything else is read.
    pub(crate) fn replay(&mut self, bytes: Vec<u8>) {
        self.replay = bytes;
        self.replayed = 0;
    }
}

/// hyper's parse-error answers: `HTTP/1.x 400|414|431 …` with an empty body. (A response
/// from the request path carries an `x-request-id`; hyper's own answers never do.)
fn parser_status(buf: &[u8]) -> Option<StatusCode> {
    if buf.len() > 1024 || !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let status = match &buf[9..12] {
        b"400" => StatusCode::BAD_REQUEST,
        b"414" => StatusCode::URI_TOO_LONG,
        b"431" => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    const REQUEST_ID: &[u8] = b"\nx-request-id:";
    let has_request_id = buf
        .windows(REQUEST_ID.len())
        .any(|w| w.eq_ignore_ascii_case(REQUEST_ID));
    (!has_request_id).then_some(status)
}

fn parser_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request head is larger than this listener accepts (max_header_bytes / max_headers)"
        }
        StatusCode::URI_TOO_LONG => {
            "the request line alone is longer than this listener accepts for a whole head (max_header_bytes)"
        }
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
        match result {
            Poll::Ready(Ok(())) => {
                if !this.tunnel {
                    this.state.on_read(&buf.filled()[before..], &mut this.scan);
                }
                this.state.waiting_for_head.store(false, Relaxed);
            }
            Poll::Pending => {
                let waiting = !this.tunnel && this.scan.between_messages();
                this.state.waiting_for_head.store(waiting, Relaxed);
            }
            Poll::Ready(Err(_)) => {}
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

    /// Look at the first bytes of a write from hyper.
    fn inspect_write(&mut self, first: &[u8]) {
        if self.tunnel {
            return;
        }
        if self.scan.upgrade_asked {
            // The first write after a head that asked for an upgrade is its answer (or, when
            // pipelined, the rest of an earlier one: then the tunnel goes unnoticed and its
            // bytes are merely scanned for nothing).
            self.scan.upgrade_asked = false;
            if first.starts_with(b"HTTP/1.1 101 ") {
                self.tunnel = true;
                return;
            }
        }
        self.start_rewrite_if_parser_error(first);
    }

    fn start_rewrite_if_parser_error(&mut self, first: &[u8]) {
        if self.rewrite.is_none() && self.state.parser_is_answering() {
            if let Some(mut status) = parser_status(first) {
                // hyper gave up on a head whose request line had not even ended: it is the
                // request line that is too long, not the headers.
                if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                    && self.scan.in_request_line()
                {
                    status = StatusCode::URI_TOO_LONG;
                }
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
        this.inspect_write(buf);
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
            this.inspect_write(first);
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
        if self.state.is_parking() {
            // hyper's connection ends, the client's does not: the socket is parked.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// Parking switched off, for the tests of the budgets alone.
    const NO_PARK: Duration = Duration::MAX;

    fn events(chunks: &[&[u8]]) -> Vec<HeadEvent> {
        let mut scan = HeadScan::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            scan.feed(chunk, |event| seen.push(event));
        }
        seen
    }

    fn refusals(chunks: &[&[u8]]) -> Vec<HeadRefusal> {
        events(chunks)
            .into_iter()
            .filter_map(|event| match event {
                HeadEvent::Refused(refusal) => Some(refusal),
                HeadEvent::Begun => None,
            })
            .collect()
    }

    fn scan_all(chunks: &[&[u8]]) -> bool {
        refusals(chunks).contains(&HeadRefusal::ConflictingFraming)
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
    fn empty_lines_before_the_request_line_do_not_end_the_head() {
        // httparse skips them, so the headers after them are the head's.
        let head =
            b"\r\n\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(scan_all(&[head]));
    }

    #[test]
    fn underscore_twins_of_framing_and_hop_by_hop_headers_are_refused() {
        for (line, twin_of) in [
            ("Transfer_Encoding: chunked", "transfer-encoding"),
            ("transfer_encoding: chunked", "transfer-encoding"),
            ("TRANSFER_ENCODING : chunked", "transfer-encoding"),
            ("Content_Length: 5", "content-length"),
            ("content_LENGTH: 5", "content-length"),
            ("Keep_Alive: timeout=5", "keep-alive"),
            ("Proxy_Connection: keep-alive", "proxy-connection"),
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{line}\r\n\r\n");
            assert_eq!(
                refusals(&[head.as_bytes()]),
                [HeadRefusal::UnderscoreLookalike(twin_of)],
                "{line}"
            );
        }
    }

    #[test]
    fn other_names_are_not_underscore_twins() {
        for line in [
            "Transfer-Encoding: chunked",
            "Content-Length: 5",
            "X_Custom: 1",
            "Content__Length: 5",
            "Transfer_Encodings: x",
            "_te: trailers",
            "Ho_st: a",
            "Up_grade: x",
            "X-Forwarded_For: 1.2.3.4",
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{line}\r\n\r\n");
            assert_eq!(refusals(&[head.as_bytes()]), [], "{line}");
        }
        // The request line is not a header line, and bodies are not looked at.
        assert_eq!(
            refusals(&[b"CONTENT_LENGTH / HTTP/1.1\r\nHost: a\r\n\r\n"]),
            []
        );
        assert_eq!(
            refusals(&[
                b"POST / HTTP/1.1\r\nContent-Length: 29\r\n\r\nTransfer_Encoding: chunked\r\n"
            ]),
            []
        );
        assert_eq!(
            underscore_lookalike(b"content_length"),
            Some("content-length")
        );
        assert_eq!(underscore_lookalike(b"content-length"), None);
    }

    #[test]
    fn underscore_twins_are_found_however_the_head_is_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello";
        for split in 1..head.len() {
            assert_eq!(
                refusals(&[&head[..split], &head[split..]]),
                [HeadRefusal::UnderscoreLookalike("transfer-encoding")],
                "split at {split}"
            );
        }
    }

    #[test]
    fn pipelined_heads_are_found_after_bodies_of_known_length() {
        use HeadEvent::*;
        let refused = Refused(HeadRefusal::UnderscoreLookalike("keep-alive"));
        // No body, then a head.
        assert_eq!(
            events(&[
                b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nKeep_Alive: 1\r\n\r\n"
            ]),
            [Begun, Begun, refused]
        );
        // A Content-Length body (its text is not inspected), then a head; split in the body.
        let stream: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 13\r\n\r\nKeep_Alive:\r\nGET / HTTP/1.1\r\nkeep_alive: 1\r\n\r\n";
        for split in 1..stream.len() {
            assert_eq!(
                events(&[&stream[..split], &stream[split..]]),
                [Begun, Begun, refused],
                "split at {split}"
            );
        }
        // A chunked body is not followed: nothing after it is looked at until resumed.
        let mut scan = HeadScan::default();
        let mut seen = Vec::new();
        scan.feed(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nKeep_Alive: 1\r\n\r\n",
            |event| seen.push(event),
        );
        assert_eq!(seen, [Begun]);
        assert!(scan.is_lost());
        // So is a length hyper might read differently than a plain number.
        let mut scan = HeadScan::default();
        scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", |_| {});
        assert!(scan.is_lost());
    }

    proptest::proptest! {
        #[test]
        fn reads_split_anywhere_give_the_same_events(
            cuts in proptest::collection::vec(0usize..400, 0..8)
        ) {
            let stream: &[u8] = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
                POST /2 HTTP/1.1\r\nContent-Length: 24\r\n\r\nTransfer_Encoding: x\r\n\r\n\
                \r\nGET /3 HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n";
            let whole = events(&[stream]);
            let expected = [
                HeadEvent::Begun,
                HeadEvent::Begun,
                HeadEvent::Begun,
                HeadEvent::Refused(HeadRefusal::ConflictingFraming),
            ];
            proptest::prop_assert_eq!(&whole[..], &expected[..]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % stream.len()).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for cut in cuts {
                chunks.push(&stream[at..cut]);
                at = cut;
            }
            chunks.push(&stream[at..]);
            proptest::prop_assert_eq!(events(&chunks), whole);
        }
    }

    #[test]
    fn knows_when_it_is_inside_the_request_line() {
        let mut scan = HeadScan::default();
        assert!(!scan.in_request_line());
        scan.feed(b"\r\nGET /aaaaaaaa", |_| {});
        assert!(scan.in_request_line());
        scan.feed(b"aaaa HTTP/1.1\r\nHost: a", |_| {});
        assert!(!scan.in_request_line());
        scan.feed(b"\r\n\r\n", |_| {});
        assert!(!scan.in_request_line());
    }

    #[test]
    fn refusal_codes_round_trip() {
        let mut all = vec![HeadRefusal::ConflictingFraming];
        all.extend(PROTECTED_NAMES.map(HeadRefusal::UnderscoreLookalike));
        for refusal in all {
            assert_eq!(HeadRefusal::from_code(refusal.code()), Some(refusal));
            assert!(!refusal.message().is_empty());
        }
        assert_eq!(HeadRefusal::from_code(0), None);
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
    fn a_relayed_empty_error_response_is_not_taken_for_hypers() {
        assert_eq!(
            parser_status(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: abc\r\n\r\n"
            ),
            None
        );
    }

    /// A connection opened at t = 1000 ms.
    fn opened() -> ConnState {
        ConnState::opened_at(1_000)
    }

    fn read_at(state: &ConnState, scan: &mut HeadScan, bytes: &[u8], at: u64) {
        state.on_read_at(bytes, scan, || at);
    }

    #[test]
    fn a_new_connection_must_deliver_its_first_head_within_the_header_budget() {
        let (idle, header) = (Duration::from_secs(60), 300 * MS);
        let state = opened();
        // Silent: the header budget runs from the start, not the idle budget.
        assert_eq!(
            state.decide(1_000, idle, header, NO_PARK),
            WatchdogDecision::Wait(300 * MS)
        );
        assert_eq!(
            state.decide(1_299, idle, header, NO_PARK),
            WatchdogDecision::Wait(MS)
        );
        assert_eq!(
            state.decide(1_300, idle, header, NO_PARK),
            WatchdogDecision::HeadTimeout
        );
        // Even when the idle budget is the shorter one.
        assert_eq!(
            state.decide(1_200, 100 * MS, header, NO_PARK),
            WatchdogDecision::Wait(100 * MS)
        );
        // A first byte does not restart the budget.
        let mut scan = HeadScan::default();
        read_at(&state, &mut scan, b"GET / HT", 1_250);
        assert_eq!(
            state.decide(1_299, idle, header, NO_PARK),
            WatchdogDecision::Wait(MS)
        );
        assert_eq!(
            state.decide(1_300, idle, header, NO_PARK),
            WatchdogDecision::HeadTimeout
        );
        // Once the head is in, the request runs unbounded by either.
        read_at(&state, &mut scan, b"TP/1.1\r\n\r\n", 1_280);
        assert_eq!(state.start_request(), None);
        assert_eq!(
            state.decide(9_999, idle, header, NO_PARK),
            WatchdogDecision::Wait(idle)
        );
    }

    #[test]
    fn an_idle_http1_connection_is_parked_once_per_idle_period() {
        let (idle, header, park) = (Duration::from_secs(60), 300 * MS, 100 * MS);
        let state = opened();
        // Before and during the first request, the watchdog looks every `park`.
        assert_eq!(
            state.decide(1_000, idle, header, park),
            WatchdogDecision::Wait(100 * MS)
        );
        let mut scan = HeadScan::default();
        read_at(&state, &mut scan, b"GET / HTTP/1.1\r\n\r\n", 1_050);
        assert_eq!(state.start_request(), None);
        assert_eq!(
            state.decide(1_100, idle, header, park),
            WatchdogDecision::Wait(100 * MS)
        );
        state.finished_at(2_000);
        assert_eq!(
            state.decide(2_050, idle, header, park),
            WatchdogDecision::Wait(50 * MS)
        );
        assert_eq!(
            state.decide(2_100, idle, header, park),
            WatchdogDecision::Park(2_000)
        );
        // Asked once: then the idle budget (still looked at every `park` until parked).
        state.request_park(2_000);
        assert_eq!(
            state.decide(2_100, idle, header, park),
            WatchdogDecision::Wait(100 * MS)
        );
        state.set_parked(true);
        assert_eq!(
            state.decide(2_100, idle, header, park),
            WatchdogDecision::Wait(59_900 * MS)
        );
        assert_eq!(
            state.decide(62_000, idle, header, park),
            WatchdogDecision::Idle
        );
        // Woken by the next request: the next idle period is parked again.
        state.set_parked(false);
        read_at(&state, &mut scan, b"GET / HTTP/1.1\r\n\r\n", 3_000);
        assert_eq!(state.start_request(), None);
        state.finished_at(3_010);
        assert_eq!(
            state.decide(3_110, idle, header, park),
            WatchdogDecision::Park(3_010)
        );
    }

    #[test]
    fn hyper_must_be_waiting_between_messages_for_a_connection_to_park() {
        let state = opened();
        let mut scan = HeadScan::default();
        assert!(scan.between_messages());
        read_at(
            &state,
            &mut scan,
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab",
            1_050,
        );
        assert!(!scan.between_messages(), "in a body");
        read_at(&state, &mut scan, b"cd", 1_060);
        assert!(scan.between_messages());
        assert_eq!(state.start_request(), None);
        state.waiting_for_head.store(true, Relaxed);
        assert!(!state.may_park(), "a request in flight");
        state.finished_at(1_100);
        assert!(state.may_park());
        read_at(&state, &mut scan, b"G", 1_200);
        assert!(!scan.between_messages());
        assert!(!state.may_park(), "a head has begun");
        let h2 = opened();
        h2.mark_http2();
        h2.waiting_for_head.store(true, Relaxed);
        assert!(!h2.may_park(), "HTTP/2 is never parked");
        let tls = opened();
        tls.mark_unparkable();
        tls.waiting_for_head.store(true, Relaxed);
        assert!(!tls.may_park(), "a stream that cannot be parked");
        assert_eq!(
            tls.decide(1_000, Duration::from_secs(60), 300 * MS, 100 * MS),
            WatchdogDecision::Wait(300 * MS)
        );
        assert_eq!(
            h2.decide(1_000, Duration::from_secs(60), 300 * MS, 100 * MS),
            WatchdogDecision::Wait(300 * MS)
        );
    }

    #[test]
    fn between_requests_the_idle_budget_applies_until_a_head_begins() {
        let (idle, header) = (500 * MS, 300 * MS);
        let state = opened();
        let mut scan = HeadScan::default();
        read_at(&state, &mut scan, b"GET / HTTP/1.1\r\n\r\n", 1_100);
        assert_eq!(state.start_request(), None);
        state.finished_at(2_000);
        // Waiting for the next request: idle, counted from the end of the response.
        assert_eq!(
            state.decide(2_299, idle, header, NO_PARK),
            WatchdogDecision::Wait(201 * MS)
        );
        assert_eq!(
            state.decide(2_300, idle, header, NO_PARK),
            WatchdogDecision::Wait(200 * MS)
        );
        assert_eq!(
            state.decide(2_500, idle, header, NO_PARK),
            WatchdogDecision::Idle
        );
        // The first byte of the next head: the header budget, from that byte.
        let idle = Duration::from_secs(60);
        read_at(&state, &mut scan, b"G", 3_000);
        assert_eq!(
            state.decide(3_299, idle, header, NO_PARK),
            WatchdogDecision::Wait(MS)
        );
        read_at(&state, &mut scan, b"ET / HTTP/1.1\r\nHost", 3_200);
        assert_eq!(
            state.decide(3_300, idle, header, NO_PARK),
            WatchdogDecision::HeadTimeout
        );
    }

    #[test]
    fn a_head_that_arrived_early_is_timed_from_the_end_of_the_previous_response() {
        let (idle, header) = (Duration::from_secs(60), 300 * MS);
        let state = opened();
        let mut scan = HeadScan::default();
        // One read: a whole request and the start of the next (pipelined).
        read_at(
            &state,
            &mut scan,
            b"GET /1 HTTP/1.1\r\n\r\nGET /2 HT",
            1_100,
        );
        assert_eq!(state.start_request(), None);
        assert_eq!(
            state.decide(4_000, idle, header, NO_PARK),
            WatchdogDecision::Wait(idle)
        );
        state.finished_at(5_000);
        assert_eq!(
            state.decide(5_299, idle, header, NO_PARK),
            WatchdogDecision::Wait(MS)
        );
        assert_eq!(
            state.decide(5_300, idle, header, NO_PARK),
            WatchdogDecision::HeadTimeout
        );
    }

    #[test]
    fn bytes_of_a_body_after_its_response_do_not_start_a_head() {
        let (idle, header) = (Duration::from_secs(60), 300 * MS);
        let state = opened();
        let mut scan = HeadScan::default();
        read_at(
            &state,
            &mut scan,
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
            1_100,
        );
        assert_eq!(state.start_request(), None);
        // The backend answered before the body was all there.
        state.finished_at(2_000);
        read_at(&state, &mut scan, b"0123456789", 2_100);
        assert_eq!(
            state.decide(2_400, idle, header, NO_PARK),
            WatchdogDecision::Wait(59_600 * MS)
        );
    }

    #[test]
    fn after_a_chunked_body_the_next_read_with_nothing_in_flight_starts_a_head() {
        let (idle, header) = (Duration::from_secs(60), 300 * MS);
        let state = opened();
        let mut scan = HeadScan::default();
        read_at(
            &state,
            &mut scan,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            1_100,
        );
        assert_eq!(state.start_request(), None);
        read_at(&state, &mut scan, b"0\r\n\r\n", 1_200);
        state.finished_at(2_000);
        read_at(
            &state,
            &mut scan,
            b"GET / HTTP/1.1\r\nContent_Length: 0\r\n",
            2_100,
        );
        assert_eq!(
            state.decide(2_399, idle, header, NO_PARK),
            WatchdogDecision::Wait(MS)
        );
        assert_eq!(
            state.decide(2_400, idle, header, NO_PARK),
            WatchdogDecision::HeadTimeout
        );
        read_at(&state, &mut scan, b"\r\n", 2_200);
        assert_eq!(
            state.start_request(),
            Some(HeadRefusal::UnderscoreLookalike("content-length"))
        );
    }

    #[test]
    fn a_refusal_goes_to_the_request_whose_head_carried_it() {
        let state = opened();
        let mut scan = HeadScan::default();
        read_at(
            &state,
            &mut scan,
            b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
            1_100,
        );
        assert_eq!(state.start_request(), None);
        state.finished_at(1_200);
        assert!(state.start_request().is_some(), "refused");
        let state = opened();
        let mut scan = HeadScan::default();
        read_at(
            &state,
            &mut scan,
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            1_100,
        );
        assert_eq!(state.start_request(), Some(HeadRefusal::ConflictingFraming));
    }

    #[test]
    fn http2_has_a_first_request_budget_then_only_idle() {
        let (idle, header) = (500 * MS, 300 * MS);
        let state = opened();
        let mut scan = HeadScan::default();
        read_at(&state, &mut scan, b"PRI * HTTP/2.0", 1_010);
        state.mark_http2();
        assert_eq!(
            state.decide(1_300, idle, header, NO_PARK),
            WatchdogDecision::HeadTimeout
        );
        assert_eq!(state.start_request(), None);
        state.finished_at(2_000);
        // Frames read later are not heads.
        read_at(&state, &mut scan, b"\0\0\0\x04\0\0\0\0\0", 2_100);
        assert_eq!(
            state.decide(2_400, idle, header, NO_PARK),
            WatchdogDecision::Wait(100 * MS)
        );
        assert_eq!(
            state.decide(2_500, idle, header, NO_PARK),
            WatchdogDecision::Idle
        );
        assert!(!state.parser_is_answering());
    }

    #[test]
    fn watchdog_budgets() {
        let state = ConnState::new();
        assert!(matches!(
            state.check(Duration::from_secs(60), Duration::from_secs(10)),
            WatchdogDecision::Wait(_)
        ));
        // A new connection is held to the header budget, however short the idle one is.
        assert!(matches!(
            state.check(Duration::ZERO, Duration::from_secs(10)),
            WatchdogDecision::Wait(_)
        ));
        state.on_read(b"GET / HT", &mut HeadScan::default());
        assert_eq!(
            state.check(Duration::ZERO, Duration::ZERO),
            WatchdogDecision::HeadTimeout
        );
        assert!(state.start_request().is_none());
        assert!(matches!(
            state.check(Duration::ZERO, Duration::ZERO),
            WatchdogDecision::Wait(_)
        ));
        state.request_finished(Instant::now());
        assert_eq!(
            state.check(Duration::ZERO, Duration::ZERO),
            WatchdogDecision::Idle
        );
    }

    /// hyper's side of a connection, through the guard; the client's side; and the answers
    /// the guard rendered.
    fn guarded() -> (
        GuardedIo<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<ConnState>,
    ) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let state = Arc::new(ConnState::new());
        let render: Arc<dyn Fn(&GatewayError) -> bytes::Bytes + Send + Sync> =
            Arc::new(|error: &GatewayError| {
                let class = error.class();
                bytes::Bytes::from(format!("{} {}", class.status.as_str(), class.code))
            });
        (GuardedIo::new(server, state.clone(), render), client, state)
    }

    async fn hyper_answers(
        io: &mut GuardedIo<tokio::io::DuplexStream>,
        client: &mut tokio::io::DuplexStream,
        sent: &[u8],
        answer: &[u8],
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        client.write_all(sent).await.expect("client writes");
        let mut buf = vec![0; sent.len()];
        io.read_exact(&mut buf).await.expect("guard reads");
        io.write_all(answer).await.expect("guard writes");
        io.shutdown().await.expect("shutdown");
        let mut out = String::new();
        client.read_to_string(&mut out).await.expect("client reads");
        out
    }

    #[tokio::test]
    async fn after_a_switch_of_protocols_the_bytes_are_left_alone() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut io, mut client, state) = guarded();
        let head =
            b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        client.write_all(head).await.expect("client writes");
        let mut buf = vec![0; head.len()];
        io.read_exact(&mut buf).await.expect("guard reads");
        assert_eq!(state.start_request(), None);
        io.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n")
            .await
            .expect("guard writes");
        state.request_finished(Instant::now());
        // Tunnel bytes that look like a head, and like hyper's error answer.
        let data = b"POST / HTTP/1.1\r\nContent_Length: 1\r\n\r\n";
        client.write_all(data).await.expect("client writes");
        let mut buf = vec![0; data.len()];
        io.read_exact(&mut buf).await.expect("guard reads");
        assert!(!state.parser_is_answering());
        io.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .expect("guard writes");
        io.shutdown().await.expect("shutdown");
        let mut out = String::new();
        client.read_to_string(&mut out).await.expect("client reads");
        assert!(
            out.ends_with("\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n"),
            "{out}"
        );
        assert_eq!(state.heads_begun.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn hypers_431_for_an_unfinished_request_line_becomes_414() {
        let bare_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let (mut io, mut client, _state) = guarded();
        let line = format!("GET /{} HTTP/1.1", "a".repeat(100));
        let out = hyper_answers(&mut io, &mut client, &line.as_bytes()[..80], bare_431).await;
        assert_eq!(out, "414 uri_too_long");

        // The request line ended; the headers are what is too large.
        let (mut io, mut client, _state) = guarded();
        let out = hyper_answers(
            &mut io,
            &mut client,
            b"GET / HTTP/1.1\r\nX-Big: aaaaaaaaaaaaaaaaaaaa",
            bare_431,
        )
        .await;
        assert_eq!(out, "431 headers_too_large");
    }
}
