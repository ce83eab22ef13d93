import type { ReportEntry, ReportModel, Series } from "./model";

/**
 * Renders the incident report as one self-contained HTML file: inline CSS and inline SVG charts,
 * no script and no fetch of anything, so it opens the same from an e-mail attachment or an
 * air-gapped laptop. Every chart element carries its number in a data attribute (and a <title>
 * tooltip), so a reader, a screen reader and a test all see the figures the API returned.
 */

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#4b5563"];

/** HTML-escapes text taken from the log, and shows control and bidirectional-override characters as visible escapes. */
export function esc(s: string): string {
  return s
    .replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, "Z");
const label = (d: Date, bucketMs: number) => (bucketMs >= 86_400_000 ? iso(d).slice(0, 10) : iso(d).slice(5, 16).replace("T", " "));

/** A stacked bar chart: one bar per bucket, one coloured segment per series. */
function stackedBars(id: string, title: string, buckets: Date[], bucketMs: number, series: Series[]): string {
  const W = 960;
  const H = 240;
  const pad = { l: 44, r: 12, t: 12, b: 40 };
  const totals = buckets.map((_, i) => series.reduce((a, s) => a + s.counts[i]!, 0));
  const max = Math.max(1, ...totals);
  const bw = (W - pad.l - pad.r) / buckets.length;
  const y = (v: number) => ((H - pad.t - pad.b) * v) / max;
  const parts: string[] = [];
  for (let t = 0; t <= 4; t++) {
    const v = Math.round((max * t) / 4);
    const yy = H - pad.b - y(v);
    parts.push(`<line x1="${pad.l}" x2="${W - pad.r}" y1="${yy}" y2="${yy}" class="grid"/><text x="${pad.l - 6}" y="${yy + 4}" class="axis" text-anchor="end">${v}</text>`);
  }
  buckets.forEach((b, i) => {
    let base = H - pad.b;
    series.forEach((s, si) => {
      const c = s.counts[i]!;
      if (c === 0) return;
      const h = y(c);
      base -= h;
      parts.push(
        `<rect x="${(pad.l + i * bw + 1).toFixed(1)}" y="${base.toFixed(1)}" width="${Math.max(1, bw - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${PALETTE[si % PALETTE.length]}" data-series="${esc(s.name)}" data-bucket="${iso(b)}" data-count="${c}"><title>${esc(s.name)} ${label(b, bucketMs)}: ${c}</title></rect>`,
      );
    });
    const every = Math.ceil(buckets.length / 12);
    if (i % every === 0) parts.push(`<text x="${pad.l + i * bw + bw / 2}" y="${H - pad.b + 16}" class="axis" text-anchor="middle">${label(b, bucketMs)}</text>`);
  });
  const legend = series
    .map((s, si) => `<li data-series="${esc(s.name)}" data-total="${s.counts.reduce((a, b) => a + b, 0)}"><span class="swatch" style="background:${PALETTE[si % PALETTE.length]}"></span>${esc(s.name)} (${s.counts.reduce((a, b) => a + b, 0)})</li>`)
    .join("");
  return `<figure id="${id}"><figcaption>${esc(title)}</figcaption><svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">${parts.join("")}</svg><ul class="legend">${legend || "<li>none</li>"}</ul></figure>`;
}

function entryTable(id: string, rows: ReportEntry[], empty: string): string {
  if (rows.length === 0) return `<p id="${id}" class="empty" data-rows="0">${esc(empty)}</p>`;
  const body = rows
    .map(
      (e) =>
        `<tr data-sequence="${e.sequence}"><td>${e.sequence}</td><td>${iso(e.time)}</td><td>${esc(e.caller)}</td><td>${esc(e.action)}</td><td>${esc(e.category || "-")}</td><td>${esc(e.purpose || "-")}</td><td>${esc(e.outcome)}</td><td>${esc(e.detail.slice(0, 160))}</td></tr>`,
    )
    .join("");
  return `<table id="${id}" data-rows="${rows.length}"><thead><tr><th>seq</th><th>time</th><th>caller</th><th>action</th><th>category</th><th>purpose</th><th>outcome</th><th>detail</th></tr></thead><tbody>${body}</tbody></table>`;
}

