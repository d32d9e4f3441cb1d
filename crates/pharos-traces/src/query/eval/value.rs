//! Values: the owned [`Value`] that results carry, and the borrowed `Val` that evaluation
//! computes with, with TraceQL's comparison and arithmetic rules.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::{self, Display, Formatter};
use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, any_value};

use crate::query::{BinaryOp, Kind, Static, Status};

/// A TraceQL value in a result: a span attribute, a spanset attribute or a series label.
///
/// OTLP string, int, double and bool attributes become [`Value::String`], [`Value::Int`],
/// [`Value::Float`] and [`Value::Bool`]; arrays of those become [`Value::Array`].
/// [`Value::to_any_value`] gives the OTLP form Tempo answers with.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    String(String),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A duration in nanoseconds (negative only as the result of arithmetic).
    Duration(i64),
    /// A span status.
    Status(Status),
    /// A span kind.
    Kind(Kind),
    /// An array attribute.
    Array(Vec<Value>),
    /// Missing. Only a metrics series label has it: the first `by` label of a series whose
    /// `by` values are all missing, as Tempo labels it (`{resource.service.name=nil}`).
    Nil,
}

impl Value {
    /// The OTLP value Tempo returns for this value: durations as Go duration strings
    /// (`1.5s`), statuses and kinds as their keyword, nil as `"nil"`.
    pub fn to_any_value(&self) -> AnyValue {
        let value = match self {
            Value::String(s) => any_value::Value::StringValue(s.clone()),
            Value::Int(i) => any_value::Value::IntValue(*i),
            Value::Float(x) => any_value::Value::DoubleValue(*x),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            Value::Array(items) => any_value::Value::ArrayValue(ArrayValue {
                values: items.iter().map(Value::to_any_value).collect(),
            }),
            Value::Duration(_) | Value::Status(_) | Value::Kind(_) | Value::Nil => {
                any_value::Value::StringValue(self.to_string())
            }
        };
        AnyValue { value: Some(value) }
    }

    /// The value as a number, when it is one: durations in seconds (as Tempo's metrics).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            Value::Duration(d) => Some(*d as f64 / 1e9),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Nil => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Duration(_) => 4,
            Value::String(_) => 5,
            Value::Status(_) => 6,
            Value::Kind(_) => 7,
            Value::Array(_) => 8,
        }
    }

    /// A total order for sorting results: by type, then by value.
    pub(crate) fn total_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) | (Value::Duration(a), Value::Duration(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Status(a), Value::Status(b)) => a.as_str().cmp(b.as_str()),
            (Value::Kind(a), Value::Kind(b)) => a.as_str().cmp(b.as_str()),
            (Value::Array(a), Value::Array(b)) => a
                .iter()
                .zip(b)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(a.len().cmp(&b.len())),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Prints the value as Tempo encodes it in text: strings unquoted, durations the Go way.
impl Display for Value {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Duration(d) => f.write_str(&go_duration(*d)),
            Value::Status(s) => f.write_str(s.as_str()),
            Value::Kind(k) => f.write_str(k.as_str()),
            Value::Nil => f.write_str("nil"),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Formats nanoseconds as Go's `time.Duration.String` does: `0s`, `850ns`, `1.5µs`,
/// `20ms`, `1.5s`, `1h2m3s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", fraction(u, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", fraction(u, 6))
    } else {
        let hours = u / 3_600_000_000_000;
        let minutes = (u / 60_000_000_000) % 60;
        let seconds = fraction(u % 60_000_000_000, 9);
        match (hours, minutes) {
            (0, 0) => format!("{seconds}s"),
            (0, m) => format!("{m}m{seconds}s"),
            (h, m) => format!("{h}h{m}m{seconds}s"),
        }
    };
    format!("{sign}{body}")
}

