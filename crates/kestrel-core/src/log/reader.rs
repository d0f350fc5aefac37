//! Reading the log from its files: the segments of a log directory in LSN order and their bytes.
//! The records inside are parsed by `format::log` (`read_segment_header`, `read_frame`); what a
//! damaged record means is decided by recovery.

use std::fs::{self, File};
use std::path::Path;

use crate::error::{io, Code, Error, Result};
use crate::format::log::*;
use crate::pio::FileExt;

/// The segment files of `log_dir` as (first LSN, file name), ascending. Other files are ignored.
pub fn list_segments(log_dir: &Path) -> Result<Vec<(u64, String)>> {
    let mut names: Vec<(u64, String)> = Vec::new();
    for entry in fs::read_dir(log_dir).map_err(io("reading log/".into()))? {
        let name = entry.map_err(io("reading log/".into()))?.file_name().to_string_lossy().into_owned();
        if let Some(lsn) = parse_segment_name(&name) {
            names.push((lsn, name));
        }
    }
    names.sort();
    Ok(names)
}

/// All bytes of segment `name` of `log_dir`.
pub fn read_segment(log_dir: &Path, name: &str) -> Result<Vec<u8>> {
    fs::read(log_dir.join(name)).map_err(io(format!("reading {LOG_DIR}/{name}")))
}

/// A position in the log: the next frame goes to `segment` at byte `offset`; the frame before
/// it has LSN `lsn` (0: none). What a participant sharing the directory publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTail {
    pub lsn: u64,
    pub segment: String,
    pub offset: u64,
}

/// A whole frame read while following the log: its LSN and payload.
pub type FollowedFrame = (u64, Vec<u8>);

fn damaged(segment: &str, offset: u64, what: &str) -> Error {
    Error::new(
        Code::Corrupt,
        format!("log segment {LOG_DIR}/{segment} is corrupt at byte {offset} ({what}); published records cannot be trusted: restore from a backup"),
    )
}

/// Bytes `from..to` of segment `name` (`to` None: to its end). Shorter when the file is.
fn read_range(log_dir: &Path, name: &str, from: u64, to: Option<u64>) -> Result<Vec<u8>> {
    let what = || format!("reading {LOG_DIR}/{name}");
    let file = File::open(log_dir.join(name)).map_err(io(what()))?;
    let len = file.metadata().map_err(io(what()))?.len();
    let end = to.map_or(len, |t| t.min(len));
    let mut buf = vec![0u8; end.saturating_sub(from) as usize];
    file.read_exact_at(&mut buf, from).map_err(io(what()))?;
    Ok(buf)
}

/// The first LSN in the header of segment `name`, or why it has none.
fn segment_first_lsn(log_dir: &Path, name: &str) -> Result<std::result::Result<u64, String>> {
    let bytes = read_range(log_dir, name, 0, Some(SEGMENT_HEADER_BYTES as u64))?;
    Ok(read_segment_header(&bytes))
}

/// Every frame after `from` up to exactly `to` (sharing: what other participants appended and
/// published). A segment before `to.segment` is read to its end (EOF, zeros, or its last whole
/// frame) and must be followed by the segment named after the next LSN; `to.segment` is read
/// exactly up to `to.offset`, where the frame with LSN `to.lsn` must end. Anything else — a
/// missing, torn, checksum-failing or out-of-order frame — is corruption: published frames are
/// durable.
pub fn read_to_tail(log_dir: &Path, from: &LogTail, to: &LogTail) -> Result<Vec<FollowedFrame>> {
    let mut out = Vec::new();
    let mut segment = from.segment.clone();
    let mut pos = from.offset;
    let mut lsn = from.lsn;
    if segment != to.segment && !log_dir.join(&segment).exists() {
        // The log end was the end of a segment a checkpoint has since trimmed (nothing in it was
        // needed): the next record starts the segment named after it.
        segment = segment_name(lsn + 1);
        pos = SEGMENT_HEADER_BYTES as u64;
        match segment_first_lsn(log_dir, &segment) {
            Ok(Ok(first)) if first == lsn + 1 => {}
            Ok(Ok(first)) => return Err(damaged(&segment, 0, &format!("header says first LSN {first}"))),
            Ok(Err(why)) => return Err(damaged(&segment, 0, &why)),
            Err(e) => return Err(damaged(&segment, 0, &format!("records after LSN {lsn} are missing ({})", e.message))),
        }
    }
    // Bounded: every round moves to the next segment (named by a larger LSN) or returns.
    loop {
        let last = segment == to.segment;
        if last && pos > to.offset {
            return Err(damaged(&segment, to.offset, &format!("the published tail lies before this engine's log end at byte {pos}")));
        }
        let bytes = read_range(log_dir, &segment, pos, last.then_some(to.offset))?;
        if last && (bytes.len() as u64) < to.offset - pos {
            return Err(damaged(&segment, pos + bytes.len() as u64, &format!("the file ends before the published tail at byte {}", to.offset)));
        }
        let mut at = 0usize;
        // Bounded: each round consumes one whole frame.
        while at < bytes.len() {
            let Some(frame) = read_frame(&bytes, at) else {
                if last {
                    return Err(damaged(&segment, pos + at as u64, "torn, zeroed or checksum-failing record before the published tail"));
                }
                break;
            };
            if frame.lsn != lsn + 1 {
                return Err(damaged(&segment, pos + at as u64, &format!("record LSN {}, expected {}", frame.lsn, lsn + 1)));
            }
            if frame.record_type != RECORD_COMMIT {
                return Err(damaged(&segment, pos + at as u64, &format!("unknown record type {} (written by a newer kestreldb?)", frame.record_type)));
            }
            lsn = frame.lsn;
            out.push((lsn, frame.payload.to_vec()));
            at = frame.end;
        }
        if last {
            if lsn != to.lsn {
                return Err(damaged(&segment, to.offset, &format!("the published tail says LSN {}, the log holds {lsn} there", to.lsn)));
            }
            return Ok(out);
        }
        let next = segment_name(lsn + 1);
        if next == segment || next > to.segment {
            return Err(damaged(&segment, pos + at as u64, &format!("the log ends at LSN {lsn} before the published tail {}/{}", to.segment, to.offset)));
        }
        match segment_first_lsn(log_dir, &next) {
            Ok(Ok(first)) if first == lsn + 1 => {}
            Ok(Ok(first)) => return Err(damaged(&next, 0, &format!("header says first LSN {first}"))),
            Ok(Err(why)) => return Err(damaged(&next, 0, &why)),
            Err(e) => return Err(damaged(&next, 0, &format!("records after LSN {lsn} are missing ({})", e.message))),
        }
        segment = next;
        pos = SEGMENT_HEADER_BYTES as u64;
    }
}

