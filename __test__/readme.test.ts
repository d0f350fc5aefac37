/** The README's usage example runs as written (on both engines). */
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'
import { ENGINES, tempDir } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Run a README code block with its paths turned into temp dirs and the engine chosen. */
function runBlock(block: string, engine: string): { stdout: string; stderr: string; status: number | null } {
  const code = block
    .replace("from 'kestreldb'", `from ${JSON.stringify(`${ROOT}dist/index.js`)}`)
    .replace("'./data'", JSON.stringify(tempDir()))
    .replaceAll("'/backups/today'", JSON.stringify(tempDir('backup')))
    .replace("'./data-restored'", JSON.stringify(tempDir('restored')))
    .replace("engine: 'auto'", `engine: '${engine}'`)
  const withEngine = code.includes(`engine: '${engine}'`) ? code : code.replace(/await open\(("[^"]*")\)/, `await open($1, { engine: '${engine}' })`)
  const js = ts.transpileModule(withEngine, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText
  return spawnSync(process.execPath, ['--input-type=module', '-e', js], { encoding: 'utf8' })
}

describe.each(ENGINES)('README examples [%s]', (engine) => {
  const blocks = [...readFileSync(`${ROOT}README.md`, 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!)

  it('the usage example runs without errors', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(2)
    const r = runBlock(blocks[0]!, engine)
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('Ada')
  })

  it('the secondary-index example runs and prints what it says', () => {
    const block = blocks.find((b) => b.includes('tx.find('))
    expect(block).toBeDefined()
    const r = runBlock(block!, engine)
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(r.stdout.split('\n')).toEqual(['u1 Ada', 'Ada, Bob', 'KESTREL_UNIQUE byEmail u1', ''])
  })

  it('the checkpoint, backup, verify and restore example runs without errors', () => {
    const block = blocks.find((b) => b.includes('db.backup('))
    expect(block).toBeDefined()
    const r = runBlock(block!, engine)
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/\d+n? \d+ true/)
    expect(r.stdout).toContain('pages')
  })
})
