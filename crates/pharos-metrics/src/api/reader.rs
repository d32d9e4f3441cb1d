//! What the API reads: per tenant, a series source plus the metadata queries.

use std::sync::Arc;

use pharos_core::Tenant;

use crate::model::Labels;
use crate::query::{Matcher, QueryError, SeriesSource};
use crate::store::{Head, Heads, Metadata, SeriesExemplars};

/// One tenant's readable metrics: PromQL's [`SeriesSource`] and the lookups behind the
/// labels, series, metadata and exemplar endpoints. Matcher sets are alternatives (a
/// series matches if it matches any set); no sets means every series.
pub trait MetricsReader: SeriesSource {
    /// Label names of matching series with samples in `[mint, maxt]`, sorted.
    fn label_names(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Result<Vec<String>, QueryError>;
    /// Values of label `name` among matching series with samples in `[mint, maxt]`, sorted.
    fn label_values(
        &self,
        name: &str,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, QueryError>;
    /// Labels of matching series with samples in `[mint, maxt]`, sorted.
    fn series(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Result<Vec<Labels>, QueryError>;
    /// Metadata by metric name (only `metric` if given), at most `limit` names.
    fn metadata(&self, metric: Option<&str>, limit: Option<usize>) -> Vec<(String, Metadata)>;
    /// Exemplars in `[mint, maxt]` of matching series.
    fn exemplars(
        &self,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesExemplars>, QueryError>;
}

/// Gives the reader of a tenant; unknown tenants read as empty.
pub trait TenantReaders: Send + Sync {
    /// The tenant's reader.
    fn reader(&self, tenant: &Tenant) -> Arc<dyn MetricsReader>;
}

impl MetricsReader for Head {
    fn label_names(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Result<Vec<String>, QueryError> {
        Ok(Head::label_names(self, sets, mint, maxt))
    }

    fn label_values(
        &self,
        name: &str,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, QueryError> {
        Ok(Head::label_values(self, name, sets, mint, maxt))
    }

    fn series(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Result<Vec<Labels>, QueryError> {
        Ok(self.series_matching(sets, mint, maxt))
    }

    fn metadata(&self, metric: Option<&str>, limit: Option<usize>) -> Vec<(String, Metadata)> {
        Head::metadata(self, metric, limit)
    }

    fn exemplars(
        &self,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesExemplars>, QueryError> {
        Ok(Head::exemplars(self, sets, mint, maxt))
    }
}

impl TenantReaders for Heads {
    fn reader(&self, tenant: &Tenant) -> Arc<dyn MetricsReader> {
        self.get_or_empty(tenant)
    }
}