/// `v / 10^digits` with the fraction's trailing zeros dropped: `fraction(1500, 3)` is `1.5`.
fn fraction(v: u64, digits: u32) -> String {
    let unit = 10u64.pow(digits);
    let (whole, frac) = (v / unit, v % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// A [`Value`] usable as a hash key: floats compare by their bits.
#[derive(Debug, Clone)]
pub(crate) struct HashValue(pub(crate) Value);

impl PartialEq for HashValue {
    fn eq(&self, other: &Self) -> bool {
        same(&self.0, &other.0)
    }
}

impl Eq for HashValue {}

impl Hash for HashValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_value(&self.0, state);
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

fn hash_value<H: Hasher>(v: &Value, state: &mut H) {
    v.rank().hash(state);
    match v {
        Value::String(s) => s.hash(state),
        Value::Int(i) | Value::Duration(i) => i.hash(state),
        Value::Float(x) => x.to_bits().hash(state),
        Value::Bool(b) => b.hash(state),
        Value::Status(s) => s.hash(state),
        Value::Kind(k) => k.hash(state),
        Value::Array(items) => {
            items.len().hash(state);
            items.iter().for_each(|i| hash_value(i, state));
        }
        Value::Nil => {}
    }
}

/// A value during evaluation, borrowing strings and arrays from the spans or the query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Nil,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Dur(i64),
    Status(Status),
    Kind(Kind),
    Array(&'a [AnyValue]),
}

impl<'a> Val<'a> {
    /// An OTLP attribute value; kvlists and bytes are not TraceQL values and read as nil.
    pub(crate) fn from_any(v: &'a AnyValue) -> Val<'a> {
        match &v.value {
            Some(any_value::Value::StringValue(s)) => Val::Str(Cow::Borrowed(s)),
            Some(any_value::Value::IntValue(i)) => Val::Int(*i),
            Some(any_value::Value::DoubleValue(x)) => Val::Float(*x),
            Some(any_value::Value::BoolValue(b)) => Val::Bool(*b),
            Some(any_value::Value::ArrayValue(a)) => Val::Array(&a.values),
            _ => Val::Nil,
        }
    }

    /// The same value, borrowing from `self` instead of owning.
    pub(crate) fn borrowed(&self) -> Val<'_> {
        match self {
            Val::Str(s) => Val::Str(Cow::Borrowed(s.as_ref())),
            Val::Nil => Val::Nil,
            Val::Int(i) => Val::Int(*i),
            Val::Float(x) => Val::Float(*x),
            Val::Bool(b) => Val::Bool(*b),
            Val::Dur(d) => Val::Dur(*d),
            Val::Status(s) => Val::Status(*s),
            Val::Kind(k) => Val::Kind(*k),
            Val::Array(a) => Val::Array(a),
        }
    }

    /// Whether a filter keeps a span for this value: only `true` does.
    pub(crate) fn truthy(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    pub(crate) fn is_nil(&self) -> bool {
        matches!(self, Val::Nil)
    }

    /// The owned result form; `None` for nil.
    pub(crate) fn to_value(&self) -> Option<Value> {
        Some(match self {
            Val::Nil => return None,
            Val::Str(s) => Value::String(s.to_string()),
            Val::Int(i) => Value::Int(*i),
            Val::Float(x) => Value::Float(*x),
            Val::Bool(b) => Value::Bool(*b),
            Val::Dur(d) => Value::Duration(*d),
            Val::Status(s) => Value::Status(*s),
            Val::Kind(k) => Value::Kind(*k),
            Val::Array(items) => {
                Value::Array(items.iter().filter_map(|i| Val::from_any(i).to_value()).collect())
            }
        })
    }

    /// A number for metrics: durations in seconds.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(x) => Some(*x),
            Val::Dur(d) => Some(*d as f64 / 1e9),
            _ => None,
        }
    }

    /// An owned copy.
    pub(crate) fn into_static(self) -> Val<'static> {
        match self {
            Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
            Val::Array(_) => Val::Nil,
            Val::Nil => Val::Nil,
            Val::Int(i) => Val::Int(i),
            Val::Float(x) => Val::Float(x),
            Val::Bool(b) => Val::Bool(b),
            Val::Dur(d) => Val::Dur(d),
            Val::Status(s) => Val::Status(s),
            Val::Kind(k) => Val::Kind(k),
        }
    }
}

impl Val<'static> {
    pub(crate) fn from_static(s: &Static) -> Val<'static> {
        match s {
            Static::String(s) => Val::Str(Cow::Owned(s.clone())),
            Static::Int(i) => Val::Int(*i),
            Static::Float(x) => Val::Float(*x),
            Static::Duration(d) => Val::Dur(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Static::Bool(b) => Val::Bool(*b),
            Static::Nil => Val::Nil,
            Static::Status(s) => Val::Status(*s),
            Static::Kind(k) => Val::Kind(*k),
        }
    }
}

