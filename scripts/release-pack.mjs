#!/usr/bin/env node
// `npm run release:pack`: build the native binaries in release mode and write the publishable
// tarballs into release/: the main package (JavaScript, types, the loader) and one platform
// package per binary built here (napi-rs layout, npm/<platform>/).
//
//   npm run release:pack                     every target of package.json's napi.targets this host
//                                            can build (on Linux: the four Linux targets)
//   npm run release:pack -- --host           only this machine's platform, from the clone's own
//                                            release build (npm run build:native): no cross
//                                            toolchain, nothing downloaded (what .ci/run uses)
//   npm run release:pack -- --targets linux-x64-gnu,linux-arm64-gnu
//   npm run release:pack -- --no-install     skip a target whose toolchain is missing instead of
//                                            installing it
//
// Linux targets are cross-built the way napi-rs documents it (`napi build -x`: cargo-zigbuild
// with zig as the linker), glibc targets against glibc 2.17 (`<triple>.2.17`), so one toolchain
// builds all four and the glibc binaries run on any distribution since 2014 (RHEL 7, Ubuntu
// 14.04). zig and cargo-zigbuild come from PyPI into target/release-tools (a Python venv).
// macOS and Windows binaries are built by .github/workflows/release.yml on their own runners.
//
// The steps that napi-rs has commands for use them: `napi build`, `napi create-npm-dirs` (the
// platform package manifests, versions from package.json), `napi artifacts` (binaries into
// npm/<platform>/) and `napi pre-publish --skip-optional-publish` (the main package's
// optionalDependencies). When only some targets are built here, napi artifacts/pre-publish get a
// config naming those targets, so the main tarball depends only on platform packages that exist
// in release/ (the release workflow, with all seven, runs them on package.json itself).
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const RELEASE = join(ROOT, 'release')
const ARTIFACTS = join(ROOT, 'artifacts')
const STAGE = join(RELEASE, '.stage')
const TOOLS = join(ROOT, 'target', 'release-tools')
/** The zig toolchain this script was checked with (PyPI). */
const ZIG_PACKAGES = ['ziglang==0.17.1', 'cargo-zigbuild==0.24.1']
/** Size budgets of the tarballs (bytes). */
const BUDGET = { main: 300 * 1024, platform: 2 * 1024 * 1024 }
/** Libraries a binary may need, per libc (anything else is a packaging mistake). */
const ALLOWED_NEEDED = {
  glibc: /^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libgcc_s\.so\.1|ld-linux-[\w-]+\.so\.\d)$/,
  musl: /^(libc\.so|libc\.musl-\w+\.so\.1|ld-musl-\w+\.so\.1|libgcc_s\.so\.1)$/,
}

const argv = process.argv.slice(2)
const flag = (name) => argv.includes(name)
const option = (name) => {
  const i = argv.findIndex((a) => a === name || a.startsWith(`${name}=`))
  if (i < 0) return undefined
  return argv[i].includes('=') ? argv[i].slice(name.length + 1) : argv[i + 1]
}
const HOST_ONLY = flag('--host')
const INSTALL = !flag('--no-install')
if (flag('--help') || flag('-h')) {
  console.log(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 14)
      .map((l) => l.replace(/^\/\/ ?/, ''))
      .join('\n'),
  )
  process.exit(0)
}

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
const MAIN_DIR = join(STAGE, pkg.name)

function fail(message) {
  console.error(`release:pack: ${message}`)
  process.exit(1)
}

function run(cmd, args, opts = {}) {
  console.log(`$ ${[cmd, ...args].join(' ')}`)
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', ...opts, env: { ...process.env, ...opts.env } })
  if (r.error) fail(`${cmd}: ${r.error.message}`)
  if (r.status !== 0) fail(`\`${[cmd, ...args].join(' ')}\` exited with ${r.status}`)
}

function output(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', ...opts })
  return r.status === 0 ? r.stdout : undefined
}

const napi = (args, opts) => run(process.execPath, [join(ROOT, 'node_modules/@napi-rs/cli/dist/cli.js'), ...args], opts)
const kb = (n) => `${(n / 1024).toFixed(1)} kB`

// A fresh compile of lib/ into the staged main package (no stale files from an old dist/); this
// script's own checks use the same loader and ELF reader the package ships.
rmSync(STAGE, { recursive: true, force: true })
run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json', '--outDir', join(MAIN_DIR, 'dist'), '--sourceMap', 'false'])
const { platformOfTarget, platformTriple, BINARY_NAME } = await import(join(MAIN_DIR, 'dist/core/loader.js'))
const { inspectBinaryFile, describeBinary, compareVersions } = await import(join(MAIN_DIR, 'dist/core/elf.js'))

