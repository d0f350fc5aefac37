#!/usr/bin/env node
// `npm run test:install`: install kestreldb as a user does — from the tarballs that
// `npm run release:pack` wrote into release/, into empty projects in a temp directory, with
// `--ignore-scripts` and with no cargo, rustc or C compiler on PATH — and check that it works:
//
//   with the platform package  open with engine 'native' (db.engine === 'native', the binary
//                              comes from node_modules/kestreldb-<platform>), commit, reopen,
//                              `npx kestrel verify`, `kestreldb/langgraph` with the LangGraph
//                              packages installed, ESM and CommonJS entries (one module instance;
//                              a Node without require(esm) gets a clear message)
//   bad input                  a platform package of another version → KESTREL_NATIVE_UNAVAILABLE
//                              naming both versions; a binary for another CPU or another libc →
//                              KESTREL_NATIVE_UNAVAILABLE saying what it was built for
//   without it                 engine 'auto' → the ts engine with one warning naming the package;
//                              engine 'native' → KESTREL_NATIVE_UNAVAILABLE naming it
//
// It also measures the install time with npm's cache warm, and open() of a fresh database with
// the installed binary against the clone's own build.
//   npm run test:install [-- --keep]     (--keep leaves the temp projects for inspection)
import { spawnSync } from 'node:child_process'
import {
  accessSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const RELEASE = join(ROOT, 'release')
const KEEP = process.argv.includes('--keep')
const started = Date.now()

function fail(message, detail) {
  console.error(`\nnot ok - ${message}`)
  if (detail) console.error(detail)
  console.error(`(projects left in ${TMP})`)
  process.exit(1)
}
const ok = (message) => console.log(`ok - ${message}`)
function check(cond, message, detail) {
  if (!cond) fail(message, detail)
  ok(message)
}

// ---- what to install -------------------------------------------------------------------------
if (!existsSync(join(RELEASE, 'manifest.json'))) {
  console.error('test:install: release/manifest.json is missing: run `npm run release:pack` (or `npm run release:pack -- --host`) first')
  process.exit(1)
}
const manifest = JSON.parse(readFileSync(join(RELEASE, 'manifest.json'), 'utf8'))
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
const { platformTriple } = await import(join(ROOT, 'dist/core/loader.js'))
const platform = platformTriple()
const platformPkg = `${pkg.name}-${platform}`
const mainTgz = join(RELEASE, manifest.main)
if (!manifest.platforms[platform]) {
  console.error(`test:install: release/ has no platform package for this machine (${platform}); it has ${Object.keys(manifest.platforms).join(', ') || 'none'}`)
  process.exit(1)
}
const platformTgz = join(RELEASE, manifest.platforms[platform])
if (manifest.version !== pkg.version) {
  console.error(`test:install: release/ holds ${manifest.version}, package.json is ${pkg.version}: run npm run release:pack again`)
  process.exit(1)
}
const langchain = ['@langchain/core', '@langchain/langgraph-checkpoint'].map((name) => {
  const version = JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version
  return `${name}@${version}`
})

// ---- an environment without compilers ---------------------------------------------------------
const TMP = mkdtempSync(join(tmpdir(), 'kestrel-install-'))
const BIN = join(TMP, 'bin')
mkdirSync(BIN)
function which(name, path = process.env.PATH ?? '') {
  for (const dir of path.split(delimiter)) {
    const p = join(dir, name)
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {}
  }
  return undefined
}
const npmCli = which('npm') && realpathSync(which('npm'))
const npxCli = which('npx') && realpathSync(which('npx'))
if (!npmCli || !npxCli) fail('npm and npx must be on PATH')
symlinkSync(process.execPath, join(BIN, 'node'))
symlinkSync(npmCli, join(BIN, 'npm'))
symlinkSync(npxCli, join(BIN, 'npx'))
// npm runs package bins through sh; a shell is not a compiler.
symlinkSync(which('sh') ?? '/bin/sh', join(BIN, 'sh'))
const npmCache = spawnSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).stdout.trim()
// A clean environment: no npm_* variables from an outer `npm run`, no compiler variables.
const ENV = { PATH: BIN, HOME: process.env.HOME ?? TMP, TMPDIR: tmpdir(), LANG: 'C.UTF-8', npm_config_cache: npmCache, npm_config_update_notifier: 'false' }
const COMPILERS = ['cargo', 'rustc', 'rustup', 'cc', 'gcc', 'g++', 'c++', 'clang', 'clang++', 'make', 'ld']
const found = COMPILERS.filter((c) => which(c, ENV.PATH))
check(found.length === 0, `no compiler on the test PATH (${COMPILERS.join(', ')} all absent)`, `found: ${found.join(', ')}`)