/// `l op r` for a comparison operator (`= != < <= > >=`). Nil and values of types that
/// cannot be compared give `false`, for `!=` too. An array compares element-wise: `!=`
/// holds when it holds for every element, the other operators when one element satisfies
/// them (as Tempo's array operators).
pub(crate) fn compare(op: BinaryOp, l: &Val<'_>, r: &Val<'_>) -> bool {
    match (l, r) {
        (Val::Array(_), Val::Array(_)) => false,
        (Val::Array(items), scalar) => each_element(op, items, |e| compare_scalar(op, &e, scalar)),
        (scalar, Val::Array(items)) => each_element(op, items, |e| compare_scalar(op, scalar, &e)),
        _ => compare_scalar(op, l, r),
    }
}

fn each_element(op: BinaryOp, items: &[AnyValue], mut f: impl FnMut(Val<'_>) -> bool) -> bool {
    let mut elements = items.iter().map(Val::from_any);
    if matches!(op, BinaryOp::Neq | BinaryOp::NotRegex) { elements.all(&mut f) } else { elements.any(f) }
}

fn compare_scalar(op: BinaryOp, l: &Val<'_>, r: &Val<'_>) -> bool {
    use Val::*;
    let equality_only = |ord: Ordering| match op {
        BinaryOp::Eq => ord.is_eq(),
        BinaryOp::Neq => ord.is_ne(),
        _ => false,
    };
    let ord = match (l, r) {
        (Str(a), Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
        (Int(a) | Dur(a), Int(b) | Dur(b)) => Some(a.cmp(b)),
        (Float(a), Float(b)) => a.partial_cmp(b),
        (Float(a), Int(b) | Dur(b)) => a.partial_cmp(&(*b as f64)),
        (Int(a) | Dur(a), Float(b)) => (*a as f64).partial_cmp(b),
        (Bool(a), Bool(b)) => return equality_only(a.cmp(b)),
        (Status(a), Status(b)) => {
            return equality_only(if a == b { Ordering::Equal } else { Ordering::Less });
        }
        (Kind(a), Kind(b)) => return equality_only(if a == b { Ordering::Equal } else { Ordering::Less }),
        _ => return false,
    };
    match (op, ord) {
        (BinaryOp::Neq, None) => true,
        (_, None) => false,
        (BinaryOp::Eq, Some(o)) => o.is_eq(),
        (BinaryOp::Neq, Some(o)) => o.is_ne(),
        (BinaryOp::Lt, Some(o)) => o.is_lt(),
        (BinaryOp::Lte, Some(o)) => o.is_le(),
        (BinaryOp::Gt, Some(o)) => o.is_gt(),
        (BinaryOp::Gte, Some(o)) => o.is_ge(),
        _ => false,
    }
}

/// Whether `v` matches (`negated`: does not match) `regex`; non-strings never do. An array
/// matches `=~` when one element does and `!~` when no element does.
pub(crate) fn regex_matches(v: &Val<'_>, regex: &regex::Regex, negated: bool) -> bool {
    match v {
        Val::Str(s) => regex.is_match(s) != negated,
        Val::Array(items) => {
            let op = if negated { BinaryOp::NotRegex } else { BinaryOp::Regex };
            each_element(op, items, |e| matches!(&e, Val::Str(s) if regex.is_match(s) != negated))
        }
        _ => false,
    }
}

/// `l op r` for an arithmetic operator (`+ - * / % ^`). Integers stay integers (falling
/// back to floats on overflow); a duration with a number stays a duration; a duration
/// divided by a duration is a float ratio. Division by zero and non-numbers give nil.
pub(crate) fn arithmetic(op: BinaryOp, l: &Val<'_>, r: &Val<'_>) -> Val<'static> {
    match (l, r) {
        (Val::Int(a), Val::Int(b)) => int_arithmetic(op, *a, *b),
        (Val::Dur(a), Val::Dur(b)) if op == BinaryOp::Div => float_arithmetic(op, *a as f64, *b as f64),
        (Val::Dur(a), Val::Dur(b) | Val::Int(b)) | (Val::Int(a), Val::Dur(b))
            if matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul) =>
        {
            match int_arithmetic(op, *a, *b) {
                Val::Int(n) => Val::Dur(n),
                other => to_duration(other),
            }
        }
        (Val::Dur(_), _) | (_, Val::Dur(_)) => {
            let (Some(a), Some(b)) = (nanos_f64(l), nanos_f64(r)) else { return Val::Nil };
            to_duration(float_arithmetic(op, a, b))
        }
        _ => {
            let (Some(a), Some(b)) = (nanos_f64(l), nanos_f64(r)) else { return Val::Nil };
            float_arithmetic(op, a, b)
        }
    }
}

