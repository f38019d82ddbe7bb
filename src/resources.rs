//! State that outlives one runtime: carried from the runtime a reload replaces to the one it
//! builds, as long as the config that made it has not changed.
//!
//! Off the request path: used while a runtime is built (at start and on every reload). A
//! layer or cluster constructor asks [`ResourceCarry::obtain`] for its state by concern and
//! name — an endpoint's pooled connections, later a limiter's counters or a JWKS cache —
//! together with the part of its config the state depends on. If the previous runtime held
//! state under that key made from an equal config, the same `Arc` is handed back; otherwise
//! the constructor makes a new one. The new runtime keeps exactly what it obtained, so state
//! whose owner was removed or reconfigured is dropped together with the old runtime, and
//! requests still running on the old runtime keep using theirs until they finish.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

type Key = (&'static str, String);

struct Entry {
    /// The config the value was made from, compared on the next build.
    config: Box<dyn Any + Send + Sync>,
    value: Arc<dyn Any + Send + Sync>,
}

/// The resources one runtime holds.
#[derive(Default)]
pub(crate) struct Resources {
    entries: HashMap<Key, Entry>,
}

#[cfg(test)]
impl Resources {
    /// How many resources this runtime holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Collects the resources of a runtime being built, reusing the previous runtime's.
pub(crate) struct ResourceCarry<'a> {
    previous: Option<&'a Resources>,
    kept: Resources,
    reused: usize,
}

impl<'a> ResourceCarry<'a> {
    pub(crate) fn new(previous: Option<&'a Resources>) -> ResourceCarry<'a> {
        ResourceCarry {
            previous,
            kept: Resources::default(),
            reused: 0,
        }
    }

    /// The `concern`'s resource called `name`: the one already obtained for this runtime or
    /// held by the previous runtime, if made from a config equal to `config`; else a new one
    /// from `make`.
    pub(crate) fn obtain<C, T, E>(
        &mut self,
        concern: &'static str,
        name: &str,
        config: &C,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E>
    where
        C: PartialEq + Clone + Send + Sync + 'static,
        T: Send + Sync + 'static,
    {
        let key = (concern, name.to_string());
        let found = |resources: &Resources| {
            let entry = resources.entries.get(&key)?;
            if entry.config.downcast_ref::<C>() != Some(config) {
                return None;
            }
            entry.value.clone().downcast::<T>().ok()
        };
        if let Some(value) = found(&self.kept) {
            return Ok(value);
        }
        let value = match self.previous.and_then(found) {
            Some(value) => {
                self.reused += 1;
                value
            }
            None => Arc::new(make()?),
        };
        self.kept.entries.insert(
            key,
            Entry {
                config: Box::new(config.clone()),
                value: value.clone(),
            },
        );
        Ok(value)
    }

    /// The previous runtime's `concern` resource called `name` with the config it was
    /// made from, whatever that config was: for state that a changed config replaces but
    /// that the replacement starts from (a resolver's last answer, its endpoints' state).
    pub(crate) fn previous<C, T>(&self, concern: &'static str, name: &str) -> Option<(C, Arc<T>)>
    where
        C: Clone + 'static,
        T: Send + Sync + 'static,
    {
        let entry = self.previous?.entries.get(&(concern, name.to_string()))?;
        let config = entry.config.downcast_ref::<C>()?.clone();
        Some((config, entry.value.clone().downcast::<T>().ok()?))
    }

    /// How many resources came from the previous runtime.
    pub(crate) fn reused(&self) -> usize {
        self.reused
    }

    pub(crate) fn finish(self) -> Resources {
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter(carry: &mut ResourceCarry<'_>, name: &str, config: u32) -> Arc<AtomicUsize> {
        carry
            .obtain("test", name, &config, || {
                Ok::<_, Infallible>(AtomicUsize::new(0))
            })
            .expect("made")
    }

    #[test]
    fn state_survives_a_build_with_an_equal_config_and_is_dropped_otherwise() {
        let mut first = ResourceCarry::new(None);
        let kept = counter(&mut first, "a", 1);
        let changed = counter(&mut first, "b", 1);
        let removed = counter(&mut first, "c", 1);
        kept.fetch_add(5, Ordering::Relaxed);
        let first = first.finish();
        let (changed_weak, removed_weak) = (Arc::downgrade(&changed), Arc::downgrade(&removed));
        drop((changed, removed));

        let mut second = ResourceCarry::new(Some(&first));
        let again = counter(&mut second, "a", 1);
        let replaced = counter(&mut second, "b", 2);
        assert_eq!(second.reused(), 1);
        let second = second.finish();
        assert!(Arc::ptr_eq(&kept, &again), "same config: same state");
        assert_eq!(again.load(Ordering::Relaxed), 5);
        assert_eq!(
            replaced.load(Ordering::Relaxed),
            0,
            "changed config: new state"
        );
        assert_eq!(second.len(), 2);

        // The old runtime goes away: what the new one did not take goes with it.
        drop(first);
        assert!(changed_weak.upgrade().is_none());
        assert!(removed_weak.upgrade().is_none());
        assert!(Arc::ptr_eq(
            &kept,
            &counter(&mut ResourceCarry::new(Some(&second)), "a", 1)
        ));
    }

    #[test]
    fn one_build_asking_twice_gets_the_same_state() {
        let mut carry = ResourceCarry::new(None);
        let a = counter(&mut carry, "a", 1);
        let b = counter(&mut carry, "a", 1);
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_different_type_under_the_same_key_is_not_confused() {
        let mut first = ResourceCarry::new(None);
        counter(&mut first, "a", 1);
        let first = first.finish();
        let mut second = ResourceCarry::new(Some(&first));
        let text = second
            .obtain("test", "a", &1u32, || {
                Ok::<_, Infallible>(String::from("new"))
            })
            .expect("made");
        assert_eq!(*text, "new");
    }
}
