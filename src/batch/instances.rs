//! A version's engine instances and which of them are running a request.

use crate::engine::Engine;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// An instance held for a run: `Some` for an engine that runs one request at a time.
pub type Held<'a> = Option<MutexGuard<'a, ()>>;

/// The engine instances of a version, with a lock per instance that is held while a request
/// runs on one that is not [`Engine::concurrent`], so no two runs ever share it — whichever
/// scheduler thread or caller runs them.
pub struct Instances {
    engines: Arc<Vec<Box<dyn Engine>>>,
    busy: Vec<Mutex<()>>,
}

impl Instances {
    pub fn new(engines: Arc<Vec<Box<dyn Engine>>>) -> Instances {
        Instances {
            busy: engines.iter().map(|_| Mutex::new(())).collect(),
            engines,
        }
    }

    pub fn engines(&self) -> &[Box<dyn Engine>] {
        &self.engines
    }

    /// Whether every instance runs any number of requests at once.
    pub fn concurrent(&self) -> bool {
        self.engines.iter().all(|e| e.concurrent())
    }

    /// Engine `first` if it runs requests concurrently, else the first idle one from `first`
    /// on, held; `None` when every instance is busy.
    pub fn idle_from(&self, first: usize) -> Option<(&dyn Engine, Held<'_>)> {
        if self.engines[first].concurrent() {
            return Some((self.engines[first].as_ref(), None));
        }
        let n = self.engines.len();
        (first..n).chain(0..first).find_map(|i| {
            Some((
                self.engines[i].as_ref(),
                Some(self.busy[i].try_lock().ok()?),
            ))
        })
    }

    /// Engine `i`, held (waiting until it is idle) if it runs one request at a time.
    pub fn hold(&self, i: usize) -> (&dyn Engine, Held<'_>) {
        let engine = self.engines[i].as_ref();
        let held = (!engine.concurrent())
            .then(|| self.busy[i].lock().unwrap_or_else(PoisonError::into_inner));
        (engine, held)
    }
}
