//! The log: a sequence of segment files of checksummed records, written only at its end.
//!
//! - `writer.rs`: the group-commit writer thread (batches, preallocation, fdatasync, rollover,
//!   seal, cutting back a failed batch).
//! - `reader.rs`: the segment files of a log directory and their bytes.
//! - `recovery.rs`: replay after the checkpoint at open, torn tail cut, corruption reported.
//!
//! The bytes of segment headers and records are `format::log`.

pub mod reader;
pub mod recovery;
pub mod writer;
