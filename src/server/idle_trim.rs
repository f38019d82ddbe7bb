//! Giving back the memory that a wave of connections leaves behind when they park.
//!
//! Off the request path: counted when an HTTP/1.1 connection parks (see [`conn_guard`]),
//! the trim itself runs later on Tokio's blocking pool. Connections served at about the same
//! time each allocate hyper's read and write buffers (16 KiB and more) and free them when
//! they park, 100 ms after their last response; what a parked connection keeps (its task,
//! its state) is allocated in between, so the freed buffers end up as holes inside glibc's
//! heap instead of free space at its top, and glibc gives back only its top by itself.
//! `malloc_trim(0)` also gives back every whole free page inside the heap: with 2,000
//! connections parked within a second, about 2.4 KB per connection, for one trim of 2–6 ms
//! (on a busy 2-core machine). The trim holds each arena's lock while it walks it, so the
//! time between trims grows with their length: at most 1 % of the time goes to trimming.
//! Other allocators and platforms: nothing to do (the count is not even kept).
//!
//! Failure modes: none that a client sees. A trim that cannot start (the runtime is
//! shutting down) is skipped; one that finds nothing to give back costs its walk.
//!
//! [`conn_guard`]: super::conn_guard

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use std::time::Duration;

/// Connections parked (on every listener) since the last trim was scheduled.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static PARKED_SINCE_TRIM: AtomicU32 = AtomicU32::new(0);

/// Trims done (for the tests).
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
static TRIMS: AtomicU32 = AtomicU32::new(0);

/// How many parks make a trim worth its walk over the heap: at 16 KiB and more of buffers
/// per connection, a few MB could come back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_AFTER_PARKS: u32 = 256;

/// How long after the park that asked for it a trim runs: by then a burst of connections
/// has usually all parked, so one trim gives back the holes of the whole burst. Also the
/// shortest time between two trims.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_DELAY: Duration = Duration::from_secs(1);

/// Trimming takes at most one part in this many of the time (a gateway whose connections
/// park and wake all the time, with a large heap, waits longer between trims).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_TIME_SHARE: u32 = 100;

/// How long the last trim took, in microseconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static LAST_TRIM_MICROS: AtomicU64 = AtomicU64::new(0);

/// The wait before a trim, after one that took `last`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn delay_after(last: Duration) -> Duration {
    TRIM_DELAY.max(last.saturating_mul(TRIM_TIME_SHARE))
}

/// A connection has parked: after [`TRIM_AFTER_PARKS`] of them, give the allocator's free
/// pages back [`TRIM_DELAY`] later, or later still after a long trim (at most one trim is
/// pending at a time).
pub(crate) fn connection_parked() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if PARKED_SINCE_TRIM.fetch_add(1, Relaxed) + 1 == TRIM_AFTER_PARKS {
        tokio::spawn(async {
            let last = Duration::from_micros(LAST_TRIM_MICROS.load(Relaxed));
            tokio::time::sleep(delay_after(last)).await;
            // Parks from now on count towards the next trim.
            PARKED_SINCE_TRIM.store(0, Relaxed);
            // On the blocking pool: the walk takes milliseconds with a large heap, and the
            // connections' own task keeps serving meanwhile (allocations that glibc's
            // per-thread cache cannot serve wait for each arena's walk).
            let _ = tokio::task::spawn_blocking(trim).await;
        });
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    let started = std::time::Instant::now();
    let released = crate::runtime::trim_allocator();
    let took = started.elapsed();
    LAST_TRIM_MICROS.store(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    #[cfg(test)]
    TRIMS.fetch_add(1, Relaxed);
    tracing::debug!(took = ?took, released, "allocator trimmed after connections parked");
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    async fn trims_after(wait: Duration) -> u32 {
        // Virtual time: the pending trim's delay passes at once, and the blocking pool's
        // thread gets its turn while this task waits.
        tokio::time::sleep(wait).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        TRIMS.load(Relaxed)
    }

    #[test]
    fn a_long_trim_makes_the_next_one_wait_longer() {
        assert_eq!(delay_after(Duration::ZERO), TRIM_DELAY);
        assert_eq!(delay_after(Duration::from_millis(6)), TRIM_DELAY);
        assert_eq!(
            delay_after(Duration::from_millis(50)),
            Duration::from_secs(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wave_of_parks_is_trimmed_once_a_little_later() {
        let before = TRIMS.load(Relaxed);
        for _ in 1..TRIM_AFTER_PARKS {
            connection_parked();
        }
        assert_eq!(trims_after(TRIM_DELAY * 3).await, before, "too few parks");
        connection_parked();
        // More parks while the trim is pending do not ask for another.
        for _ in 0..TRIM_AFTER_PARKS * 2 {
            connection_parked();
        }
        assert_eq!(trims_after(TRIM_DELAY / 2).await, before, "not yet");
        let trimmed = tokio::time::timeout(TRIM_DELAY * 10, async {
            loop {
                let trims = trims_after(TRIM_DELAY / 10).await;
                if trims != before {
                    return trims;
                }
            }
        })
        .await;
        assert_eq!(trimmed, Ok(before + 1));
        assert_eq!(trims_after(TRIM_DELAY * 3).await, before + 1, "one trim");
        // The parks after the trim count towards the next one.
        for _ in 0..TRIM_AFTER_PARKS {
            connection_parked();
        }
        let trimmed = tokio::time::timeout(TRIM_DELAY * 10, async {
            loop {
                let trims = trims_after(TRIM_DELAY / 10).await;
                if trims != before + 1 {
                    return trims;
                }
            }
        })
        .await;
        assert_eq!(trimmed, Ok(before + 2));
    }
}
