/// The bounds every request is held to. Each has a configuration key of the same name under
/// `limits` (or `otlp.http`/`otlp.grpc` for the transport sizes) and an error that names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The largest HTTP request body, as sent (compressed or not).
    pub max_body_size: usize,
    /// The largest body after decompression, checked while decompressing.
    pub max_decompressed_size: usize,
    /// The most spans, data points or log records in one request.
    pub max_items_per_request: usize,
    /// The most attributes on one resource, scope, span, event, link, data point or log record.
    pub max_attributes: usize,
    pub max_attribute_key_length: usize,
    /// The longest string or bytes value of an attribute (or log body), in bytes.
    pub max_attribute_value_length: usize,
    /// How deep `kvlistValue` and `arrayValue` may nest.
    pub max_nesting_depth: usize,
    /// The most labels on one Prometheus series (`__name__` included).
    pub max_labels_per_series: usize,
    /// The longest label name and value, in bytes, of a Prometheus series or a Loki stream.
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    /// The most labels on one Loki stream (Loki's `max_label_names_per_series`).
    pub max_labels_per_stream: usize,
    /// The longest Loki log line, in bytes (Loki's `max_line_size`).
    pub max_line_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_size: 20 << 20,
            max_decompressed_size: 20 << 20,
            max_items_per_request: 100_000,
            max_attributes: 128,
            max_attribute_key_length: 1024,
            max_attribute_value_length: 64 << 10,
            max_nesting_depth: 16,
            // Mimir's defaults.
            max_labels_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            // Loki's defaults.
            max_labels_per_stream: 15,
            max_line_size: 256 << 10,
        }
    }
}
