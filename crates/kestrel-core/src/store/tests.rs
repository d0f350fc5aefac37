//! Tests of the store as a whole: reads at snapshots, pruning with pinned snapshots, the index
//! reference counts, scavenging, and a randomized comparison with a brute-force model.

use std::ops::Bound;

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

/// Primary key → every version ever written, oldest first: (commit id, stored value).
type History = BTreeMap<Vec<u8>, Vec<(u64, Option<Vec<u8>>)>>;

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

// -----------------------------------------------------------------------------------------
// Pinned snapshots below the horizon

/// The commit ids of the chain of `key` in collection `collection` (empty when not in memory).
fn chain_ids(s: &Store, collection: &str, key: &[u8]) -> Vec<u64> {
    s.collections.get(collection).and_then(|m| m.get(key)).map_or(vec![], |c| c.versions().iter().map(|v| v.commit_id).collect())
}

/// Scavenge slices of at most `visit_max` chains until the pass in progress and one whole pass
/// after it are done (retiring nothing); the summed (pruned versions, index entries removed).
fn scavenge_passes(s: &mut Store, visit_max: usize) -> (u64, u64) {
    let (mut pruned, mut removed) = (0, 0);
    for _pass in 0..2 {
        for slice in 0.. {
            let step = s.scavenge(-1, 0, visit_max);
            assert_eq!(step.retired, 0);
            pruned += step.pruned_versions;
            removed += step.index_entries_removed;
            if step.done {
                break;
            }
            assert!(slice < 10_000, "a pass ends");
        }
    }
    (pruned, removed)
}

/// Record `k` of generation `g`: the MessagePack "k/g", indexed by "gen" on the generation.
fn gen_row(k: usize, g: u64) -> Vec<u8> {
    envelope::encode(&mp(&format!("{k}/{g}")), &[("gen", &skey(&format!("{g:03}")))])
}

fn gen_key(k: usize) -> Vec<u8> {
    skey(&format!("k{k}"))
}

/// Every record of generation `g`, as `find` by index "gen" returns them.
fn gen_rows(keys: usize, g: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..keys).map(|k| (gen_key(k), mp(&format!("{k}/{g}")))).collect()
}

