/**
 * kestreldb: an embedded, durable, transactional storage engine for Node.js.
 * @packageDocumentation
 */
export { open, Database, type TransactionOptions, type DatabaseStats } from './database.js'
export { Transaction, type CommitInfo, type Entry, type Resolver, type Savepoint } from './transaction.js'
export { ReadView } from './snapshot.js'
export { orderedMapResolver } from './txn/resolvers.js'
export { Collection, type CollectionOptions, type IndexDefinition } from './collection.js'
export type { FindQuery, FindRange } from './txn/indexes.js'
export type { ScavengerStats } from './scavenger/policy.js'
export { KestrelError, ConflictError, UniqueError, type KestrelErrorCode } from './errors.js'
export type { OpenOptions, EngineChoice, Retention } from './options.js'
export type { ScanOptions } from './scan.js'
export type { Key, KeyPart } from './codec/key.js'
export type { Durability, EngineName } from './core/types.js'
export { nativeAvailable } from './core/native.js'
export { restore, BACKUP_BYTES_PER_SEC, type BackupOptions, type BackupResult, type BackupProgress } from './backup.js'
export { verifyDirectory, type VerifyReport } from './verify.js'
export {
  exportDatabase,
  importDatabase,
  EXPORT_FORMAT,
  type ExportHeader,
  type ExportIndex,
  type ExportOptions,
  type ExportProgress,
  type ExportResult,
  type ImportOptions,
  type ImportProgress,
  type ImportResult,
} from './export.js'
