//! Per-token shares of a node's capacity: no single token (a reader token handed to many
//! agents, a leaked one) can take every watcher slot or every request a node serves at
//! once and lock the other tokens out.
//!
//! ```text
//!   request ── auth::require ── token_requests.try_take(token) ──▶ handler ──▶ slot dropped
//!                                   └─ full: 429 too_many_requests        with the answer
//!   watch  ── api::watch ──── token_watchers.try_take(token) ──▶ stream task holds it
//!                                   └─ full: 429 too_many_watchers
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

/// Requests one token may have in progress on one node at once. Clients in this repository
/// use at most 64 at once (the benchmark); 512 leaves a fleet sharing one token ample room,
/// while a node's 4,096 connections (`haven_net::accept::CLIENT_LIMITS`) still hold room for
/// seven other tokens doing the same.
pub const REQUESTS_PER_TOKEN_MAX: usize = 512;

/// One token gets at most this fraction (1/N) of a node's watcher slots, so at least N
/// tokens must be busy before a watcher is refused for the node being full.
pub const WATCHER_SHARES: usize = 4;

/// How many slots each token holds of one kind, up to `max` each.
#[derive(Debug)]
pub struct TokenSlots {
    max: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One slot of a token, given back when dropped.
#[derive(Debug)]
pub struct TokenSlot {
    slots: Arc<TokenSlots>,
    token_id: String,
}

impl TokenSlots {
    pub fn new(max: usize) -> Arc<TokenSlots> {
        Arc::new(TokenSlots { max: max.max(1), held: Mutex::new(HashMap::new()) })
    }

    /// The most slots one token may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `token_id`, or `None` when it holds [`TokenSlots::max`] already.
    pub fn try_take(self: &Arc<Self>, token_id: &str) -> Option<TokenSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(token_id.to_string()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(TokenSlot { slots: Arc::clone(self), token_id: token_id.to_string() })
    }

    /// Slots `token_id` holds now.
    pub fn held(&self, token_id: &str) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).get(token_id).copied().unwrap_or(0)
    }
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.token_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Tokens come and go: the table holds only tokens with slots taken.
                held.remove(&self.token_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_token_gets_its_own_share_and_gets_it_back() {
        let slots = TokenSlots::new(3);
        let a: Vec<TokenSlot> = (0..3).map(|_| slots.try_take("a").expect("a slot")).collect();
        assert!(slots.try_take("a").is_none(), "a fourth slot for a");
        let b = slots.try_take("b").expect("b is not held back by a");
        assert_eq!((slots.held("a"), slots.held("b")), (3, 1));
        drop(a);
        assert_eq!(slots.held("a"), 0);
        assert!(slots.held.lock().unwrap().get("a").is_none(), "no entry left for a token without slots");
        assert!(slots.try_take("a").is_some());
        drop(b);
        assert_eq!(slots.held("b"), 0);
    }

    #[test]
    fn a_zero_share_still_admits_one() {
        assert_eq!(TokenSlots::new(0).max(), 1);
    }
}