function sh(cmd, args, cwd, extraEnv = {}) {
  const t0 = process.hrtime.bigint()
  const r = spawnSync(cmd, args, { cwd, env: { ...ENV, ...extraEnv }, encoding: 'utf8' })
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', ms, error: r.error }
}
/** Run a node script in `cwd` (a file written there); its last stdout line is JSON. */
function node(cwd, file, args = [], nodeArgs = []) {
  const r = sh(join(BIN, 'node'), [...nodeArgs, file, ...args], cwd)
  const last = r.stdout.trim().split('\n').pop() ?? ''
  let json
  try {
    json = JSON.parse(last)
  } catch {}
  return { ...r, json }
}

function project(name, specs, label, flags = ['--ignore-scripts']) {
  const dir = join(TMP, name)
  mkdirSync(dir)
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `kestrel-install-${name}`, version: '1.0.0', private: true }, null, 2))
  const r = sh(join(BIN, 'npm'), ['install', ...flags, '--no-audit', '--no-fund', '--prefer-offline', ...specs], dir)
  if (r.status !== 0) fail(`npm install ${label} in ${dir}`, r.stdout + r.stderr)
  return { dir, ms: r.ms, log: r.stdout + r.stderr }
}

// ---- scripts the projects run -----------------------------------------------------------------
const NATIVE_MJS = `
import { open } from 'kestreldb'
const [dir, engine = 'native'] = process.argv.slice(2)
const out = {}
try {
  const t0 = performance.now()
  const db = await open(dir, { engine })
  out.openMs = performance.now() - t0
  out.engine = db.engine
  const c = db.collection('install')
  await db.transaction((tx) => tx.put(c, 'k1', { n: 1, at: 'install-test' }))
  await db.close()
  const again = await open(dir, { engine })
  const tx = again.begin()
  out.reread = tx.get(again.collection('install'), 'k1')
  tx.rollback()
  await again.close()
  out.binaries = (process.report.getReport().sharedObjects ?? []).filter((p) => p.endsWith('.node'))
} catch (e) {
  out.code = e.code
  out.message = e.message
}
console.log(JSON.stringify(out))
`
const LANGGRAPH_MJS = `
import { KestrelSaver } from 'kestreldb/langgraph'
import { emptyCheckpoint } from '@langchain/langgraph-checkpoint'
const saver = await KestrelSaver.open(process.argv[2], { engine: 'native' })
const checkpoint = { ...emptyCheckpoint(), id: '1ef-install-test' }
const config = { configurable: { thread_id: 'install', checkpoint_ns: '' } }
await saver.put(config, checkpoint, { source: 'input', step: -1, parents: {} }, {})
const tuple = await saver.getTuple(config)
await saver.close()
console.log(JSON.stringify({ id: tuple?.checkpoint.id }))
`
const CJS = `
const kestrel = require('kestreldb')
const { KestrelSaver } = require('kestreldb/langgraph')
;(async () => {
  const esm = await import('kestreldb')
  const db = await kestrel.open(process.argv[2], { engine: 'native' })
  const c = db.collection('cjs')
  await db.transaction((tx) => tx.put(c, 'k', 'v'))
  let instance = false
  require('node:fs').writeFileSync(process.argv[2] + '-file', 'not a database')
  try { await kestrel.open(process.argv[2] + '-file') } catch (e) { instance = e.code === 'KESTREL_NOT_A_DATABASE' && e instanceof esm.KestrelError }
  const engine = db.engine
  await db.close()
  console.log(JSON.stringify({ engine, sameModule: esm.open === kestrel.open, instance, saver: typeof KestrelSaver }))
})().catch((e) => { console.log(JSON.stringify({ code: e.code, message: e.message })) })
`
const CJS_OLD_NODE = `
try { require('kestreldb'); console.log(JSON.stringify({ loaded: true })) }
catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }
`
const AUTO_MJS = `
import { open } from 'kestreldb'
const dir = process.argv[2]
const warnings = []
process.on('warning', (w) => warnings.push({ code: w.code, message: w.message }))
const out = {}
try { await open(dir + '/n', { engine: 'native' }); out.native = 'opened' } catch (e) { out.native = { code: e.code, message: e.message } }
const a = await open(dir + '/a', { engine: 'auto' })
const b = await open(dir + '/b', { engine: 'auto' })
out.engines = [a.engine, b.engine]
const c = a.collection('c')
await a.transaction((tx) => tx.put(c, 'k', 42))
await a.close(); await b.close()
const again = await open(dir + '/a', { engine: 'auto' })
const tx = again.begin(); out.reread = tx.get(again.collection('c'), 'k'); tx.rollback()
await again.close()
await new Promise((r) => setImmediate(r))
out.warnings = warnings.filter((w) => w.code === 'KESTREL_NATIVE_FALLBACK')
console.log(JSON.stringify(out))
`
// The PostgreSQL medium needs the optional peer \`pg\`, which this project does not have.
const NO_PG_MJS = `
import { open } from 'kestreldb'
const out = {}
try {
  await open(process.argv[2], { postgres: { connectionString: 'postgres://127.0.0.1/x', schema: 'app' } })
  out.opened = true
} catch (e) {
  out.code = e.code
  out.message = e.message
}
console.log(JSON.stringify(out))
`
function writeScripts(dir) {
  writeFileSync(join(dir, 'no-pg.mjs'), NO_PG_MJS)
  writeFileSync(join(dir, 'native.mjs'), NATIVE_MJS)
  writeFileSync(join(dir, 'langgraph.mjs'), LANGGRAPH_MJS)
  writeFileSync(join(dir, 'cjs.cjs'), CJS)
  writeFileSync(join(dir, 'cjs-old-node.cjs'), CJS_OLD_NODE)
  writeFileSync(join(dir, 'auto.mjs'), AUTO_MJS)
}

