//! Length-prefixed frames: a 4-byte big-endian length, then the message in Haven's one
//! binary encoding (`haven_core::codec`, the same as the log and snapshots).
//!
//! The length is checked against `PEER_FRAME_BYTES_MAX` before anything is allocated, so a
//! peer (or anyone who reaches the port) cannot make a node allocate more than that.

use haven_core::limits::PEER_FRAME_BYTES_MAX;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {PEER_FRAME_BYTES_MAX} bytes")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes a message into a frame (length prefix included).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    // Room for the length prefix first, filled in once the body's length is known.
    let mut out =
        haven_core::codec::encode_after(vec![0u8; 4], message).map_err(|e| FrameError::Decode(e.to_string()))?;
    let body = out.len() - 4;
    if body > PEER_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(body));
    }
    out[..4].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(out)
}

/// Decodes a frame body (without the length prefix). Never panics on any input.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    haven_core::codec::decode(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Writes one message as a frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(writer: &mut W, message: &T) -> Result<(), FrameError> {
    let bytes = encode(message)?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame body. `Closed` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(error) => return Err(error.into()),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > PEER_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(length));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerEnvelope;
    use crate::PeerRequest;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let envelope = PeerEnvelope {
            from: 1,
            from_incarnation: "a".into(),
            to: 2,
            to_incarnation: Some("b".into()),
            from_boot: 7,
            to_boot: None,
            to_durable: None,
            cluster_id: None,
            body: PeerRequest::Ping,
        };
        let bytes = encode(&envelope).unwrap();
        let mut reader = &bytes[..];
        let body = read_frame(&mut reader).await.unwrap();
        let back: PeerEnvelope = decode(&body).unwrap();
        assert_eq!(back.to_incarnation.as_deref(), Some("b"));

        let mut huge = ((PEER_FRAME_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let mut reader = &huge[..];
        assert!(matches!(read_frame(&mut reader).await, Err(FrameError::TooLarge(_))));

        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame(&mut empty).await, Err(FrameError::Closed)));
        assert!(decode::<PeerEnvelope>(&[0xff, 0xff, 0xff]).is_err());
    }

    mod properties {
        use haven_core::strategies;
        use haven_store::Entry;
        use haven_store::LogId;
        use haven_store::Vote;
        use openraft::raft::AppendEntriesRequest;
        use openraft::vote::RaftLeaderId;
        use openraft::EntryPayload;
        use proptest::prelude::*;

        use super::super::*;
        use crate::AckStamp;
        use crate::Acked;
        use crate::PeerEnvelope;
        use crate::PeerRequest;
        use crate::PeerResponse;
        use crate::SnapshotChunk;

        fn log_id(term: u64, node: u64, index: u64) -> LogId {
            let leader = <haven_store::TypeConfig as openraft::RaftTypeConfig>::LeaderId::new(term, node);
            LogId::new(leader.to_committed(), index)
        }

        /// A frame's body decodes to a value that encodes to the same bytes: nothing was
        /// lost or misread on the way (peer messages have no `PartialEq`).
        fn round_trips<T: Serialize + DeserializeOwned>(value: &T) -> Result<(), TestCaseError> {
            let framed = encode(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: T = decode(&framed[4..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(encode(&back).map_err(|e| TestCaseError::fail(e.to_string()))?, framed);
            Ok(())
        }

        fn envelope(body: PeerRequest) -> PeerEnvelope {
            PeerEnvelope {
                from: 1,
                from_incarnation: "a".into(),
                to: 2,
                to_incarnation: Some("b".into()),
                cluster_id: Some("c".into()),
                body,
                from_boot: 3,
                to_boot: Some(4),
                to_durable: Some(5),
            }
        }

        proptest! {
            /// Issue 10: the wire carries the same values as the log and the snapshot, in the
            /// same encoding: replicated entries with every request, forwarded requests,
            /// snapshot chunks of any state, and the leader's answers with every result.
            #[test]
            fn every_peer_message_reads_back_as_it_was(
                requests in proptest::collection::vec(strategies::request(), 0..8),
                forwarded in strategies::request(),
                result in strategies::command_result(),
                state in strategies::state(40),
                term in 1u64..100,
            ) {
                let entries: Vec<Entry> = requests
                    .into_iter()
                    .enumerate()
                    .map(|(i, request)| Entry { log_id: log_id(term, 1, i as u64 + 1), payload: EntryPayload::Normal(request) })
                    .collect();
                let append = AppendEntriesRequest {
                    vote: Vote::new_committed(term, 1),
                    prev_log_id: Some(log_id(term, 1, 0)),
                    entries,
                    leader_commit: Some(log_id(term, 1, 0)),
                };
                round_trips(&envelope(PeerRequest::AppendEntries(append)))?;
                let credential = haven_core::auth::Credential::new("hvn_0123456789abcdef_secret");
                round_trips(&envelope(PeerRequest::Forward { request: forwarded, credential }))?;
                let data = haven_core::codec::encode(&state).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let chunk = SnapshotChunk {
                    vote: Vote::new_committed(term, 1),
                    meta: Default::default(),
                    offset: 0,
                    total_bytes: data.len() as u64,
                    data_hash: [term as u8; 32],
                    data,
                };
                round_trips(&envelope(PeerRequest::SnapshotChunk(chunk)))?;
                let ack = AckStamp { node: 1, term, index: 7, mono_ns: 9 };
                round_trips(&PeerResponse::Forward(Ok(Acked { result, ack })))?;
            }
        }
    }
}