// ---- which targets ----------------------------------------------------------------------------
const hostPlatform = platformTriple()
const allTargets = pkg.napi.targets.map((triple) => ({ triple, platform: platformOfTarget(triple) }))
let wanted = allTargets
const listed = option('--targets')
if (HOST_ONLY) {
  wanted = allTargets.filter((t) => t.platform === hostPlatform)
  if (wanted.length === 0) fail(`this machine (${hostPlatform}) is not one of package.json's napi.targets`)
} else if (listed) {
  const names = listed
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  for (const n of names)
    if (!allTargets.some((t) => t.platform === n || t.triple === n))
      fail(`--targets: ${n} is not in package.json's napi.targets (${allTargets.map((t) => t.platform).join(', ')})`)
  wanted = allTargets.filter((t) => names.includes(t.platform) || names.includes(t.triple))
}

const skipped = []
const plan = []
for (const t of wanted) {
  if (HOST_ONLY) plan.push({ ...t, how: 'clone' })
  else if (process.platform === 'linux' && t.triple.includes('-linux-')) plan.push({ ...t, how: 'zig' })
  else if (t.platform === hostPlatform) plan.push({ ...t, how: 'host' })
  else
    skipped.push({
      ...t,
      why: `built by .github/workflows/release.yml on a ${t.triple.includes('darwin') ? 'macOS' : t.triple.includes('windows') ? 'Windows' : 'Linux'} runner (this ${process.platform} host has no linker for it)`,
    })
}

// ---- toolchains -------------------------------------------------------------------------------
const installedRustTargets = new Set((output('rustup', ['target', 'list', '--installed']) ?? '').split('\n').filter(Boolean))
const toolsBin = join(TOOLS, 'bin')
const zigEnv = { PATH: `${toolsBin}:${process.env.PATH}` }

function haveZig() {
  return (
    output('cargo-zigbuild', ['--version'], { env: { ...process.env, ...zigEnv } }) !== undefined &&
    (output('zig', ['version'], { env: { ...process.env, ...zigEnv } }) !== undefined ||
      output(join(toolsBin, 'python3'), ['-m', 'ziglang', 'version']) !== undefined)
  )
}

function ensureZig() {
  if (haveZig()) return undefined
  if (!INSTALL) return `zig and cargo-zigbuild are missing (run without --no-install to get them from PyPI: ${ZIG_PACKAGES.join(' ')})`
  const python = ['python3', 'python'].find((p) => output(p, ['--version']) !== undefined)
  if (!python) return 'zig and cargo-zigbuild are missing and there is no python3 to install them with (apt-get install python3 python3-venv)'
  console.log(`\n== installing the zig cross toolchain from PyPI into ${relative(ROOT, TOOLS)} (${ZIG_PACKAGES.join(' ')})`)
  if (spawnSync(python, ['-m', 'venv', TOOLS], { stdio: 'inherit' }).status !== 0) {
    return `\`${python} -m venv\` failed (on Debian/Ubuntu: apt-get install python3-venv)`
  }
  if (spawnSync(join(toolsBin, 'pip'), ['install', '--quiet', ...ZIG_PACKAGES], { stdio: 'inherit' }).status !== 0) {
    return `pip install ${ZIG_PACKAGES.join(' ')} failed (is PyPI reachable?)`
  }
  return haveZig() ? undefined : 'zig/cargo-zigbuild still not runnable after installing them'
}

function ensureRustTarget(triple) {
  if (installedRustTargets.has(triple)) return undefined
  if (output('rustup', ['--version']) === undefined) return `the Rust target ${triple} is not installed and rustup is missing`
  if (!INSTALL) return `the Rust target ${triple} is not installed (rustup target add ${triple})`
  run('rustup', ['target', 'add', triple])
  installedRustTargets.add(triple)
  return undefined
}

let zigProblem
if (plan.some((p) => p.how === 'zig')) zigProblem = ensureZig()
const build = []
for (const p of plan) {
  const why = (p.how === 'zig' ? zigProblem : undefined) ?? (p.how === 'clone' ? undefined : ensureRustTarget(p.triple))
  if (why) skipped.push({ ...p, why })
  else build.push(p)
}

console.log(`\n== release:pack ${pkg.name}@${pkg.version}`)
for (const p of build)
  console.log(
    `   build  ${p.platform.padEnd(16)} ${p.how === 'zig' ? `napi build -x (zig)${p.triple.endsWith('-gnu') ? ', glibc 2.17' : ''}` : p.how === 'clone' ? "the clone's release build (native/)" : 'napi build (host toolchain)'}`,
  )
