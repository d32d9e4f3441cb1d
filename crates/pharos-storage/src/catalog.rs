//! The block catalog of one signal: which blocks each tenant has.
//!
//! Layout: `{signal}/{tenant}/{block id}/meta.json` plus the block's data objects beside it.
//! `meta.json` is written after the data and is what makes a block exist; a block directory
//! without one (a crash between the two writes) is removed when the catalog opens. Retiring
//! a block deletes `meta.json` at once and the data after `deletion_delay`, so readers that
//! listed the block before still find its data.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use pharos_core::Tenant;
use serde::{Serialize, de::DeserializeOwned};
use tracing::{info, warn};

use crate::{ObjectStorage, StorageError};

/// A block id: 32 lower-case hex digits, the first 16 the creation time in milliseconds, so
/// ids sort by age.
pub type BlockId = String;

/// What a signal records about each of its blocks, in `meta.json`.
pub trait BlockMeta: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The block's id.
    fn id(&self) -> &str;
    /// The oldest and newest item times in the block, in unix nanoseconds.
    fn time_range(&self) -> (u64, u64);
    /// The block's size in bytes.
    fn size_bytes(&self) -> u64;
}

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The object store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A block's meta.json could not be encoded.
    #[error("encode block meta: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One signal's blocks, per tenant, in memory, backed by `meta.json` objects.