fn nanos_f64(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Int(i) | Val::Dur(i) => Some(*i as f64),
        Val::Float(x) => Some(*x),
        _ => None,
    }
}

fn to_duration(v: Val<'static>) -> Val<'static> {
    match v {
        Val::Float(x) if x.is_finite() => Val::Dur(x.round() as i64),
        Val::Int(i) => Val::Dur(i),
        _ => Val::Nil,
    }
}

fn int_arithmetic(op: BinaryOp, a: i64, b: i64) -> Val<'static> {
    let exact = match op {
        BinaryOp::Add => a.checked_add(b),
        BinaryOp::Sub => a.checked_sub(b),
        BinaryOp::Mul => a.checked_mul(b),
        BinaryOp::Div if b == 0 => return Val::Nil,
        BinaryOp::Div => a.checked_div(b),
        BinaryOp::Mod if b == 0 => return Val::Nil,
        BinaryOp::Mod => a.checked_rem(b),
        BinaryOp::Pow => u32::try_from(b).ok().and_then(|b| a.checked_pow(b)),
        _ => return Val::Nil,
    };
    exact.map_or_else(|| float_arithmetic(op, a as f64, b as f64), Val::Int)
}

fn float_arithmetic(op: BinaryOp, a: f64, b: f64) -> Val<'static> {
    let x = match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div | BinaryOp::Mod if b == 0.0 => return Val::Nil,
        BinaryOp::Div => a / b,
        BinaryOp::Mod => a % b,
        BinaryOp::Pow => a.powf(b),
        _ => return Val::Nil,
    };
    if x.is_nan() { Val::Nil } else { Val::Float(x) }
}

