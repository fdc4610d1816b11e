//! The sled backend: one tree in one folder, held by one process.

use super::{Backend, Record, Records, Result, Staged, StoreError};
use std::ops::Bound;
use std::path::Path;

/// sled's database and the tree that holds every record.
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
    path: String,
}

impl SledBackend {
    /// Opens (creating if needed) the database at `path`. `admin_socket` is
    /// only named in the error when the database is locked.
    pub fn open(path: &Path, cache_capacity_bytes: u64, admin_socket: &Path) -> Result<Self> {
        let p = path.display().to_string();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            // Flushes are explicit (group commit); the background flusher
            // only bounds how much an unflushed crash could lose.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StoreError::Locked {
                        path: p.clone(),
                        socket: admin_socket.display().to_string(),
                    }
                }
                _ => StoreError::Sled {
                    path: p.clone(),
                    source: e,
                },
            })?;
        let tree = db.open_tree("liaison").map_err(|e| StoreError::Sled {
            path: p.clone(),
            source: e,
        })?;
        Ok(SledBackend { db, tree, path: p })
    }

    /// The tree itself, for tests that damage a store on purpose.
    #[cfg(test)]
    pub(super) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    fn range(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Records<'_> {
        Box::new(self.tree.range(range).map(|kv| {
            kv.map(|(k, v)| -> Record { (k.to_vec(), v.to_vec()) })
                .map_err(|e| self.err(e))
        }))
    }

    fn apply(&self, writes: &Staged) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                None => batch.remove(k.as_slice()),
            }
        }
        self.tree.apply_batch(batch).map_err(|e| self.err(e))
    }

    fn sync(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id().map_err(|e| self.err(e))? + 1)
    }
}
