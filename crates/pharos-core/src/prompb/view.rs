//! A remote write 1.0 `WriteRequest` read in place: label names and values borrowed from the
//! buffer, samples copied into one vector for the whole request, each series' encoded message
//! kept so that it can be forwarded without encoding it again. It reads what
//! [`v1::WriteRequest`]'s prost decoding reads (the tests compare the two): unknown fields are
//! skipped, of a repeated singular field the last wins, strings must be UTF-8. (Groups, wire
//! types 3 and 4 deprecated since proto2, are refused even in unknown fields, which prost skips.)

use std::ops::Range;

use prost::Message;

use super::v1;
use crate::wire::{self, Value, WireError};

/// One series of a [`WriteRequestView`]: ranges into the view's shared vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesView<'a> {
    /// The encoded `TimeSeries` message.
    pub raw: &'a [u8],
    labels: Range<usize>,
    samples: Range<usize>,
    exemplars: Range<usize>,
    /// Native histogram samples (not decoded).
    pub histograms: usize,
}

/// See the module documentation.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WriteRequestView<'a> {
    pub series: Vec<SeriesView<'a>>,
    labels: Vec<(&'a str, &'a str)>,
    samples: Vec<v1::Sample>,
    exemplars: Vec<&'a [u8]>,
    /// Encoded `MetricMetadata` messages.
    pub metadata: Vec<&'a [u8]>,
}

fn wrong_type(field: &'static str) -> WireError {
    WireError { what: field, at: 0 }
}

fn bytes<'a>(value: Value<'a>, field: &'static str) -> Result<&'a [u8], WireError> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(wrong_type(field)),
    }
}

fn label(buf: &[u8]) -> Result<(&str, &str), WireError> {
    // As every encoder writes it: name (field 1) then value (field 2), each shorter than 128
    // bytes. Anything else takes the general loop.
    if let [0x0a, n, rest @ ..] = buf
        && *n < 0x80
        && let Some((name, rest)) = rest.split_at_checked(usize::from(*n))
        && let [0x12, v, value @ ..] = rest
        && usize::from(*v) == value.len()
    {
        return Ok((wire::text(name)?, wire::text(value)?));
    }
    let (mut name, mut value) = ("", "");
    for field in wire::fields(buf) {
        match field? {
            (1, v) => name = wire::text(bytes(v, "label name is not length-delimited")?)?,
            (2, v) => value = wire::text(bytes(v, "label value is not length-delimited")?)?,
            _ => {}
        }
    }
    Ok((name, value))
}

fn sample(buf: &[u8]) -> Result<v1::Sample, WireError> {
    // As every encoder writes a sample whose value and timestamp are not zero: the double, then
    // the varint, to the end.
    if let [0x09, b0, b1, b2, b3, b4, b5, b6, b7, 0x10, rest @ ..] = buf {
        let mut at = 0;
        if let Ok(t) = wire::varint(rest, &mut at)
            && at == rest.len()
        {
            let bits = u64::from_le_bytes([*b0, *b1, *b2, *b3, *b4, *b5, *b6, *b7]);
            return Ok(v1::Sample { value: f64::from_bits(bits), timestamp: t as i64 });
        }
    }
    let mut s = v1::Sample::default();
    for field in wire::fields(buf) {
        match field? {
            (1, Value::Fixed64(bits)) => s.value = f64::from_bits(bits),
            (2, Value::Varint(n)) => s.timestamp = n as i64,
            (1, _) => return Err(wrong_type("sample value is not a double")),
            (2, _) => return Err(wrong_type("sample timestamp is not a varint")),
            _ => {}
        }
    }
    Ok(s)
}

impl<'a> WriteRequestView<'a> {
    /// Reads a decompressed `WriteRequest`.
    pub fn read(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut view = WriteRequestView::default();
        for field in wire::fields(buf) {
            match field? {
                (1, v) => {
                    let raw = bytes(v, "timeseries is not length-delimited")?;
                    view.read_series(raw)?;
                }
                (3, v) => view.metadata.push(bytes(v, "metadata is not length-delimited")?),
                _ => {}
            }
        }
        Ok(view)
    }

