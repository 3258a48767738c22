//! Which process speaks for a member: boot identities, their lease, and the diagnosis of a
//! second node that claims an existing member's id.
//!
//! ```text
//!   process start ── random boot id ──▶ stamped on every peer envelope it sends
//!
//!   receiver: BootTracker (one per node, fed by every envelope from a member)
//!     member m, boot b, now ──▶ observe ──▶ Accept           (b is m's live boot, or m's
//!                                      │                      last boot was not heard from
//!                                      │                      within the boot lease)
//!                                      └─▶ Refuse {live}      (another boot of m was heard
//!                                                             within the lease)
//!     a refused boot whose rival is heard again well after the refusal ──▶ proven duplicate
//!     (two live processes as one member: alarm); a rival that falls silent was a restart
//!     (the new boot is accepted once the lease runs out, no alarm)
//! ```
//!
//! The data dir's incarnation tells a wiped disk from the member it replaced, but a copied
//! data dir (a cloned VM, a restored backup started next to the original) carries the same
//! incarnation, key and log as the original. Only liveness tells them apart: while the first
//! process is heard from, a second one claiming the same member is refused, so one member id
//! never has two voices (two votes in one term, two leaders of one id).
//!
//! Nothing here reads a clock: callers pass milliseconds of a monotonic clock.

use std::collections::BTreeMap;

/// The shortest time a member's boot id stays its live one after it was last heard from
/// (the lease, [`boot_lease_ms`]). Every member sends every other member a probe every
/// probe interval (200 ms with the default timing), answered within a probe timeout, so a
/// live process is heard from well within 3 s even on a loaded machine; a process that was
/// restarted (kill -9, crash) is accepted in its new boot after at most the lease. Longer
/// would delay restarted members; shorter would let a copy slip in while the original is
/// merely slow.
pub const BOOT_LEASE_MS: u64 = 3_000;

/// The boot lease under `timing`: [`BOOT_LEASE_MS`], or longer when the probes are slower
/// than that allows (the `seed` profile probes every 5 s): a live member must be heard
/// within the lease however it is tuned, so the lease is at least the time a member may go
/// unheard and still count as reachable (three probe rounds and one probe timeout:
/// `wan` 8 s, `seed` 20 s).
pub fn boot_lease_ms(timing: &crate::config::Timing) -> u64 {
    BOOT_LEASE_MS.max(crate::ha::detection::reachable_within_ms(timing))
}

/// A refused boot counts as a second live process only when its rival is heard from this
/// long after the refusal: requests a process sent just before it died can still arrive a
/// moment after its successor's first one, and a restart must not raise an alarm.
pub const DUPLICATE_PROOF_MS: u64 = 1_000;

/// Refused boots remembered (for the alarm and status). A duplicate is an operator's
/// mistake affecting one or two members; 64 covers every member of the largest cluster
/// several times over while bounding what a misbehaving peer can make us keep.
pub const CONTENDERS_MAX: usize = 64;

/// How long a refused boot is still shown in status after it was last refused.
pub const CONTENDER_SHOWN_MS: u64 = 60_000;

/// A boot identity: random per process start.
pub type BootId = u64;

/// `boot` as printed in logs and messages: 16 hex digits.
pub fn boot_hex(boot: BootId) -> String {
    format!("{boot:016x}")
}

/// What to do with an envelope from a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootVerdict {
    /// It comes from the member's live process (or takes over from one not heard within the
    /// lease).
    Accept,
    /// Another process of this member was heard `heard_ms_ago`: refuse.
    Refuse { live_boot: BootId, heard_ms_ago: u64 },
}

/// A boot that was refused because another process of the same member was live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contender {
    pub member: u64,
    pub boot: BootId,
    /// The boot that was live when this one was refused.
    pub live_boot: BootId,
    pub first_refused_ms: u64,
    pub last_refused_ms: u64,
    /// The live boot was heard from `DUPLICATE_PROOF_MS` after this one was first refused:
    /// two processes ran as one member at the same time.
    pub proven: bool,
    /// The proven duplicate was handed out by [`BootTracker::take_new_duplicates`].
    alarmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    boot: BootId,
    heard_ms: u64,
}

/// The live boot of each member, as one node hears them.
#[derive(Debug, Clone)]
pub struct BootTracker {
    self_id: u64,
    self_boot: BootId,
    live: BTreeMap<u64, Live>,
    contenders: BTreeMap<(u64, BootId), Contender>,
    /// How long a boot stays live after it was last heard ([`boot_lease_ms`]).
    lease_ms: u64,
}