console.log(`# ${manifest.main} + ${manifest.platforms[platform]} on ${platform}, node ${process.version} (in ${TMP})`)

// ---- install: warm npm's cache once, then time installs into empty projects ------------------
const warm = project('warmup', [mainTgz, platformTgz, ...langchain], 'warm-up')
const installs = []
let app
for (let i = 0; i < 3; i++) {
  const p = project(`app${i}`, [mainTgz, platformTgz], 'the two tarballs')
  installs.push(p.ms)
  if (i === 0) app = p.dir
  else rmSync(p.dir, { recursive: true, force: true })
}
ok(
  `npm install of the two tarballs, --ignore-scripts, no compiler: ${installs.map((ms) => `${(ms / 1000).toFixed(2)} s`).join(', ')} (npm cache warm; warm-up with LangGraph ${(warm.ms / 1000).toFixed(1)} s)`,
)
rmSync(warm.dir, { recursive: true, force: true })
const lg = sh(join(BIN, 'npm'), ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', ...langchain], app)
if (lg.status !== 0) fail('npm install of the LangGraph packages', lg.stdout + lg.stderr)
writeScripts(app)
const installedPlatform = join(app, 'node_modules', platformPkg)
check(existsSync(join(installedPlatform, 'package.json')), `${platformPkg} is installed as kestreldb's optional dependency`)
check(!existsSync(join(app, 'node_modules', pkg.name, 'native')), 'the main package holds no native/ directory (only the platform package has a binary)')
const installed = JSON.parse(readFileSync(join(app, 'node_modules', pkg.name, 'package.json'), 'utf8'))
const lifecycle = ['preinstall', 'install', 'postinstall', 'prepare'].filter((s) => installed.scripts?.[s])
check(lifecycle.length === 0, `${pkg.name} has no install or prepare script`, lifecycle.join(', '))
// npm's own defaults (no --ignore-scripts): npm 11 lists dependencies' install scripts awaiting
// approval; kestreldb and its platform package must not be among them.
const plain = project('plain', [mainTgz, platformTgz], 'with npm defaults', [])
check(
  !/install-scripts.*\bkestreldb(-[\w-]+)?@/.test(plain.log),
  'a plain `npm install` (npm defaults) lists no kestreldb package among those with install scripts',
  plain.log,
)
rmSync(plain.dir, { recursive: true, force: true })

// ---- the native engine from the platform package ----------------------------------------------
const db1 = join(app, 'db1')
let r = node(app, 'native.mjs', [db1])
check(r.json?.engine === 'native', "open(dir, { engine: 'native' }) → db.engine === 'native'", r.stdout + r.stderr)
check(r.json.reread?.n === 1, 'a commit survives close and reopen')
const binary = r.json.binaries.find((p) => p.includes('kestrel.'))
check(
  binary?.startsWith(realpathSync(installedPlatform)),
  `the binary loaded is the platform package's (${binary?.replace(TMP, '$TMP')})`,
  JSON.stringify(r.json.binaries),
)
r = sh(join(BIN, 'npx'), ['kestrel', 'verify', db1], app)
check(r.status === 0 && /ok|no problem/i.test(r.stdout + r.stderr), '`npx kestrel verify` on it exits 0', r.stdout + r.stderr)
r = node(app, 'langgraph.mjs', [join(app, 'lg')])
check(r.json?.id === '1ef-install-test', "import { KestrelSaver } from 'kestreldb/langgraph' (put + getTuple on the native engine)", r.stdout + r.stderr)
r = node(app, 'no-pg.mjs', [join(app, 'db-no-pg')])
check(
  r.json?.code === 'KESTREL_INVALID_ARGUMENT' && r.json.message.includes('npm install pg'),
  'the postgres option without the optional pg package → KESTREL_INVALID_ARGUMENT saying to install it',
  r.stdout + r.stderr,
)
r = node(app, 'cjs.cjs', [join(app, 'cjs')])
check(
  r.json?.engine === 'native' && r.json.sameModule && r.json.instance && r.json.saver === 'function',
  "require('kestreldb') and require('kestreldb/langgraph') work and are the ESM modules' instance",
  r.stdout + r.stderr,
)
r = node(app, 'cjs-old-node.cjs', [], ['--no-experimental-require-module'])
check(
  r.json?.code === 'ERR_REQUIRE_ESM' && /await import\('kestreldb'\)/.test(r.json.message) && /20\.19/.test(r.json.message),
  "require('kestreldb') on a Node without require(esm) fails with a message saying what to do",
  r.stdout + r.stderr,
)

// ---- bad input: doctored platform package directories -----------------------------------------
const manifestPath = join(installedPlatform, 'package.json')
const original = readFileSync(manifestPath, 'utf8')
writeFileSync(manifestPath, JSON.stringify({ ...JSON.parse(original), version: '0.0.1-other' }, null, 2))
r = node(app, 'native.mjs', [join(app, 'db-version')])
check(
  r.json?.code === 'KESTREL_NATIVE_UNAVAILABLE' &&
    r.json.message.includes('0.0.1-other') &&
    r.json.message.includes(pkg.version) &&
    r.json.message.includes(platformPkg),
  `${platformPkg} of another version → KESTREL_NATIVE_UNAVAILABLE naming both versions`,
  r.stdout + r.stderr,
)
r = node(app, 'auto.mjs', [join(app, 'db-version-auto')])
check(
  r.json?.engines?.[0] === 'ts' && r.json.warnings.length === 1 && r.json.warnings[0].message.includes('0.0.1-other'),
  "…and engine 'auto' falls back to ts with one warning naming both versions",
  r.stdout + r.stderr,
)
writeFileSync(manifestPath, original)

const binaryPath = join(installedPlatform, JSON.parse(original).main)
const saved = join(TMP, 'saved.node')
copyFileSync(binaryPath, saved)
/** A binary of another platform: the real one from release/ when it was built, else a patched copy. */
function foreign(kind) {
  const [os, arch, abi] = platform.split('-')
  const otherPlatform = kind === 'cpu' ? `${os}-${arch === 'x64' ? 'arm64' : 'x64'}-${abi}` : `${os}-${arch}-${abi === 'gnu' ? 'musl' : 'gnu'}`
  const tgz = manifest.platforms[otherPlatform]
  const out = join(TMP, `${kind}.node`)
  if (tgz) {
    const x = join(TMP, `x-${kind}`)
    mkdirSync(x)
    const t = spawnSync('tar', ['xzf', join(RELEASE, tgz), '-C', x])
    if (t.status === 0) {
      copyFileSync(join(x, 'package', `kestrel.${otherPlatform}.node`), out)
      return { path: out, what: `the real ${otherPlatform} build from release/` }
    }
  }
  const b = readFileSync(saved)
  if (kind === 'cpu') {
    b.writeUInt16LE(arch === 'x64' ? 183 : 62, 18) // ELF e_machine
    writeFileSync(out, b)
    return { path: out, what: `a copy with its ELF machine set to ${arch === 'x64' ? 'aarch64' : 'x86-64'}` }
  }
  // Another libc: point the glibc build's DT_NEEDED at musl's libc name (what musl builds need).
  const from = Buffer.from(abi === 'gnu' ? 'libc.so.6\0' : 'libc.so\0')
  const to = Buffer.alloc(from.length)
  Buffer.from(abi === 'gnu' ? 'libc.so' : 'libc.so.6').copy(to)
  let at = b.indexOf(from)
  while (at >= 0 && to.length === from.length) {
    to.copy(b, at)
    at = b.indexOf(from, at + 1)
  }
  writeFileSync(out, b)
  return { path: out, what: `a copy whose needed libc is ${abi === 'gnu' ? 'libc.so (musl)' : 'libc.so.6 (glibc)'}` }
}
for (const [kind, expect] of [
  ['cpu', /built for (arm64|x64)/],
  ['libc', /built for (musl libc|glibc)/],
]) {
  const f = foreign(kind)
  copyFileSync(f.path, binaryPath)
  r = node(app, 'native.mjs', [join(app, `db-${kind}`)])
  check(
    r.json?.code === 'KESTREL_NATIVE_UNAVAILABLE' && expect.test(r.json.message) && r.json.message.includes(platformPkg),
    `a binary for another ${kind === 'cpu' ? 'CPU' : 'libc'} (${f.what}) → KESTREL_NATIVE_UNAVAILABLE: ${r.json?.message?.match(expect)?.[0]}`,
    r.stdout + r.stderr,
  )
}
copyFileSync(saved, binaryPath)
r = node(app, 'native.mjs', [join(app, 'db-restored')])
check(r.json?.engine === 'native', 'the restored package loads again')

// ---- without the platform package: the auto fallback --------------------------------------------
const bare = project('bare', [mainTgz], 'the main tarball alone')
writeScripts(bare.dir)
check(
  !existsSync(join(bare.dir, 'node_modules', platformPkg)),
  `without its tarball, ${platformPkg} is not installed (the install still succeeds: it is optional)`,
)
r = node(bare.dir, 'auto.mjs', [join(bare.dir, 'db')])
check(
  r.json?.native?.code === 'KESTREL_NATIVE_UNAVAILABLE' && r.json.native.message.includes(`${platformPkg} is not installed`),
  `engine 'native' → KESTREL_NATIVE_UNAVAILABLE naming ${platformPkg}`,
  r.stdout + r.stderr,
)
check(r.json.engines.join() === 'ts,ts' && r.json.reread === 42, "engine 'auto' → the ts engine, which commits and reopens")
check(
  r.json.warnings.length === 1 && r.json.warnings[0].message.includes(platformPkg),
  `one KESTREL_NATIVE_FALLBACK warning for two opens, naming ${platformPkg}`,
  JSON.stringify(r.json.warnings),
)
r = sh(join(BIN, 'npx'), ['kestrel', 'verify', join(bare.dir, 'db', 'a')], bare.dir)
check(r.status === 0, '`npx kestrel verify` works without the native engine', r.stdout + r.stderr)

// ---- measure: open() of a fresh database, installed binary vs the clone's build ----------------
const OPEN_MJS = (from) => `
const t0 = performance.now()
const { open } = await import(${JSON.stringify(from)})
const tImport = performance.now() - t0
const t1 = performance.now()
const db = await open(process.argv[2] + '/first', { engine: 'native' })
const tFirst = performance.now() - t1
const t2 = performance.now()
const db2 = await open(process.argv[2] + '/second', { engine: 'native' })
const tSecond = performance.now() - t2
const engine = db.engine
await db.close(); await db2.close()
console.log(JSON.stringify({ engine, tImport, tFirst, tSecond }))
`
writeFileSync(join(app, 'open-installed.mjs'), OPEN_MJS('kestreldb'))
writeFileSync(join(app, 'open-clone.mjs'), OPEN_MJS(join(ROOT, 'dist/index.js')))
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const timing = {}
for (const which of ['installed', 'clone']) {
  const runs = []
  for (let i = 0; i < 7; i++) {
    const d = join(app, `open-${which}-${i}`)
    const o = node(app, `open-${which}.mjs`, [d])
    if (o.json?.engine !== 'native') fail(`open() timing run (${which})`, o.stdout + o.stderr)
    runs.push(o.json)
    rmSync(d, { recursive: true, force: true })
  }
  timing[which] = { import: median(runs.map((x) => x.tImport)), first: median(runs.map((x) => x.tFirst)), second: median(runs.map((x) => x.tSecond)) }
}
const fmt = (t) => `import ${t.import.toFixed(1)} ms, first open() ${t.first.toFixed(1)} ms (loads the binary), next open() ${t.second.toFixed(1)} ms`
console.log(
  `# open() of a fresh database, median of 7 processes:\n#   installed (${platformPkg}): ${fmt(timing.installed)}\n#   clone (native/):            ${fmt(timing.clone)}`,
)

if (!KEEP) rmSync(TMP, { recursive: true, force: true })
console.log(`# test:install passed in ${((Date.now() - started) / 1000).toFixed(1)} s`)
