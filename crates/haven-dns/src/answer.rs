//! The answers: what the responder says for a name and type, given the view. Pure: no
//! socket, no clock; the responder shell only decodes the question and sends this back.
//!
//! The zone is the alias itself (the responder is authoritative for it and for nothing
//! else, and never recurses):
//!
//! ```text
//!   mgmt.example.internal.                     A/AAAA  healthy members, primary first (or only)
//!   _haven._tcp.mgmt.example.internal.         SRV     client port of each of them
//!   _haven-agent._tcp.mgmt.example.internal.   SRV     agent port of each of them
//!   node-<id>.mgmt.example.internal.           A/AAAA  that member's addresses (SRV targets)
//!   anything else under the alias              NXDOMAIN (NOERROR for empty non-terminals)
//!   anything outside the alias                 REFUSED
//!   anything under the alias, view partitioned SERVFAIL: resolvers ask another node
//! ```
//!
//! Why SERVFAIL for a partitioned view, and not silence or an empty answer: a stub or
//! recursive resolver that gets SERVFAIL tries the next server at once (every node's
//! responder is one of the alias's name servers), does not cache it as a negative answer,
//! and a client never sees a stale primary. Silence would cost a timeout; an empty answer
//! would be cached as "no such address".

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::rdata::AAAA;
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::DNSClass;
use hickory_proto::rr::Name;
use hickory_proto::rr::RData;
use hickory_proto::rr::Record;
use hickory_proto::rr::RecordType;
use serde::Deserialize;
use serde::Serialize;

use crate::view::DnsView;
use crate::view::MemberView;

/// Records in one section of one answer. A cluster has at most 7 voters plus a few
/// learners, each with an IPv4 and maybe an IPv6 address: 16 lists every member a client
/// should try, while bounding the work of one query and the size of a UDP answer to a
/// small question (a responder open to a network must not be a good amplifier). Answers
/// that would not fit a UDP datagram are truncated and the client retries over TCP.
pub const ANSWER_RECORDS_MAX: usize = 16;

/// The SRV service label of the client (HTTPS API) port: `_haven._tcp.<alias>`.
pub const CLIENT_SERVICE_LABEL: &str = "_haven";
/// The SRV service label of the agent port: `_haven-agent._tcp.<alias>`.
pub const AGENT_SERVICE_LABEL: &str = "_haven-agent";
/// The protocol label of both services.
pub const PROTOCOL_LABEL: &str = "_tcp";
/// Each member's own name is `node-<id>.<alias>`, the target of its SRV records.
pub const NODE_LABEL_PREFIX: &str = "node-";

/// SRV priorities: lower is tried first (RFC 2782). The primary gets the lowest so that a
/// client that honours SRV goes to it first; the others follow as fall-backs.
pub const SRV_PRIORITY_PRIMARY: u16 = 0;
pub const SRV_PRIORITY_OTHERS: u16 = 10;

/// SOA timers. Nobody transfers this zone (it is made up from the view on each query), so
/// refresh, retry and expire only need to be sane values; the negative-caching TTL is the
/// zone's TTL so that an NXDOMAIN is not cached longer than an answer would be.
const SOA_REFRESH_S: i32 = 3_600;
const SOA_RETRY_S: i32 = 600;
const SOA_EXPIRE_S: i32 = 86_400;

/// Which members the alias answers with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerMode {
    /// The primary first, then every other healthy member (seed 003: clients try each
    /// address in turn, so they reach the primary first and still have fall-backs).
    #[default]
    PrimaryFirst,
    /// The primary alone: clients that cannot try several addresses still go right.
    PrimaryOnly,
}

/// The responder's zone: the alias, the answer mode and the TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Fully qualified, lowercase.
    pub alias: Name,
    pub mode: AnswerMode,
    pub ttl_s: u32,
}

/// One answer: the response code, whether it is authoritative, and the records by section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode, authoritative: bool) -> Answer {
        Answer { code, authoritative, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
    }
}

/// What a name under the alias is.
enum Owned {
    Apex,
    Service {
        agent: bool,
    },
    Node(u64),
    /// `_tcp.<alias>` and `_haven._tcp`-style parents: names that exist only because names
    /// below them do (RFC 8020: NXDOMAIN would deny the whole subtree).
    EmptyNonTerminal,
}

