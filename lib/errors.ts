/**
 * Every error kestreldb raises is a {@link KestrelError} with a stable `code`. Match on `code`,
 * never on the message: messages say what to do and may be reworded.
 */

/** The stable error codes. */
export type KestrelErrorCode =
  | 'KESTREL_NATIVE_UNAVAILABLE'
  | 'KESTREL_CORRUPT'
  | 'KESTREL_IO'
  | 'KESTREL_DISK_FULL'
  | 'KESTREL_CLOSED'
  | 'KESTREL_NOT_A_DATABASE'
  | 'KESTREL_FORMAT_VERSION'
  | 'KESTREL_LOCKED'
  | 'KESTREL_INVALID_ARGUMENT'
  | 'KESTREL_INVALID_KEY'
  | 'KESTREL_KEY_TOO_LARGE'
  | 'KESTREL_INVALID_VALUE'
  | 'KESTREL_VALUE_TOO_LARGE'
  | 'KESTREL_TRANSACTION_DONE'
  | 'KESTREL_CONFLICT'
  | 'KESTREL_HISTORY_GONE'
  | 'KESTREL_UNIQUE'
  | 'KESTREL_BEHIND'
  | 'KESTREL_UNAVAILABLE'

const CODES: ReadonlySet<string> = new Set<KestrelErrorCode>([
  'KESTREL_NATIVE_UNAVAILABLE',
  'KESTREL_CORRUPT',
  'KESTREL_IO',
  'KESTREL_DISK_FULL',
  'KESTREL_CLOSED',
  'KESTREL_NOT_A_DATABASE',
  'KESTREL_FORMAT_VERSION',
  'KESTREL_LOCKED',
  'KESTREL_INVALID_ARGUMENT',
  'KESTREL_INVALID_KEY',
  'KESTREL_KEY_TOO_LARGE',
  'KESTREL_INVALID_VALUE',
  'KESTREL_VALUE_TOO_LARGE',
  'KESTREL_TRANSACTION_DONE',
  'KESTREL_CONFLICT',
  'KESTREL_HISTORY_GONE',
  'KESTREL_UNIQUE',
  'KESTREL_BEHIND',
  'KESTREL_UNAVAILABLE',
])

/** Is `code` one of the stable kestreldb error codes? */
export function isKestrelErrorCode(code: unknown): code is KestrelErrorCode {
  return typeof code === 'string' && CODES.has(code)
}

/** An error raised by kestreldb. `code` is stable; the message says what to do about it. */
export class KestrelError extends Error {
  /** Stable machine-readable code, e.g. `'KESTREL_CORRUPT'`. */
  readonly code: KestrelErrorCode

  constructor(code: KestrelErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'KestrelError'
    this.code = code
  }
}

/**
 * A write-write conflict: another transaction committed (or is committing) a write to the same
 * key after this transaction's snapshot (first committer wins). `db.transaction` retries these.
 */
export class ConflictError extends KestrelError {
  /**
   * @internal Settles when the in-flight commit this transaction collided with is decided:
   * retrying earlier would collide again.
   */
  retryAfter?: Promise<void>
  /** @internal The contended (collection, key) slot. */
  slot?: string

  constructor(
    /** The collection of the contended key. */
    readonly collection: string,
    /** The contended key (decoded). */
    readonly key: unknown,
    message?: string,
  ) {
    super(
      'KESTREL_CONFLICT',
      message ??
        `write conflict on ${collection} ${safeKey(key)}: another transaction committed a write to it after this transaction's snapshot; retry the transaction (db.transaction retries for you)`,
    )
    this.name = 'ConflictError'
  }
}

/**
 * A unique index would hold one index key for two records: the commit fails (it is not retried:
 * retrying cannot help while the other record keeps the key).
 */
export class UniqueError extends KestrelError {
  constructor(
    /** The collection of the record being written. */
    readonly collection: string,
    /** The unique index. */
    readonly index: string,
    /** The index key both records would hold (decoded). */
    readonly indexKey: unknown,
    /** The primary key of the record being written (decoded). */
    readonly key: unknown,
    /** The primary key of the record that holds the index key, when it is known. */
    readonly holder: unknown,
    /** `true` when the holder is still being committed by another transaction. */
    readonly committing: boolean,
  ) {
    super(
      'KESTREL_UNIQUE',
      `unique index ${index} of ${collection}: key ${safeKey(indexKey)} of record ${safeKey(key)} is already held by ${committing ? 'a record another transaction is committing' : `record ${safeKey(holder)}`}; change or delete that record first, or give this one another key`,
    )
    this.name = 'UniqueError'
  }
}

function safeKey(key: unknown): string {
  try {
    return JSON.stringify(key, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? `bytes(${v.length})` : v)) ?? String(key)
  } catch {
    return String(key)
  }
}

/**
 * Turn anything an engine threw into a KestrelError. The native binding throws plain `Error`s
 * whose `code` is a KESTREL_* string; Node's fs throws errors with an errno `code`.
 */
export function toKestrelError(err: unknown, context: string): KestrelError {
  if (err instanceof KestrelError) return err
  const e = err as { code?: unknown; message?: unknown }
  const message = typeof e?.message === 'string' ? e.message : String(err)
  if (isKestrelErrorCode(e?.code)) return new KestrelError(e.code, message, { cause: err })
  if (e?.code === 'ENOSPC') {
    return new KestrelError('KESTREL_DISK_FULL', `${context}: the disk is full (${message}); free disk space and reopen the database`, { cause: err })
  }
  return new KestrelError('KESTREL_IO', `${context}: ${message}; check the disk and reopen the database`, { cause: err })
}
