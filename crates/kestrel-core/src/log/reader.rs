//! Reading the log from its files: the segments of a log directory in LSN order and their bytes.
//! The records inside are parsed by `format::log` (`read_segment_header`, `read_frame`); what a
//! damaged record means is decided by recovery.

use std::fs;
use std::path::Path;

use crate::error::{io, Result};
use crate::format::log::{parse_segment_name, LOG_DIR};

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
