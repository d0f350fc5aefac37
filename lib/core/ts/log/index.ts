/** The ts engine's log (twin of `log/mod.rs`): the writer, its publisher (sharing), segment reading, recovery. */
export { createSegment, PREALLOC_BYTES, RELAXED_SYNC_INTERVAL_MS, Writer } from './writer.js'
export { Publisher } from './publish.js'
export { listSegments, readPastTail, readSegment, readToTail, type FollowedFrame, type PastTail, type SegmentFile } from './reader.js'
export { recover, recoverToTail, type Recovered, type RecoveredCommit } from './recovery.js'
