//! Checks of single items against the [`Limits`]: ids, attribute counts, lengths and nesting.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::Limits;

/// Why an item was refused: a bounded reason label and a message naming the limit and the value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Violation {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// The items refused while validating one request.
#[derive(Debug, Default)]
pub struct Rejections {
    pub(crate) count: u64,
    pub(crate) first: Option<String>,
    pub(crate) by_reason: Vec<(&'static str, u64)>,
}

impl Rejections {
    pub(crate) fn add(&mut self, violation: Violation, items: u64) {
        if items == 0 {
            return;
        }
        self.count += items;
        match self.by_reason.iter_mut().find(|(r, _)| *r == violation.reason) {
            Some((_, n)) => *n += items,
            None => self.by_reason.push((violation.reason, items)),
        }
        if self.first.is_none() {
            self.first = Some(violation.message);
        }
    }
}

pub(crate) fn too_many_attributes(owner: &str, count: usize, limits: &Limits) -> Violation {
    Violation {
        reason: "too_many_attributes",
        message: format!(
            "{owner} has {count} attributes, over the limit max_attributes of {}",
            limits.max_attributes
        ),
    }
}

pub(crate) fn key_too_long(owner: &str, len: usize, limits: &Limits) -> Violation {
    Violation {
        reason: "attribute_key_too_long",
        message: format!(
            "{owner} has an attribute key of {len} bytes, over the limit max_attribute_key_length of {}",
            limits.max_attribute_key_length
        ),
    }
}

pub(crate) fn nested_key_too_long(owner: &str, key: &str, len: usize, limits: &Limits) -> Violation {
    Violation {
        reason: "attribute_key_too_long",
        message: format!(
            "{owner} attribute {key:?} holds a key of {len} bytes, over the limit max_attribute_key_length of {}",
            limits.max_attribute_key_length
        ),
    }
}

pub(crate) fn value_too_long(owner: &str, key: &str, len: usize, limits: &Limits) -> Violation {
    Violation {
        reason: "attribute_value_too_long",
        message: format!(
            "{owner} attribute {key:?} has a value of {len} bytes, over the limit max_attribute_value_length of {}",
            limits.max_attribute_value_length
        ),
    }
}

pub(crate) fn nesting_too_deep(owner: &str, key: &str, limits: &Limits) -> Violation {
    Violation {
        reason: "nesting_too_deep",
        message: format!(
            "{owner} attribute {key:?} nests arrays or kvlists more than {} levels deep (the limit max_nesting_depth)",
            limits.max_nesting_depth
        ),
    }
}

pub(crate) fn check_attributes(attrs: &[KeyValue], limits: &Limits, owner: &str) -> Result<(), Violation> {
    if attrs.len() > limits.max_attributes {
        return Err(too_many_attributes(owner, attrs.len(), limits));
    }
    for kv in attrs {
        check_key_value(kv, limits, owner)?;
    }
    Ok(())
}

fn check_key_value(kv: &KeyValue, limits: &Limits, owner: &str) -> Result<(), Violation> {
    if kv.key.len() > limits.max_attribute_key_length {
        return Err(key_too_long(owner, kv.key.len(), limits));
    }
    if let Some(v) = &kv.value {
        check_value(v, limits, owner, &kv.key, 0)?;
    }
    Ok(())
}

/// Checks a value's string lengths and nesting. `depth` is how many arrays or kvlists enclose it.
pub(crate) fn check_value(
    value: &AnyValue,
    limits: &Limits,
    owner: &str,
    key: &str,
    depth: usize,
) -> Result<(), Violation> {
    match &value.value {
        Some(Value::StringValue(s)) if s.len() > limits.max_attribute_value_length => {
            Err(value_too_long(owner, key, s.len(), limits))
        }
        Some(Value::BytesValue(b)) if b.len() > limits.max_attribute_value_length => {
            Err(value_too_long(owner, key, b.len(), limits))
        }
        Some(Value::ArrayValue(a)) => {
            if depth + 1 > limits.max_nesting_depth {
                return Err(nesting_too_deep(owner, key, limits));
            }
            a.values.iter().try_for_each(|v| check_value(v, limits, owner, key, depth + 1))
        }
        Some(Value::KvlistValue(kvs)) => {
            if depth + 1 > limits.max_nesting_depth {
                return Err(nesting_too_deep(owner, key, limits));
            }
            for kv in &kvs.values {
                if kv.key.len() > limits.max_attribute_key_length {
                    return Err(nested_key_too_long(owner, key, kv.key.len(), limits));
                }
                if let Some(v) = &kv.value {
                    check_value(v, limits, owner, key, depth + 1)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks an id field: `required` ids must be present; present ids must have `len` bytes and not
/// be all zero.
pub(crate) fn check_id(
    id: &[u8],
    len: usize,
    required: bool,
    owner: &str,
    field: &str,
) -> Result<(), Violation> {
    if id.is_empty() && !required {
        return Ok(());
    }
    let reason = if field.contains("trace") { "invalid_trace_id" } else { "invalid_span_id" };
    if id.len() != len {
        return Err(Violation {
            reason,
            message: format!("{owner} has a {field} of {} bytes; it must be {len} bytes", id.len()),
        });
    }
    if id.iter().all(|&b| b == 0) {
        return Err(Violation { reason, message: format!("{owner} has an all-zero {field}") });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn nested(depth: usize) -> Value {
        let mut v = Value::IntValue(1);
        for _ in 0..depth {
            v = Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(v) }] });
        }
        v
    }

    #[test]
    fn check_attributes_names_each_limit_it_enforces() {
        let limits = Limits {
            max_attributes: 2,
            max_attribute_key_length: 4,
            max_attribute_value_length: 5,
            max_nesting_depth: 3,
            ..Limits::default()
        };
        let three: Vec<_> = (0..3).map(|i| kv(&format!("k{i}"), Value::IntValue(i))).collect();
        let err = check_attributes(&three, &limits, "span").unwrap_err();
        assert_eq!(err.reason, "too_many_attributes");
        assert!(err.message.contains("3 attributes") && err.message.contains("max_attributes of 2"));

        let err = check_attributes(&[kv("longkey", Value::IntValue(1))], &limits, "span").unwrap_err();
        assert_eq!(err.reason, "attribute_key_too_long");

        let err =
            check_attributes(&[kv("k", Value::StringValue("abcdef".into()))], &limits, "span").unwrap_err();
        assert!(err.message.contains("max_attribute_value_length of 5"), "{}", err.message);

        assert!(check_attributes(&[kv("k", nested(3))], &limits, "span").is_ok());
        let err = check_attributes(&[kv("k", nested(4))], &limits, "span").unwrap_err();
        assert_eq!(err.reason, "nesting_too_deep");

        let inner =
            Value::KvlistValue(KeyValueList { values: vec![kv("x", Value::StringValue("toolong".into()))] });
        assert!(check_attributes(&[kv("k", inner)], &limits, "span").is_err());
    }

    #[test]
    fn check_id_refuses_wrong_length_and_all_zero_ids() {
        assert!(check_id(&[1; 16], 16, true, "span", "trace_id").is_ok());
        assert!(check_id(&[], 16, false, "log record", "trace_id").is_ok());
        assert_eq!(check_id(&[], 16, true, "span", "trace_id").unwrap_err().reason, "invalid_trace_id");
        assert!(check_id(&[1; 4], 16, true, "span", "trace_id").unwrap_err().message.contains("4 bytes"));
        assert!(check_id(&[0; 8], 8, true, "span", "span_id").unwrap_err().message.contains("all-zero"));
    }
}