    fn read_series(&mut self, raw: &'a [u8]) -> Result<(), WireError> {
        let (l0, s0, e0) = (self.labels.len(), self.samples.len(), self.exemplars.len());
        let mut histograms = 0;
        for field in wire::fields(raw) {
            match field? {
                (1, v) => self.labels.push(label(bytes(v, "label is not length-delimited")?)?),
                (2, v) => self.samples.push(sample(bytes(v, "sample is not length-delimited")?)?),
                (3, v) => self.exemplars.push(bytes(v, "exemplar is not length-delimited")?),
                (4, v) => {
                    bytes(v, "histogram is not length-delimited")?;
                    histograms += 1;
                }
                _ => {}
            }
        }
        self.series.push(SeriesView {
            raw,
            labels: l0..self.labels.len(),
            samples: s0..self.samples.len(),
            exemplars: e0..self.exemplars.len(),
            histograms,
        });
        Ok(())
    }

    /// The series' labels as sent: `(name, value)` pairs (the sender sorts them; receivers
    /// check).
    pub fn labels(&self, series: &SeriesView<'a>) -> &[(&'a str, &'a str)] {
        &self.labels[series.labels.clone()]
    }

    /// The series' float samples, in the order sent.
    pub fn samples(&self, series: &SeriesView<'a>) -> &[v1::Sample] {
        &self.samples[series.samples.clone()]
    }

    /// Number of exemplars of the series.
    pub fn exemplar_count(&self, series: &SeriesView<'a>) -> usize {
        series.exemplars.len()
    }

    /// The series' exemplars, decoded (they are rare: decoded with prost when asked for).
    pub fn exemplars(&self, series: &SeriesView<'a>) -> Result<Vec<v1::Exemplar>, prost::DecodeError> {
        self.exemplars[series.exemplars.clone()].iter().map(|raw| v1::Exemplar::decode(*raw)).collect()
    }