function verifySection(m: ReportModel): string {
  const v = m.verify;
  if (!v) return `<p id="verify" data-ok="unknown">Verify was not run.</p>`;
  if (v.ok)
    return `<p id="verify" class="ok" data-ok="true">Intact: ${v.entriesChecked} entries and ${v.checkpointsChecked} signed checkpoints verified${v.unsealedEntries ? `; ${v.unsealedEntries} entries not yet sealed by a checkpoint` : ""}.</p>`;
  return `<p id="verify" class="broken" data-ok="false">BROKEN at sequence ${v.firstBrokenSequence}: ${esc(v.problem)} — ${esc(v.detail)}</p>`;
}

export function renderReport(m: ReportModel): string {
  const top = m.top.length
    ? `<table id="top" data-rows="${m.top.length}"><thead><tr><th>caller</th><th>category</th><th>purpose</th><th>reveals</th></tr></thead><tbody>${m.top
        .map((r) => `<tr><td>${esc(r.caller)}</td><td>${esc(r.category)}</td><td>${esc(r.purpose)}</td><td data-count="${r.count}">${r.count}</td></tr>`)
        .join("")}</tbody></table>`
    : `<p id="top" class="empty" data-rows="0">No reveals in this range.</p>`;
  const title = `fieldvault incident report ${iso(m.since)} – ${iso(m.until)}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;color:#111827;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.meta{color:#4b5563}figure{margin:0}figcaption{font-weight:600;margin-bottom:4px}svg{width:100%;height:auto;background:#fafafa;border:1px solid #e5e7eb}
.grid{stroke:#e5e7eb}.axis{font-size:11px;fill:#6b7280}.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:12px;margin:6px 0}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #f3f4f6;vertical-align:top;word-break:break-word}
th{background:#f9fafb}.ok{color:#166534;font-weight:600}.broken{color:#b91c1c;font-weight:700}.empty{color:#6b7280}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#4b5563}
</style></head>
<body>
<h1>fieldvault incident report</h1>
<p class="meta">Range ${iso(m.since)} to ${iso(m.until)}${m.by ? `, caller ${esc(m.by)}` : ""}. Generated ${iso(m.generatedAt)} from the AccessLog API. Contains no values: tokens, categories, purposes and outcomes only.</p>
<dl id="summary" data-entries="${m.entries}" data-reveals="${m.reveals}" data-break-glass="${m.breakGlass.length}" data-key-admin="${m.keyAdmin.length}">
<dt>log entries</dt><dd>${m.entries}</dd><dt>reveals</dt><dd>${m.reveals}</dd>
<dt>denied</dt><dd>${m.refusals[0]!.counts.reduce((a, b) => a + b, 0)}</dd><dt>rate limited</dt><dd>${m.refusals[1]!.counts.reduce((a, b) => a + b, 0)}</dd>
<dt>break-glass events</dt><dd>${m.breakGlass.length}</dd><dt>key-admin actions</dt><dd>${m.keyAdmin.length}</dd>
<dt>timeline bucket</dt><dd>${Math.round(m.bucketMs / 60_000)} min</dd></dl>
<h2>Log integrity</h2>
${verifySection(m)}
<h2>Reveals per caller</h2>
${stackedBars("reveals-timeline", "Allowed reveals per caller over time", m.buckets, m.bucketMs, m.revealsByCaller)}
<h2>Denials and rate limits</h2>
${stackedBars("refusals-timeline", "Denied and rate-limited detokenize items over time", m.buckets, m.bucketMs, m.refusals)}
<h2>Top callers × categories × purposes</h2>
${top}
<h2>Break-glass grants and their reveals</h2>
${entryTable("break-glass", m.breakGlass, "No break-glass activity in this range.")}
<h2>Key administration</h2>
${entryTable("key-admin", m.keyAdmin, "No key administration in this range.")}
</body></html>
`;
}