impl BootTracker {
    /// A tracker for the node `self_id` running as `self_boot`: an envelope that claims to
    /// come from `self_id` under another boot is always a second process of this member.
    /// Its lease is [`BOOT_LEASE_MS`] until [`BootTracker::set_lease_ms`].
    pub fn new(self_id: u64, self_boot: BootId) -> BootTracker {
        BootTracker { self_id, self_boot, live: BTreeMap::new(), contenders: BTreeMap::new(), lease_ms: BOOT_LEASE_MS }
    }

    /// Sets the lease (see [`boot_lease_ms`]; never below [`BOOT_LEASE_MS`]).
    pub fn set_lease_ms(&mut self, lease_ms: u64) {
        self.lease_ms = lease_ms.max(BOOT_LEASE_MS);
    }

    /// How long a boot stays live after it was last heard.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// An envelope from `member` stamped `boot` arrived at `now_ms`.
    pub fn observe(&mut self, member: u64, boot: BootId, now_ms: u64) -> BootVerdict {
        if member == self.self_id {
            if boot == self.self_boot {
                return BootVerdict::Accept;
            }
            // This process is alive (it is the one deciding): proven at once.
            let contender = self.contend(member, boot, self.self_boot, now_ms);
            contender.proven = true;
            return BootVerdict::Refuse { live_boot: self.self_boot, heard_ms_ago: 0 };
        }
        match self.live.get(&member).copied() {
            Some(live) if live.boot != boot && now_ms.saturating_sub(live.heard_ms) < self.lease_ms => {
                self.contend(member, boot, live.boot, now_ms);
                BootVerdict::Refuse { live_boot: live.boot, heard_ms_ago: now_ms.saturating_sub(live.heard_ms) }
            }
            _ => {
                self.live.insert(member, Live { boot, heard_ms: now_ms });
                // Rivals of this boot that stopped before it are now proven: it was heard
                // again after they were refused.
                for contender in self.contenders.values_mut() {
                    if contender.member == member
                        && contender.live_boot == boot
                        && now_ms >= contender.first_refused_ms.saturating_add(DUPLICATE_PROOF_MS)
                    {
                        contender.proven = true;
                    }
                }
                // This boot took over (after the lease): it is no contender any more.
                self.contenders.remove(&(member, boot));
                BootVerdict::Accept
            }
        }
    }

    /// The boot of `member` heard within the lease, if any: the process a request to it
    /// must reach (see haven-net's `PeerEnvelope::to_boot`).
    pub fn live_boot(&self, member: u64, now_ms: u64) -> Option<BootId> {
        self.live.get(&member).filter(|live| now_ms.saturating_sub(live.heard_ms) < self.lease_ms).map(|live| live.boot)
    }

    /// How long ago `member`'s live boot was last heard from, if ever.
    pub fn heard_ms_ago(&self, member: u64, now_ms: u64) -> Option<u64> {
        self.live.get(&member).map(|live| now_ms.saturating_sub(live.heard_ms))
    }

    /// Duplicates proven since the last call (each handed out once), for the alarm.
    pub fn take_new_duplicates(&mut self) -> Vec<Contender> {
        let mut new = Vec::new();
        for contender in self.contenders.values_mut() {
            if contender.proven && !contender.alarmed {
                contender.alarmed = true;
                new.push(contender.clone());
            }
        }
        new
    }

    /// Boots refused within the last `CONTENDER_SHOWN_MS`, for status.
    pub fn recent_contenders(&self, now_ms: u64) -> Vec<Contender> {
        self.contenders
            .values()
            .filter(|contender| now_ms.saturating_sub(contender.last_refused_ms) < CONTENDER_SHOWN_MS)
            .cloned()
            .collect()
    }

    /// `member`'s process `boot` said it stopped (a graceful stop, after its Raft core
    /// stopped): its successor (a restart) is accepted at once instead of after the
    /// lease. Only the live boot's own farewell counts: a refused copy's says
    /// nothing about the live process.
    pub fn forget(&mut self, member: u64, boot: BootId) {
        if self.live.get(&member).is_some_and(|live| live.boot == boot) {
            self.live.remove(&member);
        }
    }

    /// Forgets members that left the membership.
    pub fn retain_members(&mut self, is_member: impl Fn(u64) -> bool) {
        self.live.retain(|member, _| is_member(*member));
        self.contenders.retain(|(member, _), _| is_member(*member));
    }

