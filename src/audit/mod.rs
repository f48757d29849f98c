//! The audit trail: JSON Lines records of decisions and operational events, in daily files
//! and/or on stdout, chained by hash so that an edit, deletion, insertion or reordering is
//! found by `fortress audit verify`.
//!
//! * `record.rs`: the record (every field, `null` where empty), canonical JSON, UTC times;
//! * `chain.rs`: `seq`, `prev_hash`, `hash` (SHA-256, or HMAC-SHA-256 with a key id);
//! * `writer.rs`: the bounded queue and the one writer thread (group commit, fsync, daily
//!   files, seals, retention, recovery after a crash, fail closed when the sink fails);
//! * `verify.rs` and `query.rs`: the two `fortress audit` commands.

pub mod chain;
pub mod cmd;
pub mod query;
pub mod record;
pub mod trail;
pub mod verify;
pub mod writer;

pub use chain::ChainKey;
pub use record::{Event, Record};
pub use trail::Trail;
pub use writer::{AuditError, AuditStats, Writer, WriterSettings};

#[cfg(test)]
mod tests;
