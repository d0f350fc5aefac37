//! Engine-level tests of kestrel-core: commit → durable → visible → reopen, recovery of torn,
//! zeroed and corrupt logs, the fault layer, and a crash-consistency test on the fake disk.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kestrel_core::payload::{encode, Commit, Op, OP_PUT};
use kestrel_core::{Code, Engine, Errno, FaultOptions, Options, ScanBounds};

/// A fresh temp directory path (not created), removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(label: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!("kestrel-core-{}-{}-{label}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

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

fn open(dir: &Path, options: Options) -> (Engine, Arc<Acks>) {
    let acks = Arc::new(Acks::default());
    let a = acks.clone();
    let engine = Engine::open(dir, options, Box::new(move |lsn, err| {
        let mut s = a.state.lock().unwrap();
        if err.is_some() {
            s.1 = err;
        } else {
            s.0 = s.0.max(lsn);
        }
        a.changed.notify_all();
    }))
    .expect("open");
    (engine, acks)
}

fn put(key: &str, value: &[u8]) -> Vec<u8> {
    encode(&Commit { collections: vec!["c".into()], ops: vec![Op { kind: OP_PUT, collection: 0, key: key.as_bytes().to_vec(), value: value.to_vec() }] })
}

fn pair(n: u64) -> Vec<u8> {
    encode(&Commit {
        collections: vec!["pairs".into()],
        ops: vec![
            Op { kind: OP_PUT, collection: 0, key: format!("a{n:08}").into_bytes(), value: n.to_le_bytes().to_vec() },
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
    engine.scan(collection, &ScanBounds::default(), u64::MAX).into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect()
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
        assert_eq!(e.get("c", b"k1", u64::MAX).as_deref(), Some(&b"v1"[..]));
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
    assert!(s.syncs < 400, "8 concurrent writers must share fsyncs, got {} for 400 commits", s.syncs);
}

#[test]
fn torn_and_zeroed_tails_are_cut_midlog_damage_is_corrupt() {
    let t = TempDir::new("tails");
    let write10 = |dir: &Path| {
        let (e, acks) = open(dir, Options::default());
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
        let (e, _) = open(&t.0, Options::default());
        assert_eq!(e.last_lsn(), 9);
    }
    // Zeroed tail.
    let len = fs::metadata(&seg).unwrap().len();
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &bytes).unwrap();
    {
        let (e, _) = open(&t.0, Options::default());
        assert_eq!(e.last_lsn(), 9);
    }
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    // A flipped byte in the 3rd record: every later batch proves it was acknowledged.
    let mut bytes = fs::read(&seg).unwrap();
    let record = (bytes.len() - 32) / 9;
    let offset = 32 + 2 * record;
    bytes[offset + 20] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    let err = Engine::open(&t.0, Options::default(), Box::new(|_, _| {})).err().expect("corrupt");
    assert_eq!(err.code, Code::Corrupt);
    assert!(err.message.contains("00000000000000000001.klog"), "{}", err.message);
    assert!(err.message.contains(&format!("byte {offset}")), "{}", err.message);
}

#[test]
fn missing_segment_is_corrupt() {
    let t = TempDir::new("missing");
    {
        let (e, acks) = open(&t.0, Options { segment_bytes_max: 4096, ..Options::default() });
        for i in 0..200 {
            commit_wait(&e, &acks, &put(&format!("k{i:04}"), &[1u8; 100])).unwrap();
        }
        assert!(e.stats().segments >= 3);
    }
    fs::remove_file(segment(&t.0, 1)).unwrap();
    let err = Engine::open(&t.0, Options::default(), Box::new(|_, _| {})).err().expect("corrupt");
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
            assert_eq!(e.get("c", b"k3", u64::MAX), None, "a failed commit is never visible");
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

/// Small deterministic PRNG (xorshift64*) so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
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
            assert!(e.get("pairs", format!("a{n:08}").as_bytes(), u64::MAX).is_some(), "round {round}: acknowledged commit {n} lost");
        }
    }
}
