//! The `batch` processor: merges small requests of one tenant into larger ones, released when
//! `send_batch_size` items are held or `timeout` has passed since the first one arrived, so that
//! the processors after it (and the stores) see fewer, larger batches. The queue offset of the
//! oldest held record stays uncommitted until its batch is released.
//!
//! ```yaml
//! processors:
//!   batch:
//!     send_batch_size: 8192     # release at this many items (default 8192)
//!     send_batch_max_size: 0    # split larger batches to at most this many items? 0: no limit
//!     timeout: 200ms            # release at least this often (default 200ms)
//! ```
//! `send_batch_max_size` is accepted for compatibility with the Collector; batches are
//! released whole (a request is never split).

use std::{collections::HashMap, time::Duration};

use pharos_core::{Signal, Tenant};
use pharos_queue::Offset;
use serde::Deserialize;

use super::{Batch, ConfigError, Context, Data, Processor, parse_config};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    send_batch_size: u64,
    send_batch_max_size: u64,
    #[serde(deserialize_with = "super::duration::deserialize")]
    timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { send_batch_size: 8192, send_batch_max_size: 0, timeout: Duration::from_millis(200) }
    }
}

pub fn build(config: &serde_yaml::Value, _signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    let config: Config = if config.is_null() { Config::default() } else { parse_config(config)? };
    if config.send_batch_size == 0 {
        return Err(ConfigError::new("send_batch_size", "must be at least 1"));
    }
    if config.timeout.is_zero() {
        return Err(ConfigError::new("timeout", "must be more than 0"));
    }
    Ok(Box::new(BatchProcessor { config, held: HashMap::new() }))
}

struct Held {
    batch: Batch,
    items: u64,
    since: u64,
}

struct BatchProcessor {
    config: Config,
    held: HashMap<Tenant, Held>,
}

fn merge(into: &mut Data, from: Data) {
    match (into, from) {
        (Data::Traces(a), Data::Traces(b)) => a.resource_spans.extend(b.resource_spans),
        (Data::Logs(a), Data::Logs(b)) => a.resource_logs.extend(b.resource_logs),
        (Data::Metrics(a), Data::Metrics(b)) => a.resource_metrics.extend(b.resource_metrics),
        // One pipeline carries one signal; a batch of another signal never reaches here.
        _ => {}
    }
}

impl Processor for BatchProcessor {
    fn process(&mut self, batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        let items = batch.data.items();
        if items == 0 {
            return;
        }
        let tenant = batch.tenant.clone();
        let held = match self.held.remove(&tenant) {
            Some(mut held) => {
                held.batch.offset = held.batch.offset.min(batch.offset);
                merge(&mut held.batch.data, batch.data);
                held.items += items;
                held
            }
            None => Held { batch, items, since: ctx.now_unix_nanos },
        };
        if held.items >= self.config.send_batch_size {
            out.push(held.batch);
        } else {
            self.held.insert(tenant, held);
        }
    }

    fn tick(&mut self, ctx: &mut Context, closing: bool, out: &mut Vec<Batch>) {
        let timeout = self.config.timeout.as_nanos() as u64;
        let due: Vec<Tenant> = self
            .held
            .iter()
            .filter(|(_, h)| closing || ctx.now_unix_nanos.saturating_sub(h.since) >= timeout)
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in due {
            if let Some(held) = self.held.remove(&tenant) {
                out.push(held.batch);
            }
        }
    }

    fn held_offset(&self) -> Option<Offset> {
        self.held.values().map(|h| h.batch.offset).min()
    }

    fn held_items(&self) -> u64 {
        self.held.values().map(|h| h.items).sum()
    }

    fn held_bytes(&self) -> u64 {
        // An estimate: the exact encoded size would cost a walk over every item.
        self.held.values().map(|h| h.items * 256).sum()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };

    use super::*;

    fn logs(n: usize) -> Data {
        Data::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn processor(yaml: &str) -> Box<dyn Processor> {
        build(&serde_yaml::from_str(yaml).expect("yaml"), Signal::Logs).expect("valid")
    }

    #[test]
    fn batch_small_requests_merge_until_size_then_release_with_oldest_offset() {
        let mut p = processor("send_batch_size: 10\ntimeout: 1s");
        let tenant = Tenant::default_tenant();
        let mut out = Vec::new();
        let mut ctx = Context::at(0);
        p.process(Batch::new(tenant.clone(), 5, logs(4)), &mut ctx, &mut out);
        p.process(Batch::new(tenant.clone(), 6, logs(4)), &mut ctx, &mut out);
        assert!(out.is_empty());
        assert_eq!(p.held_offset(), Some(5));
        p.process(Batch::new(tenant, 7, logs(4)), &mut ctx, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.items(), 12);
        assert_eq!(out[0].offset, 5);
        assert_eq!(p.held_offset(), None);
    }

    #[test]
    fn batch_timeout_and_closing_release_what_is_held() {
        let mut p = processor("send_batch_size: 100\ntimeout: 1s");
        let mut out = Vec::new();
        p.process(Batch::new(Tenant::default_tenant(), 1, logs(3)), &mut Context::at(0), &mut out);
        p.tick(&mut Context::at(999_999_999), false, &mut out);
        assert!(out.is_empty());
        p.tick(&mut Context::at(1_000_000_000), false, &mut out);
        assert_eq!(out.len(), 1);
        p.process(Batch::new(Tenant::default_tenant(), 2, logs(3)), &mut Context::at(0), &mut out);
        p.tick(&mut Context::at(0), true, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn batch_tenants_are_never_merged() {
        let mut p = processor("send_batch_size: 5");
        let mut out = Vec::new();
        let a = Tenant::parse("a").expect("tenant");
        let b = Tenant::parse("b").expect("tenant");
        p.process(Batch::new(a, 1, logs(3)), &mut Context::at(0), &mut out);
        p.process(Batch::new(b, 2, logs(3)), &mut Context::at(0), &mut out);
        assert!(out.is_empty());
        p.tick(&mut Context::at(0), true, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|b| b.data.items() == 3));
    }

    #[test]
    fn batch_zero_size_is_refused_with_its_key() {
        let err = build(&serde_yaml::from_str("send_batch_size: 0").expect("yaml"), Signal::Logs).err();
        assert_eq!(err.map(|e| e.path), Some("send_batch_size".to_string()));
    }
}
