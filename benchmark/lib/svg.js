// A small hand-written SVG (no charting dependency): grouped bars on a log scale, optional
// dashed reference lines (e.g. the disk's fdatasync limit), values printed on the bars because
// a chart embedded in Markdown has no hover.
const COLORS = {
  'kestrel-native': '#d9480f',
  'kestrel-ts': '#f59f00',
  lmdb: '#1c7ed6',
  'better-sqlite3': '#2f9e44',
  'classic-level': '#7048e8',
  'js-map': '#495057',
}
const esc = (s) => String(s).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
const short = (v) => (v >= 1e6 ? `${(v / 1e6).toFixed(1)}M` : v >= 1e4 ? `${Math.round(v / 1e3)}k` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : `${Math.round(v)}`)

export function barChart({ title, groups, series, value, unit, references = [] }) {
  const width = 800
  const height = 390 + 18 * Math.max(1, references.length)
  const left = 80
  const right = 20
  const top = 50
  const bottom = 60 + 18 * Math.max(1, references.length)
  const plotH = height - top - bottom
  const values = [...groups.flatMap((g) => series.map((s) => value(g, s))), ...references.map((r) => r.value)].filter((v) => v > 0)
  const maxLog = Math.ceil(Math.log10(Math.max(...values, 10)) + 0.15)
  const minLog = Math.min(maxLog - 1, Math.floor(Math.log10(Math.max(1, Math.min(...values, 1e12)))))
  const y = (v) => top + plotH - ((Math.log10(Math.max(v, 10 ** minLog)) - minLog) / (maxLog - minLog)) * plotH
  const groupW = (width - left - right) / groups.length
  const barW = Math.min(28, (groupW - 24) / series.length)
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    '<rect width="100%" height="100%" fill="white"/>',
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
  ]
  for (let p = minLog; p <= maxLog; p++) {
    parts.push(
      `<line x1="${left}" x2="${width - right}" y1="${y(10 ** p)}" y2="${y(10 ** p)}" stroke="#e0e0e0"/>`,
      `<text x="${left - 6}" y="${y(10 ** p) + 4}" text-anchor="end">${(10 ** p).toLocaleString('en-US')}</text>`,
    )
  }
  parts.push(`<text x="16" y="${top + plotH / 2}" transform="rotate(-90 16 ${top + plotH / 2})" text-anchor="middle">${esc(unit)} (log scale)</text>`)
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupW + (groupW - barW * series.length) / 2
    series.forEach((s, si) => {
      const v = value(g, s)
      if (!(v > 0)) return
      const x = x0 + si * barW
      parts.push(
        `<rect x="${x}" y="${y(v)}" width="${barW - 3}" height="${top + plotH - y(v)}" fill="${COLORS[s] ?? '#868e96'}"><title>${esc(`${s}, ${g}: ${Math.round(v).toLocaleString('en-US')} ${unit}`)}</title></rect>`,
        `<text x="${x + (barW - 3) / 2}" y="${y(v) - 3}" text-anchor="middle" font-size="9">${short(v)}</text>`,
      )
    })
    parts.push(`<text x="${left + gi * groupW + groupW / 2}" y="${top + plotH + 18}" text-anchor="middle">${esc(g)}</text>`)
  })
  // Reference lines are labelled in the legend, not on the plot, where they would cross bars.
  const legendY = top + plotH + 40
  references.forEach((r, ri) => {
    const ly = legendY + 18 * (ri + 1)
    parts.push(
      `<line x1="${left}" x2="${width - right}" y1="${y(r.value)}" y2="${y(r.value)}" stroke="#c92a2a" stroke-dasharray="6 4"/>`,
      `<line x1="${left}" x2="${left + 24}" y1="${ly - 4}" y2="${ly - 4}" stroke="#c92a2a" stroke-dasharray="6 4"/>`,
      `<text x="${left + 30}" y="${ly}" fill="#c92a2a">${esc(`${r.label}: ${Math.round(r.value).toLocaleString('en-US')} ${unit}`)}</text>`,
    )
  })
  const legendW = (width - left - right) / Math.max(series.length, 1)
  series.forEach((s, si) => {
    const lx = left + si * legendW
    parts.push(
      `<rect x="${lx}" y="${legendY - 10}" width="12" height="12" fill="${COLORS[s] ?? '#868e96'}"/>`,
      `<text x="${lx + 16}" y="${legendY}">${esc(s)}</text>`,
    )
  })
  parts.push('</svg>', '')
  return parts.join('\n')
}
