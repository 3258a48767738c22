//! The acknowledgement stamp of a committed write: `Haven-Ack: node=2 term=7 index=1234
//! mono_ns=5678`. The server puts it on every KV write answer; clients, the nemesis and the
//! primaries checker read it. One definition, one parser.

use serde::Deserialize;
use serde::Serialize;

/// The response header that carries an [`AckStamp`].
pub const ACK_HEADER: &str = "haven-ack";

/// The log id of a committed entry — the leader id `(term, node)` it was proposed under and
/// its index — and the leader's `CLOCK_MONOTONIC` in nanoseconds when it learned the entry
/// was committed (comparable only between processes on one machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AckStamp {
    pub node: u64,
    pub term: u64,
    pub index: u64,
    pub mono_ns: u64,
}

impl AckStamp {
    /// Parses a header value: the four fields, each once, in any order.
    pub fn parse(text: &str) -> Result<AckStamp, String> {
        const NAMES: [&str; 4] = ["node", "term", "index", "mono_ns"];
        let mut fields = [None; 4];
        for part in text.split_ascii_whitespace() {
            let (name, value) = part.split_once('=').ok_or_else(|| format!("{part:?} is not name=value"))?;
            let slot =
                NAMES.iter().position(|known| *known == name).ok_or_else(|| format!("unknown field {name:?}"))?;
            if fields[slot].is_some() {
                return Err(format!("field {name} given twice"));
            }
            fields[slot] = Some(value.parse::<u64>().map_err(|_| format!("{name}={value:?} is not a number"))?);
        }
        match fields {
            [Some(node), Some(term), Some(index), Some(mono_ns)] => Ok(AckStamp { node, term, index, mono_ns }),
            _ => Err(format!("{text:?} lacks one of {}", NAMES.join(", "))),
        }
    }
}

impl std::fmt::Display for AckStamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node={} term={} index={} mono_ns={}", self.node, self.term, self.index, self.mono_ns)
    }
}
