// The workloads, in report order. Each module exports a default descriptor:
//   id, aliases   what `--workload` accepts (case-insensitive); results go to results/<id>.json
//   title         the RESULTS.md section heading
//   cell(opts)    child side: one contestant × parameter, returns a JSON-able result
//   run(ctx)      parent side: runs its cells through ctx.cell(...), returns the raw results
//   render(raw)   → { lines, goals }: the Markdown section and its lines for the Goals section
//   charts(raw)   optional → [{ file, svg }]: SVG files next to RESULTS.md
// A new workload is one more module here.
import w1 from './w1.js'
import reads from './reads.js'
import w2cold from './w2cold.js'
import w3 from './w3.js'
import w4 from './w4.js'
import w6 from './w6.js'
import w7 from './w7.js'
import w8 from './w8.js'
import w9 from './w9.js'
import saver from './saver.js'
import wp from './wp.js'
import wpg from './wpg.js'

export const WORKLOADS = [w1, reads, w2cold, w3, w4, w6, w7, w8, w9, saver, wp, wpg]

export const byId = (id) => WORKLOADS.find((w) => w.id === id)

/** The workloads a list of names selects (W2 and W5 share one module), or throws naming the unknown one. */
export function select(names) {
  const picked = new Set()
  for (const name of names) {
    const w = WORKLOADS.find((x) => x.aliases.includes(name.trim().toUpperCase()))
    if (!w) throw new Error(`unknown workload '${name}' (known: ${WORKLOADS.flatMap((x) => x.aliases).join(', ')})`)
    picked.add(w)
  }
  return WORKLOADS.filter((w) => picked.has(w))
}