    fn contend(&mut self, member: u64, boot: BootId, live_boot: BootId, now_ms: u64) -> &mut Contender {
        if !self.contenders.contains_key(&(member, boot)) && self.contenders.len() >= CONTENDERS_MAX {
            // Drop the one refused longest ago: the newest news is the current state.
            if let Some(oldest) =
                self.contenders.values().min_by_key(|contender| contender.last_refused_ms).map(|c| (c.member, c.boot))
            {
                self.contenders.remove(&oldest);
            }
        }
        let contender = self.contenders.entry((member, boot)).or_insert(Contender {
            member,
            boot,
            live_boot,
            first_refused_ms: now_ms,
            last_refused_ms: now_ms,
            proven: false,
            alarmed: false,
        });
        contender.last_refused_ms = now_ms;
        contender.live_boot = live_boot;
        contender
    }
}

// ---- a second node with an existing member's id ------------------------------------------

/// A member's addresses, as the membership records them or as a node asking to be it
/// reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses<'a> {
    pub client_url: &'a str,
    pub peer_addr: &'a str,
}

/// Member `node_id` as the membership records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded<'a> {
    pub incarnation: &'a str,
    pub addresses: Addresses<'a>,
    /// How long ago the member's recorded data dir was last heard from (a peer request from
    /// its live process, a probe answer), if since this node started.
    pub heard_ms_ago: Option<u64>,
}

