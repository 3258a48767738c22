//! Roles: the operator's services, each run by Haven on exactly one node at a time, with
//! fencing epochs and self-fencing leases (seed 004's roles; issue 17).
//!
//! ```text
//!   definition  RoleDefinition { name, servers (ordered), start/stop/check, failback,
//!               follow_primary } ── validate(members): every broken rule at once
//!   table       the replicated RoleTable: definitions, placements (holder, epoch), the
//!               cluster-wide epoch counter; RoleChange::{Define, Place, Release, ...}
//!   placement   the primary, per role: facts + its memory + now ──▶ Keep | Place |
//!               Revoke | Wait | Vacate | Unplaced
//!   lease       the arithmetic: holder lease from the renewal's send; the primary's wait
//!               for a certain end, corrected for clock drift; the holder's steps
//!   check       consecutive check failures ──▶ the holder releases the role as failed
//! ```
//!
//! The guarantee (no peer gives it for arbitrary services): at no instant do two nodes
//! run a role with a valid epoch. It rests on three rules, each in one place here:
//!
//! 1. **Epochs only increase**, cluster-wide, and a placement is committed through Raft
//!    before its holder may start (`table`: compare-and-set on the role's epoch, every new
//!    epoch above every epoch ever given out). A database told the epoch by the start
//!    command's `HAVEN_EPOCH` refuses any older writer.
//! 2. **A holder runs its role only while its lease is valid by its own clock** and stops
//!    it before the end (`lease::holder_step`); its guard process kills the role at the
//!    end even if Haven itself is paused or killed (`haven_server::role_process`).
//! 3. **The primary moves a role only after the holder released it, or after its lease
//!    has certainly ended by the primary's clock**, drift included (`lease`,
//!    `placement`).
//!
//! Everything here is pure: time comes in as `now_ms`, facts as arguments, and the
//! decisions come out as values for the shell (and, later, the HA engine) to carry out.

pub mod check;
pub mod definition;
pub mod lease;
pub mod placement;
pub mod table;
