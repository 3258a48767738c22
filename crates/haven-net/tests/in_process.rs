//! The in-process transport carries envelopes through the same codec as TCP, and a cut
//! link reports "not delivered" so callers know a retry is safe.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use haven_net::in_process::InProcessNetwork;
use haven_net::PeerEnvelope;
use haven_net::PeerHandler;
use haven_net::PeerRequest;
use haven_net::PeerResponse;
use haven_net::PingInfo;
use haven_net::Transport;

struct Echo(u64);

impl PeerHandler for Echo {
    fn handle(&self, request: PeerEnvelope, _: Option<String>) -> BoxFuture<'static, PeerResponse> {
        let node_id = self.0;
        async move {
            match request.body {
                PeerRequest::Ping => PeerResponse::Ping(PingInfo {
                    node_id,
                    term: 1,
                    leader: Some(request.from),
                    last_log_index: 0,
                    applied_index: 0,
                    boot: 2,
                    wall_ms: 0,
                }),
                _ => PeerResponse::Refused("only pings here".into()),
            }
        }
        .boxed()
    }
}

fn ping_from(from: u64) -> PeerEnvelope {
    PeerEnvelope {
        from,
        from_incarnation: "i".into(),
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
async fn delivers_and_cuts() {
    let network = InProcessNetwork::new();
    network.register("n2", Arc::new(Echo(2)));
    let timeout = Duration::from_secs(1);
    let answer = network.call("n2", ping_from(1), timeout).await.unwrap();
    assert!(matches!(answer, PeerResponse::Ping(PingInfo { node_id: 2, leader: Some(1), .. })));
    network.set_cut("n2", true);
    let error = network.call("n2", ping_from(1), timeout).await.unwrap_err();
    assert!(error.not_delivered(), "a cut link is known not to have delivered: {error}");
    network.set_cut("n2", false);
    assert!(network.call("n2", ping_from(1), timeout).await.is_ok());
    assert!(network.call("n9", ping_from(1), timeout).await.unwrap_err().not_delivered());
}
