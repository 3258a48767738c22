//! The built-in DNS responder: UDP and TCP on one address, answers from the latest view.
//!
//! ```text
//!   UDP ── hickory-server's Server ─┐
//!                                   ├─▶ AliasHandler ── Zone::answer(view, question) (pure)
//!   TCP ── bounded accept loop ─────┘          ▲
//!          (TCP_CONNECTIONS_MAX, idle timeout) │ watch: the latest view, serial
//!                                   Responder::publish(DnsView) ◀── the server
//! ```
//!
//! hickory-server parses requests and encodes answers (with UDP truncation); the TCP side
//! has its own accept loop because hickory's puts no bound on connections, and a
//! responder that any host can reach must not let idle connections pile up. A new view
//! is seen by the very next query: nothing is cached between the view and the answer.
//! The responder starts with [`DnsView::unknown`], which answers SERVFAIL for the alias
//! until the server publishes what it knows.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use hickory_proto::op::Edns;
use hickory_proto::op::Header;
use hickory_proto::op::HeaderCounts;
use hickory_proto::op::Metadata;
use hickory_proto::op::OpCode;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Name;
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::Request;
use hickory_server::server::RequestHandler;
use hickory_server::server::ResponseHandler;
use hickory_server::server::ResponseInfo;
use hickory_server::zone_handler::MessageResponse;
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::answer::Answer;
use crate::answer::Zone;
use crate::config::ResponderSettings;
use crate::view::DnsView;

/// Largest query answered. A question is a header (12 bytes), one name (at most 255) and
/// its type and class, plus an EDNS record with a cookie: well under 512. Anything bigger
/// carries sections a query has no use for; it is refused (UDP) or the connection closed
/// (TCP) before it is read in full.
pub const QUERY_BYTES_MAX: usize = 512;

/// TCP connections open at once. DNS goes over TCP only when a UDP answer was truncated
/// (or for clients that insist), each connection briefly: 64 serves a burst of a fleet's
/// fall-backs while bounding the tasks and buffers a flood of idle connections can pin.
/// When full, new connections are closed at once (UDP keeps working).
pub const TCP_CONNECTIONS_MAX: usize = 64;

/// How long a TCP connection may sit between queries, or take to send one. RFC 7766
/// suggests idle timeouts of seconds on a busy server; 5 s outlasts a client's
/// retransmission and frees a slot quickly.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The UDP payload size offered in EDNS answers: 1232 bytes, the DNS Flag Day 2020 value
/// that avoids IP fragmentation on any path.
pub const UDP_PAYLOAD_BYTES_MAX: u16 = 1232;

/// Tries at binding UDP and TCP to the same free port when the listen port is 0 (tests):
/// another process may take the TCP port between the two binds.
const PORT_PAIR_BIND_ATTEMPTS_MAX: usize = 16;

/// A pause after a failed `accept` (out of file descriptors, say) so the loop does not
/// spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Log directives for the server's tracing filter: hickory-server logs every query at
/// `info`, and a fleet that resolves the alias on every connection attempt would drown the
/// node's log. Its warnings still show.
pub const LOG_DIRECTIVES: &str = "hickory_server=warn,hickory_net=warn,hickory_proto=warn";

/// The view with its SOA serial, which counts changes.
#[derive(Debug, Clone)]
struct Published {
    view: DnsView,
    serial: u32,
}

/// A running responder. Dropping it stops nothing: call [`Responder::shutdown`].
pub struct Responder {
    local_addr: SocketAddr,
    views: watch::Sender<Published>,
    server: Server<AliasHandler>,
    tcp: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Responder {
    /// Binds UDP and TCP on `settings.listen` (the same port for both; with port 0 a free
    /// one) and starts answering, with the unknown view until [`Responder::publish`].
    pub async fn start(settings: &ResponderSettings) -> io::Result<Responder> {
        let (udp, tcp) = bind_pair(settings.listen).await?;
        let local_addr = udp.local_addr()?;
        let (views, receiver) = watch::channel(Published { view: DnsView::unknown(), serial: 1 });
        let handler = AliasHandler { zone: settings.zone.clone(), views: receiver };
        let mut server = Server::new(handler.clone());
        server.register_socket(udp);
        let shutdown = server.shutdown_token().clone();
        let tcp = tokio::spawn(serve_tcp(tcp, handler, shutdown.clone()));
        tracing::info!(%local_addr, alias = %settings.zone.alias, "DNS responder listening (UDP and TCP)");
        Ok(Responder { local_addr, views, server, tcp, shutdown })
    }

    /// The address UDP and TCP are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers from `view` from the next query on. The SOA serial moves when the view
    /// changes.
    pub fn publish(&self, view: DnsView) {
        self.views.send_if_modified(|published| {
            if published.view == view {
                return false;
            }
            published.view = view;
            // RFC 1982 serial arithmetic: wrapping is how serials are meant to grow.
            published.serial = published.serial.wrapping_add(1);
            true
        });
    }

    /// The view answers come from now.
    pub fn view(&self) -> DnsView {
        self.views.borrow().view.clone()
    }

    /// Stops listening and waits for the UDP task; open TCP connections are closed.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::warn!(%error, "DNS responder UDP task ended with an error");
        }
        let _ = (&mut self.tcp).await;
    }
}

