//! CloudEvents 1.0 in binary mode on NATS.
//!
//! Every attribute becomes a lower-case `ce-<name>` header whose value is
//! percent-encoded where it holds spaces, quotes, `%`, control characters or
//! non-ASCII; the message payload is the raw JSON data. The attributes are
//! assembled and validated by `cloudevents-sdk`'s builder; only the header
//! mapping is ours, because the SDK's NATS binding is structured-mode only.
//!
//! Extensions we add: `merchantid`, `storeid`, `deviceid` (tenant and
//! origin, so consumers can filter without decoding data), `sequence` (the
//! aggregate's version after this event: consumers check per-order order
//! with it) and `correlationid`. W3C `traceparent` travels beside them.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use uuid::Uuid;

use crate::domain::EventKind;

const ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');
pub const HEADER_PREFIX: &str = "ce-";
pub const TRACEPARENT: &str = "traceparent";

/// The metadata of one event: everything but its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: Uuid,
    pub kind: EventKind,
    pub merchant_id: Uuid,
    pub store_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    /// CloudEvents `subject`: the aggregate id.
    pub subject: Uuid,
    /// The aggregate's version after this event.
    pub sequence: i64,
    pub time: DateTime<Utc>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("missing header `{0}`")]
    Missing(&'static str),
    #[error("header `{0}` is not valid")]
    Invalid(&'static str),
    #[error("unknown event type `{0}`")]
    UnknownType(String),
}

impl Envelope {
    /// `/merchants/{m}/stores/{s}/devices/{d}`: who caused the event.
    pub fn source(&self) -> String {
        let mut s = format!("/merchants/{}", self.merchant_id);
        if let Some(store) = self.store_id {
            s.push_str(&format!("/stores/{store}"));
        }
        if let Some(device) = self.device_id {
            s.push_str(&format!("/devices/{device}"));
        }
        s
    }

    /// The binary-mode headers, names lower-case, values percent-encoded.
    pub fn to_headers(&self) -> Vec<(String, String)> {
        let mut builder = EventBuilderV10::new()
            .id(self.id.to_string())
            .source(self.source())
            .ty(self.kind.ce_type())
            .subject(self.subject.to_string())
            .time(self.time)
            .data("application/json", serde_json::Value::Null)
            .extension("merchantid", self.merchant_id.to_string())
            .extension("sequence", self.sequence.to_string());
        if let Some(store) = self.store_id {
            builder = builder.extension("storeid", store.to_string());
        }
        if let Some(device) = self.device_id {
            builder = builder.extension("deviceid", device.to_string());
        }
        if let Some(cid) = &self.correlation_id {
            builder = builder.extension("correlationid", cid.clone());
        }
        let mut headers = Vec::with_capacity(12);
        // The builder checks the required attributes; all of ours are always set.
        if let Ok(event) = builder.build() {
            for (name, value) in event.iter() {
                let value = match name {
                    // RFC 3339 with a `Z` and no fraction noise beyond microseconds.
                    "time" => self.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    _ => value.to_string(),
                };
                headers.push((format!("{HEADER_PREFIX}{name}"), encode(&value)));
            }
            if let Some(ct) = event.datacontenttype()
                && !headers.iter().any(|(n, _)| n == "ce-datacontenttype")
            {
                headers.push(("ce-datacontenttype".into(), ct.to_owned()));
            }
        }
        if let Some(tp) = &self.traceparent {
            headers.push((TRACEPARENT.into(), tp.clone()));
        }
        headers
    }

    /// Reads an envelope back from headers (case-sensitive, lower-case names).
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, EnvelopeError> {
        // A dozen headers: a linear scan of a small vector beats hashing them,
        // and a value without `%` is used as it is (rebuilds decode millions).
        let map: Vec<(&str, Cow<'a, str>)> = headers.into_iter().map(|(k, v)| (k, decode(v))).collect();
        let find = |name: &str| map.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| v.as_ref());
        let get = |name: &'static str| find(name).ok_or(EnvelopeError::Missing(name));
        let uuid = |name: &'static str| {
            get(name).and_then(|v| Uuid::parse_str(v).map_err(|_| EnvelopeError::Invalid(name)))
        };
        let opt_uuid = |name: &'static str| match find(name) {
            None => Ok(None),
            Some(v) => Uuid::parse_str(v).map(Some).map_err(|_| EnvelopeError::Invalid(name)),
        };
        if get("ce-specversion")? != "1.0" {
            return Err(EnvelopeError::Invalid("ce-specversion"));
        }
        let ty = get("ce-type")?;
        let kind = EventKind::from_ce_type(ty).ok_or_else(|| EnvelopeError::UnknownType(ty.to_owned()))?;
        Ok(Self {
            id: uuid("ce-id")?,
            kind,
            merchant_id: uuid("ce-merchantid")?,
            store_id: opt_uuid("ce-storeid")?,
            device_id: opt_uuid("ce-deviceid")?,
            subject: uuid("ce-subject")?,
            sequence: get("ce-sequence")?.parse().map_err(|_| EnvelopeError::Invalid("ce-sequence"))?,
            time: DateTime::parse_from_rfc3339(get("ce-time")?)
                .map_err(|_| EnvelopeError::Invalid("ce-time"))?
                .with_timezone(&Utc),
            correlation_id: find("ce-correlationid").map(str::to_owned),
            traceparent: find(TRACEPARENT).map(str::to_owned),
        })
    }
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, ENCODE).to_string()
}

fn decode(value: &str) -> Cow<'_, str> {
    if value.contains('%') { percent_decode_str(value).decode_utf8_lossy() } else { Cow::Borrowed(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            kind: EventKind::OrderCreated,
            merchant_id: Uuid::new_v4(),
            store_id: Some(Uuid::new_v4()),
            device_id: Some(Uuid::new_v4()),
            subject: Uuid::new_v4(),
            sequence: 3,
            time: DateTime::from_timestamp(1_763_769_600, 123_456_000).unwrap_or_default(),
            correlation_id: Some("req 42 \"quoted\" 100% ✓".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    #[test]
    fn headers_are_lower_case_binary_mode_attributes() {
        let headers = envelope().to_headers();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        for required in ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject"] {
            assert!(names.contains(&required), "{required} missing from {names:?}");
        }
        assert!(names.iter().all(|n| *n == n.to_lowercase()));
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("ce-specversion"), Some("1.0"));
        assert_eq!(get("ce-type"), Some("com.smartpos.order.created.v1"));
        assert_eq!(get("ce-datacontenttype"), Some("application/json"));
        assert_eq!(get("ce-time"), Some("2025-11-22T00:00:00.123456Z"));
    }

    #[test]
    fn values_with_spaces_quotes_percent_or_unicode_are_percent_encoded() {
        let headers = envelope().to_headers();
        let cid = headers.iter().find(|(k, _)| k == "ce-correlationid").map(|(_, v)| v.clone());
        assert_eq!(cid.as_deref(), Some("req%2042%20%22quoted%22%20100%25%20%E2%9C%93"));
        assert!(headers.iter().all(|(_, v)| !v.contains(['\r', '\n', ' '])));
    }

    #[test]
    fn envelope_round_trips_through_headers() {
        let original = envelope();
        let headers = original.to_headers();
        let back = Envelope::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back, Ok(original));
    }

    #[test]
    fn unknown_type_is_an_error_not_a_default() {
        let mut headers = envelope().to_headers();
        for (k, v) in headers.iter_mut() {
            if k == "ce-type" {
                *v = "com.smartpos.order.created.v2".into();
            }
        }
        let back = Envelope::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert!(matches!(back, Err(EnvelopeError::UnknownType(_))));
    }
}
