//! The peer frame reader survives a slow link: a frame whose bytes take longer than the
//! membership re-check interval to arrive is read whole, and the connection stays in step
//! (issue 12: a 4 MiB snapshot chunk on a link under ~32 Mbit/s, or a TCP stall, used to be
//! dropped half-read by the re-check, losing the frame and the connection).

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use haven_net::frame;
use haven_net::tcp::MEMBERSHIP_RECHECK_INTERVAL;
use haven_net::PeerEnvelope;
use haven_net::PeerHandler;
use haven_net::PeerRequest;
use haven_net::PeerResponse;
use haven_net::PingInfo;
use tokio::io::AsyncWriteExt;

struct Echo;

impl PeerHandler for Echo {
    fn handle(&self, request: PeerEnvelope, _: Option<String>) -> BoxFuture<'static, PeerResponse> {
        async move {
            PeerResponse::Ping(PingInfo {
                node_id: 2,
                term: 1,
                leader: Some(request.from),
                last_log_index: request.from_incarnation.len() as u64,
                applied_index: 0,
                boot: 2,
                wall_ms: 0,
            })
        }
        .boxed()
    }
}

fn ping(from: u64, incarnation: String) -> PeerEnvelope {
    PeerEnvelope {
        from,
        from_incarnation: incarnation,
        to: 2,
        to_incarnation: None,
        cluster_id: None,
        body: PeerRequest::Ping,
        from_boot: 1,
        to_boot: None,
        to_durable: None,
    }
}

#[tokio::test]
async fn a_frame_slower_than_the_recheck_interval_arrives_whole() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(haven_net::tcp::serve(listener, Arc::new(Echo), None, async {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();

    // A 64 KiB frame sent in 16 pieces over 2.4 s: more than twice the re-check interval.
    let bytes = frame::encode(&ping(1, "x".repeat(64 * 1024))).unwrap();
    let pieces = 16;
    let pause = Duration::from_millis(150);
    assert!(pause * pieces > 2 * MEMBERSHIP_RECHECK_INTERVAL);
    let started = Instant::now();
    for piece in bytes.chunks(bytes.len().div_ceil(pieces as usize)) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(pause).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(30), frame::read_frame(&mut stream)).await;
    let answer: PeerResponse = frame::decode(&answer.expect("an answer").expect("a frame")).unwrap();
    assert!(started.elapsed() > 2 * MEMBERSHIP_RECHECK_INTERVAL);
    assert!(
        matches!(answer, PeerResponse::Ping(PingInfo { leader: Some(1), last_log_index: 65536, .. })),
        "the slow frame was read whole: {answer:?}"
    );

    // The framing is intact: the next request on the same connection is answered too.
    frame::write_frame(&mut stream, &ping(3, "y".into())).await.unwrap();
    let next: PeerResponse = frame::decode(&frame::read_frame(&mut stream).await.unwrap()).unwrap();
    assert!(matches!(next, PeerResponse::Ping(PingInfo { leader: Some(3), last_log_index: 1, .. })), "{next:?}");
    let _ = stop.send(());
    let _ = server.await;
}
