/** `require()` of kestreldb's ES modules from its CommonJS entries, with a clear failure on old Node. */

/** Node.js versions whose `require()` loads ES modules without a flag. */
export const REQUIRE_ESM_NODE = '20.19+ or 22.12+'

/** Run `load` (a `require` of an ES module); on a Node.js that cannot, say what to do instead. */
export function requireEsm<T>(load: () => T, specifier: string): T {
  try {
    return load()
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_REQUIRE_ESM') throw err
    const e = new Error(
      `${specifier} is an ES module, and require('${specifier}') needs a Node.js that can require() ES modules ` +
        `(Node.js ${REQUIRE_ESM_NODE}, without --no-experimental-require-module); this is ${process.version}. ` +
        `Use \`const { open } = await import('${specifier}')\` from CommonJS, or upgrade Node.js.`,
      { cause: err },
    ) as Error & { code: string }
    e.code = 'ERR_REQUIRE_ESM'
    throw e
  }
}
