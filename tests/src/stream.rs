//! Reading what actually landed on a JetStream stream.

use events::Envelope;

#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub envelope: Envelope,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// Every message of `stream`, in stream order, with its CloudEvents envelope.
pub async fn read_all(nats_url: &str, stream: &str) -> Vec<Stored> {
    let nats = async_nats::connect(nats_url).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(nats);
    let mut s = js.get_stream(stream).await.expect("stream exists");
    let info = s.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    if info.messages == 0 {
        return out;
    }
    for seq in info.first_sequence..=info.last_sequence {
        let Ok(msg) = s.get_raw_message(seq).await else { continue };
        let headers: Vec<(String, String)> = msg
            .headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
            .collect();
        let envelope = Envelope::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .expect("every message carries a valid CloudEvents envelope");
        out.push(Stored {
            seq,
            subject: msg.subject.to_string(),
            envelope,
            headers,
            payload: msg.payload.to_vec(),
        });
    }
    out
}

/// Every message of `stream` decoded as a projection decodes it.
pub async fn events(nats_url: &str, stream: &str) -> Vec<projectors::event::Event> {
    read_all(nats_url, stream)
        .await
        .iter()
        .map(|s| {
            let mut headers = async_nats::HeaderMap::new();
            for (k, v) in &s.headers {
                headers.insert(k.as_str(), v.as_str());
            }
            projectors::event::decode(s.seq, Some(&headers), &s.payload).expect("every stored event decodes")
        })
        .collect()
}

/// How many messages `stream` holds.
pub async fn count(nats_url: &str, stream: &str) -> u64 {
    let nats = async_nats::connect(nats_url).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(nats);
    let mut s = js.get_stream(stream).await.expect("stream exists");
    s.info().await.expect("stream info").state.messages
}
