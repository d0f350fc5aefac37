/**
 * The native loader (lib/core/loader.ts) on doctored package directories: a kestreldb root with
 * `native/` and/or `node_modules/kestreldb-<platform>/`, holding the clone's real binary, a copy
 * patched to look built for another CPU or libc, or a manifest of another version. Also the ELF
 * reader the loader and `npm run release:pack` use.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { compareVersions, describeBinary, inspectBinary, inspectBinaryFile } from '../lib/core/elf.js'
import { BINARY_NAME, libcOfProcess, loadBinding, platformOfTarget, platformTriple, type LoaderContext } from '../lib/core/loader.js'
import { KestrelError } from '../lib/errors.js'
import { tempDir } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; napi: { targets: string[] } }
const PLATFORM = platformTriple()
const FILE = `${BINARY_NAME}.${PLATFORM}.node`
/** The clone's build (npm run build:native); the suites that need it fail, never skip, without it. */
const BUILT = join(ROOT, 'native', FILE)
const [, ARCH, ABI] = PLATFORM.split('-')
/** The doctored binaries are patched ELF files: those cases run on Linux (the release workflow runs this suite on macOS and Windows too). */
const ELF = process.platform === 'linux'

interface Layout {
  /** Put a binary in native/ (the clone's place). */
  clone?: Buffer
  /** Install the platform package with this binary… */
  binary?: Buffer
  /** …and this version in its package.json (default: kestreldb's). */
  version?: string
}

/** A kestreldb package root laid out as `layout` says; the loader context that looks at it. */
function root(layout: Layout, platform = PLATFORM): LoaderContext {
  const dir = tempDir('pkg')
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: PKG.name, version: PKG.version, napi: PKG.napi }))
  const file = `${BINARY_NAME}.${platform}.node`
  if (layout.clone) {
    mkdirSync(join(dir, 'native'))
    writeFileSync(join(dir, 'native', file), layout.clone)
  }
  if (layout.binary) {
    const p = join(dir, 'node_modules', `${PKG.name}-${platform}`)
    mkdirSync(p, { recursive: true })
    writeFileSync(
      join(p, 'package.json'),
      JSON.stringify({ name: `${PKG.name}-${platform}`, version: layout.version ?? PKG.version, main: file, files: [file] }),
    )
    writeFileSync(join(p, file), layout.binary)
  }
  return { root: dir, platform }
}

function failure(ctx: LoaderContext): KestrelError {
  try {
    loadBinding(ctx)
  } catch (err) {
    expect(err).toBeInstanceOf(KestrelError)
    expect((err as KestrelError).code).toBe('KESTREL_NATIVE_UNAVAILABLE')
    return err as KestrelError
  }
  throw new Error('the binding loaded')
}

const real = (): Buffer => readFileSync(BUILT)
/** The real binary with its ELF machine set to another CPU's. */
function otherCpu(): Buffer {
  const b = real()
  b.writeUInt16LE(ARCH === 'arm64' ? 62 : 183, 18)
  return b
}
/**
 * The real glibc binary with its needed C library renamed to musl's `libc.so` (what musl builds
 * need; same length, NUL-padded), as if built for musl.
 */
function otherLibc(): Buffer {
  const b = real()
  let at = b.indexOf('libc.so.6\0')
  expect(at).toBeGreaterThan(0)
  while (at >= 0) {
    b.write('libc.so\0\0\0', at, 'latin1')
    at = b.indexOf('libc.so.6\0', at + 1)
  }
  return b
}

