//! Threads of one process sharing one engine (`kestrel_core::threads`): handles attach to the
//! engine already open on a directory, every handle hears every batch, a handle reads back what
//! others committed, the oldest handle's horizon holds, and the engine closes with its last handle.
mod common;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::TempDir;
use kestrel_core::format::payload::{encode, Commit, Op, OP_PUT};
use kestrel_core::{EngineHandle, Options, Sharing};

/// The highest durable LSN a handle heard of.
#[derive(Default)]
struct Heard {
    lsn: Mutex<u64>,
    changed: Condvar,
}

impl Heard {
    fn wait_for(&self, lsn: u64) {
        let mut l = self.lsn.lock().unwrap();
        while *l < lsn {
            let (next, timeout) = self.changed.wait_timeout(l, Duration::from_secs(10)).unwrap();
            assert!(!timeout.timed_out(), "no acknowledgement within 10 s");
            l = next;
        }
    }
}

fn sharing(apart: bool) -> Options {
    Options { sharing: Some(Sharing { tail: None, apart, publish: false }), ..Options::default() }
}

fn open(dir: &Path, options: Options) -> (EngineHandle, Arc<Heard>) {
    let heard = Arc::new(Heard::default());
    let h = heard.clone();
    let handle = EngineHandle::open(
        dir,
        options,
        Box::new(move |lsn, err| {
            assert!(err.is_none(), "{err:?}");
            let mut l = h.lsn.lock().unwrap();
            *l = (*l).max(lsn);
            h.changed.notify_all();
        }),
    )
    .expect("open");
    (handle, heard)
}

fn put(key: &str, value: &[u8]) -> Vec<u8> {
    encode(&Commit { collections: vec!["c".into()], ops: vec![Op { kind: OP_PUT, collection: 0, key: key.as_bytes().to_vec(), value: value.to_vec() }] })
}

#[test]
fn handles_share_one_engine_and_it_closes_with_the_last() {
    let t = TempDir::created("threads");
    let (a, heard_a) = open(t.path(), sharing(false));
    let start_b = a.log_tail();
    let (b, heard_b) = open(t.path(), sharing(false));
    assert_eq!((a.handles(), b.handles()), (2, 2));
    // One commit through a: both handles hear the batch, and b reads it in the one engine.
    let lsn = a.commit(&put("k", &[1])).unwrap();
    heard_a.wait_for(lsn);
    heard_b.wait_for(lsn);
    assert_eq!(b.get("c", b"k", lsn).unwrap(), Some(vec![1]));
    // b reads back what it did not write, from where it started up to the log's end.
    let (payloads, end) = b.catch_up_from(&start_b, &a.log_tail(), false).unwrap();
    assert_eq!(payloads, vec![put("k", &[1])]);
    assert_eq!(end, a.log_tail());
    // A position past a published tail that lies behind it is corruption.
    let err = b.catch_up_from(&end, &start_b, false).unwrap_err();
    assert_eq!(err.code.as_str(), "KESTREL_CORRUPT");
    // Closing a leaves the engine to b.
    a.close().unwrap();
    assert_eq!(b.handles(), 1);
    let lsn2 = b.commit(&put("k", &[2])).unwrap();
    heard_b.wait_for(lsn2);
    b.close().unwrap();
    // The last one closed it: a new open has an engine of its own, with both commits.
    let (c, _) = open(t.path(), sharing(false));
    assert_eq!(c.handles(), 1);
    assert_eq!(c.last_lsn(), lsn2);
    assert_eq!(c.get("c", b"k", lsn2).unwrap(), Some(vec![2]));
    c.close().unwrap();
}

#[test]
fn apart_opens_an_engine_of_its_own() {
    let t = TempDir::created("threads-apart");
    let (a, _) = open(t.path(), sharing(false));
    let (b, _) = open(t.path(), Options { sharing: Some(Sharing { tail: Some(a.log_tail()), apart: true, publish: false }), ..Options::default() });
    assert_eq!((a.handles(), b.handles()), (1, 1));
    b.close().unwrap();
    a.close().unwrap();
}

#[test]
fn the_oldest_handle_horizon_holds() {
    let t = TempDir::created("threads-horizon");
    let (a, heard) = open(t.path(), Options { retain_commits: 0, ..sharing(false) });
    let first = a.commit(&put("k", &[1])).unwrap();
    heard.wait_for(first);
    // b attaches at `first`: until it sets a horizon of its own, the engine keeps what it reads.
    let (b, _) = open(t.path(), Options { retain_commits: 0, ..sharing(false) });
    let second = a.commit(&put("k", &[2])).unwrap();
    heard.wait_for(second);
    a.set_horizon(second, true, &[]);
    assert_eq!(a.horizon(), first);
    assert_eq!(b.get("c", b"k", first).unwrap(), Some(vec![1]));
    // b moves on, then leaves: a's horizon alone holds.
    b.set_horizon(second, true, &[]);
    assert_eq!(a.horizon(), second);
    b.close().unwrap();
    a.set_horizon(second, true, &[]);
    assert_eq!(a.horizon(), second);
    a.close().unwrap();
}
