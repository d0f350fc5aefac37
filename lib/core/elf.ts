/**
 * Reads what a native binary was built for: its format and CPU, and for ELF shared objects the
 * libraries it needs (`DT_NEEDED`) and the newest glibc symbol version it asks for. The loader
 * uses it to say *why* a binary failed to load (glibc's own message for a binary of another CPU
 * is "cannot open shared object file: No such file or directory", about a file that is there);
 * `npm run release:pack` uses it to check every artifact it packs.
 */
import { readFileSync } from 'node:fs'

export interface BinaryInfo {
  /** `elf`, `mach-o`, `pe` or `unknown`. */
  format: 'elf' | 'mach-o' | 'pe' | 'unknown'
  /** 32 or 64 (ELF only). */
  bits?: 32 | 64
  /** The CPU as Node names it (`x64`, `arm64`, …) or `machine <n>` for others (ELF only). */
  arch?: string
  /** Shared libraries the object needs, in order (ELF only). */
  needed?: string[]
  /** Which C library the needed libraries point at: `glibc`, `musl` or `none`. */
  libc?: 'glibc' | 'musl' | 'none'
  /** The newest `GLIBC_x.y` symbol version it needs, e.g. `2.17` (glibc builds only). */
  glibc?: string
}

/** ELF `e_machine` values → Node's `process.arch`. */
const MACHINES: Record<number, string> = { 3: 'ia32', 40: 'arm', 62: 'x64', 183: 'arm64', 243: 'riscv64', 21: 'ppc64', 22: 's390x', 258: 'loong64' }

const PT_LOAD = 1
const PT_DYNAMIC = 2
const DT_NEEDED = 1
const DT_STRTAB = 5
const DT_VERNEED = 0x6ffffffe
const DT_VERNEEDNUM = 0x6fffffff

/** Compare dotted versions numerically (`2.17` < `2.4` is false). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number)
  const pb = b.split('.').map(Number)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

/** Describe the binary in `bytes` (the whole file). Never throws: damaged input → what could be read. */
export function inspectBinary(bytes: Uint8Array): BinaryInfo {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.length >= 4 && b.readUInt32BE(0) === 0x7f454c46) return inspectElf(b)
  if (b.length >= 4) {
    const magic = b.readUInt32BE(0)
    if ([0xcffaedfe, 0xcefaedfe, 0xfeedfacf, 0xfeedface, 0xcafebabe].includes(magic)) return { format: 'mach-o' }
    if (b[0] === 0x4d && b[1] === 0x5a) return { format: 'pe' }
  }
  return { format: 'unknown' }
}

/** {@link inspectBinary} of a file; `undefined` when it cannot be read. */
export function inspectBinaryFile(path: string): BinaryInfo | undefined {
  try {
    return inspectBinary(readFileSync(path))
  } catch {
    return undefined
  }
}

function inspectElf(b: Buffer): BinaryInfo {
  const bits = b[4] === 2 ? 64 : b[4] === 1 ? 32 : undefined
  const le = b[5] === 1
  const info: BinaryInfo = { format: 'elf' }
  if (!bits || b.length < 64) return info
  info.bits = bits
  const u16 = (o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o))
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o))
  const addr = (o: number) => (bits === 64 ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)) : u32(o))
  const machine = u16(18)
  info.arch = MACHINES[machine] ?? `machine ${machine}`
  if (bits !== 64) return info
  try {
    const phoff = addr(32)
    const phentsize = u16(54)
    const phnum = u16(56)
    const loads: Array<{ vaddr: number; offset: number; filesz: number }> = []
    let dynamic: { offset: number; size: number } | undefined
    for (let i = 0; i < phnum; i++) {
      const p = phoff + i * phentsize
      const type = u32(p)
      if (type === PT_LOAD) loads.push({ offset: addr(p + 8), vaddr: addr(p + 16), filesz: addr(p + 32) })
      else if (type === PT_DYNAMIC) dynamic = { offset: addr(p + 8), size: addr(p + 32) }
    }
    if (!dynamic) return { ...info, needed: [], libc: 'none' }
    /** A virtual address → its offset in the file. */
    const fileOffset = (vaddr: number): number => {
      const seg = loads.find((s) => vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz)
      if (!seg) throw new Error('address outside the loaded segments')
      return vaddr - seg.vaddr + seg.offset
    }
    const neededAt: number[] = []
    let strtab = -1
    let verneed = -1
    let verneedNum = 0
    for (let p = dynamic.offset; p + 16 <= dynamic.offset + dynamic.size; p += 16) {
      const tag = addr(p)
      const val = addr(p + 8)
      if (tag === 0) break
      if (tag === DT_NEEDED) neededAt.push(val)
      else if (tag === DT_STRTAB) strtab = fileOffset(val)
      else if (tag === DT_VERNEED) verneed = fileOffset(val)
      else if (tag === DT_VERNEEDNUM) verneedNum = val
    }
    if (strtab < 0) return info
    const str = (off: number): string => {
      const start = strtab + off
      const end = b.indexOf(0, start)
      return b.toString('latin1', start, end < 0 ? b.length : end)
    }
    info.needed = neededAt.map(str)
    const musl = info.needed.some((n) => n === 'libc.so' || n.startsWith('libc.musl-') || n.startsWith('ld-musl-'))
    const glibc = info.needed.some((n) => n === 'libc.so.6')
    info.libc = musl ? 'musl' : glibc ? 'glibc' : 'none'
    // Version needs: Elf64_Verneed {u16 version, u16 cnt, u32 file, u32 aux, u32 next},
    // Elf64_Vernaux {u32 hash, u16 flags, u16 other, u32 name, u32 next}.
    let newest: string | undefined
    for (let i = 0, vn = verneed; verneed >= 0 && i < verneedNum; i++) {
      const cnt = u16(vn + 2)
      for (let j = 0, va = vn + u32(vn + 8); j < cnt; j++) {
        const name = str(u32(va + 8))
        const m = /^GLIBC_(\d+(?:\.\d+)+)$/.exec(name)
        if (m && (!newest || compareVersions(m[1]!, newest) > 0)) newest = m[1]!
        const next = u32(va + 12)
        if (!next) break
        va += next
      }
      const next = u32(vn + 12)
      if (!next) break
      vn += next
    }
    if (newest) info.glibc = newest
  } catch {
    // A damaged or unusual file: report what was read before the damage.
  }
  return info
}

/** One line describing `info`, e.g. `ELF 64-bit arm64, glibc >= 2.17, needs libc.so.6, libdl.so.2`. */
export function describeBinary(info: BinaryInfo): string {
  if (info.format === 'mach-o') return 'a Mach-O (macOS) binary'
  if (info.format === 'pe') return 'a PE (Windows) binary'
  if (info.format === 'unknown') return 'not a native binary (no ELF, Mach-O or PE header)'
  const parts = [`ELF ${info.bits ?? '?'}-bit ${info.arch ?? '?'}`]
  if (info.libc === 'musl') parts.push('musl libc')
  if (info.libc === 'glibc') parts.push(info.glibc ? `glibc >= ${info.glibc}` : 'glibc')
  if (info.needed) parts.push(`needs ${info.needed.join(', ') || 'nothing'}`)
  return parts.join(', ')
}
