//! The disk's physical limits for the benchmark, measured the plain way:
//! `fsync-limit records [record_bytes] [duration_ms]` — append one record + fdatasync, in a loop;
//! `fsync-limit chunks [chunk_bytes] [duration_ms]` — append 1 MiB chunks + fdatasync (MB/s);
//! `fsync-limit prezeroed [record_bytes] [duration_ms]` — the records loop over a file zeroed and
//! synced beforehand, so that fdatasync has no file-size change to journal.
//! Prints one JSON line: `{"mode", "recordBytes", "opsPerSec", "mbPerSec", "p50Us", "p99Us"}`.
//! Works in a fresh directory under the OS temp dir (or $KESTREL_BENCH_DIR), removed afterwards.
//! Std only: `File::sync_data` is fdatasync on Linux.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("records");
    if !matches!(mode, "records" | "chunks" | "prezeroed") {
        eprintln!("usage: fsync-limit records|prezeroed|chunks [record_bytes] [duration_ms]");
        std::process::exit(2);
    }
    // One kestreldb commit record of a 256-byte value: 17-byte frame header + ~32 bytes of
    // transaction header and key + the value.
    let default_bytes = if mode == "chunks" { 1 << 20 } else { 256 + 17 + 32 };
    let record_bytes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(default_bytes);
    let duration = Duration::from_millis(args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3000));
    let base = std::env::var("KESTREL_BENCH_DIR").map(Into::into).unwrap_or_else(|_| std::env::temp_dir());
    let dir = base.join(format!("kestrel-fsync-limit-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join("append.bin");
    let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(&path).expect("open");
    if mode == "prezeroed" {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            file.write_all(&zeros).expect("zero");
        }
        file.sync_all().expect("sync");
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0)).expect("seek");
    }
    let record = vec![0x5au8; record_bytes];
    let mut latencies_us: Vec<f64> = Vec::new();
    let start = Instant::now();
    // Bounded by the duration (and a hard cap on iterations).
    while start.elapsed() < duration && latencies_us.len() < 10_000_000 {
        let t = Instant::now();
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
        latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    drop(file);
    let _ = fs::remove_dir_all(&dir);
    if latencies_us.is_empty() {
        eprintln!("no append completed within the duration");
        std::process::exit(1);
    }
    latencies_us.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let at = |q: f64| latencies_us[((latencies_us.len() as f64 * q) as usize).min(latencies_us.len() - 1)];
    let ops = latencies_us.len() as f64 / elapsed_s;
    println!(
        "{{\"mode\":\"{mode}\",\"recordBytes\":{record_bytes},\"opsPerSec\":{ops:.1},\"mbPerSec\":{:.1},\"p50Us\":{:.1},\"p99Us\":{:.1}}}",
        ops * record_bytes as f64 / 1e6,
        at(0.5),
        at(0.99)
    );
}
