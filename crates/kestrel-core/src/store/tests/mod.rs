//! Tests of the store as a whole (they go through `Store`'s API, so they live beside it rather
//! than beside one part): reads at snapshots, pruning, the index reference counts, scavenging and
//! the page store behind memory here; pinned snapshots in `pinned.rs`; a randomized comparison
//! with a brute-force model in `random.rs`.

mod pinned;
mod random;

use super::chain::Versions;
use super::overlay::index_entry_bytes;
use super::*;
use crate::format::payload::Op;
use crate::pages::{Change, CollectionChanges};

impl Store {
    /// Recount everything the invariants promise from the chains themselves.
    fn check_invariants(&self) {
        let mut overlay = Overlay::default();
        let mut versions = 0usize;
        let mut bytes = 0usize;
        for (name, map) in &self.collections {
            for (key, chain) in map {
                assert!(!chain.versions().is_empty(), "{name}/{key:?}: empty chain");
                assert!(chain.versions().windows(2).all(|w| w[0].commit_id < w[1].commit_id));
                assert!(!matches!(&chain.versions, Versions::Many(vs) if vs.len() < 2), "{name}/{key:?}: a lone version is held in place");
                bytes += chain_key_bytes(key);
                for v in chain.versions() {
                    versions += 1;
                    bytes += version_bytes(v) + overlay.enter(name, key, v.value.as_deref());
                }
            }
        }
        assert_eq!(overlay.trees, self.overlay.trees, "the index reference counts equal the versions holding each pair");
        assert_eq!(overlay.entries, self.overlay.entries);
        assert_eq!(versions, self.versions);
        assert_eq!(bytes, self.record_bytes);
    }
}

fn put(key: &[u8], value: Option<&[u8]>) -> Commit {
    let op = match value {
        Some(v) => Op { kind: OP_PUT, collection: 0, key: key.to_vec(), value: v.to_vec() },
        None => Op { kind: OP_DELETE, collection: 0, key: key.to_vec(), value: vec![] },
    };
    Commit { collections: vec!["c".into()], ops: vec![op] }
}

