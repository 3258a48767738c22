//! Self-fencing leases: a holder runs its role only while its lease is valid by its own
//! clock, and the primary places the role elsewhere only once that lease has certainly
//! ended by the primary's clock.
//!
//! ```text
//!   holder H                                 primary P (grants, later re-places)
//!   ─────────                                ─────────
//!   s: send renew(role, epoch) ─────────────▶ confirm it still leads (read index / commit),
//!                                             placement still (role → H, epoch)?
//!                                          g: grant: last_grant_ms = g     (g ≥ s)
//!      ◀──────────────────────────────────── granted
//!   lease_end = s + LEASE_DURATION (by H's clock: from the SEND, so every delay in
//!               between shortens H's lease, never P's wait)
//!
//!   H, renewals failing:  lease_end - STOP_BUDGET ─▶ stop command, SIGTERM, SIGKILL
//!                         lease_end ───────────────▶ nothing of the role runs any more
//!   P, after revoking:    refuses H's renewals; places elsewhere at
//!                         max(last_grant, takeover) + certain_expiry_wait(LEASE_DURATION)
//! ```
//!
//! **The arithmetic.** Clocks run at a rate within `1 ± ρ` of real time (ρ =
//! [`CLOCK_DRIFT_PPM_MAX`]). H's lease from a renewal sent at real time `s` ends when H's
//! clock has advanced `D` = [`LEASE_DURATION_MS`]: at real time at most `s + D / (1 - ρ)`
//! (H's clock running slow). P granted at real time `g ≥ s` and waits until its own clock
//! has advanced `W`: at real time at least `g + W / (1 + ρ)` (P's clock running fast). So
//! P acts after H's lease ended whenever `W / (1 + ρ) ≥ D / (1 - ρ)`, that is
//! `W ≥ D (1 + ρ) / (1 - ρ)`; [`certain_expiry_wait_ms`] rounds that up and adds
//! [`LEASE_SAFETY_MARGIN_MS`] for what the clocks cannot see (the kernel delivering the
//! final SIGKILL, timer granularity). With the constants below: D = 10,000 ms, ρ = 1 %,
//! W = 10,203 + 1,000 = 11,203 ms.
//!
//! **Why `g ≥ s` holds across leaders.** A renewal is granted only after the granting
//! leader confirmed with a quorum, after it received the request, that it still leads. A
//! new primary P2 won its election after a quorum voted for it, and a node that voted for
//! P2 refuses the old leader from then on; the two quorums share a node, so any grant the
//! old leader confirmed was confirmed before P2's takeover, after its request was sent.
//! P2 therefore starts counting from its takeover (`takeover_ms`), which is later than any
//! `s` it cannot know about.
//!
//! **Clocks.** The shell feeds the holder a clock that counts suspended time
//! (CLOCK_BOOTTIME): a clock that stops while the machine sleeps would keep a lease alive
//! through a suspend. Any monotonic clock serves the primary (a clock that stops only
//! makes it wait longer).
//!
//! **A paused holder.** If H's Haven process is stopped (SIGSTOP, a long GC-like stall) it
//! cannot act; the role's guard process (`haven_server::role_process`) holds the same
//! lease end and kills the role's process group by itself. When H resumes, the first
//! thing [`holder_step`] does is compare its clock with the lease end: expired means
//! another node may hold the role now, so the role is killed at once, without the stop
//! command (which might act on resources the new holder uses), and it is never restarted
//! from the view H had before the pause (see [`HolderLease::start_refusal`]).

use serde::Deserialize;
use serde::Serialize;

/// How long one renewal keeps a role. The primary waits a little longer than this
/// (below) before moving the role away from a holder that vanished, so it is the bulk of
/// the time a role is down after its holder's machine dies. Ten seconds: long enough that
/// a holder survives several lost renewals and runs its stop sequence before the end
/// (see the relations checked below), short enough that a crashed holder's role is back
/// within about 11 s.
pub const LEASE_DURATION_MS: u64 = 10_000;

/// How often a holder renews. Once a second: ten attempts per lease, and four misses in a
/// row before the holder must start stopping.
pub const LEASE_RENEW_INTERVAL_MS: u64 = 1_000;

