//! The `memory_limiter` processor: stops the pipeline from taking new data while the process's
//! resident memory is above a limit. Pharos's processors read from a durable queue, so pushing
//! back costs nothing but latency: records wait in the queue (and when its disk budget is
//! spent, receivers answer 503 with `Retry-After`), while the processors keep ticking and
//! release what they hold (tail-sampling decisions, batches). Data is never dropped here.
//!
//! ```yaml
//! processors:
//!   memory_limiter:
//!     check_interval: 1s     # how often resident memory is read (default 1s)
//!     limit_mib: 1536        # stop taking data above this resident size
//!     spike_limit_mib: 256   # start again once below limit_mib - spike_limit_mib (default limit/5)
//! ```

use std::time::Duration;

use pharos_core::Signal;
use serde::Deserialize;

use super::{Batch, ConfigError, Context, Processor, parse_config};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "one_second", deserialize_with = "super::duration::deserialize")]
    check_interval: Duration,
    limit_mib: u64,
    spike_limit_mib: Option<u64>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

pub fn build(config: &serde_yaml::Value, _signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    let config: Config = parse_config(config)?;
    if config.limit_mib == 0 {
        return Err(ConfigError::new("limit_mib", "must be at least 1"));
    }
    let spike = config.spike_limit_mib.unwrap_or(config.limit_mib / 5);
    if spike >= config.limit_mib {
        return Err(ConfigError::new("spike_limit_mib", "must be less than limit_mib"));
    }
    Ok(Box::new(MemoryLimiter {
        check_every: config.check_interval.as_nanos() as u64,
        high: config.limit_mib << 20,
        low: (config.limit_mib - spike) << 20,
        last_check: None,
        limited: false,
        read: resident_bytes,
    }))
}

/// The resident set size of this process (Linux `/proc/self/status`), `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

struct MemoryLimiter {
    check_every: u64,
    high: u64,
    low: u64,
    last_check: Option<u64>,
    limited: bool,
    read: fn() -> Option<u64>,
}

impl MemoryLimiter {
    fn check(&mut self, ctx: &mut Context) {
        if self.last_check.is_some_and(|t| ctx.now_unix_nanos.saturating_sub(t) < self.check_every) {
            return;
        }
        self.last_check = Some(ctx.now_unix_nanos);
        let Some(rss) = (self.read)() else { return };
        let was = self.limited;
        self.limited = if self.limited { rss > self.low } else { rss > self.high };
        if self.limited && !was {
            ctx.count("memory_limited", 1);
            tracing::warn!(
                resident_bytes = rss,
                limit_bytes = self.high,
                "memory above the limit, pausing the pipeline"
            );
        } else if was && !self.limited {
            tracing::info!(resident_bytes = rss, "memory below the limit again, resuming the pipeline");
        }
    }
}

impl Processor for MemoryLimiter {
    fn process(&mut self, batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        self.check(ctx);
        out.push(batch);
    }

    fn tick(&mut self, ctx: &mut Context, _closing: bool, _out: &mut Vec<Batch>) {
        self.check(ctx);
    }

    fn pressure(&self) -> bool {
        self.limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(read: fn() -> Option<u64>) -> MemoryLimiter {
        MemoryLimiter {
            check_every: 1_000,
            high: 100 << 20,
            low: 80 << 20,
            last_check: None,
            limited: false,
            read,
        }
    }

    #[test]
    fn memory_limiter_pushes_back_above_the_limit_until_below_the_spike_margin() {
        let mut m = limiter(|| Some(120 << 20));
        let mut ctx = Context::at(0);
        m.tick(&mut ctx, false, &mut Vec::new());
        assert!(m.pressure());
        assert_eq!(ctx.counted_for("memory_limited"), 1);
        m.read = || Some(90 << 20); // below the limit, above the low mark: still limited
        m.tick(&mut Context::at(2_000), false, &mut Vec::new());
        assert!(m.pressure());
        m.read = || Some(70 << 20);
        m.tick(&mut Context::at(2_500), false, &mut Vec::new()); // not yet time to check
        assert!(m.pressure());
        m.tick(&mut Context::at(4_000), false, &mut Vec::new());
        assert!(!m.pressure());
    }

    #[test]
    fn memory_limiter_reads_this_process_resident_size() {
        let rss = resident_bytes().expect("linux /proc");
        assert!(rss > 1 << 20, "{rss}");
    }

    #[test]
    fn memory_limiter_spike_not_below_limit_is_refused() {
        let err = build(
            &serde_yaml::from_str("limit_mib: 100\nspike_limit_mib: 100").expect("yaml"),
            Signal::Traces,
        )
        .err();
        assert_eq!(err.map(|e| e.path), Some("spike_limit_mib".into()));
    }
}
