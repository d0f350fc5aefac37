//! Log recovery: the algorithm of docs/FORMAT.md "Recovery", step for step — the segments after
//! the checkpoint in LSN order, their records checked and replayed, a torn tail cut, any other
//! damage reported as corruption with its segment and byte offset.

use std::fs;
use std::path::Path;

use super::reader::{list_segments, read_segment, read_to_tail, LogTail};
use crate::error::{io, Code, Error, Result};
use crate::format::log::*;
use crate::format::payload::{self, Commit};
use crate::format::u64_at;
use crate::vfs::sync_dir;

/// A segment after recovery.
#[derive(Clone, Debug)]
pub struct Segment {
    pub name: String,
    pub first_lsn: u64,
    pub len: u64,
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub commits: Vec<(u64, Commit)>,
    /// The last LSN of the database: the log's, or the checkpoint's if the log ends below it.
    pub last_lsn: u64,
    /// The last LSN the log itself holds (0 for an empty log).
    pub log_end_lsn: u64,
    pub segments: Vec<Segment>,
    pub truncated_bytes: u64,
}

fn corrupt(segment: &str, offset: usize, what: &str) -> Error {
    Error::new(
        Code::Corrupt,
        format!(
            "log segment {LOG_DIR}/{segment} is corrupt at byte {offset} ({what}); committed data past this point cannot be trusted: restore from a backup"
        ),
    )
}

/// Is damage at `from` a torn final write? Yes unless a whole frame carrying BATCH_END is
/// followed by another whole frame (a later batch, written only after the damaged one was durable).
fn is_torn_tail(bytes: &[u8], from: usize, last_good_lsn: u64) -> bool {
    let mut saw_batch_end = false;
    let mut pos = from + 1;
    // Bounded by the segment length: each step advances by a byte or a whole frame.
    while pos + FRAME_HEADER_BYTES <= bytes.len() {
        // LSN 0 is never written: skip zeroed (preallocated) space without checksumming it.
        if u64_at(bytes, pos + 8) == 0 {
            pos += 1;
            continue;
        }
        match read_frame(bytes, pos) {
            Some(f) if f.lsn > last_good_lsn => {
                if saw_batch_end {
                    return false;
                }
                saw_batch_end |= f.batch_end;
                pos = f.end;
            }
            _ => pos += 1,
        }
    }
    true
}

/// Recover the log of `dir` on top of a checkpoint at `checkpoint_lsn` (0 = none): every good
/// COMMIT after it, in LSN order; the tail is left clean. Segments wholly at or below the
/// checkpoint (left behind when a crash interrupted trimming) are skipped; the first one kept must
/// start at most at `checkpoint_lsn + 1`.
pub fn recover(dir: &Path, checkpoint_lsn: u64) -> Result<Recovered> {
    let log_dir = dir.join(LOG_DIR);
    let names = list_segments(&log_dir)?;
    // A segment is wholly covered by the checkpoint when the next one starts at or below
    // checkpoint_lsn + 1: the trimmer deletes those, a crash may have left some.
    let skip = (0..names.len()).take_while(|&i| i + 1 < names.len() && names[i + 1].0 <= checkpoint_lsn + 1).count();
    let names: Vec<(u64, String)> = names.into_iter().skip(skip).collect();
    let mut out = Recovered { last_lsn: checkpoint_lsn, ..Recovered::default() };
    let count = names.len();
    for (i, (first_lsn, name)) in names.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let path = log_dir.join(&name);
        let bytes = read_segment(&log_dir, &name)?;
        // The first segment may start anywhere up to the record after the checkpoint; the
        // records it holds at or below the checkpoint are read (checked) but not applied.
        let chains = if i == 0 { first_lsn >= 1 && first_lsn <= checkpoint_lsn + 1 } else { first_lsn == out.last_lsn + 1 };
        match read_segment_header(&bytes) {
            Ok(h) if h == first_lsn => {}
            bad => {
                if is_last && bytes.len() < SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES && chains {
                    // A crash while creating the segment: nothing in it was ever acknowledged.
                    fs::remove_file(&path).map_err(io(format!("removing {LOG_DIR}/{name}")))?;
                    sync_dir(&log_dir).map_err(io("syncing log/".into()))?;
                    break;
                }
                let why = match bad {
                    Err(e) => e,
                    Ok(h) => format!("header says first LSN {h}"),
                };
                return Err(corrupt(&name, 0, &why));
            }
        }
        if !chains {
            let why = if first_lsn > out.last_lsn + 1 {
                format!("records {}..{} are missing (a segment file was deleted)", out.last_lsn + 1, first_lsn - 1)
            } else {
                format!("segment starts at LSN {first_lsn}, overlapping LSN {}", out.last_lsn)
            };
            return Err(corrupt(&name, 0, &why));
        }
        if i == 0 {
            out.last_lsn = first_lsn - 1;
        }
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut damage: Option<String> = None;
        // Bounded: each iteration consumes one whole frame.
        while pos < bytes.len() {
            let Some(frame) = read_frame(&bytes, pos) else {
                damage = Some("torn, zeroed or checksum-failing record".into());
                break;
            };
            if frame.lsn != out.last_lsn + 1 {
                damage = Some(format!("record LSN {}, expected {}", frame.lsn, out.last_lsn + 1));
                break;
            }
            if frame.record_type != RECORD_COMMIT {
                return Err(corrupt(&name, pos, &format!("unknown record type {} (written by a newer kestreldb?)", frame.record_type)));
            }
            let commit = payload::decode(frame.payload).map_err(|e| corrupt(&name, pos, &format!("commit record {} does not parse: {e}", frame.lsn)))?;
            if frame.lsn > checkpoint_lsn {
                out.commits.push((frame.lsn, commit));
            }
            out.last_lsn = frame.lsn;
            pos = frame.end;
        }
        if let Some(what) = damage {
            if !is_last || !is_torn_tail(&bytes, pos, out.last_lsn) {
                return Err(corrupt(&name, pos, &what));
            }
            let f = fs::OpenOptions::new().write(true).open(&path).map_err(io(format!("opening {LOG_DIR}/{name}")))?;
            f.set_len(pos as u64).map_err(io(format!("truncating {LOG_DIR}/{name}")))?;
            f.sync_data().map_err(io(format!("syncing {LOG_DIR}/{name}")))?;
            out.truncated_bytes = (bytes.len() - pos) as u64;
        }
        out.segments.push(Segment { name, first_lsn, len: pos as u64 });
    }
    // A log that ends below the checkpoint (durability 'relaxed'/'none' lost its unsynced tail
    // after the checkpoint was written) continues after the checkpoint.
    out.log_end_lsn = out.last_lsn;
    out.last_lsn = out.last_lsn.max(checkpoint_lsn);
    Ok(out)
}

