//! Process lifecycle helpers shared by the server, the reloads and the admin listener: the
//! shutdown watch, the SIGHUP and interval triggers, and the background thread where reload
//! work runs.
//!
//! Nothing here is on the request path. The [`Background`] thread exists so that it stays
//! that way: reading and validating a config file, reading certificates, building a runtime
//! and dropping the one it replaced are all CPU and disk work that, on an async worker, would
//! stall every connection that worker serves (with `workers: 1`, all of them). The thread runs
//! at the lowest scheduling priority, so on a busy machine traffic wins and the reload waits.

use std::any::Any;
use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Resolves once shutdown has been signalled (at once if it already was).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The borrow guard `wait_for` returns is dropped here, never held across an await.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Run `action` on every SIGHUP until shutdown (`what` names the reloaded thing in the
/// warning logged when SIGHUP cannot be received).
pub(crate) fn on_each_hangup<F, Fut>(
    what: &'static str,
    mut stop: watch::Receiver<bool>,
    mut action: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; {what} reload by file watch only");
            return;
        };
        loop {
            tokio::select! {
                received = hangups.recv() => match received {
                    Some(()) => action().await,
                    None => break,
                },
                _ = stopped(&mut stop) => break,
            }
        }
    });
}

/// Run `action` every `interval` (the first time at once) until shutdown.
pub(crate) fn on_each_tick<F, Fut>(
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    mut action: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => action().await,
                _ = stopped(&mut stop) => break,
            }
        }
    });
}

/// How often the background thread looks at values waiting to be released.
const RELEASE_CHECK: Duration = Duration::from_millis(100);

enum Message {
    Run(Box<dyn FnOnce() + Send>),
    /// Drop this once nobody else holds it.
    Release(Arc<dyn Any + Send + Sync>),
}

/// The background thread was stopped (the gateway is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the background thread has stopped")]
pub(crate) struct BackgroundStopped;

/// A low-priority thread for work that must never stall request handling. Cheap to clone;
/// the thread ends when the last handle is dropped (after releasing what it still holds).
#[derive(Clone)]
pub(crate) struct Background {
    tx: mpsc::Sender<Message>,
}

impl Background {
    pub(crate) fn start() -> std::io::Result<Background> {
        let (tx, rx) = mpsc::channel();
        // Runtimes built here start tasks (health checkers) on the gateway's Tokio runtime.
        let runtime = tokio::runtime::Handle::try_current().ok();
        std::thread::Builder::new()
            .name("portico-background".into())
            .spawn(move || {
                let _entered = runtime.as_ref().map(|runtime| runtime.enter());
                serve(rx)
            })?;
        Ok(Background { tx })
    }

    /// Run `work` on the background thread and wait (asynchronously) for its result.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, BackgroundStopped>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job = Box::new(move || {
            let _ = done.send(work());
        });
        self.tx
            .send(Message::Run(job))
            .map_err(|_| BackgroundStopped)?;
        result.await.map_err(|_| BackgroundStopped)
    }

    /// Drop `value` on the background thread once this is the last reference to it: a
    /// replaced runtime is still held by the requests that started on it, and whichever of
    /// them finished last would otherwise pay for freeing it on an async worker.
    pub(crate) fn release<T: Send + Sync + 'static>(&self, value: Arc<T>) {
        // If the thread is gone the value is dropped here, which is all that is left to do.
        let _ = self.tx.send(Message::Release(value));
    }
}

fn serve(rx: mpsc::Receiver<Message>) {
    lower_priority();
    let mut waiting: Vec<Arc<dyn Any + Send + Sync>> = Vec::new();
    loop {
        let timeout = if waiting.is_empty() {
            Duration::from_secs(3600)
        } else {
            RELEASE_CHECK
        };
        match rx.recv_timeout(timeout) {
            Ok(Message::Run(job)) => job(),
            Ok(Message::Release(value)) => waiting.push(value),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        waiting.retain(|value| Arc::strong_count(value) > 1);
    }
}

/// Nice 19: the scheduler gives this thread what the async workers leave over.
fn lower_priority() {
    // SAFETY: setpriority only reads its arguments; `who` 0 with PRIO_PROCESS names the
    // calling thread on Linux (each thread has its own nice value).
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if result != 0 {
        tracing::debug!(
            "cannot lower the background thread's priority; it runs at normal priority"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_returns_its_result() {
        let background = Background::start().expect("thread");
        let name = background
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .expect("result");
        assert_eq!(name.as_deref(), Some("portico-background"));
    }

    #[tokio::test]
    async fn releases_a_value_only_after_its_last_other_holder() {
        struct Noisy(std::sync::mpsc::Sender<String>);
        impl Drop for Noisy {
            fn drop(&mut self) {
                let name = std::thread::current().name().unwrap_or("").to_string();
                let _ = self.0.send(name);
            }
        }
        let (tx, dropped) = std::sync::mpsc::channel();
        let background = Background::start().expect("thread");
        let value = Arc::new(Noisy(tx));
        let in_flight = value.clone();
        background.release(value);
        // Still held by "a request": nothing is dropped yet, however long we look.
        background.run(|| ()).await.expect("ran");
        assert!(dropped.try_recv().is_err());
        drop(in_flight);
        let thread = tokio::task::spawn_blocking(move || dropped.recv().expect("dropped"))
            .await
            .expect("joined");
        assert_eq!(thread, "portico-background");
    }
}
