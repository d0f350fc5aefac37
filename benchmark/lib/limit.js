// The disk's physical limits, measured by benchmark/limits (Rust, std only): a plain append +
// fdatasync loop. It is the reference line for every durable-commit workload.
import { execFileSync } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'

// The size of a kestreldb commit record for one 256-byte value under a 7-byte key: the frame
// (length, CRC32C, LSN, type = 17 B) plus ~32 B of transaction header and key.
export const COMMIT_RECORD_BYTES = 256 + 17 + 32

/** Builds the fsync-limit binary when it is missing or older than its source; { bin } or { error }. */
export function ensureLimitBinary(rootDir) {
  const bin = join(rootDir, 'target', 'release', 'fsync-limit')
  const src = join(rootDir, 'benchmark', 'limits', 'src', 'main.rs')
  if (existsSync(bin) && statSync(bin).mtimeMs >= statSync(src).mtimeMs) return { bin }
  console.log('building the fsync limit: cargo build --release -p kestrel-limits …')
  try {
    execFileSync('cargo', ['build', '--release', '-p', 'kestrel-limits'], { cwd: rootDir, stdio: 'inherit' })
    return { bin }
  } catch (err) {
    return { error: `cargo build -p kestrel-limits failed: ${err.message.split('\n')[0]}` }
  }
}

/** Runs one limit mode ('records' | 'prezeroed' | 'chunks'); the program's JSON or { error }. */
export function runLimit(limitBinary, mode, bytes, durationMs) {
  if (limitBinary.error) return { error: limitBinary.error }
  try {
    return JSON.parse(execFileSync(limitBinary.bin, [mode, String(bytes), String(durationMs)], { encoding: 'utf8', timeout: durationMs + 60_000 }))
  } catch (err) {
    return { error: `fsync-limit ${mode} failed: ${err.message.split('\n')[0]}` }
  }
}
