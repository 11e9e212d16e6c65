//! The one in-process inventory of discovered certificates: each DiscoveryTask's last run
//! replaces its part. Metrics are rendered from it, and AlertConfig reads it, so nobody keeps a
//! second copy. It lives in memory only: after a restart each task's next run fills it again.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use super::analysis::Found;

/// Discovered certificates by DiscoveryTask (`namespace/name`).
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    tasks: Arc<RwLock<BTreeMap<String, Arc<Vec<Found>>>>>,
}

impl Inventory {
    /// Replaces what `task` found.
    pub fn replace(&self, task: &str, found: Vec<Found>) {
        self.write().insert(task.to_owned(), Arc::new(found));
    }

    /// Forgets `task` (deleted).
    pub fn remove(&self, task: &str) {
        self.write().remove(task);
    }

    /// Every task's findings, as of now.
    pub fn snapshot(&self) -> BTreeMap<String, Arc<Vec<Found>>> {
        self.tasks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Vec<Found>>>> {
        // A panic while holding the lock leaves whole entries behind (each write replaces one),
        // so the map is still consistent.
        self.tasks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
