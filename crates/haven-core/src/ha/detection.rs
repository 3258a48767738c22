//! Failure detection in the operator's terms: a ping (heartbeat) interval and a number of
//! failed pings, set one by one or at once by a named profile, and what they mean as Raft
//! timeouts and as the expected detection time.
//!
//! ```text
//!   profile (fast | lan | wan | seed) ──┐
//!   ping_interval_ms × failed_pings ────┴──▶ Timing ──▶ heartbeat_interval_ms
//!                                                  ├──▶ election timeout min..max
//!                                                  └──▶ expected detection time
//! ```
//!
//! The conversion itself lives on [`crate::config::Timing`] (node configuration uses it
//! too); this module names the profiles and describes a timing in words.

use std::str::FromStr;

use serde::Deserialize;
use serde::Serialize;

use crate::config::Timing;
use crate::config::FAILED_PINGS_DEFAULT;
use crate::config::FAILED_PINGS_MAX;
use crate::config::FAILED_PINGS_MIN;
use crate::config::PING_INTERVAL_MS_DEFAULT;
use crate::config::PING_INTERVAL_MS_MAX;
use crate::config::PING_INTERVAL_MS_MIN;

/// `fast`: one rack or one data centre, round trips well under a millisecond. 50 ms × 4
/// gives an election timeout of 200-300 ms after the leader's 300 ms lease: a primary must
/// be silent for half a second before anyone campaigns, and a new primary is in place in
/// about 0.6 s.
pub const FAST_PING_INTERVAL_MS: u64 = 50;
pub const FAST_FAILED_PINGS: u64 = 4;

/// `lan`: a campus or a busy virtualised LAN where a host may stall for a few hundred
/// milliseconds (CPU steal, a pause in a co-located process). 100 ms × 10 is etcd's
/// default (heartbeat 100 ms, election 1000 ms), the value its users already trust.
pub const LAN_PING_INTERVAL_MS: u64 = 100;
pub const LAN_FAILED_PINGS: u64 = 10;

/// `wan`: nodes in different regions. A heartbeat of 500 ms stays above the worst
/// intercontinental round trip (about 300 ms), and ten of them follow etcd's tuning rule
/// that the election timeout be about ten heartbeats, so one slow path never looks dead.
pub const WAN_PING_INTERVAL_MS: u64 = 500;
pub const WAN_FAILED_PINGS: u64 = 10;

/// `seed`: seed 002's own behaviour for users who want it: a ping every 15 s and a
/// failover after 12 failed pings (HAPingIterations' default), so three minutes at least.
pub const SEED_PING_INTERVAL_MS: u64 = 15_000;
pub const SEED_FAILED_PINGS: u64 = 12;

// Every profile must pass the same range checks an operator's own values do, and `fast`
// is the node configuration's default so a node without an HA configuration behaves the
// same as one with the default profile.
const _: () = assert!(FAST_PING_INTERVAL_MS == PING_INTERVAL_MS_DEFAULT && FAST_FAILED_PINGS == FAILED_PINGS_DEFAULT);
const _: () = assert!(PING_INTERVAL_MS_MIN <= FAST_PING_INTERVAL_MS && SEED_PING_INTERVAL_MS <= PING_INTERVAL_MS_MAX);
const _: () = assert!(FAST_PING_INTERVAL_MS < LAN_PING_INTERVAL_MS && LAN_PING_INTERVAL_MS < WAN_PING_INTERVAL_MS);
const _: () = assert!(WAN_PING_INTERVAL_MS < SEED_PING_INTERVAL_MS);
const _: () = assert!(FAILED_PINGS_MIN <= FAST_FAILED_PINGS && SEED_FAILED_PINGS <= FAILED_PINGS_MAX);
const _: () = assert!(LAN_FAILED_PINGS <= FAILED_PINGS_MAX && WAN_FAILED_PINGS <= FAILED_PINGS_MAX);
// Raft needs the election timeout to exceed the heartbeat interval: at least two pings.
const _: () = assert!(FAILED_PINGS_MIN >= 2);