impl Zone {
    /// The answer to one question. `serial` is the SOA serial (the responder counts view
    /// changes).
    pub fn answer(&self, view: &DnsView, serial: u32, name: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
        if !self.alias.zone_of(name) {
            // Not ours, and no recursion: the resolver must ask someone else.
            return Answer::code(ResponseCode::Refused, false);
        }
        if qclass != DNSClass::IN && qclass != DNSClass::ANY {
            return Answer::code(ResponseCode::Refused, false);
        }
        if view.partitioned {
            return Answer::code(ResponseCode::ServFail, false);
        }
        let Some(owned) = self.owned(name) else {
            return self.negative(ResponseCode::NXDomain, serial);
        };
        let records = match owned {
            Owned::Apex => {
                let mut records = Vec::new();
                if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
                    let Some(members) = self.advertised(view) else {
                        return Answer::code(ResponseCode::ServFail, false);
                    };
                    records = address_records(name, self.ttl_s, members.iter().copied(), qtype);
                }
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    records.push(self.soa(serial));
                }
                records
            }
            Owned::Service { agent } if matches!(qtype, RecordType::SRV | RecordType::ANY) => {
                let Some(members) = self.advertised(view) else {
                    return Answer::code(ResponseCode::ServFail, false);
                };
                let primary = view.healthy_primary().map(|member| member.id);
                let answers: Vec<Record> = members
                    .iter()
                    .take(ANSWER_RECORDS_MAX)
                    .map(|member| {
                        let priority =
                            if Some(member.id) == primary { SRV_PRIORITY_PRIMARY } else { SRV_PRIORITY_OTHERS };
                        let port = if agent { member.agent_port } else { member.client_port };
                        let srv = SRV::new(priority, 0, port, self.node_name(member.id));
                        Record::from_rdata(name.clone(), self.ttl_s, RData::SRV(srv))
                    })
                    .collect();
                // The targets' addresses ride along, so a client needs one round trip.
                let mut additionals = Vec::new();
                for member in members.iter().take(ANSWER_RECORDS_MAX) {
                    let target = self.node_name(member.id);
                    additionals.extend(address_records(&target, self.ttl_s, [*member], RecordType::ANY));
                }
                additionals.truncate(ANSWER_RECORDS_MAX);
                return Answer {
                    code: ResponseCode::NoError,
                    authoritative: true,
                    answers,
                    authorities: Vec::new(),
                    additionals,
                };
            }
            Owned::Node(id) => match view.member(id) {
                // A member's own name answers whatever its health: it names one node, and
                // a client that got it from an SRV answer a moment ago should still reach it.
                Some(member) if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) => {
                    address_records(name, self.ttl_s, [member], qtype)
                }
                Some(_) => Vec::new(),
                None => return self.negative(ResponseCode::NXDomain, serial),
            },
            Owned::Service { .. } | Owned::EmptyNonTerminal => Vec::new(),
        };
        if records.is_empty() {
            return self.negative(ResponseCode::NoError, serial);
        }
        Answer { answers: records, ..Answer::code(ResponseCode::NoError, true) }
    }

    /// The members the alias and the SRV records list, in order; `None` when there is none
    /// to give (no healthy member, or primary-only without a healthy primary), which is
    /// answered SERVFAIL: "ask another server", never an empty answer to be cached.
    fn advertised<'v>(&self, view: &'v DnsView) -> Option<Vec<&'v MemberView>> {
        let primary = view.healthy_primary();
        let members: Vec<&MemberView> = match self.mode {
            AnswerMode::PrimaryOnly => primary.into_iter().collect(),
            AnswerMode::PrimaryFirst => {
                let mut others: Vec<&MemberView> = view
                    .members
                    .iter()
                    .filter(|member| member.healthy && Some(member.id) != primary.map(|p| p.id))
                    .collect();
                others.sort_by_key(|member| member.id);
                primary.into_iter().chain(others).collect()
            }
        };
        (!members.is_empty()).then_some(members)
    }

    /// What `name` (inside the zone) is, if anything.
    fn owned(&self, name: &Name) -> Option<Owned> {
        let depth = name.num_labels().checked_sub(self.alias.num_labels())?;
        let labels: Vec<String> =
            name.iter().take(depth as usize).map(|label| String::from_utf8_lossy(label).to_ascii_lowercase()).collect();
        match labels.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [] => Some(Owned::Apex),
            [PROTOCOL_LABEL] => Some(Owned::EmptyNonTerminal),
            [service, PROTOCOL_LABEL] if *service == CLIENT_SERVICE_LABEL => Some(Owned::Service { agent: false }),
            [service, PROTOCOL_LABEL] if *service == AGENT_SERVICE_LABEL => Some(Owned::Service { agent: true }),
            [node] => {
                let digits = node.strip_prefix(NODE_LABEL_PREFIX)?;
                // Canonical decimal only: `node-01` is not `node-1`.
                if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse().ok().map(Owned::Node)
            }
            _ => None,
        }
    }

    /// `node-<id>.<alias>`.
    pub fn node_name(&self, id: u64) -> Name {
        // A label of "node-" and at most 20 digits under a valid alias: cannot fail unless
        // the alias is already 253 bytes long; then the alias itself stands in.
        self.alias.prepend_label(format!("{NODE_LABEL_PREFIX}{id}")).unwrap_or_else(|_| self.alias.clone())
    }

    /// The SRV name of the client or agent service.
    pub fn service_name(&self, agent: bool) -> Name {
        let service = if agent { AGENT_SERVICE_LABEL } else { CLIENT_SERVICE_LABEL };
        self.alias
            .prepend_label(PROTOCOL_LABEL)
            .and_then(|name| name.prepend_label(service))
            .unwrap_or_else(|_| self.alias.clone())
    }

    fn soa(&self, serial: u32) -> Record {
        let hostmaster = self.alias.prepend_label("hostmaster").unwrap_or_else(|_| self.alias.clone());
        let soa =
            SOA::new(self.alias.clone(), hostmaster, serial, SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S, self.ttl_s);
        Record::from_rdata(self.alias.clone(), self.ttl_s, RData::SOA(soa))
    }

    /// NXDOMAIN or NODATA, with the SOA so resolvers know how long to cache it (RFC 2308).
    fn negative(&self, code: ResponseCode, serial: u32) -> Answer {
        Answer { authorities: vec![self.soa(serial)], ..Answer::code(code, true) }
    }
}