for (const s of skipped) console.log(`   skip   ${s.platform.padEnd(16)} ${s.why}`)
if (build.length === 0) fail('nothing to build here')
// Only now that there is something to build: the previous tarballs and binaries go.
for (const f of existsSync(RELEASE) ? readdirSync(RELEASE) : []) if (f !== '.stage') rmSync(join(RELEASE, f), { recursive: true, force: true })
rmSync(ARTIFACTS, { recursive: true, force: true })
mkdirSync(ARTIFACTS, { recursive: true })

// ---- build ------------------------------------------------------------------------------------
const manifest = ['--manifest-path', 'crates/kestrel-node/Cargo.toml']
const timings = {}
for (const p of build) {
  const file = `${BINARY_NAME}.${p.platform}.node`
  const started = Date.now()
  console.log(`\n== ${p.platform}`)
  if (p.how === 'clone') {
    run('npm', ['run', 'build:native'])
    cpSync(join(ROOT, 'native', file), join(ARTIFACTS, file))
  } else {
    const target = p.how === 'zig' && p.triple.endsWith('-linux-gnu') ? `${p.triple}.2.17` : p.triple
    napi(
      [
        'build',
        '--platform',
        '--release',
        '--strip',
        ...manifest,
        '--output-dir',
        'artifacts',
        '--no-js',
        '--dts',
        '.napi-types.d.ts',
        '--target',
        target,
        ...(p.how === 'zig' ? ['-x'] : []),
      ],
      { env: p.how === 'zig' ? zigEnv : {} },
    )
    rmSync(join(ARTIFACTS, '.napi-types.d.ts'), { force: true })
  }
  timings[p.platform] = (Date.now() - started) / 1000
}

// ---- check each artifact: format, CPU, libc, needed libraries --------------------------------
console.log('\n== artifacts')
let bad = false
for (const p of build) {
  const path = join(ARTIFACTS, `${BINARY_NAME}.${p.platform}.node`)
  const info = inspectBinaryFile(path)
  const [os, arch, abi] = p.platform.split('-')
  const problems = []
  const expectFormat = os === 'darwin' ? 'mach-o' : os === 'win32' ? 'pe' : 'elf'
  if (!info || info.format !== expectFormat) problems.push(`expected ${expectFormat}`)
  else if (info.format === 'elf') {
    if (info.arch !== arch) problems.push(`built for ${info.arch}, not ${arch}`)
    const libc = abi === 'musl' ? 'musl' : 'glibc'
    if (info.libc !== libc) problems.push(`links ${info.libc} libc, not ${libc}`)
    const extra = (info.needed ?? []).filter((n) => !ALLOWED_NEEDED[libc].test(n))
    if (extra.length) problems.push(`needs libraries a ${libc} system may not have: ${extra.join(', ')}`)
    if (p.how === 'zig' && libc === 'glibc' && (!info.glibc || compareVersions(info.glibc, '2.17') > 0)) problems.push(`needs glibc ${info.glibc}, not 2.17`)
  }
  console.log(
    `   ${p.platform.padEnd(16)} ${kb(statSync(path).size).padStart(10)}  ${info ? describeBinary(info) : 'unreadable'}${problems.length ? `  ✗ ${problems.join('; ')}` : '  ✓'}  (${timings[p.platform].toFixed(0)} s)`,
  )
  if (problems.length) bad = true
}
if (bad) fail('an artifact is not what its platform package promises (see ✗ above)')

