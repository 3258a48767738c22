//! Property-based fuzzing of the peer wire decoder: random bytes, truncated and bit-flipped
//! valid frames. The decoder must return a message or an error, never panic, and never
//! allocate past the frame limit (the length is checked before the buffer is made).

use haven_core::auth::Credential;
use haven_net::frame;
use haven_net::PeerEnvelope;
use haven_net::PeerRequest;
use proptest::prelude::*;

fn valid_frame() -> Vec<u8> {
    let envelope = PeerEnvelope {
        from: 1,
        from_incarnation: "a".repeat(32),
        to: 2,
        to_incarnation: Some("b".repeat(32)),
        cluster_id: Some("c".repeat(32)),
        body: PeerRequest::RemoveMember { node_id: 3, force: true, credential: Credential::new("hvn_x") },
        from_boot: u64::MAX,
        to_boot: Some(1),
        to_durable: Some(u64::MAX),
    };
    frame::encode(&envelope).expect("encode")
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = frame::decode::<PeerEnvelope>(&bytes);
        let _ = frame::decode::<haven_net::PeerResponse>(&bytes);
    }

    #[test]
    fn damaged_frames_never_panic(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
        let mut bytes = valid_frame();
        let body = &mut bytes[4..];
        let index = flip % body.len();
        body[index] ^= 1 << bit;
        let cut = cut.min(body.len());
        let _ = frame::decode::<PeerEnvelope>(&body[..cut]);
        let _ = frame::decode::<PeerEnvelope>(body);
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocating(length in (haven_core::limits::PEER_FRAME_BYTES_MAX as u32 + 1)..u32::MAX) {
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let result = runtime.block_on(async { frame::read_frame(&mut &bytes[..]).await });
        prop_assert!(matches!(result, Err(frame::FrameError::TooLarge(_))));
    }
}

#[test]
fn a_valid_frame_round_trips() {
    let bytes = valid_frame();
    let back: PeerEnvelope = frame::decode(&bytes[4..]).unwrap();
    assert!(matches!(back.body, PeerRequest::RemoveMember { node_id: 3, force: true, .. }));
}
