//! haven-net