// ---- platform packages and the main package ---------------------------------------------------
// Everything napi writes happens in the staged copy (release/.stage/<name>: package.json, README,
// dist compiled above, npm/), so the clone's package.json and npm/ are never modified by packing.
const mainDir = MAIN_DIR
for (const f of ['package.json', 'README.md', 'LICENSE']) if (existsSync(join(ROOT, f))) cpSync(join(ROOT, f), join(mainDir, f))
cpSync(join(ROOT, 'npm'), join(mainDir, 'npm'), { recursive: true, filter: (src) => !src.endsWith('.node') })
const inStage = { cwd: mainDir }
// npm/<platform>/package.json from package.json (name, version, os, cpu, libc, main, files).
napi(['create-npm-dirs', '--npm-dir', 'npm'], inStage)
// A napi config naming only the targets built here, when that is not all of them.
const subset = build.length < allTargets.length
const configArgs = []
if (subset) {
  writeFileSync(join(STAGE, 'napi.built-here.json'), JSON.stringify({ ...pkg.napi, targets: build.map((p) => p.triple) }, null, 2))
  configArgs.push('--config-path', '../napi.built-here.json')
}
// Binaries into npm/<platform>/ (napi artifacts also copies them beside package.json, where
// package.json's `files` leaves them out of the main tarball).
napi(['artifacts', '--output-dir', ARTIFACTS, '--npm-dir', 'npm', ...configArgs], inStage)
// optionalDependencies of the main package, one per platform package, same version.
napi(['pre-publish', '--npm-dir', 'npm', '--skip-optional-publish', '--no-gh-release', ...configArgs], inStage)
// `prepare` builds the addon in a clone (`npm install` there needs it); in the published package it
// would only make npm list kestreldb among packages with install scripts awaiting approval.
run('npm', ['pkg', 'delete', 'scripts.prepare'], inStage)
const staged = JSON.parse(readFileSync(join(mainDir, 'package.json'), 'utf8'))
const installScripts = ['preinstall', 'install', 'postinstall', 'prepare'].filter((s) => staged.scripts?.[s])
if (installScripts.length) fail(`the main package would run ${installScripts.join(', ')} on install`)
const expectedDeps = Object.fromEntries(build.map((p) => [`${pkg.name}-${p.platform}`, pkg.version]))
const sorted = (o) => JSON.stringify(Object.entries(o ?? {}).sort(([a], [b]) => a.localeCompare(b)))
if (sorted(staged.optionalDependencies) !== sorted(expectedDeps)) {
  fail(`napi pre-publish wrote optionalDependencies ${JSON.stringify(staged.optionalDependencies)}, expected ${JSON.stringify(expectedDeps)}`)
}

function pack(dir) {
  const out = output('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', RELEASE], { cwd: dir })
  if (!out) fail(`npm pack failed in ${dir}`)
  return JSON.parse(out)[0]
}

console.log('\n== tarballs (release/)')
const results = []
const main = pack(mainDir)
results.push({ kind: 'main', ...main })
for (const p of build) results.push({ kind: 'platform', platform: p.platform, ...pack(join(mainDir, 'npm', p.platform)) })

// What must and must not be in the main package.
const mainFiles = new Set(main.files.map((f) => f.path))
const required = [
  'package.json',
  'README.md',
  'dist/index.js',
  'dist/index.cjs',
  'dist/index.d.ts',
  'dist/core/loader.js',
  'dist/core/elf.js',
  'dist/cli/kestrel.js',
  'dist/langgraph/index.js',
  'dist/langgraph/index.cjs',
]
const missing = required.filter((f) => !mainFiles.has(f))
const unwanted = [...mainFiles].filter((f) => /^(__test__|benchmark|crates|target|native|lib|npm|docs|scripts)\/|\.map$|\.node$|^dist\/cli\/demo\./.test(f))
if (missing.length) fail(`the main tarball misses ${missing.join(', ')}`)
if (unwanted.length) fail(`the main tarball holds files only the repository needs: ${unwanted.join(', ')}`)

for (const r of results) {
  const budget = r.kind === 'main' ? BUDGET.main : r.platform === 'linux-x64-gnu' ? BUDGET.platform : undefined
  const over = budget !== undefined && r.size >= budget
  console.log(
    `   ${r.filename.padEnd(36)} ${kb(r.size).padStart(10)} packed, ${kb(r.unpackedSize).padStart(10)} unpacked, ${String(r.entryCount).padStart(3)} files${budget ? `  (budget ${kb(budget)}${over ? ' ✗ OVER' : ' ✓'})` : ''}`,
  )
  if (over) bad = true
}
console.log(`   optionalDependencies of ${main.filename}: ${Object.keys(expectedDeps).join(', ')}`)
if (subset) console.log(`   (only the platform packages built here; the release workflow publishes all ${allTargets.length})`)
for (const s of skipped) console.log(`   not built here: ${s.platform} — ${s.why}`)
writeFileSync(
  join(RELEASE, 'manifest.json'),
  `${JSON.stringify(
    {
      version: pkg.version,
      main: main.filename,
      platforms: Object.fromEntries(results.filter((r) => r.kind === 'platform').map((r) => [r.platform, r.filename])),
      skipped: Object.fromEntries(skipped.map((s) => [s.platform, s.why])),
    },
    null,
    2,
  )}\n`,
)
rmSync(STAGE, { recursive: true, force: true })
if (bad) fail('a tarball is over its size budget')
