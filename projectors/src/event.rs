//! A domain event as a projection sees it: stream position, envelope, payload.

use events::cloudevent::EnvelopeError;
use events::domain::DecodeError;
use events::{DomainEvent, Envelope};

#[derive(Debug, Clone)]
pub struct Event {
    /// Position in the domain-event stream.
    pub seq: u64,
    pub envelope: Envelope,
    pub event: DomainEvent,
}

/// Why a message cannot be applied by this build: it must be parked, not skipped.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("stream sequence {seq}: {source}")]
    Envelope {
        seq: u64,
        #[source]
        source: EnvelopeError,
    },
    #[error("stream sequence {seq}: {source}")]
    Payload {
        seq: u64,
        #[source]
        source: DecodeError,
    },
}

impl Undecodable {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Envelope { seq, .. } | Self::Payload { seq, .. } => *seq,
        }
    }
}

/// Decodes the headers and payload of the message at `seq`.
pub fn decode(
    seq: u64,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Result<Event, Undecodable> {
    // Borrowed straight from the message: no copy of a header per event.
    let pairs = headers
        .into_iter()
        .flat_map(|h| h.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_ref(), v.as_str()))));
    let envelope = Envelope::from_headers(pairs).map_err(|source| Undecodable::Envelope { seq, source })?;
    let event = DomainEvent::from_kind_data(envelope.kind, payload)
        .map_err(|source| Undecodable::Payload { seq, source })?;
    Ok(Event { seq, envelope, event })
}
