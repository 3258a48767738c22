//! Ping-target gating (seed 002's "additional ping targets to confirm failover"): a node
//! whose configured targets have all gone silent considers its own network at fault and
//! withholds its candidacy.
//!
//! ```text
//!   shell probes each target every target_probe_interval_ms
//!        │ TargetProbe { target, last_ok_ms }
//!        ▼
//!   may_campaign(configured, probes, now_ms, window_ms)
//!        ├─ no target configured ............................ Allowed
//!        ├─ some target answered within window_ms ........... Allowed
//!        └─ none answered within window_ms .................. Withheld { reason }
//!                 the shell: do not campaign (Raft pre-vote off), take no role,
//!                 until a target answers again
//! ```
//!
//! Gating never weakens safety: it only removes this node from the candidates. A node
//! that is already the leader and still hears from a quorum keeps leading: reaching a
//! majority proves its network works, whatever third parties answer. The gate decides
//! candidacy, not leadership.

use crate::config::Timing;

/// Slowest a ping target is probed: once a second. Targets are third parties (a gateway,
/// a DNS server); probing them at the Raft heartbeat rate (down to 10 ms) would be a
/// nuisance to them and adds nothing, since the gate only matters at election time.
pub const TARGET_PROBE_INTERVAL_MS_MIN: u64 = 1_000;

/// Probes a target may miss in a row and still count as answering: one lost ICMP or TCP
/// probe must not withhold candidacy, three in a row are no accident.
pub const TARGET_PROBES_MISSED_MAX: u64 = 3;

/// How often the shell probes each target for a given detection timing: with the Raft
/// pings, but not more often than [`TARGET_PROBE_INTERVAL_MS_MIN`].
pub fn target_probe_interval_ms(timing: &Timing) -> u64 {
    timing.ping_interval_ms.max(TARGET_PROBE_INTERVAL_MS_MIN)
}

/// How recent a target's answer must be to allow candidacy: the shortest election timeout
/// (the span over which this node concluded the leader is gone; a target that answered in
/// that span shows this node's network was working meanwhile), but at least
/// [`TARGET_PROBES_MISSED_MAX`] probe intervals so one lost probe does not close the gate.
pub fn target_window_ms(timing: &Timing) -> u64 {
    let (election_timeout_min_ms, _) = timing.election_timeout_ms();
    election_timeout_min_ms.max(TARGET_PROBES_MISSED_MAX * target_probe_interval_ms(timing))
}

/// What the shell knows about one configured target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetProbe {
    /// The target as configured (an IP address or a host name), for the reason text.
    pub target: String,
    /// When it last answered (shell's monotonic milliseconds); `None` if it never has
    /// since this node started.
    pub last_ok_ms: Option<u64>,
}

/// Whether this node may stand for election (and hold roles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Allowed,
    /// The node's own network looks broken: no campaign and no role until a target
    /// answers. The reason says which targets were silent and for how long.
    Withheld {
        reason: String,
    },
}

impl Gate {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Gate::Allowed)
    }
}