/// A named pair of ping interval and failed pings.
///
/// Written as an enum variant: in JSON and TOML its lowercase name, in the binary encoding
/// of logs and snapshots its index (so the order of the variants is fixed: append only).
/// Read back the same way: a name through [`FromStr`] (case-insensitive, with an error that
/// lists the profiles) in JSON and TOML, an index in the binary encoding. Reading a name in
/// both (as before the fix of issue 10) made every snapshot with a profile unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Fast,
    Lan,
    Wan,
    Seed,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Profile::Fast, Profile::Lan, Profile::Wan, Profile::Seed];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Fast => "fast",
            Profile::Lan => "lan",
            Profile::Wan => "wan",
            Profile::Seed => "seed",
        }
    }

    /// When to choose it, in one line.
    pub fn purpose(self) -> &'static str {
        match self {
            Profile::Fast => "one site, sub-millisecond round trips: failover in about half a second (default)",
            Profile::Lan => "a busy or virtualised LAN: etcd's defaults, failover in about 1.6 s",
            Profile::Wan => "nodes in different regions: failover in about 8 s",
            Profile::Seed => "the vendor's behaviour (seed 002): a ping every 15 s, failover after 12 failed pings",
        }
    }

    pub fn timing(self) -> Timing {
        let (ping_interval_ms, failed_pings) = match self {
            Profile::Fast => (FAST_PING_INTERVAL_MS, FAST_FAILED_PINGS),
            Profile::Lan => (LAN_PING_INTERVAL_MS, LAN_FAILED_PINGS),
            Profile::Wan => (WAN_PING_INTERVAL_MS, WAN_FAILED_PINGS),
            Profile::Seed => (SEED_PING_INTERVAL_MS, SEED_FAILED_PINGS),
        };
        Timing { ping_interval_ms, failed_pings }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a profile; the message lists the profiles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown detection profile `{name}`; choose one of fast, lan, wan, seed")]
pub struct UnknownProfile {
    pub name: String,
}

impl FromStr for Profile {
    type Err = UnknownProfile;

    /// Case-insensitive, surrounding spaces ignored: `haven config draft set profile LAN`.
    fn from_str(text: &str) -> Result<Profile, UnknownProfile> {
        let wanted = text.trim();
        Profile::ALL
            .into_iter()
            .find(|profile| profile.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownProfile { name: text.to_string() })
    }
}

impl<'de> Deserialize<'de> for Profile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Profile, D::Error> {
        use serde::de::Error;
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            return text.parse().map_err(D::Error::custom);
        }
        deserializer.deserialize_enum("Profile", &["fast", "lan", "wan", "seed"], ProfileIndexVisitor)
    }
}

/// Reads a profile the way the derived `Serialize` writes it in a binary format: the
/// variant's index, then its (empty) unit content.
struct ProfileIndexVisitor;

impl<'de> serde::de::Visitor<'de> for ProfileIndexVisitor {
    type Value = Profile;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a detection profile (fast, lan, wan or seed)")
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Profile, A::Error> {
        use serde::de::Error;
        use serde::de::VariantAccess;
        let (index, variant) = data.variant::<u32>()?;
        variant.unit_variant()?;
        Profile::ALL.get(index as usize).copied().ok_or_else(|| {
            A::Error::custom(format!("unknown detection profile number {index}; choose one of fast, lan, wan, seed"))
        })
    }
}

/// A timing described for people and scripts (`haven status`, `haven config show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// The profile the timing came from, if it came from one.
    pub profile: Option<Profile>,
    pub ping_interval_ms: u64,
    pub failed_pings: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub expected_detection_ms: u64,
}

impl Detection {
    pub fn new(timing: Timing, profile: Option<Profile>) -> Detection {
        let (election_timeout_min_ms, election_timeout_max_ms) = timing.election_timeout_ms();
        Detection {
            profile,
            ping_interval_ms: timing.ping_interval_ms,
            failed_pings: timing.failed_pings,
            heartbeat_interval_ms: timing.heartbeat_interval_ms(),
            election_timeout_min_ms,
            election_timeout_max_ms,
            expected_detection_ms: timing.expected_detection_ms(),
        }
    }

    /// One line: "profile fast: a ping every 50 ms, failover after 4 failed pings = Raft
    /// heartbeat 50 ms, election timeout 200-300 ms, expected detection about 600 ms".
    pub fn describe(&self) -> String {
        let source = self.profile.map(|profile| format!("profile {profile}: ")).unwrap_or_default();
        format!(
            "{source}a ping every {}, failover after {} failed pings = Raft heartbeat {}, election timeout {}, \
             expected detection about {}",
            human_ms(self.ping_interval_ms),
            self.failed_pings,
            human_ms(self.heartbeat_interval_ms),
            human_range_ms(self.election_timeout_min_ms, self.election_timeout_max_ms),
            human_ms(self.expected_detection_ms),
        )
    }
}

/// Fastest peer probing: ten rounds a second. A probe is one small message over a kept
/// connection; faster than this adds load and no information (a view refreshed every
/// 100 ms is as current as an operator can read it).
pub const PEER_PROBE_INTERVAL_MS_MIN: u64 = 100;

