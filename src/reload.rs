//! Hot reload: SIGHUP and a watch on the config file trigger it; a reload builds a
//! complete new runtime and swaps it in atomically.
//!
//! Sequence: read → parse and validate (every problem reported) → check that nothing that
//! needs a restart changed (listeners, admin address, worker count) → build the runtime,
//! carrying over the resources whose config is unchanged (endpoints' open connections, the
//! access log writer) → swap. Any failure leaves the running config untouched, is logged
//! with every problem, and counts in `portico_config_reloads_total{outcome="failure"}`.
//! Requests in flight keep the runtime they started with, so none fails because of a reload.
//!
//! All of the work — reading the file, validating it (which reads the certificates it names),
//! building the runtime, and at last freeing the replaced one — runs on the gateway's
//! low-priority background thread (`lifecycle.rs`), never on an async worker: with
//! `workers: 1`, a reload of thousands of routes would otherwise stall every connection.
//!
//! The file watch compares the file's *contents* at each interval: editors that replace the
//! file, Kubernetes ConfigMap symlink swaps and changes within one mtime tick all count.

use crate::config::{self, Config, ConfigError};
use crate::lifecycle::BackgroundStopped;
use crate::metrics::CONSUMER_RELOADS;
use crate::runtime::{BuildError, Runtime, Shared};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{watch, Mutex};

/// Why a reload was refused (the previous configuration stays in effect).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started without a config file.
    #[error("no config file to reload from")]
    NoFile,
    /// The file could not be read or is not a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The change needs a restart.
    #[error("{0} cannot change on reload; restart Portico to apply it")]
    NeedsRestart(&'static str),
    /// The runtime could not be built (a CA bundle or the access log file could not be
    /// opened).
    #[error("cannot set up the configuration")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl From<BuildError> for ReloadError {
    fn from(error: BuildError) -> ReloadError {
        ReloadError::Build(Box::new(error))
    }
}

impl From<BackgroundStopped> for ReloadError {
    fn from(_: BackgroundStopped) -> ReloadError {
        ReloadError::ShuttingDown
    }
}

/// The outcome of the latest reload attempt, for tests and operators.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReloadStatus {
    /// Attempts so far (successful or not).
    pub attempts: u64,
    /// Successful reloads so far.
    pub generation: u64,
    /// The error of the last attempt, if it failed.
    pub last_error: Option<String>,
}