/// Sharing, other participants live: replay the log of `dir` on top of a checkpoint at
/// `checkpoint_lsn` only up to the published `tail` — frames through LSN `tail.lsn`, ending at
/// `tail.segment` byte `tail.offset`. Nothing is cut, truncated or deleted: bytes past the tail
/// belong to a live writer. Damage before the tail is corruption (published frames are durable).
pub fn recover_to_tail(dir: &Path, checkpoint_lsn: u64, tail: &LogTail) -> Result<Recovered> {
    if tail.lsn < checkpoint_lsn {
        return Err(Error::new(
            Code::Corrupt,
            format!("the published log tail (LSN {}) lies before the checkpoint (LSN {checkpoint_lsn}): the shared state is inconsistent", tail.lsn),
        ));
    }
    let log_dir = dir.join(LOG_DIR);
    // Segments past the tail's are a live writer's (or a dead one's, adopted later).
    let names: Vec<(u64, String)> = list_segments(&log_dir)?.into_iter().filter(|(_, n)| *n <= tail.segment).collect();
    let skip = (0..names.len()).take_while(|&i| i + 1 < names.len() && names[i + 1].0 <= checkpoint_lsn + 1).count();
    let kept: Vec<(u64, String)> = names.into_iter().skip(skip).collect();
    let Some((first_lsn, first)) = kept.first().cloned() else {
        return Err(corrupt(&tail.segment, 0, "the segment of the published tail is missing"));
    };
    if first_lsn == 0 || first_lsn > checkpoint_lsn + 1 {
        return Err(corrupt(&first, 0, &format!("records {}..{} are missing (a segment file was deleted)", checkpoint_lsn + 1, first_lsn - 1)));
    }
    match read_segment(&log_dir, &first).map(|b| read_segment_header(&b)) {
        Ok(Ok(h)) if h == first_lsn => {}
        Ok(Ok(h)) => return Err(corrupt(&first, 0, &format!("header says first LSN {h}"))),
        Ok(Err(why)) => return Err(corrupt(&first, 0, &why)),
        Err(e) => return Err(e),
    }
    let from = LogTail { lsn: first_lsn - 1, segment: first, offset: SEGMENT_HEADER_BYTES as u64 };
    let mut out = Recovered { last_lsn: tail.lsn, log_end_lsn: tail.lsn, ..Recovered::default() };
    for (lsn, bytes) in read_to_tail(&log_dir, &from, tail)? {
        if lsn > checkpoint_lsn {
            let commit = payload::decode(&bytes).map_err(|e| corrupt(&tail.segment, 0, &format!("commit record {lsn} does not parse: {e}")))?;
            out.commits.push((lsn, commit));
        }
    }
    // The segments before the tail's are sealed: only the last one's length is used.
    for (first_lsn, name) in kept.into_iter().filter(|(_, n)| *n != tail.segment) {
        out.segments.push(Segment { name, first_lsn, len: 0 });
    }
    let tail_first = parse_segment_name(&tail.segment).unwrap_or(0);
    out.segments.push(Segment { name: tail.segment.clone(), first_lsn: tail_first, len: tail.offset });
    Ok(out)
}
