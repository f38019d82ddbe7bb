//! The access log: one JSON line per request, written off the request path.
//!
//! The gateway fills an [`AccessRecord`] when a response has been fully sent (or abandoned)
//! and hands it to [`AccessLog::log`], which only formats the line and pushes it into a
//! bounded channel. A dedicated thread writes lines to stdout, stderr or a file, batching
//! writes while lines keep coming. If the sink falls behind, lines are dropped and counted
//! (`portico_access_log_dropped_total`) rather than slowing requests down.

use crate::config::check::{Checker, Section};
use crate::config::source::KeyPath;
use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

/// The `access_log` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AccessLogSettings {
    pub(crate) enabled: bool,
    pub(crate) target: AccessLogTarget,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AccessLogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// The `access_log` section as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLogFile {
    /// Default `true`.
    enabled: Option<bool>,
    /// `stdout` (default), `stderr` or a file path (appended to).
    path: Option<String>,
}

impl Section for AccessLogSettings {
    const KEY: &'static str = "access_log";
    type File = AccessLogFile;

    fn check(file: &AccessLogFile, path: &KeyPath, checker: &mut Checker<'_>) -> Option<Self> {
        let target = match file.path.as_deref() {
            None | Some("stdout") => AccessLogTarget::Stdout,
            Some("stderr") => AccessLogTarget::Stderr,
            Some("") => {
                checker.report(
                    &path.key("path"),
                    "must be stdout, stderr or a file path, not empty",
                );
                return None;
            }
            Some(file) => AccessLogTarget::File(PathBuf::from(file)),
        };
        Some(AccessLogSettings {
            enabled: file.enabled.unwrap_or(true),
            target,
        })
    }
}

/// Lines buffered between the request path and the writer thread.
const QUEUE_LINES: usize = 16 * 1024;

#[derive(Debug, Serialize)]
pub(crate) struct AccessRecord {
    pub(crate) time: String,
    pub(crate) request_id: String,
    pub(crate) client_ip: IpAddr,
    pub(crate) listener: String,
    pub(crate) protocol: &'static str,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) route: Option<String>,
    pub(crate) cluster: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) status: u16,
    pub(crate) error_code: Option<&'static str>,
    /// The auth outcome on routes with auth: `ok`, or why the request was refused
    /// (`expired`, `bad_signature`, `kid_not_found`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) auth: Option<&'static str>,
    /// The consumer an authenticated request came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) consumer: Option<String>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) duration_ms: f64,
    /// False when the client or the upstream went away before the response was complete.
    pub(crate) completed: bool,
    /// Tries made upstream: more than 1 when the route retried.
    pub(crate) attempts: u32,
}

/// A handle to the writer thread; cheap to clone. The thread ends when the last handle drops
/// (a reload that keeps the same target keeps the same writer: it is a carried resource).
#[derive(Clone)]
pub(crate) struct AccessLog {
    tx: SyncSender<String>,
    metrics: Metrics,
}

impl AccessLog {
    /// Open the sink at `target` and start the writer thread.
    pub(crate) fn start(target: &AccessLogTarget, metrics: &Metrics) -> std::io::Result<AccessLog> {
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::Stderr => Box::new(std::io::stderr()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn(move || write_lines(rx, sink))?;
        Ok(AccessLog {
            tx,
            metrics: metrics.clone(),
        })
    }

    pub(crate) fn log(&self, record: &AccessRecord) {
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.metrics.access_log_dropped();
        }
    }
}

fn write_lines(rx: Receiver<String>, sink: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        // Keep writing while lines are queued; flush once the queue is empty.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
}

/// RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-24T05:50:14.123Z`.
pub(crate) fn rfc3339_now() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    format_rfc3339(since_epoch)
}

fn format_rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) — Howard Hinnant's civil-from-days algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z (a leap day)
        assert_eq!(
            format_rfc3339(Duration::from_millis(1_709_210_096_789)),
            "2024-02-29T12:34:56.789Z"
        );
        assert_eq!(
            format_rfc3339(Duration::from_secs(1_795_600_000)),
            "2026-11-25T09:46:40.000Z"
        );
    }

    /// A `Write` that tests can read back.
    #[derive(Clone, Default)]
    struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_one_json_line_per_record_and_counts_drops() {
        let metrics = Metrics::default();
        let (tx, rx) = sync_channel(1);
        let log = AccessLog {
            tx,
            metrics: metrics.clone(),
        };
        let record = AccessRecord {
            time: rfc3339_now(),
            request_id: "r1".into(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            listener: "public".into(),
            protocol: "HTTP/1.1",
            method: "GET".into(),
            path: "/x".into(),
            route: Some("users".into()),
            cluster: Some("users".into()),
            upstream: Some("127.0.0.1:1".into()),
            status: 200,
            error_code: None,
            auth: None,
            consumer: None,
            bytes_in: 0,
            bytes_out: 5,
            duration_ms: 1.5,
            completed: true,
            attempts: 1,
        };
        log.log(&record);
        // The queue holds one line: the second is dropped and counted, never blocking.
        log.log(&record);
        drop(log);
        let buf = SharedBuf::default();
        write_lines(rx, Box::new(buf.clone()));
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(text.lines().count(), 1);
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one json line");
        assert_eq!(line["request_id"], "r1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["route"], "users");
        assert!(metrics
            .render()
            .contains("portico_access_log_dropped_total 1"));
    }
}
