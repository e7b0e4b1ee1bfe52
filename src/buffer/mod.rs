//! The optional disk buffer (`logs.buffer`).

pub mod codec;
pub mod spool;
