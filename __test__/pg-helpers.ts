/**
 * The PostgreSQL the tests use (127.0.0.1:5432, database `test`, or KESTREL_TEST_PG_URL): every
 * test gets a schema of its own, dropped after the file. A server that is down fails the tests
 * that need it, saying so — never skips them.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll } from 'vitest'

export const PG_URL = process.env.KESTREL_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

const schemas: string[] = []
let admin: pg.Pool | undefined

/** The pool tests use to look at and disturb the server (not the one replicas use). */
export function adminPool(): pg.Pool {
  admin ??= new pg.Pool({ connectionString: PG_URL, max: 2, connectionTimeoutMillis: 3000 })
  return admin
}

/** Call at the top of a file that needs PostgreSQL. */
export function usePostgres(): void {
  beforeAll(async () => {
    try {
      await adminPool().query('SELECT 1')
    } catch (err) {
      throw new Error(
        `these tests need PostgreSQL at ${PG_URL} (user postgres, database test; set KESTREL_TEST_PG_URL to use another): ${(err as Error).message}`,
      )
    }
  })
  afterAll(async () => {
    for (const s of schemas.splice(0)) await adminPool().query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`)
    await admin?.end()
    admin = undefined
  })
}

/** A new schema name (created by the first replica that opens it), dropped after the file. */
export function newSchema(): string {
  const s = `kt_${randomBytes(6).toString('hex')}`
  schemas.push(s)
  return s
}

/** `open` options for a replica of `schema`. */
export function pgOptions(schema: string): { postgres: { connectionString: string; schema: string } } {
  return { postgres: { connectionString: PG_URL, schema } }
}
