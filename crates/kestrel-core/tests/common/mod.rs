//! Scaffolding shared by the integration tests: temporary directories, a deterministic RNG,
//! SHA-256 in hex, and the golden page-file fixture both engines' suites read.

// Each test file compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// A fresh path under the OS temp dir, unique per process and call, removed (with everything
/// under it) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// The path only: the directory does not exist yet (the engine creates its directory).
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!("kestrel-test-{}-{}-{label}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }

    /// The directory, created and empty.
    pub fn created(label: &str) -> TempDir {
        let t = TempDir::new(label);
        fs::create_dir_all(&t.0).unwrap();
        t
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// SplitMix64: small and deterministic, so that a failing seed reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// One checkpoint of a golden scenario: what `pages.kdb` must be after it, in both engines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoldenCheckpoint {
    pub page_count: u32,
    pub records: u64,
    pub free_count: u32,
    pub sha256: String,
}

/// The checkpoints of golden scenario `name` ("plain" or "indexed") as testdata/golden-pages.json
/// pins them; the TypeScript suites read the same file.
pub fn golden_pages(name: &str) -> Vec<GoldenCheckpoint> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/golden-pages.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let list = json[name].as_array().unwrap_or_else(|| panic!("{}: no scenario {name:?}", path.display()));
    let field = |c: &serde_json::Value, f: &str| c[f].as_u64().unwrap_or_else(|| panic!("{}: {name}: {f} is not a count", path.display()));
    list.iter()
        .map(|c| GoldenCheckpoint {
            page_count: u32::try_from(field(c, "pageCount")).unwrap(),
            records: field(c, "records"),
            free_count: u32::try_from(field(c, "freeCount")).unwrap(),
            sha256: c["sha256"].as_str().unwrap_or_else(|| panic!("{}: {name}: sha256 is not a string", path.display())).to_string(),
        })
        .collect()
}