/// A and/or AAAA records for the members' addresses, at most [`ANSWER_RECORDS_MAX`].
fn address_records<'m>(
    name: &Name,
    ttl_s: u32,
    members: impl IntoIterator<Item = &'m MemberView>,
    qtype: RecordType,
) -> Vec<Record> {
    members
        .into_iter()
        .flat_map(|member| member.addresses.iter())
        .filter_map(|address| match (address.to_canonical(), qtype) {
            (IpAddr::V4(ip), RecordType::A | RecordType::ANY) => Some(RData::A(A(ip))),
            (IpAddr::V6(ip), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(ip))),
            _ => None,
        })
        .take(ANSWER_RECORDS_MAX)
        .map(|rdata| Record::from_rdata(name.clone(), ttl_s, rdata))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(mode: AnswerMode) -> Zone {
        Zone { alias: Name::from_ascii("mgmt.example.internal.").unwrap(), mode, ttl_s: 0 }
    }

    fn member(id: u64, healthy: bool) -> MemberView {
        MemberView {
            id,
            addresses: vec![format!("10.0.0.{id}").parse().unwrap(), format!("fd00::{id}").parse().unwrap()],
            healthy,
            client_port: 7000 + id as u16,
            agent_port: 7200 + id as u16,
        }
    }

    fn view(primary: Option<u64>) -> DnsView {
        DnsView { members: vec![member(3, true), member(1, true), member(2, true)], primary, partitioned: false }
    }

    fn ask(zone: &Zone, view: &DnsView, name: &str, qtype: RecordType) -> Answer {
        zone.answer(view, 7, &Name::from_ascii(name).unwrap(), qtype, DNSClass::IN)
    }

    fn addresses(answer: &Answer) -> Vec<String> {
        answer.answers.iter().map(|record| record.data.to_string()).collect()
    }

    #[test]
    fn primary_first_then_the_other_healthy_members_by_id() {
        let answer = ask(&zone(AnswerMode::PrimaryFirst), &view(Some(2)), "MGMT.example.internal.", RecordType::A);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert!(answer.authoritative);
        assert_eq!(addresses(&answer), ["10.0.0.2", "10.0.0.1", "10.0.0.3"]);
        assert!(answer.answers.iter().all(|record| record.ttl == 0));
        let answer = ask(&zone(AnswerMode::PrimaryFirst), &view(Some(2)), "mgmt.example.internal.", RecordType::AAAA);
        assert_eq!(addresses(&answer), ["fd00::2", "fd00::1", "fd00::3"]);
    }

    #[test]
    fn primary_only_answers_the_primary_alone() {
        let answer = ask(&zone(AnswerMode::PrimaryOnly), &view(Some(3)), "mgmt.example.internal.", RecordType::A);
        assert_eq!(addresses(&answer), ["10.0.0.3"]);
    }

    #[test]
    fn unhealthy_members_are_left_out_even_as_primary() {
        let mut view = view(Some(1));
        view.members[2].healthy = false; // node 2
        let answer = ask(&zone(AnswerMode::PrimaryFirst), &view, "mgmt.example.internal.", RecordType::A);
        assert_eq!(addresses(&answer), ["10.0.0.1", "10.0.0.3"]);
        view.members[1].healthy = false; // node 1, the primary
        let answer = ask(&zone(AnswerMode::PrimaryFirst), &view, "mgmt.example.internal.", RecordType::A);
        assert_eq!(addresses(&answer), ["10.0.0.3"]);
        let answer = ask(&zone(AnswerMode::PrimaryOnly), &view, "mgmt.example.internal.", RecordType::A);
        assert_eq!(answer.code, ResponseCode::ServFail, "primary-only without a healthy primary");
        view.members[0].healthy = false;
        let answer = ask(&zone(AnswerMode::PrimaryFirst), &view, "mgmt.example.internal.", RecordType::A);
        assert_eq!(answer.code, ResponseCode::ServFail, "no healthy member at all");
    }

    #[test]
    fn no_known_primary_lists_the_healthy_members() {
        let answer = ask(&zone(AnswerMode::PrimaryFirst), &view(None), "mgmt.example.internal.", RecordType::A);
        assert_eq!(addresses(&answer), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn a_partitioned_view_answers_nothing_under_the_alias() {
        let mut view = view(Some(1));
        view.partitioned = true;
        for (name, qtype) in [
            ("mgmt.example.internal.", RecordType::A),
            ("mgmt.example.internal.", RecordType::AAAA),
            ("_haven._tcp.mgmt.example.internal.", RecordType::SRV),
            ("node-1.mgmt.example.internal.", RecordType::A),
            ("nothing.mgmt.example.internal.", RecordType::A),
        ] {
            let answer = ask(&zone(AnswerMode::PrimaryFirst), &view, name, qtype);
            assert_eq!(answer.code, ResponseCode::ServFail, "{name} {qtype}");
            assert!(answer.answers.is_empty() && answer.additionals.is_empty());
        }
        let answer = ask(&zone(AnswerMode::PrimaryFirst), &DnsView::unknown(), "mgmt.example.internal.", RecordType::A);
        assert_eq!(answer.code, ResponseCode::ServFail, "a responder that heard nothing yet");
    }

    #[test]
    fn srv_records_for_client_and_agent_ports_with_glue() {
        let zone = zone(AnswerMode::PrimaryFirst);
        let answer = ask(&zone, &view(Some(2)), "_haven._tcp.mgmt.example.internal.", RecordType::SRV);
        assert_eq!(
            addresses(&answer),
            [
                "0 0 7002 node-2.mgmt.example.internal.",
                "10 0 7001 node-1.mgmt.example.internal.",
                "10 0 7003 node-3.mgmt.example.internal."
            ]
        );
        assert_eq!(answer.additionals.len(), 6);
        assert_eq!(answer.additionals[0].name.to_string(), "node-2.mgmt.example.internal.");
        let answer = ask(&zone, &view(Some(2)), "_haven-agent._tcp.mgmt.example.internal.", RecordType::SRV);
        assert_eq!(addresses(&answer)[0], "0 0 7202 node-2.mgmt.example.internal.");
        assert_eq!(zone.service_name(true).to_string(), "_haven-agent._tcp.mgmt.example.internal.");
    }

    #[test]
    fn primary_only_srv_lists_the_primary_alone() {
        let zone = zone(AnswerMode::PrimaryOnly);
        let only = ask(&zone, &view(Some(2)), "_haven._tcp.mgmt.example.internal.", RecordType::SRV);
        assert_eq!(addresses(&only), ["0 0 7002 node-2.mgmt.example.internal."]);
    }

    #[test]
    fn node_names_answer_their_member_whatever_its_health() {
        let mut view = view(Some(1));
        view.members[0].healthy = false; // node 3
        let zone = zone(AnswerMode::PrimaryFirst);
        assert_eq!(addresses(&ask(&zone, &view, "node-3.mgmt.example.internal.", RecordType::A)), ["10.0.0.3"]);
        assert_eq!(addresses(&ask(&zone, &view, "node-3.mgmt.example.internal.", RecordType::AAAA)), ["fd00::3"]);
        assert_eq!(ask(&zone, &view, "node-9.mgmt.example.internal.", RecordType::A).code, ResponseCode::NXDomain);
        assert_eq!(ask(&zone, &view, "node-03.mgmt.example.internal.", RecordType::A).code, ResponseCode::NXDomain);
        let nodata = ask(&zone, &view, "node-3.mgmt.example.internal.", RecordType::MX);
        assert_eq!((nodata.code, nodata.answers.len(), nodata.authorities.len()), (ResponseCode::NoError, 0, 1));
    }

    #[test]
    fn names_it_does_not_own() {
        let zone = zone(AnswerMode::PrimaryFirst);
        let view = view(Some(1));
        let outside = ask(&zone, &view, "example.internal.", RecordType::A);
        assert_eq!((outside.code, outside.authoritative), (ResponseCode::Refused, false));
        assert_eq!(ask(&zone, &view, "www.example.com.", RecordType::A).code, ResponseCode::Refused);
        assert_eq!(ask(&zone, &view, "xmgmt.example.internal.", RecordType::A).code, ResponseCode::Refused);
        let below = ask(&zone, &view, "www.mgmt.example.internal.", RecordType::A);
        assert_eq!(below.code, ResponseCode::NXDomain);
        assert!(below.authoritative);
        let soa = &below.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.ttl, 0, "negative answers are not cached longer than positive ones");
        assert_eq!(ask(&zone, &view, "_tcp.mgmt.example.internal.", RecordType::A).code, ResponseCode::NoError);
        assert_eq!(
            ask(&zone, &view, "_other._tcp.mgmt.example.internal.", RecordType::SRV).code,
            ResponseCode::NXDomain
        );
        let chaos =
            zone.answer(&view, 7, &Name::from_ascii("mgmt.example.internal.").unwrap(), RecordType::A, DNSClass::CH);
        assert_eq!(chaos.code, ResponseCode::Refused);
    }

    #[test]
    fn soa_and_nodata_at_the_apex() {
        let zone = zone(AnswerMode::PrimaryFirst);
        let soa = ask(&zone, &view(Some(1)), "mgmt.example.internal.", RecordType::SOA);
        assert_eq!(soa.answers.len(), 1);
        assert!(soa.answers[0].data.to_string().contains(" 7 "), "serial 7: {}", soa.answers[0].data);
        let mx = ask(&zone, &view(Some(1)), "mgmt.example.internal.", RecordType::MX);
        assert_eq!((mx.code, mx.answers.len(), mx.authorities.len()), (ResponseCode::NoError, 0, 1));
    }

    #[test]
    fn answers_are_bounded() {
        let members: Vec<MemberView> = (1..=40).map(|id| member(id, true)).collect();
        let view = DnsView { members, primary: Some(40), partitioned: false };
        let zone = zone(AnswerMode::PrimaryFirst);
        let answer = ask(&zone, &view, "mgmt.example.internal.", RecordType::A);
        assert_eq!(answer.answers.len(), ANSWER_RECORDS_MAX);
        assert_eq!(addresses(&answer)[0], "10.0.0.40");
        let srv = ask(&zone, &view, "_haven._tcp.mgmt.example.internal.", RecordType::SRV);
        assert_eq!(srv.answers.len(), ANSWER_RECORDS_MAX);
        assert!(srv.additionals.len() <= ANSWER_RECORDS_MAX);
        let any = ask(&zone, &view, "mgmt.example.internal.", RecordType::ANY);
        assert!(any.answers.len() <= ANSWER_RECORDS_MAX + 1);
    }
}
