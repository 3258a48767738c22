//! The built-in responder over real sockets on 127.0.0.1, queried with hickory-resolver (a
//! caching stub resolver, as agents will use), with raw DNS messages (to see the exact
//! response code and flags) and with `dig` where it is installed (Debian's
//! `bind9-dnsutils`; CI installs it).
//!
//! The addresses inside the views are documentation addresses (192.0.2.0/24, 2001:db8::/32):
//! they are only data in answers; nothing connects to them.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use haven_dns::answer::ANSWER_RECORDS_MAX;
use haven_dns::responder::QUERY_BYTES_MAX;
use haven_dns::responder::TCP_CONNECTIONS_MAX;
use haven_dns::AnswerMode;
use haven_dns::DnsView;
use haven_dns::MemberView;
use haven_dns::Responder;
use haven_dns::ResponderSettings;
use haven_dns::Zone;
use hickory_proto::op::Message;
use hickory_proto::op::MessageType;
use hickory_proto::op::OpCode;
use hickory_proto::op::Query;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::Name;
use hickory_proto::rr::RData;
use hickory_proto::rr::Record;
use hickory_proto::rr::RecordType;
use hickory_resolver::config::ConnectionConfig;
use hickory_resolver::config::NameServerConfig;
use hickory_resolver::config::ResolveHosts;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::config::ResolverOpts;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::DnsError;
use hickory_resolver::net::NetError;
use hickory_resolver::Resolver;
use hickory_resolver::TokioResolver;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::UdpSocket;

const ALIAS: &str = "mgmt.example.internal.";

/// Generous: the machine is shared with other builds; answers take microseconds.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

fn member(id: u64, healthy: bool) -> MemberView {
    MemberView {
        id,
        addresses: vec![format!("192.0.2.{id}").parse().unwrap(), format!("2001:db8::{id}").parse().unwrap()],
        healthy,
        client_port: 7000 + id as u16,
        agent_port: 7200 + id as u16,
    }
}

fn view(primary: u64) -> DnsView {
    DnsView { members: (1..=3).map(|id| member(id, true)).collect(), primary: Some(primary), partitioned: false }
}

async fn start(mode: AnswerMode) -> Responder {
    start_for(ALIAS, mode).await
}

async fn start_for(alias: &str, mode: AnswerMode) -> Responder {
    let settings = ResponderSettings {
        zone: Zone { alias: Name::from_ascii(alias).unwrap(), mode, ttl_s: 0 },
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    Responder::start(&settings).await.expect("the responder binds 127.0.0.1")
}

/// A stub resolver with the default cache on, as an agent would have: TTL 0 is what makes
/// it ask again.
fn resolver(server: SocketAddr, tcp: bool) -> TokioResolver {
    let mut connection = if tcp { ConnectionConfig::tcp() } else { ConnectionConfig::udp() };
    connection.port = server.port();
    let name_server = NameServerConfig::new(server.ip(), true, vec![connection]);
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![name_server]);
    let mut options = ResolverOpts::default();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 1;
    options.use_hosts_file = ResolveHosts::Never;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(options).build().unwrap()
}

async fn ipv4(resolver: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, NetError> {
    let lookup = resolver.ipv4_lookup(name).await?;
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect())
}

fn ips(texts: &[&str]) -> Vec<IpAddr> {
    texts.iter().map(|text| text.parse().unwrap()).collect()
}

/// One query over UDP, the response as sent.
async fn udp_query(server: SocketAddr, message: &Message) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&message.to_vec().unwrap(), server).await.unwrap();
    let mut buffer = vec![0; 65_535];
    let (length, _) =
        tokio::time::timeout(QUERY_TIMEOUT, socket.recv_from(&mut buffer)).await.expect("an answer").unwrap();
    let response = Message::from_vec(&buffer[..length]).unwrap();
    assert_eq!(response.metadata.id, message.metadata.id);
    assert_eq!(response.metadata.message_type, MessageType::Response);
    response
}

fn question(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    udp_query(server, &question(name, qtype)).await
}

fn rdata(message: &Message) -> Vec<String> {
    message.answers.iter().map(|record| record.data.to_string()).collect()
}

/// Sends one framed query on a TCP connection and reads the framed answer.
async fn tcp_exchange(stream: &mut TcpStream, message: &Message) -> Message {
    let bytes = message.to_vec().unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let length = tokio::time::timeout(QUERY_TIMEOUT, stream.read_u16()).await.expect("an answer").unwrap();
    let mut answer = vec![0; usize::from(length)];
    stream.read_exact(&mut answer).await.unwrap();
    Message::from_vec(&answer).unwrap()
}