/// An old reader stays open while every key is rewritten many times. It keeps the one version
/// of each key it reads — not every version written since — so each chain holds exactly 2
/// versions after a scavenge pass (3 between passes: the newest at the horizon too), and the
/// reader and a new one both read and find their own generation.
#[test]
fn an_old_pinned_snapshot_keeps_one_version_per_key_not_every_rewrite() {
    let p = empty_pages("pinned-rewrites");
    let mut s = Store::default();
    let keys = 8usize;
    let rewrites = 40u64;
    let commit = |g: u64| Commit {
        collections: vec!["c".into()],
        ops: (0..keys).map(|k| Op { kind: OP_PUT, collection: 0, key: gen_key(k), value: gen_row(k, g) }).collect(),
    };
    // Generation g is commit g + 1; the reader opens after generation 0.
    s.apply(1, commit(0), &p).unwrap();
    let reader = 1;
    for g in 1..=rewrites {
        let lsn = g + 1;
        s.apply(lsn, commit(g), &p).unwrap();
        // The coordinator: the horizon follows the last commit (no retention), the old
        // reader is pinned below it.
        s.set_horizon(lsn, false, &[reader]);
        assert_eq!(s.pinned(), &[reader][..]);
        // As keys are written: the reader's version, the newest at the horizon (before this
        // set_horizon) and the newest; the one between leaves from the middle of the chain.
        assert_eq!(s.version_count(), keys * lsn.min(3) as usize, "generation {g}");
        s.check_invariants();
    }
    let last = rewrites + 1;
    assert_eq!(chain_ids(&s, "c", &gen_key(0)), vec![1, last - 1, last]);
    let (pruned, removed) = scavenge_passes(&mut s, 3);
    assert_eq!((pruned, removed), (keys as u64, keys as u64), "each chain's middle version leaves with its entry");
    assert_eq!(s.version_count(), 2 * keys, "exactly the pinned version and the newest per key");
    assert_eq!(s.index_entry_count(), 2 * keys);
    for k in 0..keys {
        assert_eq!(chain_ids(&s, "c", &gen_key(k)), vec![reader, last]);
    }
    let per_key = chain_key_bytes(&gen_key(0))
        + version_bytes(&Version { commit_id: 1, value: Some(gen_row(0, 0).into()) })
        + version_bytes(&Version { commit_id: last, value: Some(gen_row(0, rewrites).into()) })
        + 2 * index_entry_bytes(skey("000").len() + gen_key(0).len() + 2);
    assert_eq!(s.record_bytes(), keys * per_key, "the accounting is exact");
    s.check_invariants();

    for k in 0..keys {
        assert_eq!(read(&s, &p, &gen_key(k), reader), Some(mp(&format!("{k}/0"))));
        assert_eq!(read(&s, &p, &gen_key(k), last), Some(mp(&format!("{k}/{rewrites}"))));
    }
    let gen = |g: u64| prefix(&skey(&format!("{g:03}")));
    let find = |s: &Store, b: &ScanBounds, snapshot| s.find("c", "gen", b, snapshot, &p).unwrap();
    assert_eq!(find(&s, &gen(0), reader), gen_rows(keys, 0), "the reader finds its generation");
    assert_eq!(find(&s, &gen(rewrites), last), gen_rows(keys, rewrites), "a new reader finds the newest");
    assert!(find(&s, &gen(rewrites), reader).is_empty());
    assert!(find(&s, &gen(0), last).is_empty());
    assert!(find(&s, &gen(rewrites - 1), last).is_empty() && find(&s, &gen(rewrites - 1), reader).is_empty());
    assert_eq!(find(&s, &ScanBounds::default(), reader), gen_rows(keys, 0), "the whole index at the reader");
    assert_eq!(find(&s, &ScanBounds::default(), last), gen_rows(keys, rewrites), "the whole index now");

    // The reader ends: the next list replaces this one, and a sweep leaves one version a key.
    s.set_horizon(last, true, &[]);
    assert!(s.pinned().is_empty());
    assert_eq!((s.version_count(), s.index_entry_count()), (keys, keys));
    assert_eq!(find(&s, &ScanBounds::default(), last), gen_rows(keys, rewrites));
    s.check_invariants();
}

