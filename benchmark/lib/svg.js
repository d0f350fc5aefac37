// A small hand-written SVG: grouped bars of throughput by concurrency, log scale.
const COLORS = { 'kestrel-native': '#d9480f', 'kestrel-ts': '#f59f00', lmdb: '#1c7ed6', 'better-sqlite3': '#2f9e44', 'classic-level': '#7048e8' }

export function barChart({ title, groups, series, value, unit }) {
  const width = 760
  const height = 360
  const left = 70
  const bottom = 60
  const top = 40
  const plotH = height - top - bottom
  const values = groups.flatMap((g) => series.map((s) => value(g, s))).filter((v) => v > 0)
  const maxLog = Math.ceil(Math.log10(Math.max(...values, 10)))
  const minLog = Math.floor(Math.log10(Math.max(1, Math.min(...values, 10))))
  const y = (v) => top + plotH - ((Math.log10(Math.max(v, 10 ** minLog)) - minLog) / (maxLog - minLog)) * plotH
  const groupW = (width - left - 20) / groups.length
  const barW = Math.min(24, (groupW - 20) / series.length)
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`, `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`]
  for (let p = minLog; p <= maxLog; p++) {
    parts.push(`<line x1="${left}" x2="${width - 20}" y1="${y(10 ** p)}" y2="${y(10 ** p)}" stroke="#ddd"/>`,
      `<text x="${left - 6}" y="${y(10 ** p) + 4}" text-anchor="end">${(10 ** p).toLocaleString('en-US')}</text>`)
  }
  parts.push(`<text x="14" y="${top + plotH / 2}" transform="rotate(-90 14 ${top + plotH / 2})" text-anchor="middle">${unit} (log)</text>`)
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupW + (groupW - barW * series.length) / 2
    series.forEach((s, si) => {
      const v = value(g, s)
      if (!(v > 0)) return
      parts.push(`<rect x="${x0 + si * barW}" y="${y(v)}" width="${barW - 2}" height="${top + plotH - y(v)}" fill="${COLORS[s] ?? '#868e96'}"><title>${s} ${g}: ${Math.round(v)}</title></rect>`)
    })
    parts.push(`<text x="${left + gi * groupW + groupW / 2}" y="${top + plotH + 18}" text-anchor="middle">${g}</text>`)
  })
  series.forEach((s, si) => {
    const lx = left + si * 130
    parts.push(`<rect x="${lx}" y="${height - 22}" width="12" height="12" fill="${COLORS[s] ?? '#868e96'}"/>`, `<text x="${lx + 16}" y="${height - 12}">${s}</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n')
}
