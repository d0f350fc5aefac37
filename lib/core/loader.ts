/**
 * Finds and loads the native binding, in the napi-rs layout: the binary `kestrel.<platform>.node`
 * is either built in a clone (`native/`, by `npm run build:native`) or comes from the platform
 * package `kestreldb-<platform>` that npm installs as an optional dependency of `kestreldb`
 * (`npm/<platform>/` in this repository). Nothing here knows the binding's API.
 *
 * Order: `KESTREL_NATIVE_BINDING` (a path to load instead of searching, for tests and unusual
 * installs), then `native/kestrel.<platform>.node`, then the platform package. A platform package
 * of another version than this package is refused (the binding and the TypeScript side change
 * together); a binary that fails to load (another CPU, another libc, a newer glibc, a damaged
 * file) is reported with what it was built for. Every failure is `KESTREL_NATIVE_UNAVAILABLE`.
 */
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { KestrelError } from '../errors.js'
import { compareVersions, describeBinary, inspectBinaryFile } from './elf.js'

/** `napi.binaryName` in package.json. */
export const BINARY_NAME = 'kestrel'

/**
 * The package root: this file is `lib/core/loader.ts` in a clone (run by vitest) and
 * `dist/core/loader.js` in the build and in an installed package.
 */
const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** Where to look, and for what (the defaults describe this process and this package). */
export interface LoaderContext {
  /** The kestreldb package root (holds package.json and, in a clone, native/). */
  root: string
  /** The napi-rs platform suffix, e.g. `linux-x64-gnu`. */
  platform: string
  /** A path to load instead of searching (`KESTREL_NATIVE_BINDING`; relative to the working directory). */
  override?: string | undefined
}

/** What was loaded, and from where. */
export interface LoadedBinding {
  binding: Record<string, unknown>
  /** The file the binding came from. */
  path: string
  /** `override`, `clone` (native/) or `package` (kestreldb-<platform>). */
  source: 'override' | 'clone' | 'package'
}

/**
 * The C library this process runs on, from the libraries it has mapped (`ld-musl-*`,
 * `libc.musl-*` or an unversioned `libc.so` are musl; `libc.so.6` is glibc): what the process
 * really uses, also where /usr/bin/ldd belongs to another libc than the running node.
 */
export function libcOfProcess(maps?: string): 'musl' | 'glibc' | undefined {
  try {
    maps ??= readFileSync('/proc/self/maps', 'utf8')
  } catch {
    return undefined
  }
  let glibc = false
  for (const line of maps.split('\n')) {
    const slash = line.lastIndexOf('/')
    if (slash < 0) continue
    const base = line.slice(slash + 1)
    if (base.startsWith('ld-musl-') || base.startsWith('libc.musl-') || base === 'libc.so') return 'musl'
    if (base === 'libc.so.6' || /^libc-2\.\d+\.so$/.test(base)) glibc = true
  }
  return glibc ? 'glibc' : undefined
}

/** Is this Linux's C library musl? The mapped libraries, else what napi-rs's loaders check (ldd, then the process report). */
function isMusl(): boolean {
  const mapped = libcOfProcess()
  if (mapped) return mapped === 'musl'
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    return !glibcRuntime()
  }
}

/** The running glibc's version (`2.36`), or undefined (musl, not Linux). */
function glibcRuntime(): string | undefined {
  if (process.platform !== 'linux' || !process.report) return undefined
  // Without excludeNetwork a report resolves the host's network interfaces (slow where DNS is);
  // the user's own setting is put back.
  const settings = process.report as { excludeNetwork?: boolean }
  const before = settings.excludeNetwork
  settings.excludeNetwork = true
  let report: { header?: { glibcVersionRuntime?: string } }
  try {
    report = process.report.getReport() as typeof report
  } finally {
    settings.excludeNetwork = before
  }
  return report.header?.glibcVersionRuntime
}