    /// The request's metadata, decoded.
    pub fn metadata(&self) -> Result<Vec<v1::MetricMetadata>, prost::DecodeError> {
        self.metadata.iter().map(|raw| v1::MetricMetadata::decode(*raw)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> v1::Label {
        v1::Label { name: name.into(), value: value.into() }
    }

    fn request() -> v1::WriteRequest {
        v1::WriteRequest {
            timeseries: vec![
                v1::TimeSeries {
                    labels: vec![label("__name__", "up"), label("job", "node"), label("zone", "é")],
                    samples: vec![
                        v1::Sample { value: 1.5, timestamp: 1000 },
                        v1::Sample { value: f64::NAN, timestamp: -5 },
                        v1::Sample { value: 0.0, timestamp: 0 },
                    ],
                    exemplars: vec![v1::Exemplar {
                        labels: vec![label("trace_id", "abc")],
                        value: 2.0,
                        timestamp: 999,
                    }],
                    histograms: vec![Default::default(), Default::default()],
                },
                v1::TimeSeries::default(),
                v1::TimeSeries {
                    // A value of 200 bytes: a two-byte length, past the common layout.
                    labels: vec![label("__name__", "x"), label("", ""), label("long", &"v".repeat(200))],
                    samples: vec![v1::Sample { value: -0.0, timestamp: i64::MAX }],
                    ..Default::default()
                },
            ],
            metadata: vec![v1::MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "Up.".into(),
                unit: String::new(),
            }],
        }
    }

    /// What prost decodes, rebuilt from the view.
    fn rebuilt(view: &WriteRequestView<'_>) -> v1::WriteRequest {
        v1::WriteRequest {
            timeseries: view
                .series
                .iter()
                .map(|s| {
                    // The forwarded bytes are the series itself.
                    let whole = v1::TimeSeries::decode(s.raw).expect("raw series");
                    assert_eq!(whole.histograms.len(), s.histograms);
                    v1::TimeSeries {
                        labels: view.labels(s).iter().map(|(n, v)| label(n, v)).collect(),
                        samples: view.samples(s).to_vec(),
                        exemplars: view.exemplars(s).expect("exemplars"),
                        histograms: whole.histograms,
                    }
                })
                .collect(),
            metadata: view.metadata().expect("metadata"),
        }
    }

    fn same(a: &v1::WriteRequest, b: &v1::WriteRequest) -> bool {
        // NaN != NaN: compare encodings.
        a.encode_to_vec() == b.encode_to_vec()
    }

    #[test]
    fn the_view_reads_what_prost_decodes() {
        let req = request();
        let buf = req.encode_to_vec();
        let view = WriteRequestView::read(&buf).expect("view");
        assert_eq!(view.series.len(), 3);
        assert_eq!(view.labels(&view.series[0]), &[("__name__", "up"), ("job", "node"), ("zone", "é")]);
        assert_eq!(view.samples(&view.series[0])[0], v1::Sample { value: 1.5, timestamp: 1000 });
        assert_eq!(view.exemplar_count(&view.series[0]), 1);
        assert!(same(&rebuilt(&view), &v1::WriteRequest::decode(&buf[..]).unwrap()));
    }

    #[test]
    fn the_view_skips_unknown_fields_and_keeps_the_last_of_a_repeated_singular_field() {
        let mut series = Vec::new();
        // A label whose name is given twice, an unknown varint field in a sample, and an
        // unknown field in the series.
        let mut l = Vec::new();
        wire::put_bytes_field(&mut l, 1, b"first");
        wire::put_bytes_field(&mut l, 2, b"v");
        wire::put_bytes_field(&mut l, 1, b"__name__");
        wire::put_bytes_field(&mut series, 1, &l);
        let mut s = Vec::new();
        s.push((1 << 3) | 1);
        s.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
        prost::encoding::encode_varint(9 << 3, &mut s);
        prost::encoding::encode_varint(77, &mut s);
        s.push(2 << 3);
        prost::encoding::encode_varint(42, &mut s);
        wire::put_bytes_field(&mut series, 2, &s);
        wire::put_bytes_field(&mut series, 12, b"unknown");
        let mut buf = Vec::new();
        wire::put_bytes_field(&mut buf, 1, &series);
        wire::put_bytes_field(&mut buf, 2, b"reserved field");
        let view = WriteRequestView::read(&buf).expect("view");
        assert_eq!(view.labels(&view.series[0]), &[("__name__", "v")]);
        assert_eq!(view.samples(&view.series[0]), &[v1::Sample { value: 2.5, timestamp: 42 }]);
        assert!(same(&rebuilt(&view), &v1::WriteRequest::decode(&buf[..]).unwrap()));
    }

    #[test]
    fn the_view_refuses_what_prost_refuses() {
        let good = request().encode_to_vec();
        // Every truncation of a valid request that prost refuses, the view refuses too (and
        // the other way round).
        for end in 0..good.len() {
            let cut = &good[..end];
            assert_eq!(
                WriteRequestView::read(cut).is_ok(),
                v1::WriteRequest::decode(cut).is_ok(),
                "request cut at byte {end}"
            );
        }
        // A label value that is not UTF-8.
        let mut l = Vec::new();
        wire::put_bytes_field(&mut l, 1, b"__name__");
        wire::put_bytes_field(&mut l, 2, &[0xff]);
        let mut series = Vec::new();
        wire::put_bytes_field(&mut series, 1, &l);
        let mut buf = Vec::new();
        wire::put_bytes_field(&mut buf, 1, &series);
        assert!(v1::WriteRequest::decode(&buf[..]).is_err());
        assert!(WriteRequestView::read(&buf).is_err());
        // A sample value sent as a varint.
        let mut series = Vec::new();
        wire::put_bytes_field(&mut series, 2, &[1 << 3, 5]);
        let mut buf = Vec::new();
        wire::put_bytes_field(&mut buf, 1, &series);
        assert!(v1::WriteRequest::decode(&buf[..]).is_err());
        assert!(WriteRequestView::read(&buf).is_err());
    }
}