/// What a dead writer left past the published tail (see [`read_past_tail`]).
#[derive(Debug, Default)]
pub struct PastTail {
    /// Whole, consecutive frames through the last one flagged BATCH_END.
    pub frames: Vec<FollowedFrame>,
    /// Just after the last of `frames` (the tail itself when there are none).
    pub end: Option<LogTail>,
    /// Segments holding `frames` (to fdatasync).
    pub segments: Vec<String>,
    /// A segment past `end.segment` that holds nothing adopted (a rollover the writer died in).
    pub orphan: Option<String>,
}

/// Sharing, adopting a dead writer's log: past `tail`, as crash recovery reads the end of the
/// log, the whole, CRC-valid, consecutive frames through the last BATCH_END — into the next
/// segment when the writer rolled over. Cheap when there is nothing: one frame header read at
/// the tail (zeros or EOF = nothing, unless a segment starting after the tail exists). None:
/// nothing past the tail.
pub fn read_past_tail(log_dir: &Path, tail: &LogTail) -> Result<Option<PastTail>> {
    let probe = read_range(log_dir, &tail.segment, tail.offset, Some(tail.offset + FRAME_HEADER_BYTES as u64))?;
    let zeros = probe.iter().all(|b| *b == 0);
    if !probe.is_empty() && zeros {
        return Ok(None); // preallocated space: the writer wrote nothing more here
    }
    let successor = segment_name(tail.lsn + 1);
    if probe.is_empty() && (successor == tail.segment || !log_dir.join(&successor).exists()) {
        return Ok(None);
    }
    let mut past = PastTail::default();
    let mut segment = tail.segment.clone();
    let mut pos = tail.offset;
    let mut lsn = tail.lsn;
    let mut good: (String, u64, u64, usize) = (segment.clone(), pos, lsn, 0);
    let mut visited: Vec<String> = Vec::new();
    // Bounded: every round moves to the next segment (named by a larger LSN) or stops.
    loop {
        let bytes = read_range(log_dir, &segment, pos, None)?;
        let mut at = 0usize;
        // Bounded: each round consumes one whole frame.
        while let Some(frame) = read_frame(&bytes, at) {
            if frame.lsn != lsn + 1 || frame.record_type != RECORD_COMMIT {
                break;
            }
            lsn = frame.lsn;
            past.frames.push((lsn, frame.payload.to_vec()));
            at = frame.end;
            if frame.batch_end {
                good = (segment.clone(), pos + at as u64, lsn, past.frames.len());
            }
        }
        visited.push(segment.clone());
        let next = segment_name(lsn + 1);
        // Only a segment that ends cleanly after whole frames was rolled over.
        if at != bytes.len() || next == segment || !log_dir.join(&next).exists() {
            break;
        }
        match segment_first_lsn(log_dir, &next)? {
            Ok(first) if first == lsn + 1 => {}
            // A crash while creating the segment: nothing in it was ever written.
            _ => {
                if next > good.0 {
                    past.orphan = Some(next);
                }
                break;
            }
        }
        segment = next;
        pos = SEGMENT_HEADER_BYTES as u64;
    }
    past.frames.truncate(good.3);
    let orphan = segment_name(good.2 + 1);
    if past.orphan.is_none() && orphan > good.0 && log_dir.join(&orphan).exists() {
        past.orphan = Some(orphan);
    }
    if good.3 > 0 {
        past.segments = visited.into_iter().filter(|s| *s <= good.0).collect();
    }
    past.end = Some(LogTail { lsn: good.2, segment: good.0, offset: good.1 });
    Ok(Some(past))
}