describe('the native loader', () => {
  it('the clone build exists (npm run build:native)', () => {
    expect(existsSync(BUILT)).toBe(true)
  })

  it('loads the platform package when there is no clone build', () => {
    const ctx = root({ binary: real() })
    const loaded = loadBinding(ctx)
    expect(loaded.source).toBe('package')
    expect(loaded.path).toBe(join(ctx.root, 'node_modules', `${PKG.name}-${PLATFORM}`, FILE))
    expect(typeof (loaded.binding.NativeEngine as { open: unknown }).open).toBe('function')
  })

  it('prefers the clone build (native/) over the platform package', () => {
    const ctx = root({ clone: real(), binary: Buffer.from('damaged') })
    const loaded = loadBinding(ctx)
    expect(loaded.source).toBe('clone')
    expect(loaded.path).toBe(join(ctx.root, 'native', FILE))
  })

  it('falls through a clone build that does not load to the platform package', () => {
    const loaded = loadBinding(root({ clone: Buffer.from('damaged'), binary: real() }))
    expect(loaded.source).toBe('package')
  })

  it('a platform package of another version → a clear error naming both versions, before loading it', () => {
    // The binary is garbage: the version check must refuse the package without loading it.
    const err = failure(root({ binary: Buffer.from('not a binary'), version: '0.0.9' }))
    expect(err.message).toContain(`${PKG.name}-${PLATFORM} is version 0.0.9 but ${PKG.name} is version ${PKG.version}`)
    expect(err.message).toContain(`npm install ${PKG.name}@${PKG.version}`)
    expect(err.message).not.toMatch(/failed to load/)
  })

  it.runIf(ELF)("a binary built for another CPU → KESTREL_NATIVE_UNAVAILABLE saying so, with the dynamic loader's error as the cause", () => {
    const err = failure(root({ binary: otherCpu() }))
    expect(err.message).toContain(`${PKG.name}-${PLATFORM}@${PKG.version} is installed but`)
    expect(err.message).toContain(`reinstall ${PKG.name}-${PLATFORM} on this machine`)
    expect(err.message).toMatch(new RegExp(`built for ${ARCH === 'arm64' ? 'x64' : 'arm64'} .* but this process runs on ${process.arch}`))
    expect((err.cause as { cause?: { code?: string } }).cause?.code).toBe('ERR_DLOPEN_FAILED')
  })

  it.runIf(ELF && ABI === 'gnu')('a binary built for another libc (musl on glibc) → KESTREL_NATIVE_UNAVAILABLE saying so', () => {
    const err = failure(root({ binary: otherLibc() }))
    expect(err.message).toMatch(/built for musl libc .* this system's C library is glibc \d/)
    expect((err.cause as { cause?: { code?: string } }).cause?.code).toBe('ERR_DLOPEN_FAILED')
  })

  it('a file that is no binary at all → says so', () => {
    const err = failure(root({ binary: Buffer.from('{"not": "a binary"}') }))
    expect(err.message).toMatch(/not a native binary/)
  })

  it('no platform package → names the package to install and how to build or avoid it', () => {
    const err = failure(root({}))
    expect(err.message).toContain(`the package ${PKG.name}-${PLATFORM} is not installed`)
    expect(err.message).toContain(`install ${PKG.name}-${PLATFORM}@${PKG.version}`)
    expect(err.message).toContain('npm run build:native')
    expect(err.message).toContain("{ engine: 'ts' }")
  })

  it('a platform without a prebuilt binary → says which platforms have one', () => {
    const err = failure(root({}, 'freebsd-x64'))
    expect(err.message).toContain(`${PKG.name} has no prebuilt binary for freebsd-x64 (prebuilt: ${PKG.napi.targets.map(platformOfTarget).join(', ')})`)
  })

  it('KESTREL_NATIVE_BINDING loads the file it names, and only that', () => {
    const ctx = root({ binary: real() })
    const path = join(ctx.root, 'elsewhere.node')
    copyFileSync(BUILT, path)
    expect(loadBinding({ ...ctx, override: path })).toMatchObject({ source: 'override', path })
    // Relative paths are the working directory's.
    expect(loadBinding({ root: relative(process.cwd(), ctx.root), platform: PLATFORM, override: relative(process.cwd(), path) })).toMatchObject({
      source: 'override',
      path,
    })
    const err = failure({ ...ctx, override: join(ctx.root, 'missing.node') })
    expect(err.message).toContain('KESTREL_NATIVE_BINDING=')
  })

  it("tells the process's libc from the libraries it has mapped, not from /usr/bin/ldd", () => {
    const line = (path: string) => `7f0000000000-7f0000001000 r-xp 00000000 fe:01 1234 ${path}`
    expect(libcOfProcess([line('/usr/bin/node'), line('/usr/lib/x86_64-linux-gnu/libc.so.6'), line('/usr/lib/x86_64-linux-gnu/libm.so.6')].join('\n'))).toBe(
      'glibc',
    )
    expect(libcOfProcess([line('/usr/local/bin/node'), line('/lib/ld-musl-x86_64.so.1')].join('\n'))).toBe('musl')
    expect(libcOfProcess([line('/opt/node'), line('/usr/lib/libstdc++.so.6'), line('/usr/lib/x86_64-linux-musl/libc.so')].join('\n'))).toBe('musl')
    expect(libcOfProcess([line('/lib64/libc-2.17.so')].join('\n'))).toBe('glibc')
    expect(libcOfProcess(line('/usr/bin/node'))).toBeUndefined()
    if (ELF) expect(libcOfProcess()).toBe(ABI === 'musl' ? 'musl' : 'glibc')
  })
})

describe.runIf(ELF)('the ELF reader', () => {
  it("reads the clone build's CPU, libc and needed libraries", () => {
    const info = inspectBinaryFile(BUILT)!
    expect(info).toMatchObject({ format: 'elf', bits: 64, arch: process.arch, libc: ABI === 'musl' ? 'musl' : 'glibc' })
    expect(info.needed).toContain(ABI === 'musl' ? 'libc.so' : 'libc.so.6')
    if (ABI === 'gnu') {
      const runtime = (process.report.getReport() as { header: { glibcVersionRuntime: string } }).header.glibcVersionRuntime
      expect(info.glibc).toMatch(/^2\.\d+$/)
      expect(compareVersions(info.glibc!, runtime)).toBeLessThanOrEqual(0)
    }
    expect(describeBinary(info)).toMatch(new RegExp(`^ELF 64-bit ${process.arch}, `))
  })

  it('sees through the doctored copies the tests use', () => {
    expect(inspectBinary(otherCpu()).arch).toBe(ARCH === 'arm64' ? 'x64' : 'arm64')
    if (ABI === 'gnu') expect(inspectBinary(otherLibc()).libc).toBe('musl')
  })

  it('tells other formats and damaged files apart without throwing', () => {
    expect(inspectBinary(Buffer.from([0xcf, 0xfa, 0xed, 0xfe, 0, 0, 0, 0])).format).toBe('mach-o')
    expect(inspectBinary(Buffer.from('MZ\x90\x00')).format).toBe('pe')
    expect(inspectBinary(Buffer.from('hello')).format).toBe('unknown')
    const truncated = inspectBinary(real().subarray(0, 200))
    expect(truncated).toMatchObject({ format: 'elf', arch: process.arch })
    expect(compareVersions('2.17', '2.4')).toBeGreaterThan(0)
    expect(compareVersions('2.34', '2.34.0')).toBe(0)
  })
})