/// The history above with the readers handed over as pinned snapshots below a horizon at the
/// newest commit: versions leave from the middle of the chain, and the index keeps exactly the
/// entries the staying versions hold (an entry a leaving version shares with a staying one
/// stays). Each row starts from the same chain; odd rows prune with the sweep, even rows with
/// scavenge slices.
#[test]
fn pinned_snapshots_keep_their_versions_from_the_middle_of_the_chain() {
    // Record 1 of t3: '-', A, B, C, D (commits 1-5), A (6), C (7: B overwritten inside the
    // transaction), '-' (8).
    const VALUES: [&str; 8] = ["-", "A", "B", "C", "D", "A", "C", "-"];
    let rewritten_chain = |label: &str| {
        let p = empty_pages(label);
        let mut s = Store::default();
        for (i, f1) in VALUES.iter().enumerate() {
            s.apply(i as u64 + 1, t3_put(f1), &p).unwrap();
        }
        assert_eq!(t3_overlay(&s), vec![("-".into(), 2), ("A".into(), 2), ("B".into(), 1), ("C".into(), 2), ("D".into(), 1)]);
        (s, p)
    };
    let own = |snapshot: u64| (snapshot >= 1).then(|| VALUES[snapshot as usize - 1]);
    let horizon = 8;
    // (pinned as handed over, pinned as kept, staying commits, index entries removed, overlay)
    type Row = (&'static [u64], &'static [u64], &'static [u64], u64, &'static [(&'static str, u32)]);
    let table: [Row; 9] = [
        (&[5, 6, 7], &[5, 6, 7], &[5, 6, 7, 8], 1, &[("-", 1), ("A", 1), ("C", 1), ("D", 1)]),
        (&[5, 7], &[5, 7], &[5, 7, 8], 2, &[("-", 1), ("C", 1), ("D", 1)]),
        (&[6], &[6], &[6, 8], 3, &[("-", 1), ("A", 1)]),
        (&[7], &[7], &[7, 8], 3, &[("-", 1), ("C", 1)]),
        (&[2, 4], &[2, 4], &[2, 4, 8], 2, &[("-", 1), ("A", 1), ("C", 1)]),
        (&[3], &[3], &[3, 8], 3, &[("-", 1), ("B", 1)]),
        (&[1, 6], &[1, 6], &[1, 6, 8], 3, &[("-", 2), ("A", 1)]),
        (&[], &[], &[8], 4, &[("-", 1)]),
        // Unsorted, duplicated, at or above the horizon (ignored), and 0 (reads nothing).
        (&[7, 5, 8, 5, 9, 0], &[0, 5, 7], &[5, 7, 8], 2, &[("-", 1), ("C", 1), ("D", 1)]),
    ];
    for (row, (pinned, kept, stays, removed, overlay)) in table.into_iter().enumerate() {
        let (mut s, p) = rewritten_chain(&format!("pinned-middle-{row}"));
        if row % 2 == 1 {
            s.set_horizon(horizon, true, pinned);
        } else {
            s.set_horizon(horizon, false, pinned);
            let (pruned, gc) = scavenge_passes(&mut s, 1);
            assert_eq!((pruned as usize, gc), (VALUES.len() - stays.len(), removed), "row {row}: versions pruned, index entries removed");
        }
        assert_eq!(s.pinned(), kept, "row {row}");
        assert_eq!(chain_ids(&s, "t3", &skey("r1")), stays.to_vec(), "row {row}: staying versions");
        let expect: Vec<(String, u32)> = overlay.iter().map(|(k, c)| (k.to_string(), *c)).collect();
        assert_eq!(t3_overlay(&s), expect, "row {row}: the index keeps exactly what the staying versions hold");
        assert_eq!(s.index_entry_count(), 5 - removed as usize, "row {row}");
        s.check_invariants();
        for reader in kept.iter().copied().chain([horizon]) {
            let mine = own(reader);
            assert_eq!(read_t3(&s, &p, reader), mine.map(mp), "row {row}: read at {reader}");
            for f1 in ["-", "A", "B", "C", "D"] {
                let expect = if Some(f1) == mine { vec![(skey("r1"), mp(f1))] } else { vec![] };
                assert_eq!(find_f1(&s, &p, f1, reader), expect, "row {row}: find {f1} at {reader}");
            }
            let all = s.find("t3", "f1", &ScanBounds::default(), reader, &p).unwrap();
            assert_eq!(all, mine.map(|m| (skey("r1"), mp(m))).into_iter().collect::<Vec<_>>(), "row {row}: whole index at {reader}");
        }
    }

    // The readers end one by one, on one store: each list replaces the one before.
    let (mut s, p) = rewritten_chain("pinned-middle-closing");
    for (pinned, stays, overlay) in [
        (&[5u64, 6, 7][..], &[5u64, 6, 7, 8][..], &[("-", 1), ("A", 1), ("C", 1), ("D", 1)][..]),
        (&[5, 7], &[5, 7, 8], &[("-", 1), ("C", 1), ("D", 1)]),
        (&[7], &[7, 8], &[("-", 1), ("C", 1)]),
        (&[], &[8], &[("-", 1)]),
    ] {
        s.set_horizon(horizon, false, pinned);
        scavenge_passes(&mut s, 1);
        assert_eq!(chain_ids(&s, "t3", &skey("r1")), stays.to_vec());
        assert_eq!(t3_overlay(&s), overlay.iter().map(|(k, c)| (k.to_string(), *c)).collect::<Vec<_>>());
        s.check_invariants();
        for reader in pinned.iter().copied().chain([horizon]) {
            assert_eq!(find_f1(&s, &p, own(reader).unwrap(), reader), vec![(skey("r1"), mp(own(reader).unwrap()))]);
        }
    }

    // Pruning as a key is written uses the list too: readers at 5 and 2, horizon 7, then '-'.
    let p = empty_pages("pinned-middle-apply");
    let mut s = Store::default();
    for (i, f1) in VALUES[..7].iter().enumerate() {
        s.apply(i as u64 + 1, t3_put(f1), &p).unwrap();
    }
    s.set_horizon(7, false, &[5, 2]);
    assert_eq!(s.version_count(), 7, "nothing pruned before the key is written");
    s.apply(8, t3_put("-"), &p).unwrap();
    assert_eq!(chain_ids(&s, "t3", &skey("r1")), vec![2, 5, 7, 8]);
    assert_eq!(t3_overlay(&s), vec![("-".into(), 1), ("A".into(), 1), ("C".into(), 1), ("D".into(), 1)]);
    s.check_invariants();
    assert_eq!(find_f1(&s, &p, "A", 2), vec![(skey("r1"), mp("A"))]);
    assert_eq!(find_f1(&s, &p, "D", 5), vec![(skey("r1"), mp("D"))]);
    assert_eq!(find_f1(&s, &p, "C", 7), vec![(skey("r1"), mp("C"))]);
    assert_eq!(find_f1(&s, &p, "-", 8), vec![(skey("r1"), mp("-"))]);
}

/// Past [`PINNED_MAX`] snapshots the store keeps the oldest ones and every version above the
/// newest of them: the snapshots cut off still read their versions (more stays, never less).
#[test]
fn pinned_snapshots_past_the_bound_keep_more_never_less() {
    let p = empty_pages("pinned-bound");
    let mut s = Store::default();
    let n = PINNED_MAX as u64 + 10;
    let value = |c: u64| [&[0xce][..], &(c as u32).to_be_bytes()].concat();
    for c in 1..=n {
        s.apply(c, put(b"k", Some(&value(c))), &p).unwrap();
    }
    // Every snapshot 1..=PINNED_MAX + 5 pinned, newest first, the horizon at the newest commit.
    let pins: Vec<u64> = (1..=PINNED_MAX as u64 + 5).rev().collect();
    s.set_horizon(n, true, &pins);
    assert_eq!(s.pinned().len(), PINNED_MAX);
    assert_eq!((s.pinned()[0], s.pinned()[PINNED_MAX - 1]), (1, PINNED_MAX as u64));
    assert_eq!(s.version_count(), n as usize, "everything above the newest pinned snapshot kept stays");
    for snapshot in pins.iter().copied().take(10).chain([n]) {
        assert_eq!(read(&s, &p, b"k", snapshot), Some(value(snapshot)), "snapshot {snapshot}");
    }
    s.check_invariants();
    // Exactly at the bound, the versions between the newest pinned snapshot and the horizon go.
    s.set_horizon(n, true, &pins[5..]);
    assert_eq!(s.pinned().len(), PINNED_MAX);
    assert_eq!(s.version_count(), PINNED_MAX + 1);
    assert_eq!(chain_ids(&s, "c", b"k")[PINNED_MAX - 1..], [PINNED_MAX as u64, n]);
    s.check_invariants();
}

// -----------------------------------------------------------------------------------------
// Randomized: find against a brute force over a full history model, with open readers
// pinned below the horizon.

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random stored value: plain, or an envelope with index "a" and/or "b" on a few keys.
fn random_value(rng: &mut Rng, tag: u8) -> Vec<u8> {
    let value = vec![0x92, tag, rng.below(100) as u8];
    let a = skey(&format!("a{}", rng.below(4)));
    let b = skey(&format!("b{}", rng.below(3)));
    match rng.below(5) {
        0 => value,
        1 => envelope::encode(&value, &[("a", &a)]),
        2 => envelope::encode(&value, &[("b", &b)]),
        _ => envelope::encode(&value, &[("b", &b), ("a", &a)]),
    }
}

/// (primary key, value) of every record whose version visible at `snapshot` holds an index
/// key of `index` whose entry key lies within `b`, in entry order.
fn brute_find(history: &History, index: &str, b: &ScanBounds, snapshot: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
    for (pk, versions) in history {
        let Some((_, Some(v))) = versions.iter().rev().find(|(c, _)| *c <= snapshot) else { continue };
        for e in envelope::entries(v).filter(|e| e.index == index.as_bytes()) {
            let entry = envelope::entry_key(e.key, pk);
            let Some((lo, hi)) = b.range() else { continue };
            let inside = (match lo {
                Bound::Unbounded => true,
                Bound::Included(l) => entry.as_slice() >= l,
                Bound::Excluded(l) => entry.as_slice() > l,
            }) && (match hi {
                Bound::Unbounded => true,
                Bound::Included(u) => entry.as_slice() <= u,
                Bound::Excluded(u) => entry.as_slice() < u,
            });
            if inside {
                rows.push((entry, pk.clone(), envelope::value(v).to_vec()));
            }
        }
    }
    rows.sort();
    if b.reverse {
        rows.reverse();
    }
    rows.into_iter().take(b.limit()).map(|(_, pk, v)| (pk, v)).collect()
}

fn random_bounds(rng: &mut Rng) -> ScanBounds {
    let mut b = ScanBounds::default();
    let pick = |rng: &mut Rng| {
        let mut k = skey(&format!("{}{}", ["a", "b"][rng.below(2) as usize], rng.below(5)));
        if rng.below(2) == 0 {
            k.extend_from_slice(&skey(&format!("k{}", rng.below(20))));
        }
        k
    };
    match rng.below(3) {
        0 => b.gte = Some(pick(rng)),
        1 => b.gt = Some(pick(rng)),
        _ => {}
    }
    match rng.below(3) {
        0 => b.lte = Some(pick(rng)),
        1 => b.lt = Some(pick(rng)),
        _ => {}
    }
    b.reverse = rng.below(2) == 0;
    b.limit = [0, 1, 3][rng.below(3) as usize];
    b
}

/// The versions of `history` the pruning rule keeps at `horizon` with the snapshots `pinned`
/// (the store's rule, by brute force: no binary search, no cut list): those above the
/// horizon, and for the horizon and each pinned snapshot the newest version at or below it.
fn staying(history: &History, horizon: u64, pinned: &[u64]) -> History {
    history
        .iter()
        .map(|(pk, versions)| {
            let read: Vec<usize> = std::iter::once(horizon).chain(pinned.iter().copied()).filter_map(|x| versions.iter().rposition(|(c, _)| *c <= x)).collect();
            let kept = versions.iter().enumerate().filter(|(i, (c, _))| *c > horizon || read.contains(i)).map(|(_, v)| v.clone()).collect();
            (pk.clone(), kept)
        })
        .collect()
}

/// The MessagePack value of `pk` at `snapshot` in a history model.
fn model_get(history: &History, pk: &[u8], snapshot: u64) -> Option<Vec<u8>> {
    history.get(pk).and_then(|vs| vs.iter().rev().find(|(c, _)| *c <= snapshot)).and_then(|(_, v)| v.as_deref()).map(|v| envelope::value(v).to_vec())
}

/// Every get and a few finds at `snapshot` against the model of the staying versions — and the
/// model against the full history (the rule keeps what the snapshot reads).
// A test helper: the store, both models and the reads to make, each one argument.
#[allow(clippy::too_many_arguments)]
fn check_reads(s: &Store, p: &PageStore, rng: &mut Rng, history: &History, model: &History, snapshot: u64, finds: usize, what: &str) {
    for k in 0..20 {
        let k = skey(&format!("k{k}"));
        let expect = model_get(model, &k, snapshot);
        assert_eq!(expect, model_get(history, &k, snapshot), "{what}: the staying versions answer get at {snapshot}");
        assert_eq!(s.get("c", &k, snapshot, p).unwrap().map(|v| v.into_owned()), expect, "{what}: get {k:?} at {snapshot}");
    }
    for _ in 0..finds {
        let index = ["a", "b"][rng.below(2) as usize];
        let b = random_bounds(rng);
        let expect = brute_find(model, index, &b, snapshot);
        assert_eq!(expect, brute_find(history, index, &b, snapshot), "{what}: the staying versions answer find at {snapshot}");
        assert_eq!(s.find("c", index, &b, snapshot, p).unwrap(), expect, "{what}: find {index} {b:?} at {snapshot}");
    }
}

/// A chain just pruned holds exactly the staying versions of its key, from its first version
/// on (the older ones left memory with a retired chain or a dropped lone tombstone: no
/// snapshot allowed reads them from memory).
fn assert_chain_staying(s: &Store, model: &History, key: &[u8], what: &str) {
    let ids = chain_ids(s, "c", key);
    let Some(first) = ids.first() else { return };
    let expect: Vec<u64> = model[key].iter().map(|(c, _)| *c).filter(|c| c >= first).collect();
    assert_eq!(ids, expect, "{what}: chain {key:?} holds exactly the staying versions");
}

fn run_random(seed: u64) {
    let p = empty_pages(&format!("random-{seed}"));
    let mut rng = Rng(seed);
    let mut s = Store::default();
    let mut history: History = BTreeMap::new();
    // Newest version of every key written since the last checkpoint: the flusher's input.
    let mut dirty: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
    let mut lsn = 0u64;
    // The open readers' snapshots (two may share one), taken at the newest commit.
    let mut readers: Vec<u64> = Vec::new();
    // The pinned list as the store should keep it since the last set_horizon.
    let mut pinned: Vec<u64> = Vec::new();
    for round in 0..1500u64 {
        s.set_age_group(round / 50);
        let what = format!("seed {seed} round {round}");
        // Keys whose chains this step pruned with the current horizon and list.
        let mut pruned_keys: Vec<Vec<u8>> = Vec::new();
        let mut swept = false;
        match rng.below(23) {
            0..=9 => {
                lsn += 1;
                let n = 1 + rng.below(3);
                let mut keys: Vec<Vec<u8>> = (0..n).map(|_| skey(&format!("k{}", rng.below(20)))).collect();
                keys.sort();
                keys.dedup();
                let ops: Vec<Op> = keys
                    .iter()
                    .map(|k| {
                        if rng.below(6) == 0 {
                            Op { kind: OP_DELETE, collection: 0, key: k.clone(), value: vec![] }
                        } else {
                            Op { kind: OP_PUT, collection: 0, key: k.clone(), value: random_value(&mut rng, lsn as u8) }
                        }
                    })
                    .collect();
                let written = s.apply(lsn, Commit { collections: vec!["c".into()], ops }, &p).unwrap();
                for w in written {
                    let value = w.value.as_deref().map(<[u8]>::to_vec);
                    history.entry(w.key.to_vec()).or_default().push((lsn, value.clone()));
                    pruned_keys.push(w.key.to_vec());
                    dirty.insert(w.key.to_vec(), (lsn, value));
                }
            }
            10..=11 => {
                // The horizon trails the last commit by a little (the retention window); every
                // open reader is handed over, in any order, with duplicates, and sometimes
                // with a snapshot at or above the horizon (ignored).
                let h = lsn.saturating_sub(rng.below(6));
                let mut list = readers.clone();
                if !list.is_empty() && rng.below(2) == 0 {
                    list.push(list[rng.below(list.len() as u64) as usize]);
                }
                if rng.below(4) == 0 {
                    list.push(lsn + rng.below(2));
                }
                for i in (1..list.len()).rev() {
                    list.swap(i, rng.below(i as u64 + 1) as usize);
                }
                swept = rng.below(3) == 0;
                s.set_horizon(h, swept, &list);
                pinned = list.into_iter().filter(|r| *r < s.horizon()).collect();
                pinned.sort_unstable();
                pinned.dedup();
                assert_eq!(s.pinned(), &pinned[..], "{what}: the pinned list as kept");
            }
            12..=13 => {
                if !dirty.is_empty() {
                    let changes = vec![CollectionChanges {
                        name: "c".into(),
                        changes: std::mem::take(&mut dirty).into_iter().map(|(k, (c, v))| (k, v.map(|v| (c, v)))).collect(),
                    }];
                    p.checkpoint(lsn, &changes, crate::pages::PageFault::None).unwrap();
                    s.set_checkpointed(lsn);
                }
            }
            14 => {
                s.retire(rng.below(3000) as usize);
            }
            15..=16 => {
                let age_max = rng.below(s.age_group() as u64 + 2) as i64 - 1;
                s.scavenge(age_max, rng.below(4000) as usize, 1 + rng.below(8) as usize);
            }
            17..=18 => {
                // A reader opens at the newest commit (≥ the horizon).
                if readers.len() < 6 {
                    readers.push(lsn);
                }
            }
            19 => {
                // A reader ends (the store learns it with the next list).
                if !readers.is_empty() {
                    readers.swap_remove(rng.below(readers.len() as u64) as usize);
                }
            }
            _ => {
                let snapshot = s.horizon() + rng.below(lsn - s.horizon() + 1);
                let model = staying(&history, s.horizon(), &pinned);
                check_reads(&s, &p, &mut rng, &history, &model, snapshot, 4, &what);
            }
        }
        s.check_invariants();
        let model = staying(&history, s.horizon(), &pinned);
        if swept {
            pruned_keys = s.collections.get("c").map_or(vec![], |m| m.keys().map(|k| k.to_vec()).collect());
        }
        for k in &pruned_keys {
            assert_chain_staying(&s, &model, k, &what);
        }
        // Every open reader reads and finds its versions, after every step.
        let mut open = readers.clone();
        open.sort_unstable();
        open.dedup();
        for r in open {
            check_reads(&s, &p, &mut rng, &history, &model, r, 1, &format!("{what} reader {r}"));
        }
    }
    readers.clear();
    // Everything leaves: delete every key, checkpoint, and let the horizon pass.
    lsn += 1;
    let ops: Vec<Op> = history.keys().map(|k| Op { kind: OP_DELETE, collection: 0, key: k.clone(), value: vec![] }).collect();
    for w in s.apply(lsn, Commit { collections: vec!["c".into()], ops }, &p).unwrap() {
        dirty.insert(w.key.to_vec(), (lsn, w.value.as_deref().map(<[u8]>::to_vec)));
    }
    let changes =
        vec![CollectionChanges { name: "c".into(), changes: std::mem::take(&mut dirty).into_iter().map(|(k, (c, v))| (k, v.map(|v| (c, v)))).collect() }];
    p.checkpoint(lsn, &changes, crate::pages::PageFault::None).unwrap();
    s.set_checkpointed(lsn);
    s.set_horizon(lsn, false, &[]);
    // The pass in progress ends, then a whole pass from the first chain.
    for _pass in 0..2 {
        let mut step = s.scavenge(i64::MAX, 0, 7);
        for _ in 0..10 {
            if step.done {
                break;
            }
            step = s.scavenge(i64::MAX, 0, 7);
        }
        assert!(step.done);
    }
    s.check_invariants();
    assert_eq!((s.version_count(), s.record_bytes(), s.index_entry_count(), s.key_count()), (0, 0, 0, 0), "seed {seed}: accounting back to zero");
    assert!(p.collections().unwrap().is_empty(), "seed {seed}: the index trees empty with their collection");
}

#[test]
fn find_matches_a_brute_force_over_random_histories() {
    for seed in 1..=6 {
        run_random(seed);
    }
}
