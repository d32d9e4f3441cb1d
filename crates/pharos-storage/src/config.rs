//! The `storage:` configuration section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ObjectStorage, StorageError};

/// Where blocks are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `local` (a directory) or `s3` (S3 and S3-compatible servers).
    pub backend: String,
    /// The local backend.
    pub local: LocalConfig,
    /// The S3 backend.
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { backend: "local".into(), local: LocalConfig::default(), s3: S3Config::default() }
    }
}

/// A directory on local disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// The directory; empty means `{data_dir}/blocks`.
    pub path: PathBuf,
}

/// An S3 bucket (AWS or any S3-compatible server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The bucket name (required).
    pub bucket: String,
    /// The endpoint URL for S3-compatible servers; empty for AWS.
    pub endpoint: String,
    /// The region.
    pub region: String,
    /// The access key id; empty to take credentials from the environment (`AWS_*`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible servers want.
    pub path_style: bool,
    /// A key prefix under which all of Pharos's objects go.
    pub prefix: String,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            path_style: true,
            prefix: String::new(),
        }
    }
}

impl StorageConfig {
    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), StorageError> {
        match self.backend.as_str() {
            "local" => Ok(()),
            "s3" if self.s3.bucket.is_empty() => {
                Err(StorageError::Config("storage.s3.bucket: required when storage.backend is s3".into()))
            }
            "s3" if cfg!(feature = "s3") => Ok(()),
            "s3" => Err(StorageError::Config(
                "storage.backend: this build of pharos has no S3 support (build with `--features s3`)".into(),
            )),
            other => Err(StorageError::Config(format!("storage.backend: `{other}` is not one of local, s3"))),
        }
    }

    /// Opens the configured store.
    pub(crate) fn open(&self, data_dir: &std::path::Path) -> Result<ObjectStorage, StorageError> {
        self.validate()?;
        if self.backend == "s3" {
            return self.open_s3();
        }
        let dir = if self.local.path.as_os_str().is_empty() {
            data_dir.join("blocks")
        } else {
            self.local.path.clone()
        };
        ObjectStorage::local(&dir)
    }

    #[cfg(feature = "s3")]
    fn open_s3(&self) -> Result<ObjectStorage, StorageError> {
        use object_store::aws::AmazonS3Builder;
        use std::sync::Arc;
        let s3 = &self.s3;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_allow_http(s3.allow_http)
            .with_virtual_hosted_style_request(!s3.path_style);
        if !s3.endpoint.is_empty() {
            builder = builder.with_endpoint(&s3.endpoint);
        }
        if !s3.access_key_id.is_empty() {
            builder =
                builder.with_access_key_id(&s3.access_key_id).with_secret_access_key(&s3.secret_access_key);
        }
        let store = builder.build().map_err(|e| StorageError::Config(format!("storage.s3: {e}")))?;
        let store: Arc<dyn object_store::ObjectStore> = if s3.prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, s3.prefix.as_str()))
        };
        Ok(ObjectStorage::new(store))
    }

    #[cfg(not(feature = "s3"))]
    fn open_s3(&self) -> Result<ObjectStorage, StorageError> {
        Err(StorageError::Config("storage.backend: this build of pharos has no S3 support".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_backends_are_named() {
        let mut config = StorageConfig { backend: "gcs".into(), ..StorageConfig::default() };
        assert!(config.validate().unwrap_err().to_string().contains("`gcs` is not one of local, s3"));
        config.backend = "s3".into();
        assert!(config.validate().unwrap_err().to_string().contains("storage.s3.bucket"));
        assert!(StorageConfig::default().validate().is_ok());
    }

    #[test]
    fn local_defaults_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        StorageConfig::default().open(dir.path()).unwrap();
        assert!(dir.path().join("blocks").is_dir());
    }
}