/// The gating decision.
///
/// `targets_configured` is how many targets this node's configuration lists; `probes`
/// holds what is known about them. A configured target with no probe yet counts as silent,
/// so a node that starts with targets configured waits for one to answer before it
/// campaigns (seed 002: failover will not take place while the targets do not respond).
/// A probe answered "in the future" (clock values from a shell that restarted its
/// monotonic clock) counts as just answered.
pub fn may_campaign(targets_configured: usize, probes: &[TargetProbe], now_ms: u64, window_ms: u64) -> Gate {
    if targets_configured == 0 {
        return Gate::Allowed;
    }
    let answered =
        |probe: &TargetProbe| probe.last_ok_ms.is_some_and(|ok_ms| now_ms.saturating_sub(ok_ms) <= window_ms);
    if probes.iter().any(answered) {
        return Gate::Allowed;
    }
    let mut silent: Vec<String> = probes
        .iter()
        .map(|probe| match probe.last_ok_ms {
            Some(ok_ms) => format!("{} last answered {} ms ago", probe.target, now_ms.saturating_sub(ok_ms)),
            None => format!("{} never answered", probe.target),
        })
        .collect();
    if probes.len() < targets_configured {
        silent.push(format!("{} not probed yet", targets_configured - probes.len()));
    }
    let plural = if targets_configured == 1 { "" } else { "s" };
    Gate::Withheld {
        reason: format!(
            "none of the {targets_configured} ping target{plural} answered in the last {window_ms} ms ({}): this \
             node's own network looks at fault, so it does not campaign and takes no role until a target answers",
            silent.join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(target: &str, last_ok_ms: Option<u64>) -> TargetProbe {
        TargetProbe { target: target.into(), last_ok_ms }
    }

    /// Table: none configured, some reachable, none reachable, edge of the window.
    #[test]
    fn gate_table() {
        let now = 100_000;
        let window = 3_000;
        let a_fresh = probe("10.0.0.1", Some(now - 500));
        let a_edge = probe("10.0.0.1", Some(now - window));
        let a_stale = probe("10.0.0.1", Some(now - window - 1));
        let b_never = probe("gw.example.com", None);
        let cases: Vec<(&str, usize, Vec<TargetProbe>, bool)> = vec![
            ("none configured", 0, vec![], true),
            ("none configured, stale probes of removed targets ignored", 0, vec![a_stale.clone()], true),
            ("one of two answered", 2, vec![a_fresh.clone(), b_never.clone()], true),
            ("answered exactly at the window's edge", 1, vec![a_edge], true),
            ("answered in the future (clock reset)", 1, vec![probe("10.0.0.1", Some(now + 10))], true),
            ("all silent past the window", 2, vec![a_stale.clone(), b_never.clone()], false),
            ("configured but never probed (just started)", 1, vec![], false),
            ("one configured target never answered", 1, vec![b_never.clone()], false),
        ];
        for (name, configured, probes, allowed) in cases {
            let gate = may_campaign(configured, &probes, now, window);
            assert_eq!(gate.is_allowed(), allowed, "{name}: {gate:?}");
        }
    }

    /// The reason names every silent target and says what the node does about it.
    #[test]
    fn withheld_reason_names_the_targets() {
        let probes = [probe("10.0.0.1", Some(1_000)), probe("gw.example.com", None)];
        let Gate::Withheld { reason } = may_campaign(3, &probes, 10_000, 3_000) else { panic!("should withhold") };
        for part in [
            "none of the 3 ping targets",
            "10.0.0.1 last answered 9000 ms ago",
            "gw.example.com never answered",
            "1 not probed yet",
            "does not campaign and takes no role",
        ] {
            assert!(reason.contains(part), "{part:?} missing from {reason}");
        }
    }

    /// A target answering again reopens the gate at once.
    #[test]
    fn gate_reopens_when_a_target_answers() {
        let window = 3_000;
        let mut probes = vec![probe("10.0.0.1", Some(0))];
        assert!(!may_campaign(1, &probes, 10_000, window).is_allowed());
        probes[0].last_ok_ms = Some(10_000);
        assert!(may_campaign(1, &probes, 10_000, window).is_allowed());
    }

    /// Probe interval and window per profile: never faster than 1 s, never shorter than the
    /// shortest election timeout nor three probes.
    #[test]
    fn window_follows_the_detection_timing() {
        use crate::ha::detection::Profile;
        let table = [
            (Profile::Fast, 1_000, 3_000),
            (Profile::Lan, 1_000, 3_000),
            (Profile::Wan, 1_000, 5_000),
            (Profile::Seed, 15_000, 180_000),
        ];
        for (profile, interval, window) in table {
            let timing = profile.timing();
            assert_eq!(target_probe_interval_ms(&timing), interval, "{profile}");
            assert_eq!(target_window_ms(&timing), window, "{profile}");
        }
    }
}
