//! Pharos storage: where blocks live, and which blocks exist.
//!
//! - [`ObjectStorage`] wraps an [`object_store::ObjectStore`]: a local directory by default
//!   (every write fsynced, file and directory, before it returns), or S3 and S3-compatible
//!   servers with the `s3` feature. [`StorageConfig`] is the `storage:` configuration section.
//! - [`Catalog`] lists one signal's blocks per tenant. A block is a directory of objects under
//!   `{signal}/{tenant}/{block id}/`; it exists for readers once its `meta.json` exists, and
//!   `meta.json` is written last. Retiring a block removes `meta.json` first and the data a
//!   grace period later, so a reader that listed the block before can still read it.

mod catalog;
mod config;

use std::{ops::Range, sync::Arc};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as ObjectPath};

pub use catalog::{BlockId, BlockMeta, Catalog, CatalogError, new_block_id};
pub use config::{LocalConfig, S3Config, StorageConfig};

/// An object store failure, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store refused or failed an operation.
    #[error("object store: {op} {path}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The object (or prefix).
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The object does not exist.
    #[error("object store: {path} not found")]
    NotFound {
        /// The object.
        path: String,
    },
    /// The configuration cannot be used.
    #[error("storage configuration: {0}")]
    Config(String),
}

impl StorageError {
    fn store(op: &'static str, path: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Self::NotFound { path: path.to_string() },
            source => Self::Store { op, path: path.to_string(), source },
        }
    }
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its path, `/`-separated, relative to the store's root.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An object store with the operations blocks need.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    inner: Arc<dyn ObjectStore>,
}

impl ObjectStorage {
    /// Opens the store `config` describes; a local directory defaults to `{data_dir}/blocks`.
    pub fn open(config: &StorageConfig, data_dir: &std::path::Path) -> Result<Self, StorageError> {
        config.open(data_dir)
    }

    /// A local directory, created if missing.
    pub fn local(dir: &std::path::Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Config(format!("create {}: {e}", dir.display())))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StorageError::Config(format!("open {}: {e}", dir.display())))?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        Ok(Self::new(Arc::new(store)))
    }

    /// Wraps any object store.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    /// Writes an object whole; readers see all of it or none of it. Durable when this returns.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.inner
            .put(&ObjectPath::from(path), PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| StorageError::store("put", path, e))?;
        Ok(())
    }

    /// Reads an object whole.
    pub async fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        let result =
            self.inner.get(&ObjectPath::from(path)).await.map_err(|e| StorageError::store("get", path, e))?;
        result.bytes().await.map_err(|e| StorageError::store("get", path, e))
    }

    /// Reads a byte range of an object.
    pub async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.inner
            .get_range(&ObjectPath::from(path), range)
            .await
            .map_err(|e| StorageError::store("get range", path, e))
    }

    /// Reads several byte ranges of an object at once: the store coalesces nearby ranges
    /// into fewer requests (one open and a few reads on the local backend).
    pub async fn get_ranges(&self, path: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, StorageError> {
        self.inner
            .get_ranges(&ObjectPath::from(path), ranges)
            .await
            .map_err(|e| StorageError::store("get ranges", path, e))
    }

    /// Lists every object under `prefix` (recursively).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let prefix_path = ObjectPath::from(prefix);
        self.inner
            .list(Some(&prefix_path))
            .map_ok(|meta| ObjectInfo { path: meta.location.to_string(), size: meta.size })
            .try_collect()
            .await
            .map_err(|e| StorageError::store("list", prefix, e))
    }

    /// Lists the immediate "directories" under `prefix`, as names.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let prefix_path = ObjectPath::from(prefix);
        let listed = self
            .inner
            .list_with_delimiter(Some(&prefix_path))
            .await
            .map_err(|e| StorageError::store("list", prefix, e))?;
        Ok(listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub async fn delete(&self, path: &str) -> Result<(), StorageError> {
        match self.inner.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::store("delete", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStorage::local(dir.path()).unwrap();
        store.put("traces/t1/b1/data", Bytes::from_static(b"hello world")).await.unwrap();
        store.put("traces/t2/b2/data", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(store.get("traces/t1/b1/data").await.unwrap(), Bytes::from_static(b"hello world"));
        assert_eq!(store.get_range("traces/t1/b1/data", 6..11).await.unwrap(), Bytes::from_static(b"world"));
        let listed = store.list("traces/t1").await.unwrap();
        assert_eq!(listed, vec![ObjectInfo { path: "traces/t1/b1/data".into(), size: 11 }]);
        let mut tenants = store.list_dirs("traces").await.unwrap();
        tenants.sort();
        assert_eq!(tenants, vec!["t1", "t2"]);
        assert!(matches!(store.get("traces/none").await, Err(StorageError::NotFound { .. })));
        store.delete("traces/t1/b1/data").await.unwrap();
        store.delete("traces/t1/b1/data").await.unwrap();
        assert!(store.list("traces/t1").await.unwrap().is_empty());
        assert!(dir.path().join("traces/t2/b2/data").exists());
    }
}