/// Slowest peer probing: every 5 s, so even the `seed` profile (15 s pings) notices a dead
/// member in a few seconds in its status, long before its own failover would act.
pub const PEER_PROBE_INTERVAL_MS_MAX: u64 = 5_000;

/// Shortest time a peer probe may take: a TLS round trip on a loaded host fits in it.
pub const PEER_PROBE_TIMEOUT_MS_MIN: u64 = 200;

/// Longest time a peer probe may take; a member slower than this is not "reachable" in
/// any useful sense.
pub const PEER_PROBE_TIMEOUT_MS_MAX: u64 = 5_000;

/// How often every node probes every other member for its own view of the cluster: two
/// pings, within [`PEER_PROBE_INTERVAL_MS_MIN`]..=[`PEER_PROBE_INTERVAL_MS_MAX`] (`fast`:
/// 100 ms, `lan`: 200 ms, `wan`: 1 s, `seed`: 5 s).
pub fn peer_probe_interval_ms(timing: &Timing) -> u64 {
    timing.heartbeat_interval_ms().saturating_mul(2).clamp(PEER_PROBE_INTERVAL_MS_MIN, PEER_PROBE_INTERVAL_MS_MAX)
}

/// How long one peer probe may take: the shortest election timeout, within
/// [`PEER_PROBE_TIMEOUT_MS_MIN`]..=[`PEER_PROBE_TIMEOUT_MS_MAX`] (a member that cannot
/// answer within an election timeout would lose its leadership anyway).
pub fn peer_probe_timeout_ms(timing: &Timing) -> u64 {
    timing.election_timeout_ms().0.clamp(PEER_PROBE_TIMEOUT_MS_MIN, PEER_PROBE_TIMEOUT_MS_MAX)
}

/// Probe rounds a live member may miss and still count as reachable: one lost or slow
/// round on a loaded host must not make it flap; three in a row are no accident.
pub const PEER_PROBE_ROUNDS_MISSED_MAX: u64 = 3;

/// How recently a member must have been heard from to count as reachable:
/// [`PEER_PROBE_ROUNDS_MISSED_MAX`] probe intervals plus one probe timeout (the round in
/// flight). `fast`: 3 × 100 + 200 = 500 ms, less than the expected detection time of a
/// leader's death (600 ms), so a dead member is shown unreachable before a failover
/// completes (issue 14: status never says "stable" about a dead node once the documented
/// detection time has passed). Independent of the election timeout, so even the `seed`
/// profile shows a dead member within 20 s.
pub fn reachable_within_ms(timing: &Timing) -> u64 {
    PEER_PROBE_ROUNDS_MISSED_MAX * peer_probe_interval_ms(timing) + peer_probe_timeout_ms(timing)
}

/// How a node heard from a member lately, in milliseconds ago (`None`: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// This node leads, since this long (`None`: it does not lead).
    pub leading_for_ms: Option<u64>,
    /// As leader: the member's last acknowledged heartbeat **in this term** (a new leader
    /// has heard nothing yet, whatever it heard as a follower).
    pub heartbeat_ms_ago: Option<u64>,
    /// The member's last answer to one of this node's probes.
    pub probe_ms_ago: Option<u64>,
}

/// Whether a member counts as reachable. A leader counts a heartbeat acknowledged in its
/// own term, or a probe answer received since it leads: an answer from before its election
/// says nothing about now (issue 14: a new leader showed the dead old leader "reachable
/// yes" from a probe answered just before the death). Anyone else counts its probes.
/// Nothing unobserved counts.
pub fn reachable(heard: Heard, within_ms: u64) -> bool {
    let fresh = |age: Option<u64>| age.is_some_and(|age| age < within_ms);
    match heard.leading_for_ms {
        Some(leading_for_ms) => {
            fresh(heard.heartbeat_ms_ago)
                || (fresh(heard.probe_ms_ago) && heard.probe_ms_ago.is_some_and(|age| age < leading_for_ms))
        }
        None => fresh(heard.probe_ms_ago),
    }
}

/// `500 ms`, `1.6 s`, `285 s`: durations as operators read them.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else if ms < 10_000 {
        format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
    } else {
        format!("{} s", ms / 1000)
    }
}

