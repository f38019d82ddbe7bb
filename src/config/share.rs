//! Equal route policies, stored once.
//!
//! Off the request path: used while a config is validated. A large route table repeats a
//! handful of policy sets (the same timeout, body limit and headers on thousands of routes),
//! and `RoutePolicies` holds every concern's settings inline — about 700 bytes a route even
//! when it uses none. Routes whose policies are equal share one `Arc`: they are read-only
//! settings (each route's stack builds its own state from them), so sharing changes nothing
//! but the memory.

use crate::concerns::RoutePolicies;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::Hasher;
use std::sync::Arc;

/// The distinct policy sets seen so far, by a hash of their `Debug` text.
#[derive(Default)]
pub(crate) struct SharedPolicies {
    by_hash: HashMap<u64, Vec<Arc<RoutePolicies>>>,
}

impl SharedPolicies {
    /// `policies`, or an equal set given earlier.
    pub(crate) fn share(&mut self, policies: RoutePolicies) -> Arc<RoutePolicies> {
        // The settings have no `Hash` (some hold values without one), but equal settings
        // print alike: their `Debug` text, streamed into the hasher, picks the bucket, and
        // `==` decides. A difference only in print (a map's order) costs a copy, no more.
        let mut hasher = HashWriter(DefaultHasher::new());
        let _ = write!(hasher, "{policies:?}");
        let bucket = self.by_hash.entry(hasher.0.finish()).or_default();
        if let Some(same) = bucket.iter().find(|shared| ***shared == policies) {
            return same.clone();
        }
        let shared = Arc::new(policies);
        bucket.push(shared.clone());
        shared
    }
}

struct HashWriter(DefaultHasher);

impl fmt::Write for HashWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.write(text.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    #[test]
    fn routes_with_equal_policies_share_them_and_others_do_not() {
        let config = load_str(
            "listeners: [{ name: l, address: 127.0.0.1:0 }]\n\
             clusters: [{ name: c, endpoints: [127.0.0.1:1] }]\n\
             routes:\n\
             - { match: { path_prefix: /a }, cluster: c, timeout: 5s }\n\
             - { match: { path_prefix: /b }, cluster: c, timeout: 5s }\n\
             - { match: { path_prefix: /c }, cluster: c, timeout: 6s }\n\
             - { match: { path_prefix: /d }, cluster: c }\n",
            "t.yaml",
        )
        .expect("valid");
        let policies: Vec<_> = config.routes.iter().map(|r| &r.policies).collect();
        assert!(Arc::ptr_eq(policies[0], policies[1]));
        assert!(!Arc::ptr_eq(policies[0], policies[2]));
        assert!(!Arc::ptr_eq(policies[0], policies[3]));
        assert_eq!(
            policies[2].timeout.timeout,
            std::time::Duration::from_secs(6)
        );
    }
}
