//! A database directory (docs/FORMAT.md "Directory"): creating it, or checking that it is one,
//! and its identity file. The TypeScript twin is `lib/core/ts/directory.ts`.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{io, Code, Error, Result};
use crate::format::log::{identity_bytes, IDENTITY_BYTES, IDENTITY_FILE, IDENTITY_MAGIC, IDENTITY_VERSION, LOCK_FILE, LOG_DIR};
use crate::format::{crc32c, u32_at};
use crate::vfs::sync_dir;

fn not_a_database(dir: &Path, why: &str) -> Error {
    Error::new(
        Code::NotADatabase,
        format!("{} is not a kestreldb database ({why}); pass an empty or new directory, or the directory of an existing database", dir.display()),
    )
}

/// Make sure `dir` is a directory, creating it when missing (a plain file is not a database).
pub fn ensure_directory(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(not_a_database(dir, "it is a file, not a directory")),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display()))),
        Err(e) => Err(Error::io(&format!("opening {}", dir.display()), &e)),
    }
}

/// Make sure `dir` is a kestreldb directory, creating it when missing or empty.
pub fn prepare_directory(dir: &Path) -> Result<()> {
    ensure_directory(dir)?;
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))? {
        let name = entry.map_err(io(format!("reading {}", dir.display())))?.file_name().to_string_lossy().into_owned();
        // The lock's files (`LOCK`, `LOCK.<nonce>.tmp`) may exist before the database does.
        if name != LOCK_FILE && !(name.starts_with(&format!("{LOCK_FILE}.")) && name.ends_with(".tmp")) {
            entries.push(name);
        }
    }
    if entries.iter().any(|e| e == IDENTITY_FILE) {
        let bytes = fs::read(dir.join(IDENTITY_FILE)).map_err(io(format!("reading {}", IDENTITY_FILE)))?;
        if check_identity(dir, &bytes)? < IDENTITY_VERSION {
            // Version 1 → 2 ("may be shared"): nothing else on disk changes.
            write_identity(dir, &format!("{IDENTITY_FILE}.{}.tmp", std::process::id()))?;
        }
        fs::create_dir_all(dir.join(LOG_DIR)).map_err(io("creating log/".into()))?;
        return Ok(());
    }
    if !entries.is_empty() {
        return Err(not_a_database(dir, &format!("it holds {} other entries and no {IDENTITY_FILE} file", entries.len())));
    }
    fs::create_dir(dir.join(LOG_DIR)).map_err(io("creating log/".into()))?;
    write_identity(dir, &format!("{IDENTITY_FILE}.tmp"))
}

/// Write the identity file atomically: `tmp_name`, fsync, rename, fsync the directory.
fn write_identity(dir: &Path, tmp_name: &str) -> Result<()> {
    let tmp = dir.join(tmp_name);
    let mut f = fs::File::create(&tmp).map_err(io("creating the identity file".into()))?;
    f.write_all(&identity_bytes()).map_err(io("writing the identity file".into()))?;
    f.sync_all().map_err(io("syncing the identity file".into()))?;
    fs::rename(&tmp, dir.join(IDENTITY_FILE)).map_err(io("renaming the identity file".into()))?;
    sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))?;
    Ok(())
}

/// The identity file's version (1 or 2), or why it is not one this build opens.
fn check_identity(dir: &Path, bytes: &[u8]) -> Result<u32> {
    if bytes.len() != IDENTITY_BYTES {
        return Err(not_a_database(dir, &format!("{IDENTITY_FILE} is {} bytes, expected {IDENTITY_BYTES}", bytes.len())));
    }
    if bytes[..8] != IDENTITY_MAGIC {
        return Err(not_a_database(dir, &format!("{IDENTITY_FILE} has the wrong magic")));
    }
    if u32_at(bytes, 12) != crc32c(&bytes[..12]) {
        return Err(not_a_database(dir, &format!("{IDENTITY_FILE} checksum mismatch")));
    }
    let version = u32_at(bytes, 8);
    // FORMAT.md: a bad version is not ours; only a newer one is worth an "upgrade" message.
    if version == 0 {
        return Err(not_a_database(dir, &format!("{IDENTITY_FILE} has format version 0, which no kestreldb writes")));
    }
    if version > IDENTITY_VERSION {
        return Err(Error::new(
            Code::FormatVersion,
            format!("{} uses on-disk format version {version}; this kestreldb reads up to version {IDENTITY_VERSION}: upgrade kestreldb", dir.display()),
        ));
    }
    Ok(version)
}
