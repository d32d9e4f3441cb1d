//! The Loki push wire types (`logproto.PushRequest`, from Loki's published `push.proto`,
//! Apache-2.0), written by hand. Receivers decode them (from snappy protobuf or from JSON) and
//! processors read them from the queue: shared vocabulary, like `prompb`.

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<Stream>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Stream {
    /// The stream's labels as a selector string: `{app="api", env="prod"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<Entry>,
    /// Set by Loki's own clients; ignored.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
    /// Labels a Loki distributor parsed; clients leave it empty.
    #[prost(message, repeated, tag = "4")]
    pub parsed: Vec<LabelPair>,
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Unix nanoseconds (saturating).
    pub fn unix_nanos(self) -> i64 {
        self.seconds.saturating_mul(1_000_000_000).saturating_add(i64::from(self.nanos))
    }

    pub fn from_unix_nanos(ns: i64) -> Self {
        Self { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn timestamps_round_trip_through_nanoseconds() {
        for ns in [0, 1, 1_700_000_000_123_456_789, -1] {
            assert_eq!(Timestamp::from_unix_nanos(ns).unix_nanos(), ns);
        }
    }

    #[test]
    fn a_push_request_round_trips() {
        let request = PushRequest {
            streams: vec![Stream {
                labels: r#"{app="api"}"#.into(),
                entries: vec![Entry {
                    timestamp: Some(Timestamp { seconds: 1, nanos: 2 }),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPair { name: "trace_id".into(), value: "abc".into() }],
                    parsed: vec![],
                }],
                hash: 0,
            }],
        };
        assert_eq!(PushRequest::decode(request.encode_to_vec().as_slice()).unwrap(), request);
    }
}
