//! Engine-level tests of kestrel-core: commit → durable → visible → reopen, recovery of torn,
//! zeroed and corrupt logs, the fault layer, and a crash-consistency test on the fake disk.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{Rng, TempDir};
use kestrel_core::format::payload::{encode, Commit, Op, OP_PUT};
use kestrel_core::{Code, Engine, Errno, FaultOptions, Options, ScanBounds};

/// Tracks acknowledgements: the highest durable LSN and the failure, if any.
#[derive(Default)]
struct Acks {
    state: Mutex<(u64, Option<kestrel_core::Error>)>,
    changed: Condvar,
}
impl Acks {
    fn wait_for(&self, lsn: u64) -> Result<(), kestrel_core::Error> {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.0 >= lsn {
                return Ok(());
            }
            if let Some(e) = &s.1 {
                return Err(e.clone());
            }
            let (next, timeout) = self.changed.wait_timeout(s, Duration::from_secs(10)).unwrap();
            assert!(!timeout.timed_out(), "no acknowledgement within 10 s");
            s = next;
        }
    }
}

/// Options that keep the whole log: nothing is checkpointed (every commit stays inside the
/// retention window), so that tests of the log format and its recovery see every segment.
fn log_only() -> Options {
    Options { retain_commits: u64::MAX, ..Options::default() }
}

fn open(dir: &Path, options: Options) -> (Engine, Arc<Acks>) {
    let acks = Arc::new(Acks::default());
    let a = acks.clone();
    let engine = Engine::open(
        dir,
        options,
        Box::new(move |lsn, err| {
            let mut s = a.state.lock().unwrap();
            if err.is_some() {
                s.1 = err;
            } else {
                s.0 = s.0.max(lsn);
            }
            a.changed.notify_all();
        }),
    )
    .expect("open");
    (engine, acks)
}

fn put(key: &str, value: &[u8]) -> Vec<u8> {
    encode(&Commit { collections: vec!["c".into()], ops: vec![Op { kind: OP_PUT, collection: 0, key: key.as_bytes().to_vec(), value: value.to_vec() }] })
}

/// Two records written together. Values are MessagePack (uint 64, an array of 7s): a stored
/// value starting with 0xC1 would have to be a valid index envelope.
fn pair(n: u64) -> Vec<u8> {
    let mut a = vec![0xcf];
    a.extend_from_slice(&n.to_be_bytes());
    encode(&Commit {
        collections: vec!["pairs".into()],
        ops: vec![
            Op { kind: OP_PUT, collection: 0, key: format!("a{n:08}").into_bytes(), value: a },
            Op { kind: OP_PUT, collection: 0, key: format!("b{n:08}").into_bytes(), value: vec![7; (n % 64) as usize] },
        ],
    })
}

fn commit_wait(engine: &Engine, acks: &Acks, payload: &[u8]) -> Result<u64, kestrel_core::Error> {
    let lsn = engine.commit(payload)?;
    acks.wait_for(lsn)?;
    Ok(lsn)
}

fn keys(engine: &Engine, collection: &str) -> Vec<String> {
    engine.scan(collection, &ScanBounds::default(), u64::MAX).unwrap().into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect()
}

