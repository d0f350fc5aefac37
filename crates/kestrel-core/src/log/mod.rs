//! The log: a sequence of segment files of checksummed records, written only at its end.
//!
//! - `writer.rs`: the group-commit writer thread (batches, preallocation, fdatasync, rollover,
//!   seal, cutting back a failed batch).
//! - `publish.rs`: sharing — the writer publishes each durable batch's tail in `SHARED`.
//! - `reader.rs`: the segment files of a log directory and their bytes.
//! - `recovery.rs`: replay after the checkpoint at open, torn tail cut, corruption reported.
//!
//! The bytes of segment headers and records are `format::log`.

pub mod publish;
pub mod reader;
pub mod recovery;
pub mod writer;