/// Why a node whose data dir has another incarnation than member `node_id`'s record may not
/// be admitted (or heard) as that member: the answer's code and message.
///
/// A wiped disk and a second node configured with a live member's id look alike; what tells
/// them apart is the address (a restarted node takes its old address, which a live member
/// would still hold) and whether the recorded member is still heard from. Removing the
/// member is the remedy for a wiped disk only: advised for a live member, it would remove
/// the healthy node. `asking` is `None` where the asker's addresses are unknown (a peer
/// envelope).
pub fn id_conflict(
    node_id: u64,
    recorded: &Recorded<'_>,
    asking_incarnation: &str,
    asking: Option<&Addresses<'_>>,
) -> (&'static str, String) {
    let alive_ms = recorded.heard_ms_ago.filter(|ms| *ms < BOOT_LEASE_MS);
    let silent = match recorded.heard_ms_ago {
        Some(ms) => format!("not heard from for {} s", ms / 1000),
        None => "not heard from since this node started".to_string(),
    };
    let wiped = || {
        (
            "incarnation_mismatch",
            format!(
                "node {node_id} is already a member with another data dir (the cluster knows incarnation {}, this one \
                 is {asking_incarnation}) at the same address: its disk was wiped or replaced. Remove it first with \
                 `haven members remove {node_id}`, then start it again to join as a new member",
                recorded.incarnation
            ),
        )
    };
    match (asking, alive_ms) {
        // The asker holds the member's own address: it is that machine, restarted.
        (Some(asking), _) if *asking == recorded.addresses => wiped(),
        (Some(asking), Some(ms)) => (
            "node_id_in_use",
            format!(
                "node {node_id} is a live member of this cluster (data dir incarnation {}, peer address {}, heard from \
                 {ms} ms ago); the node asking (incarnation {asking_incarnation}, peer address {}) is another node \
                 configured with node_id = {node_id}. Give it an unused node_id. Do not remove node {node_id}: it is \
                 healthy",
                recorded.incarnation, recorded.addresses.peer_addr, asking.peer_addr
            ),
        ),
        (Some(asking), None) => (
            "incarnation_mismatch",
            format!(
                "node {node_id} is a member recorded at peer address {} ({silent}) with data dir incarnation {}; the \
                 node asking runs at peer address {} with incarnation {asking_incarnation}. If it is another node \
                 configured with node_id = {node_id} by mistake, give it an unused node_id. Only if node {node_id} \
                 really moved to this address with a new disk, remove the old record with `haven members remove \
                 {node_id}` and start it again to join as a new member",
                recorded.addresses.peer_addr, recorded.incarnation, asking.peer_addr
            ),
        ),
        (None, Some(ms)) => (
            "node_id_in_use",
            format!(
                "node {node_id} with its recorded data dir (incarnation {}) was heard from {ms} ms ago, and a process \
                 with another data dir (incarnation {asking_incarnation}) claims to be node {node_id}: most likely \
                 another node configured with node_id = {node_id} (give it an unused node_id). Do not remove node \
                 {node_id} unless `haven status` shows it unreachable",
                recorded.incarnation
            ),
        ),
        (None, None) => wiped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u64 = 1;
    const MY_BOOT: BootId = 0xaaaa;

    #[test]
    fn the_first_boot_heard_is_live_and_a_second_is_refused_within_the_lease() {
        let mut tracker = BootTracker::new(ME, MY_BOOT);
        assert_eq!(tracker.observe(2, 10, 1_000), BootVerdict::Accept);
        assert_eq!(tracker.observe(2, 10, 1_400), BootVerdict::Accept);
        assert_eq!(tracker.live_boot(2, 1_500), Some(10));
        assert_eq!(tracker.heard_ms_ago(2, 1_500), Some(100));
        assert_eq!(tracker.heard_ms_ago(3, 1_500), None);
        assert_eq!(tracker.observe(2, 20, 1_500), BootVerdict::Refuse { live_boot: 10, heard_ms_ago: 100 });
        assert_eq!(tracker.live_boot(2, 1_500), Some(10), "a refused boot never becomes live");
    }

    #[test]
    fn a_restarted_member_is_accepted_after_the_lease_without_an_alarm() {
        let mut tracker = BootTracker::new(ME, MY_BOOT);
        tracker.observe(2, 10, 1_000);
        // Restarted at once: refused while the old boot's lease runs.
        assert!(matches!(tracker.observe(2, 20, 1_200), BootVerdict::Refuse { .. }));
        assert!(matches!(tracker.observe(2, 20, 3_900), BootVerdict::Refuse { .. }));
        // The old boot is never heard again: the lease runs out and the new one takes over.
        assert_eq!(tracker.live_boot(2, 1_000 + BOOT_LEASE_MS), None);
        assert_eq!(tracker.observe(2, 20, 1_000 + BOOT_LEASE_MS), BootVerdict::Accept);
        assert_eq!(tracker.live_boot(2, 4_100), Some(20));
        assert!(tracker.take_new_duplicates().is_empty(), "a restart is no duplicate");
        assert!(tracker.recent_contenders(4_100).is_empty(), "the new boot is no contender once live");
    }

    #[test]
    fn a_member_that_said_it_stopped_is_succeeded_at_once() {
        let mut tracker = BootTracker::new(ME, MY_BOOT);
        tracker.observe(2, 10, 1_000);
        // A copy's farewell (another boot) changes nothing: the live process still holds.
        tracker.forget(2, 20);
        assert_eq!(tracker.live_boot(2, 1_100), Some(10));
        assert!(matches!(tracker.observe(2, 20, 1_100), BootVerdict::Refuse { .. }));
        // The live process's own farewell: its successor is accepted within the lease.
        tracker.forget(2, 10);
        assert_eq!(tracker.live_boot(2, 1_200), None);
        assert_eq!(tracker.observe(2, 30, 1_200), BootVerdict::Accept);
        assert_eq!(tracker.live_boot(2, 1_300), Some(30));
        assert!(tracker.take_new_duplicates().is_empty(), "a restart is no duplicate");
    }

    #[test]
    fn a_second_process_is_proven_when_the_first_is_heard_after_the_refusal() {
        let mut tracker = BootTracker::new(ME, MY_BOOT);
        tracker.observe(2, 10, 1_000);
        assert!(matches!(tracker.observe(2, 20, 1_100), BootVerdict::Refuse { .. }));
        // The original's last request, sent just before the refusal, arrives late: no proof.
        tracker.observe(2, 10, 1_100 + DUPLICATE_PROOF_MS - 1);
        assert!(tracker.take_new_duplicates().is_empty());
        // Heard again well after: two live processes.
        tracker.observe(2, 10, 1_100 + DUPLICATE_PROOF_MS);
        let proven = tracker.take_new_duplicates();
        assert_eq!(proven.len(), 1);
        assert_eq!((proven[0].member, proven[0].boot, proven[0].live_boot), (2, 20, 10));
        assert!(tracker.take_new_duplicates().is_empty(), "each duplicate is alarmed once");
        // Still refused while the original lives.
        assert!(matches!(tracker.observe(2, 20, 2_500), BootVerdict::Refuse { live_boot: 10, .. }));
        assert_eq!(tracker.recent_contenders(2_500).len(), 1);
    }

    #[test]
    fn an_envelope_from_this_nodes_own_id_under_another_boot_is_a_proven_duplicate() {
        let mut tracker = BootTracker::new(ME, MY_BOOT);
        assert_eq!(tracker.observe(ME, MY_BOOT, 5), BootVerdict::Accept);
        assert_eq!(tracker.observe(ME, 77, 5), BootVerdict::Refuse { live_boot: MY_BOOT, heard_ms_ago: 0 });
        assert_eq!(tracker.observe(ME, 77, 1_000_000), BootVerdict::Refuse { live_boot: MY_BOOT, heard_ms_ago: 0 });
        assert_eq!(tracker.take_new_duplicates().len(), 1);
    }

    #[test]
    fn contenders_are_bounded_and_removed_members_forgotten() {
        let mut tracker = BootTracker::new(ME, MY_BOOT);
        tracker.observe(2, 1, 0);
        for boot in 100..100 + CONTENDERS_MAX as u64 + 10 {
            tracker.observe(2, boot, boot);
        }
        assert_eq!(tracker.recent_contenders(200).len(), CONTENDERS_MAX);
        assert!(tracker.recent_contenders(200).iter().all(|c| c.boot >= 110), "the oldest were dropped");
        tracker.retain_members(|member| member != 2);
        assert!(tracker.recent_contenders(200).is_empty());
        assert_eq!(tracker.live_boot(2, 200), None);
    }

    const MEMBER_ADDRESSES: Addresses<'static> =
        Addresses { client_url: "https://127.0.0.1:7001", peer_addr: "127.0.0.1:7101" };
    const OTHER_ADDRESSES: Addresses<'static> =
        Addresses { client_url: "https://127.0.0.1:9001", peer_addr: "127.0.0.1:9101" };

    fn recorded(heard_ms_ago: Option<u64>) -> Recorded<'static> {
        Recorded { incarnation: "old", addresses: MEMBER_ADDRESSES, heard_ms_ago }
    }

    /// Issue 13 item 10: a second node with a live member's id was diagnosed as a wiped disk,
    /// with advice to remove the healthy member.
    #[test]
    fn a_live_member_is_never_diagnosed_as_a_wiped_disk() {
        let (code, message) = id_conflict(2, &recorded(Some(200)), "new", Some(&OTHER_ADDRESSES));
        assert_eq!(code, "node_id_in_use");
        assert!(message.contains("another node configured with node_id = 2"), "{message}");
        assert!(message.contains("Do not remove node 2"), "{message}");
        assert!(!message.contains("haven members remove"), "{message}");
        let (code, message) = id_conflict(2, &recorded(Some(200)), "new", None);
        assert_eq!(code, "node_id_in_use");
        assert!(!message.contains("haven members remove"), "{message}");
    }

    #[test]
    fn a_node_at_the_members_own_address_is_a_wiped_disk_even_just_after_a_restart() {
        for heard in [Some(100), Some(60_000), None] {
            let (code, message) = id_conflict(2, &recorded(heard), "new", Some(&MEMBER_ADDRESSES));
            assert_eq!(code, "incarnation_mismatch");
            assert!(message.contains("wiped or replaced") && message.contains("haven members remove 2"), "{message}");
        }
        let (_, message) = id_conflict(2, &recorded(Some(60_000)), "new", None);
        assert!(message.contains("wiped or replaced"), "{message}");
    }

    #[test]
    fn a_silent_member_at_another_address_names_both_possibilities() {
        let (code, message) = id_conflict(2, &recorded(Some(60_000)), "new", Some(&OTHER_ADDRESSES));
        assert_eq!(code, "incarnation_mismatch");
        assert!(message.contains("give it an unused node_id"), "{message}");
        assert!(message.contains("Only if node 2 really moved"), "{message}");
        assert!(message.contains("not heard from for 60 s"), "{message}");
    }

    /// The lease fits the timing: 3 s while members are probed often enough to be heard
    /// well within it, and as long as a member may go unheard and still count as reachable
    /// when the probes are slower (`seed`: a probe every 5 s). With a 3 s lease there, a
    /// copy would be taken for a restart between two probes of the original.
    #[test]
    fn the_boot_lease_fits_the_probe_timing() {
        use crate::ha::detection::Profile;
        assert_eq!(boot_lease_ms(&Profile::Fast.timing()), BOOT_LEASE_MS);
        assert_eq!(boot_lease_ms(&Profile::Lan.timing()), BOOT_LEASE_MS);
        assert_eq!(boot_lease_ms(&Profile::Seed.timing()), 20_000);
        let mut tracker = BootTracker::new(1, 10);
        tracker.set_lease_ms(boot_lease_ms(&Profile::Seed.timing()));
        tracker.observe(2, 20, 0);
        // Between two 5 s probes of the original, a copy is still refused.
        assert!(matches!(tracker.observe(2, 21, 6_000), BootVerdict::Refuse { .. }));
        assert_eq!(tracker.live_boot(2, 6_000), Some(20));
        // Silent for the whole lease: a restart, accepted.
        assert_eq!(tracker.observe(2, 22, 20_000), BootVerdict::Accept);
        tracker.set_lease_ms(1);
        assert_eq!(tracker.lease_ms(), BOOT_LEASE_MS, "never below the minimum");
    }
}
