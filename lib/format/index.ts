/**
 * The engine-neutral byte format (docs/FORMAT.md): what both engines write and the tools read.
 * Nothing here knows an engine: the pure-TypeScript engine and the tools (backup, verify,
 * manifest, the CLI) import it, and the Rust twin (`crates/kestrel-core/src/format/`) writes the
 * same bytes.
 */
export * from './crc32c.js'
export * from './log.js'
export * from './payload.js'
export * from './envelope.js'
export * from './stored.js'
export * from './page_layout.js'
export * from './page_check.js'
export * from './shared.js'
