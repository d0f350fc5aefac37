//! Randomized: `find` and `get` against a brute force over a full history model, with open
//! readers pinned below the horizon, checkpoints, retirement and scavenging in between.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::*;

/// Primary key → every version ever written, oldest first: (commit id, stored value).
type History = BTreeMap<Vec<u8>, Vec<(u64, Option<Vec<u8>>)>>;

/// SplitMix64, as in the integration tests (tests/common), so that a failing seed reproduces.
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
