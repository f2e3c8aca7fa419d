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

    /// Reads an envelope back from headers (case-sensitive, lower-case names;
    /// where a name repeats, its last value counts).
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, EnvelopeError> {
        // One pass over the dozen headers, each name matched once, and only
        // the values kept are percent-decoded: rebuilds decode millions.
        let mut seen = Seen::default();
        for (name, value) in headers {
            let slot = match name {
                "ce-specversion" => &mut seen.specversion,
                "ce-type" => &mut seen.ty,
                "ce-id" => &mut seen.id,
                "ce-merchantid" => &mut seen.merchant_id,
                "ce-storeid" => &mut seen.store_id,
                "ce-deviceid" => &mut seen.device_id,
                "ce-subject" => &mut seen.subject,
                "ce-sequence" => &mut seen.sequence,
                "ce-time" => &mut seen.time,
                "ce-correlationid" => &mut seen.correlation_id,
                TRACEPARENT => &mut seen.traceparent,
                _ => continue,
            };
            *slot = Some(value);
        }
        let get = |value: Option<&'a str>, name: &'static str| {
            value.map(decode).ok_or(EnvelopeError::Missing(name))
        };
        let uuid = |value: Option<&'a str>, name: &'static str| {
            get(value, name).and_then(|v| Uuid::parse_str(&v).map_err(|_| EnvelopeError::Invalid(name)))
        };
        let opt_uuid = |value: Option<&'a str>, name: &'static str| match value {
            None => Ok(None),
            Some(_) => uuid(value, name).map(Some),
        };
        if get(seen.specversion, "ce-specversion")? != "1.0" {
            return Err(EnvelopeError::Invalid("ce-specversion"));
        }
        let ty = get(seen.ty, "ce-type")?;
        let kind = EventKind::from_ce_type(&ty).ok_or_else(|| EnvelopeError::UnknownType(ty.into_owned()))?;
        Ok(Self {
            id: uuid(seen.id, "ce-id")?,
            kind,
            merchant_id: uuid(seen.merchant_id, "ce-merchantid")?,
            store_id: opt_uuid(seen.store_id, "ce-storeid")?,
            device_id: opt_uuid(seen.device_id, "ce-deviceid")?,
            subject: uuid(seen.subject, "ce-subject")?,
            sequence: get(seen.sequence, "ce-sequence")?
                .parse()
                .map_err(|_| EnvelopeError::Invalid("ce-sequence"))?,
            time: DateTime::parse_from_rfc3339(&get(seen.time, "ce-time")?)
                .map_err(|_| EnvelopeError::Invalid("ce-time"))?
                .with_timezone(&Utc),
            correlation_id: seen.correlation_id.map(|v| decode(v).into_owned()),
            traceparent: seen.traceparent.map(|v| decode(v).into_owned()),
        })
    }
}

/// The raw values of the headers an [`Envelope`] is read from.
#[derive(Default)]
struct Seen<'a> {
    specversion: Option<&'a str>,
    ty: Option<&'a str>,
    id: Option<&'a str>,
    merchant_id: Option<&'a str>,
    store_id: Option<&'a str>,
    device_id: Option<&'a str>,
    subject: Option<&'a str>,
    sequence: Option<&'a str>,
    time: Option<&'a str>,
    correlation_id: Option<&'a str>,
    traceparent: Option<&'a str>,
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, ENCODE).to_string()
}

fn decode(value: &str) -> Cow<'_, str> {
    // A byte loop, not `contains`: on values this short memchr's set-up costs more than the scan.
    if value.bytes().any(|b| b == b'%') {
        percent_decode_str(value).decode_utf8_lossy()
    } else {
        Cow::Borrowed(value)
    }
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
    fn a_repeated_header_counts_by_its_last_value_and_others_are_ignored() {
        let original = envelope();
        let mut headers = original.to_headers();
        headers.insert(0, ("ce-sequence".into(), "1".into()));
        headers.push(("Nats-Msg-Id".into(), original.id.to_string()));
        let back = Envelope::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back, Ok(original.clone()));

        headers.push(("ce-sequence".into(), "9".into()));
        let back = Envelope::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back.map(|e| e.sequence), Ok(9));

        let without: Vec<_> = headers.iter().filter(|(k, _)| k != "ce-subject").collect();
        let back = Envelope::from_headers(without.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back, Err(EnvelopeError::Missing("ce-subject")));
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