/// True when the server closes the connection (read gives end of file) within the timeout.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(QUERY_TIMEOUT, stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// The alias answers the primary first, then the other healthy members; when the view
/// says the primary moved, the very next lookup of a caching resolver says so too (TTL 0).
#[tokio::test]
async fn the_alias_answers_the_primary_first_and_follows_it_at_once() {
    let responder = start(AnswerMode::PrimaryFirst).await;
    responder.publish(view(1));
    let addr = responder.local_addr();
    for tcp in [false, true] {
        let resolver = resolver(addr, tcp);
        assert_eq!(ipv4(&resolver, ALIAS).await.unwrap(), ips(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));
        let lookup = resolver.ipv6_lookup(ALIAS).await.unwrap();
        assert_eq!(lookup.answers().len(), 3);
        assert_eq!(lookup.answers()[0].data.to_string(), "2001:db8::1");
        assert!(lookup.answers().iter().all(|record| record.ttl == 0), "TTL 0 by default");

        responder.publish(view(3));
        assert_eq!(ipv4(&resolver, ALIAS).await.unwrap(), ips(&["192.0.2.3", "192.0.2.1", "192.0.2.2"]));
        responder.publish(view(1));
    }
    // A member that is not healthy is left out.
    let mut unhealthy = view(2);
    unhealthy.members[0].healthy = false;
    responder.publish(unhealthy);
    assert_eq!(ipv4(&resolver(addr, false), ALIAS).await.unwrap(), ips(&["192.0.2.2", "192.0.2.3"]));
    responder.shutdown().await;
}

#[tokio::test]
async fn primary_only_mode_answers_the_primary_alone() {
    let responder = start(AnswerMode::PrimaryOnly).await;
    responder.publish(view(2));
    let resolver = resolver(responder.local_addr(), false);
    assert_eq!(ipv4(&resolver, ALIAS).await.unwrap(), ips(&["192.0.2.2"]));
    responder.publish(view(3));
    assert_eq!(ipv4(&resolver, ALIAS).await.unwrap(), ips(&["192.0.2.3"]));
    responder.shutdown().await;
}

/// SRV records name each member's client and agent port, primary with the lowest
/// priority, and their targets resolve to the members.
#[tokio::test]
async fn srv_records_give_the_client_and_agent_ports() {
    let responder = start(AnswerMode::PrimaryFirst).await;
    responder.publish(view(2));
    let resolver = resolver(responder.local_addr(), false);
    for (service, base) in [("_haven._tcp", 7000), ("_haven-agent._tcp", 7200)] {
        let lookup = resolver.srv_lookup(format!("{service}.{ALIAS}")).await.unwrap();
        let mut srv: Vec<(u16, u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some((srv.priority, srv.port, srv.target.to_string())),
                _ => None,
            })
            .collect();
        srv.sort();
        assert_eq!(
            srv,
            [
                (0, base + 2, format!("node-2.{ALIAS}")),
                (10, base + 1, format!("node-1.{ALIAS}")),
                (10, base + 3, format!("node-3.{ALIAS}")),
            ],
            "{service}"
        );
    }
    assert_eq!(ipv4(&resolver, &format!("node-3.{ALIAS}")).await.unwrap(), ips(&["192.0.2.3"]));
    // The targets' addresses come in the additional section: one round trip suffices.
    let raw = ask(responder.local_addr(), &format!("_haven._tcp.{ALIAS}"), RecordType::SRV).await;
    assert_eq!(raw.additionals.iter().filter(|record| record.record_type() == RecordType::A).count(), 3);
    responder.shutdown().await;
}