/// Binds a UDP socket and a TCP listener on the same address and port.
async fn bind_pair(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let attempts = if listen.port() == 0 { PORT_PAIR_BIND_ATTEMPTS_MAX } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen).await.map_err(|error| context(error, "UDP", listen))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(context(error, "TCP", SocketAddr::new(listen.ip(), port))),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no bind attempt was made")))
}

fn context(error: io::Error, protocol: &str, addr: SocketAddr) -> io::Error {
    io::Error::new(
        error.kind(),
        format!(
            "cannot listen for DNS on {protocol} {addr}: {error} (port 53 needs root or CAP_NET_BIND_SERVICE; is \
             another DNS server there?)"
        ),
    )
}

/// Answers queries from the zone and the latest view.
#[derive(Clone)]
struct AliasHandler {
    zone: Zone,
    views: watch::Receiver<Published>,
}

impl AliasHandler {
    /// The response header and records for a request.
    fn decide(&self, request: &Request) -> (Metadata, Answer) {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;
        let refuse = |code| Answer {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };
        let answer = if request.as_slice().len() > QUERY_BYTES_MAX {
            refuse(ResponseCode::Refused)
        } else {
            match request.metadata.op_code {
                OpCode::Query => match request.queries.queries() {
                    [query] => {
                        let published = self.views.borrow();
                        let name = Name::from(query.name());
                        self.zone.answer(
                            &published.view,
                            published.serial,
                            &name,
                            query.query_type(),
                            query.query_class(),
                        )
                    }
                    // RFC 9619: exactly one question.
                    _ => refuse(ResponseCode::FormErr),
                },
                // The alias is made from the view; nobody may change it by DNS.
                OpCode::Update => refuse(ResponseCode::Refused),
                _ => refuse(ResponseCode::NotImp),
            }
        };
        metadata.authoritative = answer.authoritative;
        metadata.response_code = answer.code;
        (metadata, answer)
    }
}

#[async_trait::async_trait]
impl RequestHandler for AliasHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let (metadata, answer) = self.decide(request);
        // RFC 6891: answer EDNS with EDNS, offering no more than the client can take.
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().clamp(512, UDP_PAYLOAD_BYTES_MAX)).set_version(0);
            ours
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let message = builder.build(
            metadata,
            answer.answers.iter(),
            answer.authorities.iter(),
            std::iter::empty::<&Record>(),
            answer.additionals.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "DNS answer not sent");
                let mut failed = metadata;
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: failed, counts: HeaderCounts::default() })
            }
        }
    }
}

/// Accepts TCP connections, at most [`TCP_CONNECTIONS_MAX`] at once.
async fn serve_tcp(listener: TcpListener, handler: AliasHandler, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS_MAX));
    let handler = Arc::new(handler);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "DNS responder: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "DNS responder: TCP connections full, closing the new one");
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = serve_connection(stream, peer, &handler) => {}
                _ = shutdown.cancelled() => {}
            }
            drop(slot);
        });
    }
}

/// Answers the queries of one TCP connection in order (RFC 7766 framing: a two-byte length
/// before each message) until it goes idle, misbehaves or closes.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, handler: &AliasHandler) {
    loop {
        let Ok(Ok(length)) = tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_u16()).await else {
            return;
        };
        let length = usize::from(length);
        if length > QUERY_BYTES_MAX {
            tracing::debug!(%peer, length, "DNS responder: query over TCP too large, closing");
            return;
        }
        let mut query = vec![0; length];
        if !matches!(tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut query)).await, Ok(Ok(_))) {
            return;
        }
        let Ok(request) = Request::from_bytes(query, peer, Protocol::Tcp) else {
            tracing::debug!(%peer, "DNS responder: malformed query over TCP, closing");
            return;
        };
        let reply = TcpReply::default();
        handler.handle_request::<_, TokioTime>(&request, reply.clone()).await;
        let Some(bytes) = reply.take() else {
            return;
        };
        let Ok(length) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if !matches!(tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Catches the encoded answer of one TCP query, for the connection task to write.
#[derive(Clone, Default)]
struct TcpReply(Arc<Mutex<Option<Vec<u8>>>>);

impl TcpReply {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for TcpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        // Over TCP a message may be as long as its two-byte length allows.
        encoder.set_max_size(u16::MAX);
        let info = response.destructive_emit(&mut encoder).map_err(|error| NetError::from(error.to_string()))?;
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(bytes);
        Ok(info)
    }
}