/// An empty page store in a fresh temporary directory.
fn empty_pages(label: &str) -> PageStore {
    let dir = std::env::temp_dir().join(format!("kestrel-store-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    PageStore::open(&dir, 1 << 20).unwrap()
}

fn read(s: &Store, p: &PageStore, key: &[u8], snapshot: u64) -> Option<Vec<u8>> {
    s.get("c", key, snapshot, p).unwrap().map(|v| v.into_owned())
}

#[test]
fn reads_at_snapshots_and_prunes_below_the_horizon() {
    let p = empty_pages("prune");
    let mut s = Store::default();
    s.apply(1, put(b"k", Some(b"a")), &p).unwrap();
    s.apply(2, put(b"k", Some(b"b")), &p).unwrap();
    s.apply(3, put(b"k", None), &p).unwrap();
    assert_eq!(read(&s, &p, b"k", 1).as_deref(), Some(&b"a"[..]));
    assert_eq!(read(&s, &p, b"k", 2).as_deref(), Some(&b"b"[..]));
    assert_eq!(read(&s, &p, b"k", 3), None);
    assert_eq!(read(&s, &p, b"k", 0), None);
    assert_eq!(s.version_count(), 3);
    s.set_horizon(2, true, &[]);
    assert_eq!(read(&s, &p, b"k", 2).as_deref(), Some(&b"b"[..]), "the horizon snapshot still reads");
    assert_eq!(s.version_count(), 2);
    s.set_horizon(3, true, &[]);
    assert_eq!(s.version_count(), 1, "a lone tombstone stays until a checkpoint covers it");
    s.set_checkpointed(3);
    s.set_horizon(3, true, &[]);
    assert_eq!(s.version_count(), 0, "a lone tombstone at the horizon and the checkpoint is dropped");
    assert_eq!(s.key_count(), 0);
    assert_eq!(s.record_bytes(), 0, "record memory accounting returns to zero");
}

#[test]
fn a_live_count_below_the_page_store_is_corruption_not_a_wrap() {
    let p = empty_pages("live-count");
    p.checkpoint(1, &[CollectionChanges { name: "c".into(), changes: vec![(b"k".to_vec(), Some((1, b"v".to_vec())))] }], crate::pages::PageFault::None)
        .unwrap();
    // A store told the checkpoint holds no records, though it holds one.
    let mut s = Store::new(1, 0, true);
    let err = s.apply(2, put(b"k", None), &p).expect_err("deleting the loaded record cannot count below zero");
    assert_eq!(err.code, Code::Corrupt);
    assert!(err.message.contains("meta page"), "{}", err.message);
    // With the right count the same delete is fine.
    let mut s = Store::new(1, 1, true);
    s.apply(2, put(b"k", None), &p).unwrap();
    assert_eq!(s.key_count(), 0);
}

#[test]
fn merges_apply_in_commit_order() {
    let p = empty_pages("merge");
    let mut s = Store::default();
    for (i, item) in [1u8, 2, 3].iter().enumerate() {
        let op = Op { kind: OP_APPEND, collection: 0, key: b"list".to_vec(), value: vec![0x91, *item] };
        s.apply(i as u64 + 1, Commit { collections: vec!["c".into()], ops: vec![op] }, &p).unwrap();
    }
    assert_eq!(read(&s, &p, b"list", 3).as_deref(), Some(&[0x93, 1, 2, 3][..]));
    assert_eq!(read(&s, &p, b"list", 1).as_deref(), Some(&[0x91, 1][..]));
}

#[test]
fn retire_keeps_only_what_the_checkpoint_does_not_hold() {
    let p = empty_pages("retire");
    let mut s = Store::default();
    s.apply(1, put(b"a", Some(b"1")), &p).unwrap();
    s.apply(2, put(b"b", Some(b"2")), &p).unwrap();
    s.set_horizon(2, true, &[]);
    assert_eq!(s.retire(0), 0, "nothing is checkpointed yet, so nothing may leave memory");
    s.set_checkpointed(1);
    assert_eq!(s.retire(0), 1, "only the chain at or below the checkpoint retires");
    assert_eq!(s.version_count(), 1);
}

// -----------------------------------------------------------------------------------------
// Indexes

/// The order-preserving encoding of a string key (tag 0x30, bytes, 00 00): no 0x00 inside.
fn skey(s: &str) -> Vec<u8> {
    let mut k = vec![0x30];
    k.extend_from_slice(s.as_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// MessagePack fixstr.
fn mp(s: &str) -> Vec<u8> {
    let mut v = vec![0xa0 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// A record of table t3 whose column f1 is `f1`, indexed by index "f1".
fn t3_row(f1: &str) -> Vec<u8> {
    envelope::encode(&mp(f1), &[("f1", &skey(f1))])
}

fn t3_put(f1: &str) -> Commit {
    Commit { collections: vec!["t3".into()], ops: vec![Op { kind: OP_PUT, collection: 0, key: skey("r1"), value: t3_row(f1) }] }
}

/// Bounds selecting the entries of index key `ik` (every primary key).
fn prefix(ik: &[u8]) -> ScanBounds {
    let mut hi = ik.to_vec();
    *hi.last_mut().unwrap() += 1;
    ScanBounds { gte: Some(ik.to_vec()), lt: Some(hi), ..ScanBounds::default() }
}

fn find_f1(s: &Store, p: &PageStore, f1: &str, snapshot: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.find("t3", "f1", &prefix(&skey(f1)), snapshot, p).unwrap()
}

/// The overlay's entries of t3.f1 as (index value, refcount).
fn t3_overlay(s: &Store) -> Vec<(String, u32)> {
    let Some(tree) = s.overlay.trees.get(&envelope::tree_name("t3", b"f1")) else { return vec![] };
    tree.iter()
        .map(|(k, c)| {
            let (ik, pk) = envelope::split_entry(k).unwrap();
            assert_eq!(pk, skey("r1"));
            (String::from_utf8(ik[1..ik.len() - 2].to_vec()).unwrap(), *c)
        })
        .collect()
}

/// An index entry that a leaving version shares with a staying one stays. Record r1 goes '-',
/// A, B, C, D; reader 1 (snapshot 5) sees D; A; reader 2 (snapshot 6) sees A; one transaction
/// writes B then C (only C is logged); reader 3 (snapshot 7) sees C; '-'. The horizon moves to
/// reader 1's snapshot and the scavenger prunes '-'(1), A(2), B(3), C(4). A, C and '-' are also
/// held by staying versions: their entries must stay, or readers 2 and 3 and every new reader
/// lose the record.
#[test]
fn pruning_keeps_every_index_entry_a_staying_version_holds() {
    let p = empty_pages("shared-entries");
    let mut s = Store::default();
    for (cid, f1) in [(1, "-"), (2, "A"), (3, "B"), (4, "C"), (5, "D")] {
        s.apply(cid, t3_put(f1), &p).unwrap();
    }
    let reader1 = 5;
    assert_eq!(find_f1(&s, &p, "D", reader1), vec![(skey("r1"), mp("D"))]);
    s.apply(6, t3_put("A"), &p).unwrap();
    let reader2 = 6;
    assert_eq!(find_f1(&s, &p, "A", reader2), vec![(skey("r1"), mp("A"))]);
    // B was overwritten inside the transaction: the commit carries only C.
    s.apply(7, t3_put("C"), &p).unwrap();
    let reader3 = 7;
    assert_eq!(find_f1(&s, &p, "C", reader3), vec![(skey("r1"), mp("C"))]);
    s.apply(8, t3_put("-"), &p).unwrap();
    assert_eq!(t3_overlay(&s), vec![("-".into(), 2), ("A".into(), 2), ("B".into(), 1), ("C".into(), 2), ("D".into(), 1)]);
    s.check_invariants();

    // Readers 2 and 3 and reader 1 stay; the oldest is reader 1.
    s.set_horizon(reader1, false, &[]);
    let mut step = s.scavenge(-1, 0, 1);
    // Bounded: one chain, so the first slice finishes the pass.
    for _ in 0..4 {
        if step.done {
            break;
        }
        step = s.scavenge(-1, 0, 1);
    }
    assert!(step.done);
    assert_eq!(
        (step.visited, step.pruned_versions, step.index_entries_removed, step.retired),
        (1, 4, 1, 0),
        "'-'(1), A(2), B(3), C(4) leave; only B's entry goes"
    );
    assert_eq!(t3_overlay(&s), vec![("-".into(), 1), ("A".into(), 1), ("C".into(), 1), ("D".into(), 1)], "exactly '-', A, C, D stay");
    s.check_invariants();

    assert_eq!(find_f1(&s, &p, "D", reader1), vec![(skey("r1"), mp("D"))], "reader 1 still finds its D");
    assert_eq!(find_f1(&s, &p, "A", reader2), vec![(skey("r1"), mp("A"))], "reader 2 still finds its A");
    assert_eq!(find_f1(&s, &p, "C", reader3), vec![(skey("r1"), mp("C"))], "reader 3 still finds its C");
    let new_reader = 8;
    assert_eq!(find_f1(&s, &p, "-", new_reader), vec![(skey("r1"), mp("-"))], "a new reader finds the record by '-'");
    for other in ["A", "B", "C", "D"] {
        assert!(find_f1(&s, &p, other, new_reader).is_empty(), "a new reader does not find it by {other}");
    }
    for (reader, own) in [(reader1, "D"), (reader2, "A"), (reader3, "C")] {
        for other in ["-", "A", "B", "C", "D"].into_iter().filter(|o| *o != own) {
            assert!(find_f1(&s, &p, other, reader).is_empty(), "reader at {reader} does not find it by {other}");
        }
    }
    // The whole index, in order, at each snapshot: exactly one row.
    for (reader, own) in [(reader1, "D"), (reader2, "A"), (reader3, "C"), (new_reader, "-")] {
        assert_eq!(s.find("t3", "f1", &ScanBounds::default(), reader, &p).unwrap(), vec![(skey("r1"), mp(own))]);
    }

    // Readers finish; a checkpoint at 8 and a full pass retire the chain: its entries leave
    // memory and the page-store index tree answers.
    let changes = vec![CollectionChanges { name: "t3".into(), changes: vec![(skey("r1"), Some((8, t3_row("-"))))] }];
    p.checkpoint(8, &changes, crate::pages::PageFault::None).unwrap();
    s.set_checkpointed(8);
    s.set_horizon(8, false, &[]);
    let step = s.scavenge(i64::MAX, 0, 100);
    assert_eq!((step.visited, step.pruned_versions, step.retired, step.done), (1, 3, 1, true));
    assert_eq!(s.index_entry_count(), 0);
    assert_eq!((s.version_count(), s.record_bytes()), (0, 0));
    assert_eq!(find_f1(&s, &p, "-", 8), vec![(skey("r1"), mp("-"))], "found through the page-store index tree");
    assert!(find_f1(&s, &p, "D", 8).is_empty());
    assert_eq!(read_t3(&s, &p, 8), Some(mp("-")), "get strips the envelope of a page-store value too");
    s.check_invariants();
}

fn read_t3(s: &Store, p: &PageStore, snapshot: u64) -> Option<Vec<u8>> {
    s.get("t3", &skey("r1"), snapshot, p).unwrap().map(|v| v.into_owned())
}

#[test]
fn reads_strip_envelopes_and_merges_store_plain_values() {
    let p = empty_pages("strip");
    let mut s = Store::default();
    let c = |kind, value: Vec<u8>| Commit { collections: vec!["t".into()], ops: vec![Op { kind, collection: 0, key: b"k".to_vec(), value }] };
    s.apply(1, c(OP_PUT, envelope::encode(&[0x91, 1], &[("i", &[1])])), &p).unwrap();
    assert_eq!(s.get("t", b"k", 1, &p).unwrap().as_deref(), Some(&[0x91, 1][..]));
    assert_eq!(s.scan("t", &ScanBounds::default(), 1, &p).unwrap(), vec![(b"k".to_vec(), vec![0x91, 1])]);
    let w = s.apply(2, c(OP_APPEND, vec![0x91, 2]), &p).unwrap();
    assert_eq!(w[0].value.as_deref(), Some(&[0x92, 1, 2][..]), "the merged value is plain");
    assert_eq!(s.index_entry_count(), 1, "the envelope version still holds its entry");
    assert!(s.find("t", "i", &ScanBounds::default(), 2, &p).unwrap().is_empty(), "the plain version holds no index key");
    assert_eq!(s.find("t", "i", &ScanBounds::default(), 1, &p).unwrap(), vec![(b"k".to_vec(), vec![0x91, 1])]);
    s.set_horizon(2, true, &[]);
    assert_eq!(s.index_entry_count(), 0);
    assert_eq!(s.find("t\0x", "i", &ScanBounds::default(), 2, &p).unwrap_err().code, Code::InvalidArgument);
    assert_eq!(s.find("t", "", &ScanBounds::default(), 2, &p).unwrap_err().code, Code::InvalidArgument);
    s.check_invariants();
}

#[test]
fn age_groups_steer_what_the_scavenger_retires() {
    let p = empty_pages("ages");
    let mut s = Store::default();
    let changes: Vec<Change> = (0..6u8).map(|i| (vec![i], Some((i as u64 + 1, vec![0xa1, b'a' + i])))).collect();
    for (i, (k, v)) in changes.iter().enumerate() {
        s.set_age_group(i as u64 / 2); // keys 0,1 in group 0; 2,3 in 1; 4,5 in 2
        s.apply(
            i as u64 + 1,
            Commit { collections: vec!["c".into()], ops: vec![Op { kind: OP_PUT, collection: 0, key: k.clone(), value: v.as_ref().unwrap().1.clone() }] },
            &p,
        )
        .unwrap();
    }
    s.set_age_group(1); // never goes back
    assert_eq!(s.age_group(), 2);
    p.checkpoint(6, &[CollectionChanges { name: "c".into(), changes: changes.clone() }], crate::pages::PageFault::None).unwrap();
    s.set_checkpointed(6);
    s.set_horizon(6, false, &[]);
    // Reading key 0 moves it to group 3.
    s.set_age_group(3);
    assert!(read(&s, &p, &[0], 6).is_some());
    let per = (2 + VERSION_OVERHEAD_BYTES + 1 + KEY_OVERHEAD_BYTES) as u64;
    // A survey pass (retire nothing), two chains a slice.
    let mut survey: BTreeMap<u32, u64> = BTreeMap::new();
    let mut slices = 0;
    loop {
        let step = s.scavenge(-1, 0, 2);
        slices += 1;
        assert_eq!(step.retired, 0);
        for (age, bytes) in step.survey {
            *survey.entry(age).or_default() += bytes;
        }
        if step.done {
            break;
        }
        assert!(slices < 10);
    }
    assert_eq!(slices, 3);
    assert_eq!(survey, BTreeMap::from([(0, per), (1, 2 * per), (2, 2 * per), (3, per)]));
    // Retire groups ≤ 1: keys 1, 2, 3 (key 0 was read in group 3).
    let step = s.scavenge(1, 0, 100);
    assert_eq!((step.visited, step.retired, step.done), (6, 3, true));
    assert_eq!(step.survey, vec![(2, 2 * per), (3, per)]);
    assert_eq!(s.retired_count(), 3);
    // Stop once at the target: nothing retires when memory is already at most target.
    let step = s.scavenge(i64::MAX, s.record_bytes(), 100);
    assert_eq!(step.retired, 0);
    let step = s.scavenge(i64::MAX, 0, 100);
    assert_eq!(step.retired, 3);
    assert_eq!((s.version_count(), s.record_bytes()), (0, 0));
    for i in 0..6u8 {
        assert_eq!(read(&s, &p, &[i], 6), Some(vec![0xa1, b'a' + i]), "retired chains read from the page store");
    }
    s.check_invariants();
}

/// Reads leave the page store out only while no key of the collection can be there without a
/// chain in memory: from an empty page store on, until a chain is retired; never after a
/// reopen of a page store with records. A dropped lone tombstone keeps the shortcut (its key
/// left the page store with the checkpoint that covers it).
#[test]
fn reads_skip_the_page_store_only_while_every_key_there_has_a_chain() {
    let p = empty_pages("disk-only");
    let mut s = Store::default();
    let row = |f1: &str| envelope::encode(&mp(f1), &[("f1", &skey(f1))]);
    let commit = |ops: Vec<Op>| Commit { collections: vec!["t".into()], ops };
    let put = |k: &str, f1: &str| Op { kind: OP_PUT, collection: 0, key: skey(k), value: row(f1) };
    let del = |k: &str| Op { kind: OP_DELETE, collection: 0, key: skey(k), value: vec![] };
    let written = s.apply(1, commit(vec![put("a", "x"), put("b", "y"), put("c", "z")]), &p).unwrap();
    let changes: Vec<Change> = written.into_iter().map(|w| (w.key.to_vec(), w.value.map(|v| (w.commit_id, v.to_vec())))).collect();
    p.checkpoint(1, &[CollectionChanges { name: "t".into(), changes }], crate::pages::PageFault::None).unwrap();
    s.set_checkpointed(1);
    s.set_horizon(1, true, &[]);
    assert!(!s.disk_only.may_have("t"), "every checkpointed key has its chain");
    // Reads at each stage: get, find by every index key, a whole scan.
    let check = |s: &Store, live: &[(&str, &str)], what: &str| {
        for (k, f1) in [("a", "x"), ("b", "y"), ("c", "z")] {
            let expect = live.iter().any(|(lk, _)| *lk == k).then(|| mp(f1));
            assert_eq!(s.get("t", &skey(k), 9, &p).unwrap().map(|v| v.into_owned()), expect, "{what}: get {k}");
            let found = s.find("t", "f1", &prefix(&skey(f1)), 9, &p).unwrap();
            assert_eq!(found, expect.clone().map(|v| (skey(k), v)).into_iter().collect::<Vec<_>>(), "{what}: find {f1}");
        }
        let all: Vec<(Vec<u8>, Vec<u8>)> = live.iter().map(|(k, f1)| (skey(k), mp(f1))).collect();
        assert_eq!(s.scan("t", &ScanBounds::default(), 9, &p).unwrap(), all, "{what}: scan");
        let one = ScanBounds { gte: Some(skey("b")), limit: 1, ..ScanBounds::default() };
        assert_eq!(s.scan("t", &one, 9, &p).unwrap(), all.iter().filter(|(k, _)| *k >= skey("b")).take(1).cloned().collect::<Vec<_>>(), "{what}: scan from b");
    };
    check(&s, &[("a", "x"), ("b", "y"), ("c", "z")], "in memory");

    // A deleted key: its lone tombstone is dropped once checkpointed; the shortcut stays.
    s.apply(2, commit(vec![del("c")]), &p).unwrap();
    p.checkpoint(2, &[CollectionChanges { name: "t".into(), changes: vec![(skey("c"), None)] }], crate::pages::PageFault::None).unwrap();
    s.set_checkpointed(2);
    s.set_horizon(2, true, &[]);
    assert_eq!(s.version_count(), 2, "the tombstone of c is dropped");
    assert!(!s.disk_only.may_have("t"));
    check(&s, &[("a", "x"), ("b", "y")], "after a dropped tombstone");

    // One chain retired: its key is only in the page store now, and reads find it there.
    assert_eq!(s.retire(s.record_bytes() - 1), 1);
    assert!(s.disk_only.may_have("t") && !s.disk_only.may_have("u"), "only the collection retired from");
    check(&s, &[("a", "x"), ("b", "y")], "after retire");
    s.check_invariants();

    // A scavenge retirement marks the collection too.
    let mut s2 = Store::default();
    s2.apply(1, commit(vec![put("a", "x"), put("b", "y"), put("c", "z")]), &p).unwrap();
    s2.apply(2, commit(vec![del("c")]), &p).unwrap();
    s2.set_checkpointed(2);
    s2.set_horizon(2, true, &[]);
    assert!(!s2.disk_only.may_have("t"));
    let step = s2.scavenge(i64::MAX, 0, 100);
    assert_eq!((step.retired, step.done), (2, true));
    assert!(s2.disk_only.may_have("t"));
    check(&s2, &[("a", "x"), ("b", "y")], "after a scavenge");

    // Reopen: the page store has records, so every collection may have keys only there.
    let s3 = Store::new(2, 2, true);
    assert!(s3.disk_only.may_have("t") && s3.disk_only.may_have("u"));
    check(&s3, &[("a", "x"), ("b", "y")], "after reopen");
    assert!(!Store::new(2, 0, false).disk_only.may_have("t"), "an empty page store has no keys");
    assert!(Store::new(2, 0, true).disk_only.may_have("t"), "a catalog that lists trees may have keys, whatever the count says");
}

/// The commit ids of the chain of `key` in collection `collection` (empty when not in memory).
fn chain_ids(s: &Store, collection: &str, key: &[u8]) -> Vec<u64> {
    s.collections.get(collection).and_then(|m| m.get(key)).map_or(vec![], |c| c.versions().iter().map(|v| v.commit_id).collect())
}