fn segment(dir: &Path, index: usize) -> PathBuf {
    let mut names: Vec<_> = fs::read_dir(dir.join("log")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    names[index].clone()
}

#[test]
fn commit_is_visible_after_ack_and_survives_reopen() {
    let t = TempDir::new("basic");
    {
        let (e, acks) = open(&t.0, Options::default());
        assert_eq!(commit_wait(&e, &acks, &put("k1", b"v1")).unwrap(), 1);
        assert_eq!(commit_wait(&e, &acks, &put("k2", b"v2")).unwrap(), 2);
        assert_eq!(e.get("c", b"k1", u64::MAX).unwrap().as_deref(), Some(&b"v1"[..]));
        e.close().unwrap();
        assert_eq!(e.commit(&put("k3", b"v3")).unwrap_err().code, Code::Closed);
    }
    let (e, _) = open(&t.0, Options::default());
    assert_eq!(keys(&e, "c"), vec!["k1", "k2"]);
    assert_eq!(e.last_lsn(), 2);
}

#[test]
fn malformed_payload_is_invalid_argument() {
    let t = TempDir::new("bad");
    let (e, _) = open(&t.0, Options::default());
    let err = e.commit(&[1, 2, 3]).unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
}

#[test]
fn group_commit_shares_fsyncs() {
    let t = TempDir::new("group");
    let (e, acks) = open(&t.0, Options::default());
    let e = Arc::new(e);
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let (e, acks) = (e.clone(), acks.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    commit_wait(&e, &acks, &pair(w * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for h in threads {
        h.join().unwrap();
    }
    let s = e.stats();
    assert_eq!(s.durable_lsn, 400);
    assert_eq!(s.keys, 800);
    assert!(s.batches < 400, "8 concurrent writers must share batches, got {} for 400 commits", s.batches);
    assert!(s.syncs < 400, "8 concurrent writers must share fsyncs, got {} for 400 commits", s.syncs);
}

#[test]
fn torn_and_zeroed_tails_are_cut_midlog_damage_is_corrupt() {
    let t = TempDir::new("tails");
    let write10 = |dir: &Path| {
        let (e, acks) = open(dir, log_only());
        for i in 0..10 {
            commit_wait(&e, &acks, &put(&format!("k{i}"), b"value")).unwrap();
        }
    };
    write10(&t.0);
    let seg = segment(&t.0, 0);
    let len = fs::metadata(&seg).unwrap().len();
    // Torn last record.
    fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 3).unwrap();
    {
        let (e, _) = open(&t.0, log_only());
        assert_eq!(e.last_lsn(), 9);
    }
    // Zeroed tail.
    let len = fs::metadata(&seg).unwrap().len();
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &bytes).unwrap();
    {
        let (e, _) = open(&t.0, log_only());
        assert_eq!(e.last_lsn(), 9);
    }
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    // A flipped byte in the 3rd record: every later batch proves it was acknowledged.
    let mut bytes = fs::read(&seg).unwrap();
    let record = (bytes.len() - 32) / 9;
    let offset = 32 + 2 * record;
    bytes[offset + 20] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    let err = Engine::open(&t.0, log_only(), Box::new(|_, _| {})).err().expect("corrupt");
    assert_eq!(err.code, Code::Corrupt);
    assert!(err.message.contains("00000000000000000001.klog"), "{}", err.message);
    assert!(err.message.contains(&format!("byte {offset}")), "{}", err.message);
}

#[test]
fn missing_segment_is_corrupt() {
    let t = TempDir::new("missing");
    {
        let (e, acks) = open(&t.0, Options { segment_bytes_max: 4096, ..log_only() });
        for i in 0..200 {
            commit_wait(&e, &acks, &put(&format!("k{i:04}"), &[1u8; 100])).unwrap();
        }
        assert!(e.stats().segments >= 3);
    }
    fs::remove_file(segment(&t.0, 1)).unwrap();
    let err = Engine::open(&t.0, log_only(), Box::new(|_, _| {})).err().expect("corrupt");
    assert_eq!(err.code, Code::Corrupt);
    assert!(err.message.contains("missing"), "{}", err.message);
}

#[test]
fn failed_fsync_rejects_then_refuses_and_reopen_keeps_acknowledged() {
    for (errno, code) in [(Errno::Eio, Code::Io), (Errno::Enospc, Code::DiskFull)] {
        let t = TempDir::new("eio");
        {
            let faults = FaultOptions { fail_fsync_at: Some(3), errno, ..FaultOptions::default() };
            let (e, acks) = open(&t.0, Options { faults: Some(faults), ..Options::default() });
            commit_wait(&e, &acks, &put("k1", b"1")).unwrap();
            commit_wait(&e, &acks, &put("k2", b"2")).unwrap();
            assert_eq!(commit_wait(&e, &acks, &put("k3", b"3")).unwrap_err().code, code);
            assert_eq!(e.get("c", b"k3", u64::MAX).unwrap(), None, "a failed commit is never visible");
            assert_eq!(e.commit(&put("k4", b"4")).unwrap_err().code, Code::Io);
        }
        let (e, acks) = open(&t.0, Options::default());
        assert_eq!(keys(&e, "c"), vec!["k1", "k2"]);
        assert_eq!(commit_wait(&e, &acks, &put("k5", b"5")).unwrap(), 3);
    }
}

#[test]
fn failed_write_writes_nothing() {
    let t = TempDir::new("ewrite");
    {
        let faults = FaultOptions { fail_write_at: Some(2), ..FaultOptions::default() };
        let (e, acks) = open(&t.0, Options { faults: Some(faults), ..Options::default() });
        commit_wait(&e, &acks, &put("k1", b"1")).unwrap();
        assert_eq!(commit_wait(&e, &acks, &put("k2", b"2")).unwrap_err().code, Code::Io);
    }
    let (e, _) = open(&t.0, Options::default());
    assert_eq!(keys(&e, "c"), vec!["k1"]);
}

#[test]
fn crash_consistency_on_the_fake_disk() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..25 {
        let t = TempDir::new("crash");
        let durability = [kestrel_core::Durability::Sync, kestrel_core::Durability::Sync, kestrel_core::Durability::Relaxed][round % 3];
        let (e, acks) = open(&t.0, Options { durability, segment_bytes_max: 8192, faults: Some(FaultOptions::default()), ..Options::default() });
        let e = Arc::new(e);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..1 + rng.below(6))
            .map(|_| {
                let (e, acks, acked, next) = (e.clone(), acks.clone(), acked.clone(), next.clone());
                std::thread::spawn(move || loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Ok(lsn) = e.commit(&pair(n)) else { return };
                    if acks.wait_for(lsn).is_err() {
                        return;
                    }
                    // In relaxed mode an ack is not a durability promise against power loss.
                    if durability == kestrel_core::Durability::Sync && e.last_lsn() >= lsn {
                        acked.lock().unwrap().push(n);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        e.crash(rng.below(600)).unwrap();
        // Wake waiters: the crash acknowledges nothing more.
        acks.state.lock().unwrap().1 = Some(kestrel_core::Error::closed());
        acks.changed.notify_all();
        for w in workers {
            w.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        drop(e);
        let (e, _) = open(&t.0, Options::default());
        let a: Vec<String> = keys(&e, "pairs").into_iter().filter(|k| k.starts_with('a')).map(|k| k[1..].to_string()).collect();
        let b: Vec<String> = keys(&e, "pairs").into_iter().filter(|k| k.starts_with('b')).map(|k| k[1..].to_string()).collect();
        assert_eq!(a, b, "round {round}: every transaction whole");
        for n in acked {
            assert!(e.get("pairs", format!("a{n:08}").as_bytes(), u64::MAX).unwrap().is_some(), "round {round}: acknowledged commit {n} lost");
        }
    }
}

/// Little-endian helpers for hand-written golden bytes.
fn le32(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn le64(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

#[test]
fn golden_bytes_of_a_small_log() {
    // Every byte below is written by hand from docs/FORMAT.md; the CRC32C values were computed
    // independently (a bitwise Castagnoli CRC in Python), so neither the frame code nor the crc
    // crate can drift without this test failing.
    let t = TempDir::new("golden");
    {
        let (e, acks) = open(&t.0, log_only());
        // PUT c/"k" = "v", then DELETE c/"k": two commits, two batches.
        let put_kv = [1, 0, 1, 0, b'c', 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v'];
        let del_k = [1, 0, 1, 0, b'c', 1, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, b'k'];
        assert_eq!(commit_wait(&e, &acks, &put_kv).unwrap(), 1);
        assert_eq!(e.get("c", b"k", 1).unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(commit_wait(&e, &acks, &del_k).unwrap(), 2);
        e.close().unwrap();
    }
    // Identity version 2: the directory may be shared (segments and pages stay version 1).
    let mut identity = b"KESTREL\x01".to_vec();
    identity.extend(le32(2));
    identity.extend(le32(0x5286_27B6));
    assert_eq!(fs::read(t.0.join("KESTREL")).unwrap(), identity);

    let mut log = b"KLOGSEG\x01".to_vec();
    log.extend(le32(1)); // format version
    log.extend(le32(0)); // reserved
    log.extend(le64(1)); // first LSN
    log.extend(le32(0)); // reserved
    log.extend(le32(0xF167_3492)); // CRC32C of bytes 0..28
                                   // Frame 1: L = 22, crc, LSN 1, COMMIT | BATCH_END, payload.
    log.extend(le32(22));
    log.extend(le32(0x6FFA_FBE7));
    log.extend(le64(1));
    log.push(0x81);
    log.extend([1, 0, 1, 0, b'c', 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v']);
    // Frame 2: L = 17, crc, LSN 2, COMMIT | BATCH_END, payload.
    log.extend(le32(17));
    log.extend(le32(0x299F_D904));
    log.extend(le64(2));
    log.push(0x81);
    log.extend([1, 0, 1, 0, b'c', 1, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, b'k']);
    let names: Vec<String> = fs::read_dir(t.0.join("log")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec!["00000000000000000001.klog"]);
    // A closed database has no preallocated zeros left: the segment is exactly these bytes.
    assert_eq!(fs::read(segment(&t.0, 0)).unwrap(), log);

    // Replay: the delete wins; with one retained commit the version before it stays readable.
    let (e, _) = open(&t.0, Options { retain_commits: 1, ..log_only() });
    assert_eq!(e.last_lsn(), 2);
    assert_eq!(e.get("c", b"k", u64::MAX).unwrap(), None);
    assert_eq!(e.get("c", b"k", 1).unwrap().as_deref(), Some(&b"v"[..]));
}

fn write_segment_header(dir: &Path, first_lsn: u64, bytes: &[u8]) -> PathBuf {
    let path = dir.join("log").join(kestrel_core::format::log::segment_name(first_lsn));
    fs::write(&path, bytes).unwrap();
    path
}

fn open_err(dir: &Path) -> kestrel_core::Error {
    Engine::open(dir, log_only(), Box::new(|_, _| {})).err().expect("open must fail")
}

fn three_commits(dir: &Path) {
    let (e, acks) = open(dir, log_only());
    for i in 0..3 {
        commit_wait(&e, &acks, &put(&format!("k{i}"), b"v")).unwrap();
    }
    e.close().unwrap();
}

#[test]
fn empty_last_segment_is_valid_and_used() {
    let t = TempDir::new("empty-seg");
    three_commits(&t.0);
    write_segment_header(&t.0, 4, &kestrel_core::format::log::segment_header(4));
    {
        let (e, acks) = open(&t.0, log_only());
        assert_eq!(e.last_lsn(), 3);
        assert_eq!(e.stats().segments, 2);
        assert_eq!(commit_wait(&e, &acks, &put("k3", b"v")).unwrap(), 4);
    }
    let (e, _) = open(&t.0, log_only());
    assert_eq!(keys(&e, "c"), vec!["k0", "k1", "k2", "k3"]);
    assert!(fs::metadata(segment(&t.0, 1)).unwrap().len() > 32, "LSN 4 went into the empty segment");
}

#[test]
fn torn_segment_creation_is_removed_but_not_anywhere_else() {
    let t = TempDir::new("torn-seg");
    three_commits(&t.0);
    let header = kestrel_core::format::log::segment_header(4);
    // A crash while writing the header of the next segment: short, named for LSN 4.
    let torn = write_segment_header(&t.0, 4, &header[..20]);
    {
        let (e, acks) = open(&t.0, log_only());
        assert_eq!(e.last_lsn(), 3);
        assert!(!torn.exists(), "the torn segment is deleted");
        assert_eq!(commit_wait(&e, &acks, &put("k3", b"v")).unwrap(), 4);
    }
    // A bad header that is not a torn creation (named for a later LSN) is corruption.
    let t = TempDir::new("torn-seg-2");
    three_commits(&t.0);
    write_segment_header(&t.0, 9, &header[..20]);
    let err = open_err(&t.0);
    assert_eq!(err.code, Code::Corrupt);
    assert!(err.message.contains("00000000000000000009.klog") && err.message.contains("byte 0"), "{}", err.message);
}

#[test]
fn bad_header_of_a_sealed_segment_is_corrupt() {
    let t = TempDir::new("bad-header");
    {
        let (e, acks) = open(&t.0, Options { segment_bytes_max: 256, ..log_only() });
        for i in 0..20 {
            commit_wait(&e, &acks, &put(&format!("k{i:02}"), &[5u8; 60])).unwrap();
        }
        assert!(e.stats().segments >= 3);
    }
    let first = segment(&t.0, 0);
    let mut bytes = fs::read(&first).unwrap();
    bytes[3] ^= 0xFF;
    fs::write(&first, &bytes).unwrap();
    let err = open_err(&t.0);
    assert_eq!(err.code, Code::Corrupt);
    assert!(err.message.contains("00000000000000000001.klog") && err.message.contains("byte 0"), "{}", err.message);
    assert!(err.message.contains("restore from a backup"), "{}", err.message);
}

#[test]
fn damage_in_a_sealed_segment_is_corrupt_even_at_its_end() {
    let t = TempDir::new("sealed-tail");
    {
        let (e, acks) = open(&t.0, Options { segment_bytes_max: 256, ..log_only() });
        for i in 0..20 {
            commit_wait(&e, &acks, &put(&format!("k{i:02}"), &[5u8; 60])).unwrap();
        }
    }
    let first = segment(&t.0, 0);
    let len = fs::metadata(&first).unwrap().len();
    fs::OpenOptions::new().write(true).open(&first).unwrap().set_len(len - 1).unwrap();
    let err = open_err(&t.0);
    assert_eq!(err.code, Code::Corrupt);
    assert!(err.message.contains("00000000000000000001.klog"), "{}", err.message);
}

#[test]
fn unknown_record_type_is_corrupt_never_skipped() {
    let t = TempDir::new("unknown-type");
    three_commits(&t.0);
    let seg = segment(&t.0, 0);
    let mut bytes = fs::read(&seg).unwrap();
    let offset = bytes.len();
    kestrel_core::format::log::write_frame(&mut bytes, 4, 5 | kestrel_core::format::log::BATCH_END, b"from the future");
    fs::write(&seg, &bytes).unwrap();
    let err = open_err(&t.0);
    assert_eq!(err.code, Code::Corrupt);
    assert!(err.message.contains("unknown record type 5") && err.message.contains(&format!("byte {offset}")), "{}", err.message);
}

#[test]
fn directory_identity_rules() {
    // A plain file.
    let t = TempDir::new("plain-file");
    fs::write(&t.0, b"hello").unwrap();
    assert_eq!(open_err(&t.0).code, Code::NotADatabase);
    fs::remove_file(&t.0).unwrap();
    // A directory that belongs to something else: refused, and left untouched.
    let t = TempDir::new("foreign");
    fs::create_dir_all(&t.0).unwrap();
    fs::write(t.0.join("notes.txt"), b"mine").unwrap();
    let err = open_err(&t.0);
    assert_eq!(err.code, Code::NotADatabase);
    assert!(!t.0.join("log").exists() && !t.0.join("KESTREL").exists());
    // An empty directory is created into.
    let t = TempDir::new("empty-dir");
    fs::create_dir_all(&t.0).unwrap();
    drop(open(&t.0, Options::default()));
    assert_eq!(fs::read(t.0.join("KESTREL")).unwrap().len(), 16);
    // Identity variants: bad CRC, version 0 (bad) → not a database; newer version → FORMAT_VERSION.
    // Version 1 is read and rewritten as version 2.
    let identity = |version: u32, fix_crc: bool| {
        let mut b = b"KESTREL\x01".to_vec();
        b.extend(le32(version));
        let crc = kestrel_core::format::crc32c(&b);
        b.extend(le32(if fix_crc { crc } else { crc ^ 1 }));
        b
    };
    for (bytes, code) in [
        (identity(1, false), Code::NotADatabase),
        (identity(0, true), Code::NotADatabase),
        (identity(3, true), Code::FormatVersion),
        (b"KESTREL".to_vec(), Code::NotADatabase),
    ] {
        fs::write(t.0.join("KESTREL"), &bytes).unwrap();
        assert_eq!(open_err(&t.0).code, code);
    }
    fs::write(t.0.join("KESTREL"), identity(1, true)).unwrap();
    drop(open(&t.0, Options::default()));
    assert_eq!(fs::read(t.0.join("KESTREL")).unwrap(), identity(2, true));
}

#[test]
fn crash_needs_the_fault_layer() {
    let t = TempDir::new("no-faults");
    let (e, _) = open(&t.0, Options::default());
    let err = e.crash(0).unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.message.contains("faults"), "{}", err.message);
}

#[test]
fn a_batch_failing_right_after_rollover_stays_out_after_reopen() {
    // The failed batch is cut back in the segment it went to, to that segment's length before
    // it: cut to the previous segment's length instead, it would stay whole in the new segment
    // whenever the old one was longer, and a reopen would replay it.
    let t = TempDir::new("fail-after-rollover");
    {
        let faults = FaultOptions { fail_fsync_at: Some(2), ..FaultOptions::default() };
        let (e, acks) = open(&t.0, Options { segment_bytes_max: 64, faults: Some(faults), ..Options::default() });
        commit_wait(&e, &acks, &put("big", &[1u8; 1000])).unwrap();
        assert_eq!(commit_wait(&e, &acks, &put("small", b"s")).unwrap_err().code, Code::Io);
        assert_eq!(e.stats().segments, 2, "the failing batch went to a new segment");
    }
    let (e, acks) = open(&t.0, Options::default());
    assert_eq!(keys(&e, "c"), vec!["big"]);
    assert_eq!(commit_wait(&e, &acks, &put("next", b"n")).unwrap(), 2);
}

#[test]
fn close_writes_and_syncs_everything_queued() {
    // durability none: nothing is fdatasync'd per batch, so only close's drain + sync keeps the
    // commits through the simulated power loss that follows it.
    let t = TempDir::new("close-drain");
    {
        let (e, _) = open(&t.0, Options { durability: kestrel_core::Durability::None, faults: Some(FaultOptions::default()), ..Options::default() });
        for i in 0..200 {
            e.commit(&pair(i)).unwrap();
        }
        e.close().unwrap();
        e.crash(0).unwrap();
        assert_eq!(e.commit(&pair(999)).unwrap_err().code, Code::Closed);
    }
    let (e, _) = open(&t.0, Options::default());
    assert_eq!(e.last_lsn(), 200);
    assert_eq!(keys(&e, "pairs").len(), 400);
}

#[test]
fn unsynced_commits_are_lost_by_a_crash_and_the_tear_is_cut() {
    let t = TempDir::new("unsynced");
    {
        let (e, acks) = open(&t.0, Options { durability: kestrel_core::Durability::None, faults: Some(FaultOptions::default()), ..Options::default() });
        for i in 0..10 {
            commit_wait(&e, &acks, &pair(i)).unwrap();
        }
        // 30 bytes of the unsynced tail survive: a torn first frame, cut by recovery.
        e.crash(30).unwrap();
    }
    let (e, _) = open(&t.0, Options::default());
    assert_eq!(e.last_lsn(), 0, "nothing was fdatasync'd");
}

#[test]
fn the_callback_is_released_when_the_writer_stops() {
    let t = TempDir::new("release");
    let token = Arc::new(());
    let held = token.clone();
    let e = Engine::open(
        &t.0,
        Options::default(),
        Box::new(move |_, _| {
            let _ = &held;
        }),
    )
    .unwrap();
    assert_eq!(Arc::strong_count(&token), 2);
    e.close().unwrap();
    assert_eq!(Arc::strong_count(&token), 1, "close drops the durability callback (a JS function in the binding)");
}

/// A commit of `(key, stored value)` PUTs to collection "people".
fn people(rows: &[(String, Vec<u8>)]) -> Vec<u8> {
    encode(&Commit {
        collections: vec!["people".into()],
        ops: rows.iter().map(|(k, v)| Op { kind: OP_PUT, collection: 0, key: k.as_bytes().to_vec(), value: v.clone() }).collect(),
    })
}

/// Person `i` in generation `g`: MessagePack [i, g], index "city" on `city{(i + g) % 3}`.
fn person(i: u64, g: u64) -> (String, Vec<u8>) {
    let city = format!("city{}", (i + g) % 3);
    (format!("p{i:03}"), kestrel_core::format::envelope::encode(&[0x92, i as u8, g as u8], &[("city", city.as_bytes())]))
}

/// Primary keys found in `city` at `snapshot`, with the values' generation.
fn in_city(e: &Engine, city: &str, snapshot: u64) -> Vec<(String, u8)> {
    let mut hi = city.as_bytes().to_vec();
    *hi.last_mut().unwrap() += 1;
    let b = ScanBounds { gte: Some(city.as_bytes().to_vec()), lt: Some(hi), ..ScanBounds::default() };
    e.find("people", "city", &b, snapshot).unwrap().into_iter().map(|(k, v)| (String::from_utf8(k).unwrap(), v[2])).collect()
}

fn expected_city(n: u64, city: u64, g: u64) -> Vec<(String, u8)> {
    (0..n).filter(|i| (i + g) % 3 == city).map(|i| (format!("p{i:03}"), g as u8)).collect()
}

#[test]
fn indexed_records_are_found_across_checkpoints_scavenges_and_reopen() {
    let t = TempDir::new("index");
    let n = 60;
    {
        // The fault layer, for the crash at the end (the log tail is replayed at reopen).
        let (e, acks) = open(&t.0, Options { faults: Some(FaultOptions::default()), ..Options::default() });
        let g0 = commit_wait(&e, &acks, &people(&(0..n).map(|i| person(i, 0)).collect::<Vec<_>>())).unwrap();
        assert_eq!(in_city(&e, "city1", g0), expected_city(n, 1, 0));
        assert_eq!(e.get("people", b"p001", g0).unwrap().unwrap(), vec![0x92, 1, 0], "reads return the MessagePack part");
        assert_eq!(e.stats().index_entries, n);
        e.checkpoint().unwrap();
        // Generation 1 moves every person one city on; generation 0 stays readable at g0.
        e.set_age_group(1);
        let g1 = commit_wait(&e, &acks, &people(&(0..n).map(|i| person(i, 1)).collect::<Vec<_>>())).unwrap();
        assert_eq!(in_city(&e, "city1", g1), expected_city(n, 1, 1));
        assert_eq!(in_city(&e, "city1", g0), expected_city(n, 1, 0), "the older snapshot finds its own");
        assert_eq!(e.stats().index_entries, 2 * n);
        e.checkpoint().unwrap();
        // The horizon passes g0; one pass prunes generation 0 and retires everything.
        e.set_horizon(g1, false, &[]);
        let (mut pruned, mut removed, mut retired) = (0, 0, 0);
        for _ in 0..100 {
            let step = e.scavenge(i64::MAX, 0, 16).unwrap();
            assert!(step.visited <= 16);
            pruned += step.pruned_versions;
            removed += step.index_entries_removed;
            retired += step.retired;
            if step.done {
                break;
            }
        }
        let s = e.stats();
        assert_eq!((s.versions, s.index_entries, s.record_bytes, s.age_group), (0, 0, 0, 1), "{s:?}");
        assert!(pruned <= n && retired <= n && removed <= 2 * n, "the flusher's retire may have taken some first");
        for c in 0..3 {
            assert_eq!(in_city(&e, &format!("city{c}"), g1), expected_city(n, c, 1), "found through the page-store index tree");
        }
        assert_eq!(e.scavenge(0, 0, 0).unwrap_err().code, Code::InvalidArgument);
        // A malformed envelope is refused at commit.
        let bad = people(&[("p999".into(), vec![0xC1, 1, 0])]);
        assert_eq!(e.commit(&bad).unwrap_err().code, Code::InvalidArgument);
        // Generation 2 for half of them: durable in the log, then a crash before any checkpoint
        // covers it, so the reopen replays it on top of the page store.
        e.suspend_flusher();
        commit_wait(&e, &acks, &people(&(0..n / 2).map(|i| person(i, 2)).collect::<Vec<_>>())).unwrap();
        e.crash(0).unwrap();
    }
    let (e, _) = open(&t.0, Options::default());
    let last = e.last_lsn();
    assert!(e.stats().checkpoint_lsn < last, "generation 2 came back by replay");
    let check = e.check_pages().unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    for c in 0..3u64 {
        let mut want: Vec<(String, u8)> =
            (0..n).filter(|i| (i + if *i < n / 2 { 2 } else { 1 }) % 3 == c).map(|i| (format!("p{i:03}"), if i < n / 2 { 2 } else { 1 })).collect();
        want.sort();
        assert_eq!(in_city(&e, &format!("city{c}"), last), want, "after reopen");
    }
    assert_eq!(e.stats().keys, n);
}
