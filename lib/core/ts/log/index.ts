/** The ts engine's log (twin of `log/mod.rs`): the writer, segment reading, recovery. */
export { createSegment, PREALLOC_BYTES, RELAXED_SYNC_INTERVAL_MS, Writer } from './writer.js'
export { listSegments, readSegment, type SegmentFile } from './reader.js'
export { adoptPastTail, readToTail, recover, type Adopted, type PublishedRecord, type Recovered, type RecoveredCommit } from './recovery.js'