/// Reloads the config file; shared by SIGHUP, the file watch and tests.
#[derive(Clone)]
pub struct ReloadHandle {
    shared: Arc<Shared>,
    path: Option<PathBuf>,
    status: Arc<watch::Sender<ReloadStatus>>,
    /// One reload at a time: two concurrent builds would race on the swap.
    busy: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ReloadHandle {
    pub(crate) fn new(shared: Arc<Shared>, path: Option<PathBuf>) -> ReloadHandle {
        let initial = path.as_ref().and_then(|p| std::fs::read(p).ok());
        // Both series exist from the start, so that a dashboard sees zeros, not gaps.
        for outcome in ["success", "failure"] {
            shared
                .metrics
                .counter(&CONSUMER_RELOADS, &[("outcome", outcome)]);
        }
        ReloadHandle {
            shared,
            path,
            status: Arc::new(watch::channel(ReloadStatus::default()).0),
            busy: Arc::new(Mutex::new(initial)),
        }
    }

    /// The status of the latest attempt, updated after each one.
    pub fn subscribe(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// Reload from the config file (what SIGHUP does).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let mut last = self.busy.lock().await;
        let result = self.reload_locked(&mut last, false).await.map(|_| ());
        self.record(&result);
        result
    }

    /// Reload only if the file's contents changed since the last load (the file watch).
    async fn reload_if_changed(&self) {
        let mut last = self.busy.lock().await;
        let result = self.reload_locked(&mut last, true).await;
        match result {
            Err(ReloadError::NoFile) => {}
            // The config is as it was: the consumers file may still have changed.
            Ok(false) => self.refresh_consumers().await,
            other => self.record(&other.map(|_| ())),
        }
    }

    /// Reload the consumers file into the current runtime if it changed, on the background
    /// thread. A file with problems is refused as a whole; the consumers loaded before stay.
    async fn refresh_consumers(&self) {
        let store = self.shared.runtime.load().consumers.clone();
        let metrics = self.shared.metrics.clone();
        let outcome = self.shared.background.run(move || store.refresh()).await;
        let counter = |outcome: &str| {
            metrics
                .counter(&CONSUMER_RELOADS, &[("outcome", outcome)])
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        match outcome {
            Ok(Ok(Some(count))) => {
                counter("success");
                tracing::info!(consumers = count, "consumers file reloaded");
            }
            Ok(Ok(None)) | Err(_) => {}
            Ok(Err(problems)) => {
                counter("failure");
                tracing::error!(
                    "consumers file refused, the consumers loaded before stay in effect:\n{}",
                    problems.join("\n")
                );
            }
        }
    }

    async fn reload_locked(
        &self,
        last: &mut Option<Vec<u8>>,
        only_if_changed: bool,
    ) -> Result<bool, ReloadError> {
        let path = self.path.clone().ok_or(ReloadError::NoFile)?;
        let previous = last.clone();
        let shared = self.shared.clone();
        let (outcome, read) = self
            .shared
            .background
            .run(move || {
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(source) => {
                        let error = ConfigError::Io { path, source };
                        return (Err(ReloadError::from(error)), None);
                    }
                };
                if only_if_changed && previous.as_deref() == Some(&bytes[..]) {
                    return (Ok(None), Some(bytes));
                }
                let text = String::from_utf8_lossy(&bytes);
                let built = config::load_file_text(&text, &path)
                    .map_err(ReloadError::from)
                    .and_then(|config| build(&shared, config));
                (built.map(Some), Some(bytes))
            })
            .await?;
        if let Some(bytes) = read {
            *last = Some(bytes);
        }
        match outcome? {
            Some(runtime) => {
                self.swap(runtime);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Make `runtime` current. The replaced one is freed on the background thread once the
    /// last request that started on it has finished.
    fn swap(&self, runtime: Runtime) {
        runtime.start();
        let replaced = self.shared.runtime.swap(Arc::new(runtime));
        self.shared.background.release(replaced);
    }

    fn record<T>(&self, result: &Result<T, ReloadError>) {
        match result {
            Ok(_) => {
                self.shared.metrics.reload_succeeded();
                tracing::info!("configuration reloaded");
            }
            Err(error) => {
                self.shared.metrics.reload_failed();
                tracing::error!("configuration reload refused, the previous configuration stays in effect: {error}");
            }
        }
        self.status.send_modify(|status| {
            status.attempts += 1;
            match result {
                Ok(_) => {
                    status.generation += 1;
                    status.last_error = None;
                }
                Err(error) => status.last_error = Some(error.to_string()),
            }
        });
    }
}

/// Check that `config` can replace the current one without a restart, and build its runtime
/// (on the background thread: this reads files).
fn build(shared: &Shared, config: Config) -> Result<Runtime, ReloadError> {
    let current = shared.runtime.load_full();
    let old = &current.config;
    if old.listeners != config.listeners {
        return Err(ReloadError::NeedsRestart("the listeners section"));
    }
    if old.admin != config.admin {
        return Err(ReloadError::NeedsRestart("admin.address"));
    }
    if old.runtime.workers != config.runtime.workers {
        return Err(ReloadError::NeedsRestart("runtime.workers"));
    }
    Ok(Runtime::build(config, Some(&current), &shared.metrics)?)
}

/// Start the SIGHUP listener and the file watch (when there is a file and an interval).
pub(crate) fn spawn_watchers(handle: ReloadHandle, stop: watch::Receiver<bool>) {
    if handle.path.is_none() {
        return;
    }
    let on_hangup = handle.clone();
    crate::lifecycle::on_each_hangup("configuration", stop.clone(), move || {
        let handle = on_hangup.clone();
        async move {
            tracing::info!("SIGHUP received: reloading configuration");
            let _ = handle.reload().await;
        }
    });
    let interval = handle.shared.runtime.load().config.runtime.watch_interval;
    if let Some(interval) = interval {
        crate::lifecycle::on_each_tick(interval, stop, move || {
            let handle = handle.clone();
            async move { handle.reload_if_changed().await }
        });
    }
}