/// The largest rate difference between a node's clock and real time that leases
/// tolerate, in parts per million. NTP slews a clock by at most 500 ppm and crystals are
/// off by tens of ppm; 1 % (10,000 ppm) covers a virtual machine with a misbehaving clock
/// source by a wide margin, for 2 % of the lease (about 200 ms) of extra wait.
pub const CLOCK_DRIFT_PPM_MAX: u64 = 10_000;

/// Added to the drift-corrected wait for what clock rates do not cover: the kernel
/// delivering the final SIGKILL to every process of the role and their exit, and timers
/// firing late by scheduling noise. One second is far beyond both on a working machine.
pub const LEASE_SAFETY_MARGIN_MS: u64 = 1_000;

/// Longest the holder lets a role's stop command run when it stops the role.
pub const STOP_COMMAND_TIMEOUT_MS: u64 = 3_000;

/// After the stop command, how long the role's processes get between SIGTERM and
/// SIGKILL: time to flush and close, not to finish work.
pub const TERM_GRACE_MS: u64 = 2_000;

/// SIGKILL is sent at the latest this long before the lease ends, so that the processes
/// are gone at the end, not just signalled.
pub const KILL_LEAD_MS: u64 = 500;

/// The whole stop sequence: a holder whose lease has this much left and no renewal
/// starts stopping, so the role is down before the lease ends.
pub const STOP_BUDGET_MS: u64 = STOP_COMMAND_TIMEOUT_MS + TERM_GRACE_MS + KILL_LEAD_MS;

/// A holder starts a role only with at least this much lease left: enough for the stop
/// sequence and one more renewal, so a start is not followed at once by a stop.
pub const START_MIN_REMAINING_MS: u64 = STOP_BUDGET_MS + LEASE_RENEW_INTERVAL_MS;

// Relations the lease rules need, checked when compiling:
// a holder gets at least three renewal attempts before it must start stopping;
const _: () = assert!(LEASE_DURATION_MS - STOP_BUDGET_MS >= 3 * LEASE_RENEW_INTERVAL_MS);
// a fresh lease is long enough to start the role;
const _: () = assert!(LEASE_DURATION_MS > START_MIN_REMAINING_MS);
// the drift bound leaves the arithmetic meaningful (ρ well below 1).
const _: () = assert!(CLOCK_DRIFT_PPM_MAX < 100_000);

const PPM: u64 = 1_000_000;

/// The end of a holder's lease from a renewal *sent* at `sent_at_ms` (the holder's
/// clock): measured from the send, so the round trip and the primary's confirmation
/// count against the holder.
pub fn holder_lease_end_ms(sent_at_ms: u64) -> u64 {
    sent_at_ms.saturating_add(LEASE_DURATION_MS)
}

/// How long the primary waits, by its own clock, after its last grant (or its takeover)
/// before a lease of `lease_ms` has certainly ended: `ceil(lease (1 + ρ) / (1 - ρ))` plus
/// the safety margin (see the module docs for the derivation).
pub fn certain_expiry_wait_ms(lease_ms: u64) -> u64 {
    let numerator = u128::from(lease_ms) * u128::from(PPM + CLOCK_DRIFT_PPM_MAX);
    let denominator = u128::from(PPM - CLOCK_DRIFT_PPM_MAX);
    let corrected = numerator.div_ceil(denominator);
    u64::try_from(corrected).unwrap_or(u64::MAX).saturating_add(LEASE_SAFETY_MARGIN_MS)
}

/// The primary's side of one placement's lease, on the primary's monotonic clock. Kept in
/// memory: a new primary starts afresh and counts from its takeover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantorLease {
    /// When this primary last granted a renewal of this placement.
    pub last_grant_ms: Option<u64>,
    /// When this primary stopped granting (it decided to move the role).
    pub revoked_at_ms: Option<u64>,
}

/// Why a renewal was refused; the holder stops the role when it hears one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewRefusal {
    #[error("the role {role} is not defined")]
    UnknownRole { role: String },
    #[error("the role {role} is placed on {holder} under epoch {epoch}, not on node {node} under epoch {asked}")]
    NotTheHolder { role: String, node: u64, asked: u64, holder: String, epoch: u64 },
    #[error("the role {role} is being moved away from node {node}: stop it")]
    Revoked { role: String, node: u64 },
}

