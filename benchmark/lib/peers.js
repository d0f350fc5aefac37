// The peers (lmdb, better-sqlite3, classic-level, the SQLite LangGraph saver) are devDependencies
// of benchmark/package.json only — never of the library — so the first run installs them here.
import { execFileSync, spawnSync } from 'node:child_process'
import { join } from 'node:path'

// Checked in a child process: a native module that failed to load once stays broken in the
// process that tried, and the harness process itself should not carry the peers' native code.
const PROBES = {
  lmdb: "require('lmdb').open({ path: require('os').tmpdir() + '/kestrel-bench-probe-' + process.pid }).close?.(); require('fs').rmSync(require('os').tmpdir() + '/kestrel-bench-probe-' + process.pid, { recursive: true, force: true })",
  'classic-level': "require('classic-level')",
  'better-sqlite3': "new (require('better-sqlite3'))(':memory:').close()",
}

/** The peers that do not load, each with the first line of its error. */
export function brokenPeers(benchDir) {
  const broken = []
  for (const [name, probe] of Object.entries(PROBES)) {
    const r = spawnSync(process.execPath, ['-e', probe], { cwd: benchDir, encoding: 'utf8' })
    if (r.status !== 0) broken.push({ name, error: (r.stderr.split('\n').find((l) => /Error/.test(l)) ?? r.stderr.trim().split('\n')[0] ?? '').trim() })
  }
  return broken
}

function run(cmd, args, opts = {}) {
  console.log(`  $ ${cmd} ${args.join(' ')}`)
  execFileSync(cmd, args, { stdio: 'inherit', ...opts })
}

// prebuild-install (better-sqlite3's install step) downloads from GitHub, which may be
// unreachable: build_from_source makes it give up at once and fall through to `node-gyp rebuild`,
// which compiles against the local headers (`npm config get nodedir`). Only for this one
// package: lmdb's installer honours the same flag and would compile instead of using its prebuild.
const BUILD_FROM_SOURCE_ENV = { ...process.env, npm_config_build_from_source: 'true' }

/** Installs and builds the peers when any of them does not load; throws if they still do not. */
export function ensurePeers(benchDir) {
  let broken = brokenPeers(benchDir)
  if (broken.length === 0) return
  console.log(`benchmark peers not loadable yet (${broken.map((b) => b.name).join(', ')}): installing them into benchmark/node_modules …`)
  // --ignore-scripts: the same result whatever npm's script policy is. lmdb and classic-level
  // load the prebuilt binaries they ship (lmdb through its optional @lmdb/lmdb-<platform>
  // package); better-sqlite3 is the one that needs a build step, done explicitly below.
  run('npm', ['install', '--prefix', benchDir, '--no-audit', '--no-fund', '--ignore-scripts'])
  broken = brokenPeers(benchDir)
  if (broken.some((b) => b.name === 'better-sqlite3')) {
    console.log('building better-sqlite3 from source (its prebuilt binary is a GitHub download; a minute or two on two cores) …')
    run('npm', ['rebuild', 'better-sqlite3', '--prefix', benchDir, '--foreground-scripts'], { env: BUILD_FROM_SOURCE_ENV })
    broken = brokenPeers(benchDir)
    if (broken.some((b) => b.name === 'better-sqlite3')) {
      console.log('npm rebuild did not produce a loadable binary; running node-gyp directly …')
      run('npx', ['--yes', 'node-gyp', 'rebuild', '--release'], { cwd: join(benchDir, 'node_modules', 'better-sqlite3') })
      broken = brokenPeers(benchDir)
    }
  }
  if (broken.length > 0) throw new Error(`benchmark peers still do not load: ${broken.map((b) => `${b.name}: ${b.error}`).join('; ')}`)
  console.log('benchmark peers installed and loadable')
}
