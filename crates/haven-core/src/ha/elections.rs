//! Whether this node may start an election on its own: the one rule that combines
//! maintenance mode, ping-target gating, detachment and the first look at the peers.
//!
//! ```text
//!   ElectionFacts { started_checks_done, detached, rewound, gate, maintenance, override, leader_known }
//!        │ may_campaign()
//!        ▼
//!   detached ...................................... never (it serves no cluster)
//!   storage went back in time ..................... not until caught up (it would lead
//!                                                   without writes it acknowledged)
//!   first probe round not done .................... not yet (a node recovered away or
//!                                                   removed learns it from its peers first)
//!   ping targets silent ........................... no (own network at fault)
//!   maintenance, a leader known, no override ...... no (automatic failover is paused)
//!   otherwise (maintenance without any leader too)  yes
//! ```
//!
//! **Maintenance** (Patroni's "pause") pauses automatic *failover*: while a leader is
//! known, nobody campaigns, so a dead primary is not replaced until `haven maintenance off`
//! (which resumes elections on the node that receives it even without a leader). It never
//! pauses the *first* election: a cluster whose nodes all restarted knows no leader at
//! all, and without this rule it would stay down for good (issue 14: a planned power
//! cycle during maintenance left the cluster without a leader). Followers of a dead
//! primary still name it (Raft keeps the last leader it heard of), so they do not count as
//! "no leader known" and the pause holds for them.
//!
//! Only a node's own campaign is decided here. A switchover's hand-over elects its target
//! whatever this says (Raft's leadership transfer), and withholding elections never
//! weakens safety: it only removes candidates.

/// What the shell knows when it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionFacts {
    /// The first round of peer probes since this process started has completed (or timed
    /// out). Until then a node does not campaign: a peer may be about to tell it that it
    /// was removed or recovered away.
    pub started_checks_done: bool,
    /// Detached by a teardown (it serves no cluster).
    pub detached: bool,
    /// Why the ping targets withhold candidacy, if they do.
    pub gate_withheld: Option<String>,
    /// The replicated maintenance flag, as this node has applied it.
    pub maintenance: bool,
    /// An operator asked this node for `maintenance off` while it knew no working leader.
    pub maintenance_override: bool,
    /// This node knows a leader (it may be dead: followers keep naming the last one).
    pub leader_known: bool,
    /// `(log_end, mark)` while this node's log ends below the durability mark a member told
    /// it of (`crate::durability`): its storage went back in time.
    pub rewound: Option<(u64, u64)>,
}

/// The decision, with the reason in words when elections are withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    Allowed,
    Withheld(String),
}

impl Campaign {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Campaign::Allowed)
    }
}

/// Decides whether this node may campaign; see the module picture.
pub fn may_campaign(facts: &ElectionFacts) -> Campaign {
    if facts.detached {
        return Campaign::Withheld("detached by a teardown: this node serves no cluster".into());
    }
    if let Some((log_end, mark)) = facts.rewound {
        return Campaign::Withheld(format!(
            "storage went back in time: the log ends at {log_end}, below the {mark} this node was recorded as \
             holding durably; not until it has caught up"
        ));
    }
    if !facts.started_checks_done {
        return Campaign::Withheld("starting: the first round of peer probes has not completed".into());
    }
    if let Some(why) = &facts.gate_withheld {
        return Campaign::Withheld(format!("ping targets: {why}"));
    }
    if facts.maintenance && !facts.maintenance_override && facts.leader_known {
        return Campaign::Withheld("maintenance mode: automatic failover is paused while a leader is known".into());
    }
    Campaign::Allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ElectionFacts {
        ElectionFacts {
            started_checks_done: true,
            detached: false,
            gate_withheld: None,
            maintenance: false,
            maintenance_override: false,
            leader_known: true,
            rewound: None,
        }
    }

    /// Every rule, including the one issue 14 asked for: maintenance does not stop a
    /// cluster without any leader from electing one.
    #[test]
    fn the_election_rule() {
        // (name, facts, allowed?, words in the reason)
        let cases: Vec<(&str, ElectionFacts, bool, &str)> = vec![
            ("normal", facts(), true, ""),
            ("no leader known", ElectionFacts { leader_known: false, ..facts() }, true, ""),
            (
                "maintenance with a leader known (alive or dead): failover paused",
                ElectionFacts { maintenance: true, ..facts() },
                false,
                "automatic failover is paused",
            ),
            (
                "maintenance, every node restarted: no leader known, the cluster still elects one",
                ElectionFacts { maintenance: true, leader_known: false, ..facts() },
                true,
                "",
            ),
            (
                "maintenance off asked for without a working leader",
                ElectionFacts { maintenance: true, maintenance_override: true, ..facts() },
                true,
                "",
            ),
            (
                "ping targets silent, even without a leader",
                ElectionFacts { gate_withheld: Some("none answered".into()), leader_known: false, ..facts() },
                false,
                "ping targets: none answered",
            ),
            (
                "detached, whatever else",
                ElectionFacts { detached: true, leader_known: false, ..facts() },
                false,
                "detached",
            ),
            (
                "storage went back in time, even without a leader or in maintenance off",
                ElectionFacts { rewound: Some((40, 90)), leader_known: false, maintenance_override: true, ..facts() },
                false,
                "went back in time",
            ),
            (
                "before the first probe round",
                ElectionFacts { started_checks_done: false, leader_known: false, ..facts() },
                false,
                "first round of peer probes",
            ),
        ];
        for (name, facts, allowed, words) in cases {
            let decision = may_campaign(&facts);
            assert_eq!(decision.is_allowed(), allowed, "{name}: {decision:?}");
            if let Campaign::Withheld(reason) = decision {
                assert!(reason.contains(words), "{name}: {reason}");
            }
        }
    }
}
