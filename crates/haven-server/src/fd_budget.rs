//! The file-descriptor budget: every global cap on client connections and watchers is
//! derived here from the descriptors the process actually has (issue 13, item 6).
//!
//! ```text
//!   RLIMIT_NOFILE: soft raised to hard at start
//!   ├─ reserved: the peer listener's connections (PEER_LIMITS)  + FDS_OTHER_RESERVED
//!   │            (outgoing peer connections, raft.redb and snapshot files, replicated
//!   │             directories, DNS/SMTP/ICMP sockets, hook pipes, the runtime's own)
//!   └─ the rest, for client connections:
//!        handshakes  = min(CLIENT_LIMITS.handshakes_max, rest / 8)
//!        established = min(CLIENT_LIMITS.established_max, rest - handshakes)
//!        watchers    = min(WATCHERS_PER_NODE_MAX, established * 3 / 4)
//! ```
//!
//! A watcher is a streaming response on its own connection, so watchers are capped below
//! the connections, leaving a quarter of them for reads and writes: a watcher beyond the
//! cap gets 429, a connection beyond its cap is refused by the accept loop, and neither
//! can take the descriptors the store and the peers need (1100 idle connections once made a
//! snapshot fail with EMFILE, which stopped the Raft core). The per-source and per-token
//! caps live with the accept loop and the auth layer; these are the totals.

use haven_core::limits::WATCHERS_PER_NODE_MAX;
use haven_net::accept::AcceptLimits;
use haven_net::accept::CLIENT_LIMITS;
use haven_net::accept::PEER_LIMITS;

/// Descriptors kept for everything but the two listeners' connections: outgoing peer
/// connections (a few pooled per member, at most 7 voters plus learners: about 64), the
/// store (raft.redb, snapshot.bin and its temporary file, the data dir for fsync: under
/// 8), replicated directories' files being copied (64), DNS, SMTP and ICMP sockets and
/// hook script pipes (32), the runtime's epoll, eventfd, signal and stdio descriptors (16),
/// with the rest as slack for what a dependency opens.
pub const FDS_OTHER_RESERVED: u64 = 256;

/// Fewest client connections a node starts with: below this the limit is a mistake
/// (`ulimit -n` of a few hundred), better refused at start than found under load.
pub const CLIENT_FDS_MIN: u64 = 32;

/// What the node may hold open, derived from its descriptor limit.
#[derive(Debug, Clone, Copy)]
pub struct FdBudget {
    /// The soft limit in force (after raising it).
    pub open_files: u64,
    /// The client listener's bounds.
    pub client: AcceptLimits,
    /// Watch streams at once.
    pub watchers_max: usize,
}

/// Descriptors reserved for everything but client connections.
pub fn reserved_fds() -> u64 {
    (PEER_LIMITS.established_max + PEER_LIMITS.handshakes_max) as u64 + FDS_OTHER_RESERVED
}

/// The budget for a soft limit of `open_files`; an error when it leaves fewer than
/// [`CLIENT_FDS_MIN`] for clients.
pub fn budget_for(open_files: u64) -> Result<FdBudget, String> {
    let reserved = reserved_fds();
    let for_clients = open_files.saturating_sub(reserved);
    if for_clients < CLIENT_FDS_MIN {
        return Err(format!(
            "the open-file limit is {open_files}; a node needs at least {} ({reserved} for peers and storage, \
             {CLIENT_FDS_MIN} for clients). Raise it (LimitNOFILE= in the systemd unit, `ulimit -n` in a shell)",
            reserved + CLIENT_FDS_MIN
        ));
    }
    let for_clients = usize::try_from(for_clients).unwrap_or(usize::MAX);
    let handshakes_max = CLIENT_LIMITS.handshakes_max.min(for_clients / 8);
    let established_max = CLIENT_LIMITS.established_max.min(for_clients - handshakes_max);
    let watchers_max = WATCHERS_PER_NODE_MAX.min(established_max * 3 / 4);
    let per_source_max = CLIENT_LIMITS.per_source_max.min(established_max);
    let client = AcceptLimits { handshakes_max, established_max, per_source_max, ..CLIENT_LIMITS };
    Ok(FdBudget { open_files, client, watchers_max })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the budget for it.
pub fn establish() -> anyhow::Result<FdBudget> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        anyhow::bail!("cannot read the open-file limit: {}", std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit whose soft value does not exceed its hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
        }
    }
    let budget = budget_for(limit.rlim_cur).map_err(anyhow::Error::msg)?;
    tracing::info!(
        soft_limit_before = before,
        open_files = budget.open_files,
        client_connections_max = budget.client.established_max,
        client_handshakes_max = budget.client.handshakes_max,
        watchers_max = budget.watchers_max,
        "file descriptor budget"
    );
    Ok(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The totals never exceed the limit, and each cap is the constant's when descriptors
    /// are plenty.
    #[test]
    fn caps_fit_the_limit_and_reach_the_constants_when_there_is_room() {
        for open_files in [reserved_fds() + CLIENT_FDS_MIN, 1024, 4096, 8192, 1 << 20, u64::MAX] {
            let budget = budget_for(open_files).unwrap();
            let clients = (budget.client.established_max + budget.client.handshakes_max) as u64;
            assert!(clients + reserved_fds() <= open_files, "{open_files}: {budget:?}");
            assert!(budget.watchers_max < budget.client.established_max, "{budget:?}");
            assert!(budget.client.per_source_max <= budget.client.established_max, "{budget:?}");
        }
        let plenty = budget_for(1 << 20).unwrap();
        assert_eq!(plenty.client.established_max, CLIENT_LIMITS.established_max);
        assert_eq!(plenty.client.handshakes_max, CLIENT_LIMITS.handshakes_max);
        assert_eq!(plenty.watchers_max, WATCHERS_PER_NODE_MAX);
        // systemd's default soft limit: the issue's 1100 idle connections and 2000 watchers
        // are refused before the descriptors run out.
        let default = budget_for(1024).unwrap();
        assert!(default.client.established_max + default.client.handshakes_max < 1024 - 320);
        assert!(default.watchers_max < 1024 - 320);
    }

    #[test]
    fn too_low_a_limit_is_refused_with_what_to_do() {
        let error = budget_for(reserved_fds() + CLIENT_FDS_MIN - 1).unwrap_err();
        assert!(error.contains("LimitNOFILE"), "{error}");
    }
}
