//! haven-client