/** The napi-rs platform suffix of this machine, e.g. `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`. */
export function platformTriple(): string {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** Rust target triple → napi-rs platform suffix, for the targets kestreldb lists. */
export function platformOfTarget(target: string): string {
  const [cpu, , os, abi] = target.split('-')
  const arch = ({ x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' } as Record<string, string>)[cpu!] ?? cpu!
  if (target.includes('apple-darwin')) return `darwin-${arch}`
  if (target.includes('windows')) return `win32-${arch}-${target.split('-').pop()}`
  return `${os}-${arch}${abi ? `-${abi}` : ''}`
}

interface Manifest {
  name?: string
  version?: string
  main?: string
  napi?: { targets?: string[] }
}

function readManifest(path: string): Manifest {
  return JSON.parse(readFileSync(path, 'utf8')) as Manifest
}

/** Why the binary at `path` does not load here, beyond the dynamic loader's own message. */
function diagnose(path: string): string | undefined {
  const info = inspectBinaryFile(path)
  if (!info) return undefined
  const what = describeBinary(info)
  const expected = process.platform === 'darwin' ? 'mach-o' : process.platform === 'win32' ? 'pe' : 'elf'
  if (info.format !== expected) return `the file is ${what}, not a binary for ${process.platform}`
  if (info.format !== 'elf') return undefined
  if (info.arch !== process.arch) return `the file is built for ${info.arch} (${what}) but this process runs on ${process.arch}`
  if (process.platform === 'linux') {
    const runtime = glibcRuntime()
    if (info.libc === 'musl' && runtime) return `the file is built for musl libc (${what}) but this system's C library is glibc ${runtime}`
    if (info.libc === 'glibc' && !runtime) return `the file is built for glibc (${what}) but this system's C library is musl`
    if (info.libc === 'glibc' && runtime && info.glibc && compareVersions(info.glibc, runtime) > 0) {
      return `the file needs glibc ${info.glibc} or newer (${what}) but this system has glibc ${runtime}`
    }
  }
  return undefined
}

/** `require` a .node file; a failure says what the file is built for when that is the reason. */
function loadFile(require: NodeJS.Require, path: string): Record<string, unknown> {
  let binding: unknown
  try {
    binding = require(path)
  } catch (err) {
    const why = diagnose(path)
    const first = (err as Error).message.split('\n')[0]
    throw new Error(why ? `${why} (${first})` : first, { cause: err })
  }
  if (!binding || typeof (binding as { NativeEngine?: { open?: unknown } }).NativeEngine?.open !== 'function') {
    throw new Error(`${path} loaded but does not export NativeEngine.open: it is not a kestreldb binding of this version`)
  }
  return binding as Record<string, unknown>
}

/**
 * Find and load the binding for `ctx`, or throw `KESTREL_NATIVE_UNAVAILABLE` saying what was
 * tried, why each attempt failed and what to do. Not cached: see {@link loadNative}.
 */
export function loadBinding(given: LoaderContext): LoadedBinding {
  // Relative paths are the caller's (the working directory's), like any path a user gives.
  const ctx = { ...given, root: resolve(given.root), override: given.override && resolve(given.override) }
  const require = createRequire(join(ctx.root, 'package.json'))
  const self = readManifest(join(ctx.root, 'package.json'))
  const name = self.name ?? 'kestreldb'
  const version = self.version ?? '0.0.0'
  const pkg = `${name}-${ctx.platform}`
  const file = `${BINARY_NAME}.${ctx.platform}.node`
  const tried: string[] = []
  const causes: unknown[] = []
  let mismatch: string | undefined
  let broken = false

  if (ctx.override) {
    try {
      return { binding: loadFile(require, ctx.override), path: ctx.override, source: 'override' }
    } catch (err) {
      throw unavailable(`KESTREL_NATIVE_BINDING=${ctx.override} could not be loaded: ${(err as Error).message}`, [err], pkg, version, ctx)
    }
  }

  const local = join(ctx.root, 'native', file)
  if (existsSync(local)) {
    try {
      return { binding: loadFile(require, local), path: local, source: 'clone' }
    } catch (err) {
      tried.push(`native/${file} (built in this clone) failed to load: ${(err as Error).message}`)
      causes.push(err)
    }
  }

  let manifestPath: string | undefined
  try {
    manifestPath = require.resolve(`${pkg}/package.json`)
  } catch (err) {
    const supported = (self.napi?.targets ?? []).map(platformOfTarget)
    tried.push(
      supported.length > 0 && !supported.includes(ctx.platform)
        ? `${name} has no prebuilt binary for ${ctx.platform} (prebuilt: ${supported.join(', ')})`
        : `the package ${pkg} is not installed`,
    )
    causes.push(err)
  }
  if (manifestPath) {
    const manifest = readManifest(manifestPath)
    const path = join(dirname(manifestPath), manifest.main ?? file)
    if (manifest.version !== version) {
      mismatch = String(manifest.version)
      tried.push(`${pkg} is version ${manifest.version} but ${name} is version ${version}; they must be the same version`)
    } else {
      try {
        return { binding: loadFile(require, path), path, source: 'package' }
      } catch (err) {
        tried.push(`${pkg}@${manifest.version} is installed but ${path} failed to load: ${(err as Error).message}`)
        causes.push(err)
        broken = true
      }
    }
  }
  throw unavailable(tried.join('; '), causes, pkg, version, ctx, mismatch, broken)
}

function unavailable(why: string, causes: unknown[], pkg: string, version: string, ctx: LoaderContext, mismatch?: string, broken = false): KestrelError {
  const main = pkg.slice(0, -ctx.platform.length - 1)
  const fix =
    mismatch !== undefined
      ? `reinstall so that both are ${version} (\`npm install ${main}@${version}\` brings ${pkg}@${version} as its optional dependency; remove any direct dependency on ${pkg}@${mismatch})`
      : broken
        ? `reinstall ${pkg} on this machine (\`rm -rf node_modules/${pkg} && npm install\`; a node_modules copied from another machine holds that machine's binary)`
        : `install ${pkg}@${version} (\`npm install ${main}\` brings it as an optional dependency unless optional dependencies are omitted)`
  return new KestrelError(
    'KESTREL_NATIVE_UNAVAILABLE',
    `the native engine is not available for ${ctx.platform}: ${why}. To fix: ${fix}, ` +
      `or in a clone build it with \`npm run build:native\` (needs Rust), or open with { engine: 'ts' } (same on-disk format).`,
    { cause: causes.length === 1 ? causes[0] : causes.length > 1 ? new AggregateError(causes, why) : undefined },
  )
}

let cached: { loaded?: LoadedBinding; error?: KestrelError } | undefined

/** The binding of this process, loaded once (the failure is remembered too). */
export function loadNative(): LoadedBinding {
  if (!cached) {
    try {
      cached = { loaded: loadBinding({ root: PACKAGE_ROOT, platform: platformTriple(), override: process.env.KESTREL_NATIVE_BINDING || undefined }) }
    } catch (err) {
      cached = { error: err as KestrelError }
    }
  }
  if (cached.error) throw cached.error
  return cached.loaded!
}

/** Is the native binary loadable here? */
export function nativeAvailable(): boolean {
  try {
    loadNative()
    return true
  } catch {
    return false
  }
}