/// Authoritative for the alias only: REFUSED outside it (no recursion, RA clear),
/// NXDOMAIN for names under it that do not exist, with the SOA for negative caching.
#[tokio::test]
async fn names_it_does_not_own_are_refused_or_do_not_exist() {
    let responder = start(AnswerMode::PrimaryFirst).await;
    responder.publish(view(1));
    let addr = responder.local_addr();

    let outside = ask(addr, "www.example.com.", RecordType::A).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    assert!(!outside.metadata.recursion_available, "it never recurses");
    assert!(outside.answers.is_empty());
    let parent = ask(addr, "example.internal.", RecordType::A).await;
    assert_eq!(parent.metadata.response_code, ResponseCode::Refused);

    let missing = ask(addr, &format!("nothing.{ALIAS}"), RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(missing.metadata.authoritative);
    assert_eq!(missing.authorities.first().map(Record::record_type), Some(RecordType::SOA));

    let answer = ask(addr, ALIAS, RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert!(!answer.metadata.recursion_available);
    assert_eq!(rdata(&answer), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);

    // The resolver reports the same as errors.
    let resolver = resolver(addr, false);
    match ipv4(&resolver, &format!("nothing.{ALIAS}")).await {
        Err(NetError::Dns(DnsError::NoRecordsFound(no))) => assert_eq!(no.response_code, ResponseCode::NXDomain),
        other => panic!("expected NXDOMAIN, got {other:?}"),
    }
    match ipv4(&resolver, "www.example.com.").await {
        Err(error) => assert!(error.to_string().contains("Refused"), "{error}"),
        Ok(addresses) => panic!("a name outside the alias answered {addresses:?}"),
    }

    // Updates are refused; other op codes are not implemented.
    let mut update = question(ALIAS, RecordType::SOA);
    update.metadata.op_code = OpCode::Update;
    assert_eq!(udp_query(addr, &update).await.metadata.response_code, ResponseCode::Refused);
    let mut status = question(ALIAS, RecordType::A);
    status.metadata.op_code = OpCode::Status;
    assert_eq!(udp_query(addr, &status).await.metadata.response_code, ResponseCode::NotImp);
    responder.shutdown().await;
}

/// A partitioned node (lost quorum, or no knowledge of the primary) never advertises
/// anyone: SERVFAIL for everything under the alias, so resolvers ask another node; when
/// the view is whole again, it answers again. A fresh responder starts partitioned.
#[tokio::test]
async fn a_partitioned_view_stops_answering_for_the_alias() {
    let responder = start(AnswerMode::PrimaryFirst).await;
    let addr = responder.local_addr();
    let resolver = resolver(addr, false);
    assert_eq!(ask(addr, ALIAS, RecordType::A).await.metadata.response_code, ResponseCode::ServFail, "no view yet");

    responder.publish(view(1));
    assert_eq!(ipv4(&resolver, ALIAS).await.unwrap(), ips(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));

    // Node 1, the old primary, is cut off: its own view says partitioned.
    let mut partitioned = view(1);
    partitioned.partitioned = true;
    responder.publish(partitioned);
    for (name, qtype) in [
        (ALIAS.to_string(), RecordType::A),
        (ALIAS.to_string(), RecordType::AAAA),
        (format!("_haven._tcp.{ALIAS}"), RecordType::SRV),
        (format!("node-1.{ALIAS}"), RecordType::A),
    ] {
        let answer = ask(addr, &name, qtype).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail, "{name} {qtype}");
        assert!(answer.answers.is_empty() && answer.additionals.is_empty(), "{name} {qtype}: {answer:?}");
    }
    match ipv4(&resolver, ALIAS).await {
        Err(error) => assert!(error.to_string().contains("Server Failure"), "{error}"),
        Ok(addresses) => panic!("a partitioned responder answered {addresses:?}"),
    }
    // Names outside the alias are still refused (it is not a resolver in any state).
    assert_eq!(ask(addr, "www.example.com.", RecordType::A).await.metadata.response_code, ResponseCode::Refused);

    responder.publish(view(2));
    assert_eq!(ipv4(&resolver, ALIAS).await.unwrap(), ips(&["192.0.2.2", "192.0.2.1", "192.0.2.3"]));
    responder.shutdown().await;
}

/// The named limits: a query larger than QUERY_BYTES_MAX is refused over UDP and closes a
/// TCP connection; at most TCP_CONNECTIONS_MAX connections are open at once and the one
/// beyond is closed at once, while UDP keeps answering; a freed slot is usable again.
#[tokio::test]
async fn limits_on_query_size_and_tcp_connections() {
    let responder = start(AnswerMode::PrimaryFirst).await;
    responder.publish(view(1));
    let addr = responder.local_addr();

    let mut large = question(ALIAS, RecordType::A);
    let filler = "x".repeat(200);
    large.add_additional(Record::from_rdata(
        Name::from_ascii(ALIAS).unwrap(),
        0,
        RData::TXT(TXT::new(vec![filler.clone(), filler.clone(), filler])),
    ));
    assert!(large.to_vec().unwrap().len() > QUERY_BYTES_MAX);
    assert_eq!(udp_query(addr, &large).await.metadata.response_code, ResponseCode::Refused);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = tcp_exchange(&mut stream, &question(ALIAS, RecordType::A)).await;
    assert_eq!(rdata(&answer), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let bytes = large.to_vec().unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    assert!(closed_by_server(&mut stream).await, "an oversized query closes the connection");

    let mut held = Vec::new();
    for _ in 0..TCP_CONNECTIONS_MAX {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Each holds a slot for real: it gets answers.
        tcp_exchange(&mut stream, &question(ALIAS, RecordType::A)).await;
        held.push(stream);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_server(&mut extra).await, "connection {} is closed at once", TCP_CONNECTIONS_MAX + 1);
    assert_eq!(rdata(&ask(addr, ALIAS, RecordType::A).await).len(), 3, "UDP still answers");

    drop(held.pop());
    // The slot is freed when the server notices the close; give it a moment.
    let mut reopened = None;
    for _ in 0..100 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let bytes = question(ALIAS, RecordType::A).to_vec().unwrap();
        stream.write_u16(bytes.len() as u16).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        if let Ok(Ok(length)) = tokio::time::timeout(Duration::from_secs(2), stream.read_u16()).await {
            let mut answer = vec![0; usize::from(length)];
            stream.read_exact(&mut answer).await.unwrap();
            reopened = Some(Message::from_vec(&answer).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rdata(&reopened.expect("a freed slot takes a new connection")).len(), 3);
    responder.shutdown().await;
}

/// Many members: the answer holds at most ANSWER_RECORDS_MAX records, primary first.
/// Over UDP without EDNS (512 bytes) an answer that does not fit (a long alias) comes
/// back truncated, with TC set, and the full one comes over TCP.
#[tokio::test]
async fn large_answers_are_bounded_and_truncated_over_udp() {
    let long_alias = format!("{}.{}.{}.example.internal.", "a".repeat(63), "b".repeat(63), "c".repeat(60));
    let responder = start_for(&long_alias, AnswerMode::PrimaryFirst).await;
    let members: Vec<MemberView> = (1..=30).map(|id| member(id, true)).collect();
    responder.publish(DnsView { members, primary: Some(30), partitioned: false });
    let addr = responder.local_addr();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let full = tcp_exchange(&mut stream, &question(&long_alias, RecordType::AAAA)).await;
    assert_eq!(full.answers.len(), ANSWER_RECORDS_MAX);
    assert_eq!(rdata(&full)[0], "2001:db8::30", "the primary, node 30, first");
    assert!(!full.metadata.truncation);
    let udp = ask(addr, &long_alias, RecordType::AAAA).await;
    assert!(udp.to_vec().unwrap().len() <= 512);
    assert!(udp.metadata.truncation, "the UDP answer did not fit 512 bytes and says so");
    assert!(udp.answers.len() < ANSWER_RECORDS_MAX);
    // The resolver falls back to TCP by itself and gets them all.
    let lookup = resolver(addr, false).ipv6_lookup(long_alias.as_str()).await.unwrap();
    assert_eq!(lookup.answers().len(), ANSWER_RECORDS_MAX);
    responder.shutdown().await;
}

/// `dig` (BIND's client) sees the same answers, over UDP and TCP, and the change of
/// primary. Skipped with a message when dig is not installed.
#[tokio::test]
async fn dig_sees_the_alias_follow_the_primary() {
    if Command::new("dig").arg("-v").output().is_err() {
        eprintln!(
            "SKIPPED dig_sees_the_alias_follow_the_primary: `dig` is not installed (apt-get install bind9-dnsutils)"
        );
        return;
    }
    let responder = start(AnswerMode::PrimaryFirst).await;
    responder.publish(view(1));
    let addr = responder.local_addr();
    let dig = |args: &[&str]| {
        let port = addr.port().to_string();
        let mut command = Command::new("dig");
        command.args(["@127.0.0.1", "-p", &port, "+short", "+tries=1", "+time=10"]).args(args);
        async move {
            let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
            String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect::<Vec<_>>()
        }
    };
    assert_eq!(dig(&[ALIAS, "A"]).await, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    assert_eq!(dig(&["+tcp", ALIAS, "AAAA"]).await, ["2001:db8::1", "2001:db8::2", "2001:db8::3"]);
    let srv = dig(&[&format!("_haven._tcp.{ALIAS}"), "SRV"]).await;
    assert!(srv.contains(&format!("0 0 7001 node-1.{ALIAS}")), "{srv:?}");
    responder.publish(view(2));
    assert_eq!(dig(&[ALIAS]).await, ["192.0.2.2", "192.0.2.1", "192.0.2.3"]);

    // The status line, for the response code: NXDOMAIN, REFUSED, SERVFAIL.
    let status = |args: Vec<String>| {
        let port = addr.port().to_string();
        async move {
            let output = tokio::task::spawn_blocking(move || {
                Command::new("dig").args(["@127.0.0.1", "-p", &port, "+tries=1", "+time=10"]).args(args).output()
            })
            .await
            .unwrap()
            .unwrap();
            let text = String::from_utf8(output.stdout).unwrap();
            text.lines().find(|line| line.contains("status:")).unwrap_or_default().to_string()
        }
    };
    assert!(status(vec![format!("nothing.{ALIAS}")]).await.contains("status: NXDOMAIN"));
    assert!(status(vec!["www.example.com.".into()]).await.contains("status: REFUSED"));
    let mut partitioned = view(2);
    partitioned.partitioned = true;
    responder.publish(partitioned);
    assert!(status(vec![ALIAS.into()]).await.contains("status: SERVFAIL"));
    responder.shutdown().await;
}
