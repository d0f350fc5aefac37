//! Pinned snapshots below the horizon: each keeps the one version of each key it reads, also
//! from the middle of a chain, and past `PINNED_MAX` the store keeps more, never less.

use super::*;

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

/// The history of `pruning_keeps_every_index_entry_a_staying_version_holds` with the readers
/// handed over as pinned snapshots below a horizon at the newest commit: versions leave from the
/// middle of the chain, and the index keeps exactly the entries the staying versions hold (an
/// entry a leaving version shares with a staying one stays). Each row starts from the same
/// chain; odd rows prune with the sweep, even rows with scavenge slices.
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