impl GrantorLease {
    /// Grants a renewal at `now_ms` (after the primary confirmed it still leads), unless
    /// revoked. The caller has checked that (role, node, epoch) is the committed placement.
    pub fn grant(&mut self, role: &str, node: u64, now_ms: u64) -> Result<(), RenewRefusal> {
        if self.revoked_at_ms.is_some() {
            return Err(RenewRefusal::Revoked { role: role.to_string(), node });
        }
        self.last_grant_ms = Some(self.last_grant_ms.map_or(now_ms, |last| last.max(now_ms)));
        Ok(())
    }

    /// Stops granting from `now_ms` on (idempotent: the first revocation counts).
    pub fn revoke(&mut self, now_ms: u64) {
        self.revoked_at_ms.get_or_insert(now_ms);
    }

    /// When the holder's lease has certainly ended, by this primary's clock, for a primary
    /// that took over at `takeover_ms`. Only meaningful once revoked (before, the holder
    /// may be granted more).
    pub fn certainly_ended_at_ms(&self, takeover_ms: u64) -> u64 {
        let basis_ms = self.last_grant_ms.map_or(takeover_ms, |grant_ms| grant_ms.max(takeover_ms));
        basis_ms.saturating_add(certain_expiry_wait_ms(LEASE_DURATION_MS))
    }
}

/// The holder's side: its lease on one placement (role, epoch), on the holder's clock
/// (one that counts suspended time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderLease {
    pub epoch: u64,
    /// The lease end; `None` until the first renewal of this epoch is granted.
    pub ends_at_ms: Option<u64>,
    /// The highest epoch this node ever started the role under: an epoch is started at
    /// most once, so a stopped role is never restarted from an old placement.
    pub started_epoch: Option<u64>,
}

impl HolderLease {
    pub fn new(epoch: u64) -> HolderLease {
        HolderLease { epoch, ends_at_ms: None, started_epoch: None }
    }

    /// A renewal of this epoch, sent at `sent_at_ms`, was granted. The end never moves
    /// back (answers may arrive out of order).
    pub fn renewed(&mut self, sent_at_ms: u64) {
        let end_ms = holder_lease_end_ms(sent_at_ms);
        self.ends_at_ms = Some(self.ends_at_ms.map_or(end_ms, |current| current.max(end_ms)));
    }

    /// The lease left at `now_ms` (0 once it ended, or if never granted).
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.ends_at_ms.map_or(0, |end_ms| end_ms.saturating_sub(now_ms))
    }

    /// Why the role may not be started now under `placed_epoch` (this node's view of the
    /// committed placement), or `None` when it may: the same epoch as the lease, never
    /// started before, and enough lease left. The lease itself can only come from a grant
    /// of a renewal sent after the placement was committed, so a stale view cannot start
    /// anything.
    pub fn start_refusal(&self, placed_epoch: Option<u64>, now_ms: u64) -> Option<String> {
        if placed_epoch != Some(self.epoch) {
            return Some("the role is not placed on this node under this epoch".to_string());
        }
        if self.started_epoch.is_some_and(|started| self.epoch <= started) {
            return Some(format!("epoch {} was started here before and stopped; it is never restarted", self.epoch));
        }
        let remaining_ms = self.remaining_ms(now_ms);
        if remaining_ms == 0 {
            return Some(format!("no valid lease for epoch {} yet", self.epoch));
        }
        if remaining_ms < START_MIN_REMAINING_MS {
            return Some(format!(
                "{remaining_ms} ms of lease left, less than the {START_MIN_REMAINING_MS} ms a start needs"
            ));
        }
        None
    }

    /// Notes that the role was started under this epoch.
    pub fn started(&mut self) {
        self.started_epoch = Some(self.started_epoch.map_or(self.epoch, |started| started.max(self.epoch)));
    }
}

