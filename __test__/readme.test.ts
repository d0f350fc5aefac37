/** The README's usage example runs as written (on both engines). */
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'
import { ENGINES, tempDir } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

describe.each(ENGINES)('README example [%s]', (engine) => {
  it('runs without errors', () => {
    const readme = readFileSync(`${ROOT}README.md`, 'utf8')
    const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1]
    expect(block).toBeDefined()
    const code = block!
      .replace("from 'kestreldb'", `from ${JSON.stringify(`${ROOT}dist/index.js`)}`)
      .replace("'./data'", JSON.stringify(tempDir()))
      .replace("engine: 'auto'", `engine: '${engine}'`)
    const js = ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', js], { encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('Ada')
  })
})