/// `300-600 ms`, `180-360 s`, `800 ms-1.6 s`: the unit is written once when both share it.
pub fn human_range_ms(min_ms: u64, max_ms: u64) -> String {
    let (min, max) = (human_ms(min_ms), human_ms(max_ms));
    match (min.rsplit_once(' '), max.rsplit_once(' ')) {
        (Some((min_number, min_unit)), Some((_, max_unit))) if min_unit == max_unit => format!("{min_number}-{max}"),
        _ => format!("{min}-{max}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each profile, its timing, and what it means as Raft timeouts and detection time.
    #[test]
    fn each_profile_converts_to_raft_timeouts() {
        // (profile, ping ms, failed pings, election min, election max, expected detection)
        let table = [
            (Profile::Fast, 50, 4, 200, 300, 600),
            (Profile::Lan, 100, 10, 1_000, 1_500, 2_850),
            (Profile::Wan, 500, 10, 5_000, 7_500, 14_250),
            (Profile::Seed, 15_000, 12, 180_000, 270_000, 510_000),
        ];
        for (profile, ping, failed, min, max, expected) in table {
            let timing = profile.timing();
            assert_eq!((timing.ping_interval_ms, timing.failed_pings), (ping, failed), "{profile}");
            assert_eq!(timing.heartbeat_interval_ms(), ping, "{profile}");
            assert_eq!(timing.election_timeout_ms(), (min, max), "{profile}");
            assert_eq!(timing.expected_detection_ms(), expected, "{profile}");
            let detection = Detection::new(timing, Some(profile));
            assert_eq!(detection.expected_detection_ms, expected);
            assert!(detection.describe().starts_with(&format!("profile {profile}: ")), "{}", detection.describe());
        }
    }

    /// The seed profile reproduces seed 002: at least 12 × 15 s = 180 s before failover.
    #[test]
    fn seed_profile_is_the_vendors_behaviour() {
        let (min, _) = Profile::Seed.timing().election_timeout_ms();
        assert_eq!(min, 180_000);
        assert_eq!(Profile::default(), Profile::Fast);
        assert_eq!(Profile::Fast.timing(), Timing { ping_interval_ms: 50, failed_pings: 4 });
    }

    /// Every allowed count of failed pings (seed 002: 2-20), with every profile's interval:
    /// the election timeout is that many pings, randomised up to one and a half times; the
    /// heartbeat is always shorter than the shortest election timeout (Raft's requirement);
    /// detection is the leader's lease (the longest timeout) plus the average timeout plus
    /// one round of votes.
    #[test]
    fn failed_pings_two_to_twenty() {
        for profile in Profile::ALL {
            let ping = profile.timing().ping_interval_ms;
            for failed in FAILED_PINGS_MIN..=FAILED_PINGS_MAX {
                let timing = Timing { ping_interval_ms: ping, failed_pings: failed };
                let (min, max) = timing.election_timeout_ms();
                assert_eq!(min, ping * failed);
                assert_eq!(max, min + min / 2);
                assert!(timing.heartbeat_interval_ms() < min, "{ping} x {failed}");
                let detection = timing.expected_detection_ms();
                assert!(max + min < detection && detection <= 2 * max + ping, "{ping} x {failed}: {detection}");
            }
        }
        assert_eq!((FAILED_PINGS_MIN, FAILED_PINGS_MAX), (2, 20), "seed 002's range");
    }

    #[test]
    fn profiles_parse_from_names() {
        let table = [("fast", Profile::Fast), ("LAN", Profile::Lan), (" wan ", Profile::Wan), ("Seed", Profile::Seed)];
        for (text, profile) in table {
            assert_eq!(text.parse::<Profile>(), Ok(profile), "{text:?}");
        }
        for profile in Profile::ALL {
            assert_eq!(profile.name().parse::<Profile>(), Ok(profile));
            assert_eq!(serde_json::to_value(profile).unwrap(), serde_json::json!(profile.name()));
            assert_eq!(serde_json::from_value::<Profile>(serde_json::json!(profile.name())).unwrap(), profile);
            assert!(!profile.purpose().is_empty());
        }
        assert_eq!(serde_json::from_str::<Profile>("\"LAN\"").unwrap(), Profile::Lan);
        let error = serde_json::from_str::<Profile>("\"turbo\"").unwrap_err().to_string();
        assert!(error.contains("choose one of fast, lan, wan, seed"), "{error}");
        let error = "turbo".parse::<Profile>().unwrap_err().to_string();
        assert!(error.contains("turbo") && error.contains("fast, lan, wan, seed"), "{error}");
        assert!("".parse::<Profile>().is_err());
    }

    /// Issue 10: in the binary encoding of logs and snapshots a profile is written as its
    /// variant index and must read back as the same profile, alone and inside the HA
    /// configuration, whatever follows it.
    #[test]
    fn profiles_round_trip_through_the_binary_encoding() {
        for (index, profile) in Profile::ALL.into_iter().enumerate() {
            let bytes = crate::codec::encode(&profile).unwrap();
            assert_eq!(bytes, [index as u8], "the index, as every snapshot written so far holds it");
            assert_eq!(crate::codec::decode::<Profile>(&bytes).unwrap(), profile);
            let config = crate::ha::config::HaConfig { profile: Some(profile), ..Default::default() };
            let bytes = crate::codec::encode(&config).unwrap();
            assert_eq!(crate::codec::decode::<crate::ha::config::HaConfig>(&bytes).unwrap(), config);
        }
        let error = crate::codec::decode::<Profile>(&[4]).unwrap_err();
        assert!(!error.problem.is_empty(), "{error}");
    }

    /// Peer probing and reachability per profile: a dead member is unreachable before the
    /// expected detection time of a leader's death has passed.
    #[test]
    fn reachability_windows_fit_inside_detection() {
        // (profile, probe interval, probe timeout, reachable within)
        let table = [
            (Profile::Fast, 100, 200, 500),
            (Profile::Lan, 200, 1_000, 1_600),
            (Profile::Wan, 1_000, 5_000, 8_000),
            (Profile::Seed, 5_000, 5_000, 20_000),
        ];
        for (profile, interval, timeout, within) in table {
            let timing = profile.timing();
            assert_eq!(peer_probe_interval_ms(&timing), interval, "{profile}");
            assert_eq!(peer_probe_timeout_ms(&timing), timeout, "{profile}");
            assert_eq!(reachable_within_ms(&timing), within, "{profile}");
            assert!(within < timing.expected_detection_ms(), "{profile}: {within}");
            // A live member answers every round: its last answer is at most one round old.
            assert!(interval + timeout < within, "{profile}");
        }
        for failed in FAILED_PINGS_MIN..=FAILED_PINGS_MAX {
            for ping in [PING_INTERVAL_MS_MIN, 50, 100, 500, 15_000, PING_INTERVAL_MS_MAX] {
                let timing = Timing { ping_interval_ms: ping, failed_pings: failed };
                let within = reachable_within_ms(&timing);
                assert!(peer_probe_interval_ms(&timing) + peer_probe_timeout_ms(&timing) < within);
                assert!(within <= 20_000, "{ping} x {failed}: {within}");
            }
        }
    }

    /// A leader counts only what it heard as leader; others only their probes; nothing
    /// unobserved counts.
    #[test]
    fn reachability_is_only_claimed_when_observed() {
        let heard =
            |leading_for_ms, heartbeat_ms_ago, probe_ms_ago| Heard { leading_for_ms, heartbeat_ms_ago, probe_ms_ago };
        // (heard, reachable within 500 ms?)
        let table = [
            (heard(Some(10_000), Some(10), None), true),
            (heard(Some(10_000), Some(499), None), true),
            (heard(Some(10_000), Some(500), None), false),
            // A probe answered since this node leads counts (heartbeats may time out on a
            // loaded host while the member is well).
            (heard(Some(10_000), Some(900), Some(100)), true),
            // A new leader with a fresh probe of the dead old leader, answered before it led.
            (heard(Some(30), None, Some(80)), false),
            (heard(Some(30), None, Some(20)), true),
            (heard(None, None, Some(100)), true),
            (heard(None, Some(1), Some(600)), false),
            (heard(None, None, None), false),
        ];
        for (heard, expected) in table {
            assert_eq!(reachable(heard, 500), expected, "{heard:?}");
        }
    }

    #[test]
    fn detection_is_described_in_words() {
        let text = Detection::new(Profile::Fast.timing(), Some(Profile::Fast)).describe();
        assert_eq!(
            text,
            "profile fast: a ping every 50 ms, failover after 4 failed pings = Raft heartbeat 50 ms, election \
             timeout 200-300 ms, expected detection about 600 ms"
        );
        let custom = Detection::new(Timing { ping_interval_ms: 200, failed_pings: 3 }, None).describe();
        assert!(custom.starts_with("a ping every 200 ms, failover after 3 failed pings"), "{custom}");
        assert_eq!(human_ms(1_600), "1.6 s");
        assert_eq!(human_ms(285_000), "285 s");
        assert_eq!(human_ms(12_345), "12 s");
        assert_eq!(human_range_ms(180_000, 360_000), "180-360 s");
        assert_eq!(human_range_ms(800, 1_600), "800 ms-1.6 s");
    }
}
