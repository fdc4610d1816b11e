//! The sled backend: one tree in one folder, held by one process.

use super::{Backend, Record, Records, Result, Staged, StoreError};
use std::ops::Bound;
use std::path::Path;

/// sled's database and the tree that holds every record.
pub struct SledBackend {
    /// `None` only while it is being dropped.
    open: Option<Opened>,
    path: std::path::PathBuf,
    cache_capacity_bytes: u64,
    /// Whether anything was written since it was opened (then closing it
    /// writes a snapshot, see [`SledBackend::write_snapshot`]).
    written: std::sync::atomic::AtomicBool,
}

struct Opened {
    db: sled::Db,
    tree: sled::Tree,
}

fn open_db(path: &Path, cache_capacity_bytes: u64) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        // Flushes are explicit (group commit); the background flusher
        // only bounds how much an unflushed crash could lose.
        .flush_every_ms(Some(1000))
        .open()
}

impl SledBackend {
    /// Opens (creating if needed) the database at `path`. `admin_socket` is
    /// only named in the error when the database is locked.
    pub fn open(path: &Path, cache_capacity_bytes: u64, admin_socket: &Path) -> Result<Self> {
        let p = path.display().to_string();
        let db = open_db(path, cache_capacity_bytes).map_err(|e| match &e {
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
        Ok(SledBackend {
            open: Some(Opened { db, tree }),
            path: path.to_path_buf(),
            cache_capacity_bytes,
            written: Default::default(),
        })
    }

    fn opened(&self) -> &Opened {
        self.open
            .as_ref()
            .expect("the database is open until dropped")
    }

    /// The tree itself, for tests that damage a store on purpose.
    #[cfg(test)]
    pub(super) fn tree(&self) -> &sled::Tree {
        &self.opened().tree
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Opens the closed database once more and closes it again, which
    /// writes a snapshot of sled's page table. sled 0.34 writes one only
    /// while it opens a database (its `snapshot_after_ops` does nothing),
    /// after reading every log entry since the last one: at 1 000 000
    /// relationships, 3 000 000 records written since the store was
    /// created took 4.4 s to read at the next start. With the snapshot
    /// taken here a start after a clean stop reads only the snapshot; a
    /// start after a crash still reads the log since the last start or
    /// clean stop.
    fn write_snapshot(&self) {
        let started = std::time::Instant::now();
        // sled's background threads may hold the file a moment longer.
        let mut attempt = 0;
        let result = loop {
            match open_db(&self.path, self.cache_capacity_bytes.min(1 << 20)) {
                Err(sled::Error::Io(io))
                    if attempt < 50 && io.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match result {
            Ok(db) => {
                drop(db);
                // Info: it is why a stop after much writing takes seconds.
                tracing::info!(
                    path = %self.path.display(),
                    ms = started.elapsed().as_millis() as u64,
                    "store snapshot written on close (the next start reads no log)"
                );
            }
            // Nothing lost: the next start reads the log instead.
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "could not write the store's snapshot on close; the next start reads sled's log (slower)"
            ),
        }
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        // sled flushes and lets the file go when the last handle is gone.
        let Some(opened) = self.open.take() else {
            return;
        };
        drop(opened);
        if self.written.load(std::sync::atomic::Ordering::SeqCst) {
            self.write_snapshot();
        }
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .opened()
            .tree
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    fn range(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Records<'_> {
        Box::new(self.opened().tree.range(range).map(|kv| {
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
        self.written
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.opened()
            .tree
            .apply_batch(batch)
            .map_err(|e| self.err(e))
    }

    fn sync(&self) -> Result<()> {
        self.opened().db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn next_id(&self) -> Result<u64> {
        Ok(self.opened().db.generate_id().map_err(|e| self.err(e))? + 1)
    }
}