/// What the holder does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderAction {
    /// Start the role's start command under this epoch.
    Start { epoch: u64 },
    /// Keep it running; renew as usual.
    Keep { remaining_ms: u64 },
    /// Run the stop command, SIGTERM the process group, SIGKILL it after the grace: the
    /// lease still covers the whole sequence.
    Stop { reason: String },
    /// SIGKILL the process group now, without the stop command: the lease has ended, so
    /// another node may hold the role and the stop command could harm it.
    Kill { reason: String },
    /// Not running and not to be started.
    Idle { reason: String },
}

/// The holder's decision at `now_ms`, from its lease, its view of the committed placement
/// (`placed_epoch`: the epoch under which the role is placed on this node, if it is) and
/// whether the role's processes run. The lease is looked at first, so a holder resumed
/// after a pause sees that its lease is gone before it does anything else.
pub fn holder_step(lease: &HolderLease, placed_epoch: Option<u64>, running: bool, now_ms: u64) -> HolderAction {
    let remaining_ms = lease.remaining_ms(now_ms);
    if running {
        if remaining_ms == 0 {
            let ago = lease.ends_at_ms.map_or(String::new(), |end| format!(" {} ms ago", now_ms.saturating_sub(end)));
            return HolderAction::Kill {
                reason: format!(
                    "the lease of epoch {} ended{ago}: another node may hold the role now; killed without the stop \
                     command",
                    lease.epoch
                ),
            };
        }
        if remaining_ms <= STOP_BUDGET_MS {
            return HolderAction::Stop {
                reason: format!(
                    "the lease of epoch {} was not renewed and ends in {remaining_ms} ms: stopping before it does",
                    lease.epoch
                ),
            };
        }
        if placed_epoch != Some(lease.epoch) {
            return HolderAction::Stop {
                reason: match placed_epoch {
                    Some(epoch) => format!("the role was placed anew under epoch {epoch}"),
                    None => format!("the role under epoch {} is no longer placed on this node", lease.epoch),
                },
            };
        }
        return HolderAction::Keep { remaining_ms };
    }
    match lease.start_refusal(placed_epoch, now_ms) {
        None => HolderAction::Start { epoch: lease.epoch },
        Some(reason) => HolderAction::Idle { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait, worked by hand: 10,000 × 1.01 / 0.99 = 10,202.02..., rounded up, plus
    /// the margin.
    #[test]
    fn the_certain_expiry_wait_is_the_derived_number() {
        assert_eq!(certain_expiry_wait_ms(10_000), 10_203 + LEASE_SAFETY_MARGIN_MS);
        assert_eq!(certain_expiry_wait_ms(LEASE_DURATION_MS), 11_203);
        assert_eq!(certain_expiry_wait_ms(0), LEASE_SAFETY_MARGIN_MS);
        assert_eq!(certain_expiry_wait_ms(u64::MAX), u64::MAX, "saturates, never wraps");
    }

    /// The safety claim itself, over the edges: the holder's clock at the slowest allowed
    /// rate, the primary's at the fastest, the grant at the same instant as the send (the
    /// tightest case). In real microseconds, the primary's move comes after the holder's
    /// lease ended by at least the safety margin (less rounding); with a drift beyond
    /// the bound, it would not.
    #[test]
    fn with_drift_at_the_bound_the_primary_acts_after_the_lease_ended() {
        // Real time for a clock running at `rate_ppm` (1,000,000 = exact) to advance `ms`.
        let real_us = |ms: u64, rate_ppm: u64| u128::from(ms) * 1_000 * u128::from(PPM) / u128::from(rate_ppm);
        let lease_ends_us = real_us(LEASE_DURATION_MS, PPM - CLOCK_DRIFT_PPM_MAX);
        let primary_acts_us = real_us(certain_expiry_wait_ms(LEASE_DURATION_MS), PPM + CLOCK_DRIFT_PPM_MAX);
        assert!(primary_acts_us > lease_ends_us);
        let margin_us = primary_acts_us - lease_ends_us;
        let margin_real_us =
            u128::from(LEASE_SAFETY_MARGIN_MS) * 1_000 * u128::from(PPM) / u128::from(PPM + CLOCK_DRIFT_PPM_MAX);
        assert!(margin_us >= margin_real_us, "margin {margin_us} us");
        // Without the margin the drift correction alone is still (just) enough.
        let bare_us =
            real_us(certain_expiry_wait_ms(LEASE_DURATION_MS) - LEASE_SAFETY_MARGIN_MS, PPM + CLOCK_DRIFT_PPM_MAX);
        assert!(bare_us >= lease_ends_us);
        // Twice the allowed drift on each side: the bare correction would no longer do.
        let slow_holder_us = real_us(LEASE_DURATION_MS, PPM - 2 * CLOCK_DRIFT_PPM_MAX);
        let fast_primary_us =
            real_us(certain_expiry_wait_ms(LEASE_DURATION_MS) - LEASE_SAFETY_MARGIN_MS, PPM + 2 * CLOCK_DRIFT_PPM_MAX);
        assert!(fast_primary_us < slow_holder_us, "the bound is what makes it safe");
    }

    /// The grantor: when the lease has certainly ended, from the last grant or the
    /// takeover, whichever is later; no grant after a revocation.
    #[test]
    fn grantor_table() {
        let wait = certain_expiry_wait_ms(LEASE_DURATION_MS);
        // (name, grants, revoke at, takeover, certainly ended at)
        let cases: Vec<(&str, Vec<u64>, u64, u64, u64)> = vec![
            ("never granted: counts from the takeover", vec![], 500, 100, 100 + wait),
            ("last grant after the takeover", vec![1_000, 3_000, 2_000], 4_000, 100, 3_000 + wait),
            ("grants older than the takeover (impossible, but safe)", vec![50], 500, 100, 100 + wait),
        ];
        for (name, grants, revoke_ms, takeover_ms, expected) in cases {
            let mut lease = GrantorLease::default();
            for grant_ms in grants {
                lease.grant("r", 1, grant_ms).unwrap();
            }
            lease.revoke(revoke_ms);
            assert_eq!(lease.certainly_ended_at_ms(takeover_ms), expected, "{name}");
            assert_eq!(
                lease.grant("r", 1, revoke_ms + 1),
                Err(RenewRefusal::Revoked { role: "r".into(), node: 1 }),
                "{name}: no grant after a revocation"
            );
            assert_eq!(lease.certainly_ended_at_ms(takeover_ms), expected, "{name}: refused grants change nothing");
        }
        let mut lease = GrantorLease::default();
        lease.revoke(10);
        lease.revoke(20);
        assert_eq!(lease.revoked_at_ms, Some(10), "the first revocation counts");
    }

    /// The holder's decisions, fed its lease and the time: start, keep, stop before the
    /// end, kill at and after the end, never restart an epoch.
    #[test]
    fn holder_table() {
        let sent_ms = 1_000;
        let end_ms = sent_ms + LEASE_DURATION_MS;
        let mut fresh = HolderLease::new(7);
        fresh.renewed(sent_ms);
        let mut started = fresh.clone();
        started.started();
        let never_granted = HolderLease::new(7);
        // (name, lease, placed epoch, running, now, expected action kind, words)
        type Case = (&'static str, HolderLease, Option<u64>, bool, u64, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            ("fresh lease, placed: start", fresh.clone(), Some(7), false, sent_ms + 10, "start", ""),
            ("no grant yet: idle", never_granted.clone(), Some(7), false, 0, "idle", "no valid lease"),
            ("placed under another epoch: idle", fresh.clone(), Some(8), false, sent_ms, "idle", "not placed"),
            (
                "too little lease left to start",
                fresh.clone(),
                Some(7),
                false,
                end_ms - START_MIN_REMAINING_MS + 1,
                "idle",
                "less than",
            ),
            ("exactly enough to start", fresh.clone(), Some(7), false, end_ms - START_MIN_REMAINING_MS, "start", ""),
            ("started once: never again", started.clone(), Some(7), false, sent_ms, "idle", "never restarted"),
            ("running, lease fine", started.clone(), Some(7), true, end_ms - STOP_BUDGET_MS - 1, "keep", ""),
            (
                "running, stop budget reached",
                started.clone(),
                Some(7),
                true,
                end_ms - STOP_BUDGET_MS,
                "stop",
                "ends in",
            ),
            ("running, one ms left", started.clone(), Some(7), true, end_ms - 1, "stop", "ends in 1 ms"),
            ("running, exactly at the end", started.clone(), Some(7), true, end_ms, "kill", "ended 0 ms ago"),
            (
                "resumed after a long pause",
                started.clone(),
                Some(7),
                true,
                end_ms + 3_600_000,
                "kill",
                "ended 3600000 ms ago",
            ),
            ("placed anew elsewhere", started.clone(), Some(9), true, sent_ms, "stop", "epoch 9"),
            ("no longer placed here", started.clone(), None, true, sent_ms, "stop", "no longer placed"),
            // A paused holder whose local view still says "yours, epoch 7" and whose lease
            // ended: the view cannot start anything.
            ("resumed, stale view, not running", started, Some(7), false, end_ms + 60_000, "idle", "never restarted"),
            ("stale view, never started, lease over", fresh, Some(7), false, end_ms, "idle", "no valid lease"),
        ];
        for (name, lease, placed, running, now_ms, kind, words) in cases {
            let action = holder_step(&lease, placed, running, now_ms);
            let (actual, text) = match &action {
                HolderAction::Start { epoch } => {
                    assert_eq!(*epoch, 7, "{name}");
                    ("start", String::new())
                }
                HolderAction::Keep { .. } => ("keep", String::new()),
                HolderAction::Stop { reason } => ("stop", reason.clone()),
                HolderAction::Kill { reason } => ("kill", reason.clone()),
                HolderAction::Idle { reason } => ("idle", reason.clone()),
            };
            assert_eq!(actual, kind, "{name}: {action:?}");
            assert!(text.contains(words), "{name}: {words:?} missing from {text:?}");
        }
    }

    /// A renewal answered late or out of order never shortens the lease, and each counts
    /// from its send.
    #[test]
    fn renewals_count_from_the_send_and_never_shorten() {
        let mut lease = HolderLease::new(1);
        lease.renewed(5_000);
        lease.renewed(3_000);
        assert_eq!(lease.ends_at_ms, Some(5_000 + LEASE_DURATION_MS));
        assert_eq!(lease.remaining_ms(5_000 + LEASE_DURATION_MS), 0, "exactly at the end: nothing left");
        assert_eq!(lease.remaining_ms(5_000 + LEASE_DURATION_MS - 1), 1);
        lease.renewed(6_000);
        assert_eq!(lease.remaining_ms(6_000), LEASE_DURATION_MS);
    }

    /// The whole picture in one timeline: a holder's last renewal is granted, then it is
    /// cut off. It stops before its lease ends by its (slow) clock; the primary (fast
    /// clock) moves the role only after that, with the margin between.
    #[test]
    fn a_cut_off_holder_is_down_before_the_primary_moves_the_role() {
        // Real time in ms; the holder's clock runs 1 % slow, the primary's 1 % fast.
        let holder_clock = |real_ms: u64| real_ms * 99 / 100;
        let primary_clock = |real_ms: u64| real_ms * 101 / 100;
        let send_real_ms = 10_000;
        let grant_real_ms = send_real_ms; // the tightest case
        let mut lease = HolderLease::new(3);
        lease.renewed(holder_clock(send_real_ms));
        lease.started();
        let mut grantor = GrantorLease::default();
        grantor.grant("r", 1, primary_clock(grant_real_ms)).unwrap();
        grantor.revoke(primary_clock(grant_real_ms + 1));
        let ended_at_primary_ms = grantor.certainly_ended_at_ms(0);
        let mut holder_down_real_ms = None;
        let mut primary_moves_real_ms = None;
        for real_ms in send_real_ms..send_real_ms + 30_000 {
            if holder_down_real_ms.is_none()
                && matches!(holder_step(&lease, Some(3), true, holder_clock(real_ms)), HolderAction::Kill { .. })
            {
                holder_down_real_ms = Some(real_ms);
            }
            if primary_moves_real_ms.is_none() && primary_clock(real_ms) >= ended_at_primary_ms {
                primary_moves_real_ms = Some(real_ms);
            }
        }
        let (down, moves) = (holder_down_real_ms.unwrap(), primary_moves_real_ms.unwrap());
        assert!(moves > down + LEASE_SAFETY_MARGIN_MS / 2, "holder down at {down} ms, primary moves at {moves} ms");
    }
}
