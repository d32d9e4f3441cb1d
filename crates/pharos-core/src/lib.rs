//! The shared vocabulary of Pharos: tenants, signals, envelopes, error codes and partition keys.
//!
//! This crate does no I/O. Every other crate speaks in these types.

mod envelope;
mod error;
mod label_cap;
pub mod loki;
pub mod parallel;
mod partition;
pub mod prompb;
mod signal;
mod tenant;
pub mod time;
pub mod wire;

pub use envelope::{
    Envelope, EnvelopeError, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_BYTES, MAX_METADATA_VALUE_BYTES,
    Metadata, PayloadFormat,
};
pub use error::ErrorCode;
pub use label_cap::{LabelCap, OTHER_LABEL_VALUE};
pub use partition::{FNV_OFFSET, PartitionKey, fnv1a, fnv1a_extend, label_set_hash, partition_of};
pub use signal::Signal;
pub use tenant::{DEFAULT_TENANT, MAX_TENANT_BYTES, Tenant, TenantError};
