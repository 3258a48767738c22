//! haven-check