/// `-v` for numbers and durations; nil otherwise.
pub(crate) fn negate(v: &Val<'_>) -> Val<'static> {
    match v {
        Val::Int(i) => i.checked_neg().map_or(Val::Float(-(*i as f64)), Val::Int),
        Val::Float(x) => Val::Float(-x),
        Val::Dur(d) => Val::Dur(d.saturating_neg()),
        _ => Val::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(text))
    }

    #[test]
    fn compare_numbers_across_int_float_and_duration() {
        assert!(compare(BinaryOp::Eq, &Val::Int(200), &Val::Float(200.0)));
        assert!(compare(BinaryOp::Lt, &Val::Float(1.5), &Val::Int(2)));
        assert!(compare(BinaryOp::Gt, &Val::Dur(2_000_000_000), &Val::Dur(1_000_000_000)));
        assert!(compare(BinaryOp::Gte, &Val::Dur(5), &Val::Int(5)));
        assert!(compare(BinaryOp::Neq, &Val::Int(1), &Val::Int(2)));
    }

    #[test]
    fn compare_nil_or_mismatched_types_is_false_even_for_not_equal() {
        for op in [BinaryOp::Eq, BinaryOp::Neq, BinaryOp::Lt, BinaryOp::Gte] {
            assert!(!compare(op, &Val::Nil, &Val::Int(1)), "{op:?}");
            assert!(!compare(op, &s("1"), &Val::Int(1)), "{op:?}");
            assert!(!compare(op, &Val::Bool(true), &s("true")), "{op:?}");
        }
        assert!(!compare(BinaryOp::Lt, &Val::Bool(false), &Val::Bool(true)));
        assert!(!compare(BinaryOp::Gt, &Val::Status(Status::Error), &Val::Status(Status::Ok)));
    }

    #[test]
    fn compare_strings_orders_bytewise() {
        assert!(compare(BinaryOp::Lt, &s("GET"), &s("POST")));
        assert!(compare(BinaryOp::Eq, &s("a"), &s("a")));
        assert!(!compare(BinaryOp::Gt, &s("a"), &s("b")));
    }

    #[test]
    fn compare_arrays_any_element_except_not_equal_needs_all() {
        let items: Vec<AnyValue> =
            [1, 2, 3].into_iter().map(|i| AnyValue { value: Some(any_value::Value::IntValue(i)) }).collect();
        let arr = Val::Array(&items);
        assert!(compare(BinaryOp::Eq, &arr, &Val::Int(2)));
        assert!(!compare(BinaryOp::Neq, &arr, &Val::Int(2)));
        assert!(compare(BinaryOp::Neq, &arr, &Val::Int(7)));
        assert!(compare(BinaryOp::Lt, &Val::Int(2), &arr));
        assert!(!compare(BinaryOp::Gt, &Val::Int(1), &arr));
    }

    #[test]
    fn arithmetic_keeps_integer_and_duration_types() {
        assert_eq!(arithmetic(BinaryOp::Add, &Val::Int(2), &Val::Int(3)), Val::Int(5));
        assert_eq!(arithmetic(BinaryOp::Div, &Val::Int(7), &Val::Int(2)), Val::Int(3));
        assert_eq!(arithmetic(BinaryOp::Pow, &Val::Int(2), &Val::Int(10)), Val::Int(1024));
        assert_eq!(arithmetic(BinaryOp::Pow, &Val::Int(2), &Val::Int(-1)), Val::Float(0.5));
        assert_eq!(arithmetic(BinaryOp::Mul, &Val::Dur(10), &Val::Int(3)), Val::Dur(30));
        assert_eq!(arithmetic(BinaryOp::Mul, &Val::Dur(10), &Val::Float(1.5)), Val::Dur(15));
        assert_eq!(arithmetic(BinaryOp::Div, &Val::Dur(10), &Val::Dur(4)), Val::Float(2.5));
        assert_eq!(arithmetic(BinaryOp::Add, &Val::Int(1), &Val::Float(0.5)), Val::Float(1.5));
        assert_eq!(
            arithmetic(BinaryOp::Add, &Val::Int(i64::MAX), &Val::Int(1)),
            Val::Float(i64::MAX as f64 + 1.0)
        );
    }

    #[test]
    fn arithmetic_by_zero_or_on_non_numbers_is_nil() {
        assert_eq!(arithmetic(BinaryOp::Div, &Val::Int(1), &Val::Int(0)), Val::Nil);
        assert_eq!(arithmetic(BinaryOp::Mod, &Val::Float(1.0), &Val::Float(0.0)), Val::Nil);
        assert_eq!(arithmetic(BinaryOp::Add, &s("a"), &Val::Int(1)), Val::Nil);
        assert_eq!(arithmetic(BinaryOp::Add, &Val::Nil, &Val::Dur(1)), Val::Nil);
    }

    #[test]
    fn go_duration_formats_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(850), "850ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(20_000_000), "20ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(120_000_000_000), "2m0s");
        assert_eq!(go_duration(-2_000_000), "-2ms");
    }

    #[test]
    fn to_any_value_follows_tempo() {
        let string = |v: Value| match v.to_any_value().value {
            Some(any_value::Value::StringValue(s)) => s,
            other => panic!("not a string: {other:?}"),
        };
        assert_eq!(string(Value::Duration(1_500_000_000)), "1.5s");
        assert_eq!(string(Value::Status(Status::Error)), "error");
        assert_eq!(string(Value::Kind(Kind::Server)), "server");
        assert_eq!(Value::Int(3).to_any_value().value, Some(any_value::Value::IntValue(3)));
    }

    #[test]
    fn hash_value_distinguishes_types_and_equal_floats_group() {
        use std::collections::HashSet;
        let set: HashSet<HashValue> = [Value::Int(1), Value::Float(1.0), Value::Float(1.0), Value::Nil]
            .into_iter()
            .map(HashValue)
            .collect();
        assert_eq!(set.len(), 3);
    }
}