#[derive(Debug)]
pub struct Catalog<M> {
    storage: ObjectStorage,
    signal: &'static str,
    blocks: RwLock<HashMap<Tenant, Vec<Arc<M>>>>,
    deletion_delay: Duration,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A new block id, unique across processes with overwhelming probability.
pub fn new_block_id() -> BlockId {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    // RandomState is seeded from the OS; hashing the time and a counter gives fresh bits.
    let random = RandomState::new().hash_one((now.as_nanos(), sequence, std::process::id()));
    format!("{:016x}{random:016x}", now.as_millis() as u64)
}

impl<M: BlockMeta> Catalog<M> {
    /// Lists every tenant's blocks of `signal`, removing directories left without a meta.json.
    pub async fn open(
        storage: ObjectStorage,
        signal: &'static str,
        deletion_delay: Duration,
    ) -> Result<Self, CatalogError> {
        let mut blocks: HashMap<Tenant, Vec<Arc<M>>> = HashMap::new();
        let objects = storage.list(signal).await?;
        let mut dirs: HashMap<(String, String), Vec<String>> = HashMap::new();
        for object in objects {
            let mut parts = object.path.splitn(4, '/');
            let (Some(_), Some(tenant), Some(block), Some(_)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            dirs.entry((tenant.to_string(), block.to_string())).or_default().push(object.path.clone());
        }
        let mut removed = 0usize;
        for ((tenant_id, block), paths) in dirs {
            let meta_path = format!("{signal}/{tenant_id}/{block}/meta.json");
            let meta = if paths.contains(&meta_path) {
                match serde_json::from_slice::<M>(&storage.get(&meta_path).await?) {
                    Ok(meta) => Some(meta),
                    Err(e) => {
                        warn!(path = meta_path, error = %e, "unreadable block meta: the block is removed (its data was never acknowledged as durable)");
                        None
                    }
                }
            } else {
                None
            };
            let tenant = Tenant::parse(&tenant_id).ok();
            match (meta, tenant) {
                (Some(meta), Some(tenant)) => blocks.entry(tenant).or_default().push(Arc::new(meta)),
                _ => {
                    removed += 1;
                    for path in paths {
                        storage.delete(&path).await?;
                    }
                }
            }
        }
        for list in blocks.values_mut() {
            list.sort_by(|a, b| a.id().cmp(b.id()));
        }
        let count: usize = blocks.values().map(Vec::len).sum();
        info!(
            signal,
            blocks = count,
            tenants = blocks.len(),
            incomplete_removed = removed,
            "block catalog loaded"
        );
        Ok(Self { storage, signal, blocks: RwLock::new(blocks), deletion_delay })
    }

    /// The object store.
    pub fn storage(&self) -> &ObjectStorage {
        &self.storage
    }

    /// The path of `file` in a block of `tenant`.
    pub fn object_path(&self, tenant: &Tenant, block: &str, file: &str) -> String {
        format!("{}/{}/{block}/{file}", self.signal, tenant.as_str())
    }

    /// Makes a block whose data objects are already written visible to readers.
    pub async fn publish(&self, tenant: &Tenant, meta: M) -> Result<Arc<M>, CatalogError> {
        let body = serde_json::to_vec(&meta)?;
        self.storage.put(&self.object_path(tenant, meta.id(), "meta.json"), Bytes::from(body)).await?;
        let meta = Arc::new(meta);
        let mut blocks = self.blocks.write().expect("catalog lock");
        let list = blocks.entry(tenant.clone()).or_default();
        let at = list.partition_point(|b| b.id() < meta.id());
        list.insert(at, meta.clone());
        Ok(meta)
    }

    /// The tenant's blocks, oldest id first.
    pub fn blocks(&self, tenant: &Tenant) -> Vec<Arc<M>> {
        self.blocks.read().expect("catalog lock").get(tenant).cloned().unwrap_or_default()
    }

    /// Every tenant that has blocks.
    pub fn tenants(&self) -> Vec<Tenant> {
        self.blocks.read().expect("catalog lock").keys().cloned().collect()
    }

    /// Removes blocks from the catalog: their `meta.json` now, their data objects
    /// (`files`) after the deletion delay, on a background task.
    pub async fn retire(&self, tenant: &Tenant, ids: &[String], files: &[&str]) -> Result<(), CatalogError> {
        for id in ids {
            self.storage.delete(&self.object_path(tenant, id, "meta.json")).await?;
        }
        {
            let mut blocks = self.blocks.write().expect("catalog lock");
            if let Some(list) = blocks.get_mut(tenant) {
                list.retain(|b| !ids.iter().any(|id| id == b.id()));
                if list.is_empty() {
                    blocks.remove(tenant);
                }
            }
        }
        let paths: Vec<String> =
            ids.iter().flat_map(|id| files.iter().map(|f| self.object_path(tenant, id, f))).collect();
        let storage = self.storage.clone();
        let delay = self.deletion_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for path in paths {
                if let Err(e) = storage.delete(&path).await {
                    warn!(path, error = %e, "could not delete a retired block's data; it is removed at the next start");
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Meta {
        id: String,
        min: u64,
        max: u64,
    }

    impl BlockMeta for Meta {
        fn id(&self) -> &str {
            &self.id
        }
        fn time_range(&self) -> (u64, u64) {
            (self.min, self.max)
        }
        fn size_bytes(&self) -> u64 {
            0
        }
    }

    #[test]
    fn block_ids_sort_by_age_and_differ() {
        let a = new_block_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_block_id();
        assert_eq!(a.len(), 32);
        assert!(a < b);
        assert_ne!(new_block_id(), new_block_id());
    }

    #[tokio::test]
    async fn blocks_exist_once_published_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let storage = ObjectStorage::local(dir.path()).unwrap();
        let catalog = Catalog::<Meta>::open(storage.clone(), "traces", Duration::ZERO).await.unwrap();
        let tenant = Tenant::parse("acme").unwrap();
        let id = new_block_id();
        storage.put(&catalog.object_path(&tenant, &id, "data"), Bytes::from_static(b"d")).await.unwrap();
        assert!(catalog.blocks(&tenant).is_empty(), "data alone is not a block");
        catalog.publish(&tenant, Meta { id: id.clone(), min: 1, max: 2 }).await.unwrap();
        assert_eq!(catalog.blocks(&tenant).len(), 1);

        // A block whose meta.json never got written (a crash) and one with a torn meta.json.
        let orphan = new_block_id();
        storage.put(&catalog.object_path(&tenant, &orphan, "data"), Bytes::from_static(b"x")).await.unwrap();
        let torn = new_block_id();
        storage.put(&catalog.object_path(&tenant, &torn, "data"), Bytes::from_static(b"x")).await.unwrap();
        storage
            .put(&catalog.object_path(&tenant, &torn, "meta.json"), Bytes::from_static(b"{\"id\":"))
            .await
            .unwrap();

        let reopened = Catalog::<Meta>::open(storage.clone(), "traces", Duration::ZERO).await.unwrap();
        let blocks = reopened.blocks(&tenant);
        assert_eq!(blocks.len(), 1);
        assert_eq!(*blocks[0], Meta { id: id.clone(), min: 1, max: 2 });
        assert!(storage.list(&format!("traces/acme/{orphan}")).await.unwrap().is_empty());
        assert!(storage.list(&format!("traces/acme/{torn}")).await.unwrap().is_empty());
        assert_eq!(reopened.tenants(), vec![tenant.clone()]);

        reopened.retire(&tenant, std::slice::from_ref(&id), &["data"]).await.unwrap();
        assert!(reopened.blocks(&tenant).is_empty());
        for _ in 0..100 {
            if storage.list("traces/acme").await.unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("retired block data not deleted");
    }
}
