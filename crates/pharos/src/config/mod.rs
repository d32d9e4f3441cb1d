//! Configuration: one YAML file, every key overridable by an environment variable
//! (`PHAROS_<PATH>`, e.g. `PHAROS_QUEUE_FSYNC`) and by a flag (`--set queue.fsync=interval`).
//! Precedence: flag > environment > file > default. `default.yaml` is the commented default.

mod units;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

pub use units::{ByteSize, HumanDuration};

/// The full default configuration, with a comment on every key.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub api: ApiConfig,
    pub otlp: OtlpConfig,
    pub limits: LimitsConfig,
    pub queue: QueueConfig,
    pub processor: ProcessorConfig,
    pub metrics: MetricsConfig,
    pub traces: TracesConfig,
    pub logs: LogsConfig,
    pub storage: pharos_storage::StorageConfig,
    pub shutdown_timeout: HumanDuration,
    pub log: LogConfig,
    /// Processor definitions (`kind` or `kind/name` → its configuration), as in the Collector.
    pub processors: BTreeMap<String, Value>,
    /// Pipelines (`traces`, `logs/acme`, ...): which processors run, in order, for which tenants.
    pub pipelines: BTreeMap<String, pharos_pipeline::PipelineSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    pub grpc: OtlpGrpcConfig,
    pub http: OtlpHttpConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpGrpcConfig {
    pub listen: SocketAddr,
    pub max_message_size: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpHttpConfig {
    pub listen: SocketAddr,
    pub max_body_size: ByteSize,
    pub read_header_timeout: HumanDuration,
    pub request_timeout: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_decompressed_size: ByteSize,
    pub max_items_per_request: usize,
    pub max_attributes: usize,
    pub max_attribute_key_length: usize,
    pub max_attribute_value_length: usize,
    pub max_nesting_depth: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_labels_per_stream: usize,
    pub max_line_size: ByteSize,
    pub retry_after: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum QueueConfig {
    Wal(WalQueueConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    Always,
    Interval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalQueueConfig {
    pub partitions: u32,
    pub dir: Option<PathBuf>,
    pub fsync: FsyncMode,
    pub fsync_interval: HumanDuration,
    pub segment_size: ByteSize,
    pub disk_budget: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorConfig {
    pub batch_size: usize,
    pub commit_interval: HumanDuration,
    pub drain_timeout: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub flush_interval: HumanDuration,
    pub out_of_order_window: HumanDuration,
    pub max_series_per_tenant: usize,
    pub query_timeout: HumanDuration,
    pub max_query_samples: usize,
    pub block_range: HumanDuration,
    pub retention: HumanDuration,
    pub compaction_interval: HumanDuration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        let store = pharos_metrics::store::StoreOptions::default();
        MetricsConfig {
            flush_interval: HumanDuration(Duration::from_secs(60)),
            out_of_order_window: HumanDuration(Duration::ZERO),
            max_series_per_tenant: 150_000,
            query_timeout: HumanDuration(Duration::from_secs(120)),
            max_query_samples: 50_000_000,
            block_range: HumanDuration(store.block_range),
            retention: HumanDuration(store.retention),
            compaction_interval: HumanDuration(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    pub flush_interval: HumanDuration,
    pub max_block_spans: usize,
    pub retention: HumanDuration,
    pub compaction_interval: HumanDuration,
    pub max_trace_spans: usize,
    pub max_search_spans: usize,
    pub query_timeout: HumanDuration,
}

impl Default for TracesConfig {
    fn default() -> Self {
        let store = pharos_traces::store::StoreOptions::default();
        TracesConfig {
            flush_interval: HumanDuration(store.flush_interval),
            max_block_spans: store.max_block_spans,
            retention: HumanDuration(store.retention),
            compaction_interval: HumanDuration(Duration::from_secs(60)),
            max_trace_spans: store.max_trace_spans,
            max_search_spans: store.max_search_spans,
            query_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    pub flush_interval: HumanDuration,
    pub max_block_entries: usize,
    pub retention: HumanDuration,
    pub compaction_interval: HumanDuration,
    /// OTLP resource attributes that become stream labels (dots become underscores).
    pub stream_labels: Vec<String>,
    pub query_timeout: HumanDuration,
    pub max_query_bytes: ByteSize,
    pub max_entries: usize,
    pub max_series: usize,
}

impl Default for LogsConfig {
    fn default() -> Self {
        let store = pharos_logs::store::StoreOptions::default();
        let api = pharos_logs::api::ApiOptions::default();
        LogsConfig {
            flush_interval: HumanDuration(store.flush_interval),
            max_block_entries: store.max_block_entries,
            retention: HumanDuration(store.retention),
            compaction_interval: HumanDuration(Duration::from_secs(60)),
            stream_labels: store.mapping.resource_labels,
            query_timeout: HumanDuration(api.query_timeout),
            max_query_bytes: ByteSize(api.max_query_bytes),
            max_entries: api.max_entries,
            max_series: api.max_series,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("default addresses are valid")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            api: ApiConfig::default(),
            otlp: OtlpConfig::default(),
            limits: LimitsConfig::default(),
            queue: QueueConfig::Wal(WalQueueConfig::default()),
            processor: ProcessorConfig::default(),
            metrics: MetricsConfig::default(),
            traces: TracesConfig::default(),
            logs: LogsConfig::default(),
            storage: pharos_storage::StorageConfig::default(),
            shutdown_timeout: HumanDuration(Duration::from_secs(30)),
            log: LogConfig::default(),
            processors: BTreeMap::new(),
            pipelines: BTreeMap::new(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: addr("127.0.0.1:3000") }
    }
}

impl Default for OtlpGrpcConfig {
    fn default() -> Self {
        OtlpGrpcConfig { listen: addr("127.0.0.1:4317"), max_message_size: ByteSize(4 << 20) }
    }
}

impl Default for OtlpHttpConfig {
    fn default() -> Self {
        OtlpHttpConfig {
            listen: addr("127.0.0.1:4318"),
            max_body_size: ByteSize(20 << 20),
            read_header_timeout: HumanDuration(Duration::from_secs(10)),
            request_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = pharos_ingest::Limits::default();
        LimitsConfig {
            max_decompressed_size: ByteSize(l.max_decompressed_size as u64),
            max_items_per_request: l.max_items_per_request,
            max_attributes: l.max_attributes,
            max_attribute_key_length: l.max_attribute_key_length,
            max_attribute_value_length: l.max_attribute_value_length,
            max_nesting_depth: l.max_nesting_depth,
            max_labels_per_series: l.max_labels_per_series,
            max_label_name_length: l.max_label_name_length,
            max_label_value_length: l.max_label_value_length,
            max_labels_per_stream: l.max_labels_per_stream,
            max_line_size: ByteSize(l.max_line_size as u64),
            retry_after: HumanDuration(Duration::from_secs(1)),
        }
    }
}

impl Default for WalQueueConfig {
    fn default() -> Self {
        WalQueueConfig {
            partitions: 0,
            dir: None,
            fsync: FsyncMode::Always,
            fsync_interval: HumanDuration(Duration::from_millis(100)),
            segment_size: ByteSize(64 << 20),
            disk_budget: ByteSize(4 << 30),
        }
    }
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            batch_size: 1024,
            commit_interval: HumanDuration(Duration::from_millis(200)),
            drain_timeout: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

impl Config {
    pub fn ingest_limits(&self) -> pharos_ingest::Limits {
        pharos_ingest::Limits {
            max_body_size: self.otlp.http.max_body_size.0 as usize,
            max_decompressed_size: self.limits.max_decompressed_size.0 as usize,
            max_items_per_request: self.limits.max_items_per_request,
            max_attributes: self.limits.max_attributes,
            max_attribute_key_length: self.limits.max_attribute_key_length,
            max_attribute_value_length: self.limits.max_attribute_value_length,
            max_nesting_depth: self.limits.max_nesting_depth,
            max_labels_per_series: self.limits.max_labels_per_series,
            max_label_name_length: self.limits.max_label_name_length,
            max_label_value_length: self.limits.max_label_value_length,
            max_labels_per_stream: self.limits.max_labels_per_stream,
            max_line_size: self.limits.max_line_size.0 as usize,
        }
    }

    /// The `processors` and `pipelines` sections.
    pub fn pipelines_config(&self) -> pharos_pipeline::PipelinesConfig {
        pharos_pipeline::PipelinesConfig {
            processors: self.processors.clone(),
            pipelines: self.pipelines.clone(),
        }
    }

    pub fn wal(&self) -> &WalQueueConfig {
        match &self.queue {
            QueueConfig::Wal(w) => w,
        }
    }

    /// The number of queue partitions: as configured, or the number of cores for 0.
    pub fn partitions(&self) -> u32 {
        match self.wal().partitions {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        }
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.wal().dir.clone().unwrap_or_else(|| self.data_dir.join("wal"))
    }
}

/// One problem with a configuration, at a key path such as `queue.fsync`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Checks the values of a configuration that deserialized. Pure: no I/O.
impl Config {
    /// The log store's options from the `logs:` section.
    pub fn log_store_options(&self) -> pharos_logs::store::StoreOptions {
        pharos_logs::store::StoreOptions {
            flush_interval: self.logs.flush_interval.0,
            max_block_entries: self.logs.max_block_entries,
            retention: self.logs.retention.0,
            mapping: pharos_logs::decode::StreamMapping { resource_labels: self.logs.stream_labels.clone() },
            ..pharos_logs::store::StoreOptions::default()
        }
    }

    /// The Loki API's options from the `logs:` section.
    pub fn log_api_options(&self) -> pharos_logs::api::ApiOptions {
        pharos_logs::api::ApiOptions {
            query_timeout: self.logs.query_timeout.0,
            max_query_bytes: self.logs.max_query_bytes.0,
            max_entries: self.logs.max_entries,
            max_series: self.logs.max_series,
        }
    }

    /// The metrics store's options from the `metrics:` section.
    pub fn metrics_store_options(&self) -> pharos_metrics::store::StoreOptions {
        pharos_metrics::store::StoreOptions {
            block_range: self.metrics.block_range.0,
            retention: self.metrics.retention.0,
            ..pharos_metrics::store::StoreOptions::default()
        }
    }

    /// The trace store's options from the `traces:` section.
    pub fn trace_store_options(&self) -> pharos_traces::store::StoreOptions {
        pharos_traces::store::StoreOptions {
            flush_interval: self.traces.flush_interval.0,
            max_block_spans: self.traces.max_block_spans,
            retention: self.traces.retention.0,
            max_trace_spans: self.traces.max_trace_spans,
            max_search_spans: self.traces.max_search_spans,
            ..pharos_traces::store::StoreOptions::default()
        }
    }
}

pub fn validate(config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut check = |ok: bool, path: &str, reason: &str| {
        if !ok {
            issues.push(ConfigIssue { path: path.into(), reason: reason.into() });
        }
    };
    let wal = config.wal();
    check(wal.partitions <= 1024, "queue.partitions", "must be at most 1024 (0 means one per core)");
    check(wal.segment_size.0 >= 4096, "queue.segment_size", "must be at least 4KiB");
    check(
        wal.disk_budget.0 >= wal.segment_size.0,
        "queue.disk_budget",
        "must be at least queue.segment_size",
    );
    check(!wal.fsync_interval.0.is_zero(), "queue.fsync_interval", "must be more than zero");
    check(config.otlp.grpc.max_message_size.0 >= 1024, "otlp.grpc.max_message_size", "must be at least 1KiB");
    check(config.otlp.http.max_body_size.0 >= 1024, "otlp.http.max_body_size", "must be at least 1KiB");
    check(
        config.limits.max_decompressed_size.0 >= 1024,
        "limits.max_decompressed_size",
        "must be at least 1KiB",
    );
    check(config.limits.max_items_per_request > 0, "limits.max_items_per_request", "must be more than zero");
    check(config.limits.max_labels_per_stream > 0, "limits.max_labels_per_stream", "must be more than zero");
    check(config.limits.max_line_size.0 > 0, "limits.max_line_size", "must be more than zero");
    check(
        (1..=64).contains(&config.limits.max_nesting_depth),
        "limits.max_nesting_depth",
        "must be between 1 and 64",
    );
    check(!config.metrics.flush_interval.0.is_zero(), "metrics.flush_interval", "must be more than zero");
    check(!config.metrics.query_timeout.0.is_zero(), "metrics.query_timeout", "must be more than zero");
    check(config.metrics.max_query_samples > 0, "metrics.max_query_samples", "must be more than zero");
    check(
        config.metrics.block_range.0 >= Duration::from_secs(60)
            && config.metrics.block_range.0.as_millis().is_multiple_of(60_000),
        "metrics.block_range",
        "must be a whole number of minutes, at least 1m",
    );
    check(
        config.metrics.retention.0 >= config.metrics.block_range.0,
        "metrics.retention",
        "must be at least metrics.block_range",
    );
    check(
        !config.metrics.compaction_interval.0.is_zero(),
        "metrics.compaction_interval",
        "must be more than zero",
    );
    check(config.processor.batch_size > 0, "processor.batch_size", "must be more than zero");
    check(!config.traces.flush_interval.0.is_zero(), "traces.flush_interval", "must be more than zero");
    check(config.traces.max_block_spans > 0, "traces.max_block_spans", "must be more than zero");
    check(!config.traces.retention.0.is_zero(), "traces.retention", "must be more than zero");
    check(
        !config.traces.compaction_interval.0.is_zero(),
        "traces.compaction_interval",
        "must be more than zero",
    );
    check(config.traces.max_trace_spans > 0, "traces.max_trace_spans", "must be more than zero");
    check(config.traces.max_search_spans > 0, "traces.max_search_spans", "must be more than zero");
    check(!config.traces.query_timeout.0.is_zero(), "traces.query_timeout", "must be more than zero");
    check(!config.logs.flush_interval.0.is_zero(), "logs.flush_interval", "must be more than zero");
    check(config.logs.max_block_entries > 0, "logs.max_block_entries", "must be more than zero");
    check(!config.logs.retention.0.is_zero(), "logs.retention", "must be more than zero");
    check(!config.logs.compaction_interval.0.is_zero(), "logs.compaction_interval", "must be more than zero");
    check(!config.logs.query_timeout.0.is_zero(), "logs.query_timeout", "must be more than zero");
    check(config.logs.max_entries > 0, "logs.max_entries", "must be more than zero");
    check(config.logs.max_series > 0, "logs.max_series", "must be more than zero");
    if let Err(e) = config.storage.validate() {
        let text = e.to_string();
        let text = text.strip_prefix("storage configuration: ").unwrap_or(&text);
        let (path, reason) = text.split_once(": ").unwrap_or(("storage", text));
        check(false, path, reason);
    }
    check(
        !config.otlp.http.request_timeout.0.is_zero(),
        "otlp.http.request_timeout",
        "must be more than zero",
    );
    check(
        tracing_subscriber::EnvFilter::try_new(&config.log.level).is_ok(),
        "log.level",
        "is not a log filter such as info, debug or pharos=debug,info",
    );
    for e in config.pipelines_config().validate() {
        issues.push(ConfigIssue { path: e.path, reason: e.message });
    }
    let listens = [
        ("api.listen", config.api.listen),
        ("otlp.grpc.listen", config.otlp.grpc.listen),
        ("otlp.http.listen", config.otlp.http.listen),
    ];
    for (i, (path, a)) in listens.iter().enumerate() {
        for (other, b) in &listens[..i] {
            if a == b && a.port() != 0 {
                issues.push(ConfigIssue {
                    path: (*path).into(),
                    reason: format!("uses the same address as {other}"),
                });
            }
        }
    }
    issues
}

/// Every leaf key path of the default configuration, with its value.
fn leaves(value: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().unwrap_or_default();
                let path = if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
                leaves(v, &path, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn default_value() -> Value {
    serde_yaml::to_value(Config::default()).expect("the default configuration serializes")
}

/// The environment variable that overrides a key path.
pub fn env_name(path: &str) -> String {
    format!("PHAROS_{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Every configuration key path (of the default queue kind).
pub fn key_paths() -> Vec<String> {
    let mut out = BTreeMap::new();
    leaves(&default_value(), "", &mut out);
    out.into_keys().collect()
}

fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    for part in path.split('.') {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("just made a mapping");
        node = map.entry(Value::String(part.to_string())).or_insert(Value::Null);
    }
    *node = value;
}

/// Reads an override's text as a YAML scalar, so `8` is a number and `always` a string.
fn scalar(text: &str) -> Value {
    serde_yaml::from_str::<Value>(text)
        .ok()
        .filter(|v| !v.is_mapping() && !v.is_sequence())
        .unwrap_or_else(|| Value::String(text.to_string()))
}

fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, over) => *slot = over,
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration is not valid YAML: {0}")]
    Yaml(serde_yaml::Error),
    #[error("{}", .0.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

/// A configuration and what was odd about how it was given (e.g. `PHAROS_*` variables that name
/// no key), to be logged once logging is up.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Loads a configuration: defaults, then the file, then `PHAROS_*` variables from `env`, then
/// `--set` overrides. Returns every issue found, each with its key path. A `PHAROS_*` variable that
/// names no key is a warning (other tools may share the prefix); a `--set` that names none is an
/// error.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let file_value = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            parse_yaml(&text)?
        }
        None => Value::Mapping(Mapping::new()),
    };
    let mut issues = unknown_keys(&file_value);
    let mut overrides = Value::Mapping(Mapping::new());
    let known: BTreeMap<String, String> = key_paths().into_iter().map(|p| (env_name(&p), p)).collect();
    for (name, value) in env {
        if !name.starts_with("PHAROS_") || name == "PHAROS_CONFIG" {
            continue;
        }
        match known.get(&name) {
            Some(path) => set_path(&mut overrides, path, scalar(&value)),
            None => {
                warnings.push(format!("environment variable {name} names no configuration key, ignoring it"))
            }
        }
    }
    for set in sets {
        match set.split_once('=') {
            Some((path, value)) if known.contains_key(&env_name(path.trim())) => {
                set_path(&mut overrides, path.trim(), scalar(value))
            }
            Some((path, _)) => issues.push(ConfigIssue {
                path: path.trim().into(),
                reason: "--set names no configuration key".into(),
            }),
            None => {
                issues.push(ConfigIssue { path: set.clone(), reason: "--set takes key.path=value".into() })
            }
        }
    }
    let mut merged = file_value;
    deep_merge(&mut merged, overrides);
    if !issues.is_empty() {
        issues.extend(type_issues(&merged));
        return Err(ConfigError::Invalid(issues));
    }
    // Overrides alone may name a key of a tagged section (queue.partitions) without its tag:
    // the defaults underneath supply it.
    let mut full = default_value();
    deep_merge(&mut full, merged.clone());
    let config = deserialize(&full).map_err(|first| {
        let issues = type_issues(&merged);
        ConfigError::Invalid(if issues.is_empty() { vec![first] } else { issues })
    })?;
    let issues = validate(&config);
    if issues.is_empty() { Ok(Loaded { config, warnings }) } else { Err(ConfigError::Invalid(issues)) }
}

fn parse_yaml(text: &str) -> Result<Value, ConfigError> {
    match serde_yaml::from_str::<Value>(text).map_err(ConfigError::Yaml)? {
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        v @ Value::Mapping(_) => Ok(v),
        _ => Err(ConfigError::Invalid(vec![ConfigIssue {
            path: "(top)".into(),
            reason: "the configuration must be a mapping of keys".into(),
        }])),
    }
}

fn deserialize(value: &Value) -> Result<Config, ConfigIssue> {
    serde_path_to_error::deserialize::<_, Config>(value.clone())
        .map_err(|e| ConfigIssue { path: e.path().to_string(), reason: e.inner().to_string() })
}

/// Keys in `value` that the configuration does not have.
fn unknown_keys(value: &Value) -> Vec<ConfigIssue> {
    fn walk(given: &Value, known: &Value, prefix: &str, out: &mut Vec<ConfigIssue>) {
        let (Value::Mapping(g), Value::Mapping(k)) = (given, known) else { return };
        for (key, v) in g {
            let name = key.as_str().map_or_else(|| format!("{key:?}"), str::to_string);
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            match k.get(key) {
                // A section of free keys (processors, pipelines): checked by its own validation.
                Some(Value::Mapping(free)) if free.is_empty() => {}
                Some(kv) => walk(v, kv, &path, out),
                None => out.push(ConfigIssue { path, reason: "unknown key".into() }),
            }
        }
    }
    let mut out = Vec::new();
    walk(value, &default_value(), "", &mut out);
    out
}

/// Tries each given leaf on its own over the defaults, so that every bad value is reported with
/// its path, not just the first.
fn type_issues(value: &Value) -> Vec<ConfigIssue> {
    let mut given = BTreeMap::new();
    leaves(value, "", &mut given);
    let known = key_paths();
    let mut out = Vec::new();
    for (path, v) in given {
        if !known.contains(&path) {
            continue; // reported as an unknown key
        }
        let mut probe = default_value();
        set_path(&mut probe, &path, v);
        if let Err(mut issue) = deserialize(&probe) {
            if issue.path.is_empty() || issue.path == "." || issue.path == "queue" {
                issue.path = path.clone();
            }
            out.push(issue);
        }
    }
    out
}

/// `pharos config check`: every issue of a configuration file, or none.
pub fn check_file(path: &Path) -> Result<Vec<ConfigIssue>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let value = match parse_yaml(&text) {
        Ok(v) => v,
        Err(ConfigError::Invalid(issues)) => return Ok(issues),
        Err(e) => return Err(e),
    };
    let mut issues = unknown_keys(&value);
    issues.extend(type_issues(&value));
    if issues.is_empty() {
        match deserialize(&value) {
            Ok(config) => issues.extend(validate(&config)),
            Err(issue) => issues.push(issue),
        }
    }
    Ok(issues)
}

#[cfg(test)]
mod tests;
