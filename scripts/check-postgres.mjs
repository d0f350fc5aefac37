// Is the PostgreSQL the tests use reachable? Exit 1 with what to do if not (.ci/run, `npm test`).
import pg from 'pg'

const url = process.env.KESTREL_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
try {
  await client.connect()
  const { rows } = await client.query('SHOW server_version')
  console.log(`== PostgreSQL ${rows[0].server_version} at ${url}`)
} catch (err) {
  console.error(
    `PostgreSQL is not reachable at ${url} (${err.message}): the PostgreSQL medium's tests need it. Start it (user postgres, trust auth, database test), or set KESTREL_TEST_PG_URL.`,
  )
  process.exitCode = 1
} finally {
  await client.end().catch(() => {})
}
