//! A few read-only database connections for the API and lookups, used from async
//! code on tokio's blocking threads. WAL lets them read while the writer commits.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct ReadPool {
    conns: Arc<Vec<Mutex<Store>>>,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool").field("size", &self.conns.len()).finish()
    }
}

impl ReadPool {
    pub fn open(path: &Path, size: usize) -> Result<ReadPool, StoreError> {
        let conns = (0..size.max(1))
            .map(|_| Store::open_readonly(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReadPool {
            conns: Arc::new(conns),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Runs `f` on one of the connections, off the async threads.
    pub async fn run<R: Send + 'static>(&self, f: impl FnOnce(&Store) -> R + Send + 'static) -> Result<R, StoreError> {
        let conns = Arc::clone(&self.conns);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        tokio::task::spawn_blocking(move || {
            let guard = conns[i]
                .lock()
                .map_err(|_| StoreError::Corrupt("read connection poisoned".into()))?;
            Ok(f(&guard))
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }
}
