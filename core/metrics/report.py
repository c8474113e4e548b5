"""Offline report: one self-contained HTML dashboard (plotly.js inlined), a CSV of every image, a JSON summary.

Safety: every user string (file names, group labels) reaches the page only as JSON inside a non-executed
``<script type="application/json">`` block (``<``, ``>``, ``&`` escaped as ``\\u003c``...), or HTML-escaped in
server-rendered tables; the page's own script writes it with ``textContent`` (never ``innerHTML``) and
HTML-escapes it once more for plotly labels (plotly decodes entities and renders a few tags). A
Content-Security-Policy with a per-report nonce forbids any other script, inline event handlers and every network
request, so the report opens with zero requests even if something slipped through.
"""

from __future__ import annotations

import csv
import html
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from .copycat import BAND_COLORS, BAND_HELP
from .results import CSV_FIELDS, MetricsResult
from .thumbs import THUMB_BYTES, thumb_order, thumbnail

# Row columns the page never reads (still in the CSV): paths stay out of a report that may be shared.
CSV_ONLY = ("path", "bbox", "index", "n_faces", "image_width", "image_height", "face_area_fraction", "roll",
            "pose_confidence", "drift", "locked", "rescue")  # fmt: skip
PANELS = [
    ("similarity", "1. Face similarity per group"),
    ("age", "2. Age distribution"),
    ("ratio", "3. Face ratio"),
    ("confidence", "4. Detection confidence"),
    ("profile", "5. Profile stability (similarity vs |yaw|)"),
    ("pose", "6. Pose variety (yaw vs pitch; size = similarity)"),
    ("tsne", "7. Identity map (t-SNE)"),
]


def json_for_script(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (cannot close the tag or start HTML)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# -- writers -------------------------------------------------------------------------------------------------
def write_csv(result: MetricsResult, path: str | os.PathLike) -> Path:
    """Every image (failed detections and unreadable files included), one row each."""
    from ..fileio import atomic_write

    path = Path(path)
    with atomic_write(path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in result.rows:
            d = r.to_dict()
            if d.get("bbox") is not None:
                d["bbox"] = " ".join(str(x) for x in d["bbox"])
            w.writerow({k: "" if v is None else v for k, v in d.items()})
    return path


def write_json(result: MetricsResult, path: str | os.PathLike, extra: dict | None = None) -> Path:
    from ..fileio import write_text_atomic

    path = Path(path)
    data = _clean({**result.summary_dict(), **(extra or {})})
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False))
    return path


def dashboard_data(
    result: MetricsResult, thumbnails: bool = True, thumb_bytes: int = THUMB_BYTES
) -> dict[str, Any]:
    """The JSON the dashboard script renders (no embeddings; thumbnails as data: URIs).

    Thumbnails stop at ``thumb_bytes`` of data: URIs in priority order (:func:`.thumbs.thumb_order`), and the columns
    the page never reads stay in the CSV only, so a 10,000-image report stays under 20 MB.
    """
    thumbs: dict[int, str | None] = {}
    if thumbnails:
        used = 0
        for i in thumb_order(result):
            if used >= thumb_bytes:
                break
            r = result.rows[i]
            thumbs[i] = thumbnail(r.pixels, r.path, r.bbox)
            used += len(thumbs[i] or "")
    rows = []
    ref_thumb: dict[str, str | None] = {}
    for i, r in enumerate(result.rows):
        d = r.to_dict()
        for key in CSV_ONLY:  # local paths stay out of a report that may be shared; the rest is unused
            d.pop(key, None)
        d["thumb"] = thumbs.get(i)
        if r.kind == "reference" and r.embedding is not None:
            ref_thumb[r.name] = d["thumb"]
        rows.append(d)
    n_faces = sum(r.embedding is not None for r in result.rows)
    n_map = sum(r.tsne_x is not None for r in result.rows)
    return _clean(
        {
            "backend": result.backend,
            "model": result.model,
            "lock_threshold": result.lock_threshold,
            "bands": list(result.bands),
            "band_colors": BAND_COLORS,
            "band_help": BAND_HELP,
            "face_ratio_metric": result.face_ratio_metric,
            "groups": [g.to_dict() for g in result.groups.values()],
            "rows": rows,
            "ref_thumbs": ref_thumb,
            "black_holes": [b.to_dict() for b in result.black_holes],
            "tsne_note": f"seeded sample of {n_map} of {n_faces} faces" if 0 < n_map < n_faces else "",
            "thumbs_left_out": sum(1 for i in range(len(result.rows)) if thumbs.get(i) is None)
            if thumbnails
            else 0,
        }
    )


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(ci) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _tables(result: MetricsResult) -> str:
    """Server-rendered summary tables; every user string goes through html.escape."""
    e = html.escape
    out = ['<table class="stats"><thead><tr>']
    heads = [
        "group",
        "images",
        "faces",
        "failed",
        "rescued",
        "median similarity [95% CI]",
        "mean [95% CI]",
        "mean to single photos",
        "sd",
        "locked [95% CI]",
        "yaw sd",
        "pitch sd",
        "face size sd",
        "flexibility vs ref",
        "bands low/ok/watch/danger",
    ]
    out.append("".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>")
    for g in result.groups.values():
        bc = g.band_counts
        lock = "n/a" if g.lock_rate is None else f"{100 * g.lock_rate:.0f}%"
        if g.lock_rate_ci:
            lock += f" [{100 * g.lock_rate_ci[0]:.0f}, {100 * g.lock_rate_ci[1]:.0f}]"
        cells = [
            e(g.name) + (' <span class="warn">overtraining?</span>' if g.overtraining else ""),
            str(g.n),
            str(g.n_face),
            str(g.n_failed + g.n_errors),
            str(g.n_rescued),
            _fmt(g.median) + _ci(g.median_ci),
            _fmt(g.mean) + _ci(g.mean_ci),
            _fmt(g.single_ref_mean),
            _fmt(g.std, 4),
            lock,
            _fmt(g.yaw_std, 1),
            _fmt(g.pitch_std, 1),
            _fmt(g.face_fraction_std, 3),
            _fmt(g.flexibility_vs_reference, 2),
            f"{bc.get('low', 0)}/{bc.get('ok', 0)}/{bc.get('watch', 0)}/{bc.get('danger', 0)}",
        ]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    if result.comparisons:
        out.append("<h3>Which group is really better? (two-sided Mann-Whitney U, Holm-corrected)</h3>")
        out.append(
            '<table class="stats"><thead><tr><th>A</th><th>B</th><th>median A - B [95% CI]</th><th>p</th>'
            "<th>p (Holm)</th><th>Cliff's delta</th><th>verdict</th></tr></thead><tbody>"
        )
        for c in result.comparisons:
            cls = "sig" if c.significant else "nosig"
            out.append(
                f'<tr class="{cls}"><td>{e(c.a)}</td><td>{e(c.b)}</td><td>{c.median_diff:+.4f}'
                f"{_ci(c.median_diff_ci)}</td><td>{c.p_value:.3g}</td><td>{c.p_holm:.3g}</td>"
                f"<td>{c.cliffs_delta:+.2f} ({e(c.effect)})</td><td>{e(c.verdict)}</td></tr>"
            )
        out.append("</tbody></table>")
    if result.warnings:
        out.append('<h3>Warnings</h3><ul class="warnings">')
        out.extend(f"<li>{e(w)}</li>" for w in result.warnings)
        out.append("</ul>")
    return "\n".join(out)


_CSS = """
body{background:#15171c;color:#e6e6e6;font:14px/1.4 system-ui,sans-serif;margin:0;padding:0 16px 40px}
h1{font-size:22px;margin:16px 0 4px} h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #333}
h3{font-size:15px;margin:16px 0 6px} .muted{color:#999}
table.stats{border-collapse:collapse;font-size:12.5px;margin:6px 0}
table.stats td,table.stats th{border:1px solid #333;padding:3px 6px;text-align:left;vertical-align:top}
table.stats th{background:#222} tr.sig td{background:#1d2b1f} .warn{color:#f0b429;font-weight:600}
ul.warnings li{color:#f0b429}
#toggles{position:sticky;top:0;z-index:10;background:#1d2027ee;padding:6px 10px;border:1px solid #333;
 border-radius:6px;margin:10px 0;display:flex;flex-wrap:wrap;gap:10px;align-items:center}
#toggles label{cursor:pointer;white-space:nowrap} .swatch{display:inline-block;width:10px;height:10px;
 border-radius:2px;margin-right:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(640px,1fr));gap:12px}
.panel{background:#1b1e24;border:1px solid #2c2f36;border-radius:6px;padding:4px;min-height:380px}
.controls{display:flex;gap:10px;flex-wrap:wrap;margin:6px 0 10px} select,input,button{background:#23262d;
 color:#e6e6e6;border:1px solid #444;border-radius:4px;padding:3px 6px}
#cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:8px}
.card{background:#1b1e24;border:3px solid #444;border-radius:6px;padding:6px;font-size:12px}
.card .pair{display:flex;gap:4px}.card .pair div{flex:1;text-align:center}
.card img{width:112px;height:112px;object-fit:cover;border-radius:3px;background:#000}
.card .ph{width:112px;height:112px;display:inline-flex;align-items:center;justify-content:center;
 background:#2a2d33;color:#f0b429;border-radius:3px;font-size:11px;padding:4px;box-sizing:border-box}
.card .name{overflow-wrap:anywhere} .band{font-weight:700}
#holes td img{width:48px;height:48px;object-fit:cover}
"""


def _script() -> str:
    return r"""
(function(){
'use strict';
const D = JSON.parse(document.getElementById('il-data').textContent);
const esc = s => String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;')
  .replace(/"/g,'&quot;').replace(/'/g,'&#39;');
const PALETTE = ['#b07cff','#4fc3f7','#ff8a65','#81c784','#f06292','#ffd54f','#4db6ac','#9575cd','#e57373','#aed581'];
const groups = D.groups.map(g => g.name);
const color = {}; groups.forEach((g,i) => color[g] = PALETTE[i % PALETTE.length]);
const rowsOf = g => D.rows.filter(r => r.group === g);
const faces = g => rowsOf(g).filter(r => r.similarity !== null);
const visible = {}; groups.forEach(g => visible[g] = true);
const layoutBase = (title, x, y) => ({title:{text:title,font:{size:14}}, paper_bgcolor:'#1b1e24',
  plot_bgcolor:'#1b1e24', font:{color:'#ddd',size:11}, margin:{l:55,r:15,t:40,b:45}, height:380,
  xaxis:{title:{text:x},gridcolor:'#333',zerolinecolor:'#444'}, yaxis:{title:{text:y},gridcolor:'#333',
  zerolinecolor:'#444'}, legend:{orientation:'h', y:1.12, x:0}, showlegend:true});
const cfg = {displaylogo:false, responsive:true, modeBarButtonsToRemove:['sendDataToCloud']};
const hover = r => esc(r.name) + '<br>' + esc(r.group) + (r.similarity!==null ? '<br>similarity ' +
  r.similarity.toFixed(4) : '');
function boxTraces(key, kind){
  return groups.map((g,i) => { const fs = faces(g).filter(r => r[key] !== null);
    const t = {type:kind, name:esc(g), meta:i, y:fs.map(r => r[key]), text:fs.map(hover), hoverinfo:'y+text',
      marker:{color:color[g]}, line:{color:color[g]}};
    t.showlegend = false;
    if (kind === 'box') { t.boxpoints = 'all'; t.jitter = 0.4; t.pointpos = 0; }
    else { t.points = 'all'; t.box = {visible:true}; t.meanline = {visible:true}; }
    return t; });
}
function scatterTraces(fx, fy, size){
  return groups.map((g,i) => { const fs = faces(g).filter(r => fx(r) !== null && fy(r) !== null);
    const m = {color:color[g], opacity:0.8, size:8, line:{width:0.5,color:'#000'}};
    if (size) { m.size = fs.map(size); }
    return {type:'scatter', mode:'markers', name:esc(g), meta:i, x:fs.map(fx), y:fs.map(fy),
      text:fs.map(hover), hoverinfo:'x+y+text', marker:m}; });
}
const lock = 1 - D.lock_threshold;
const sims = D.rows.filter(r => r.similarity !== null).map(r => r.similarity);
const smin = Math.min(...sims, lock), smax = Math.max(...sims, lock);
const sizeOf = r => 6 + 22 * (smax > smin ? (r.similarity - smin) / (smax - smin) : 0.5);
const panels = {
  similarity: () => { const L = layoutBase('', '', 'cosine similarity to reference centroid');
    L.shapes = [{type:'line', xref:'paper', x0:0, x1:1, y0:lock, y1:lock, line:{color:'#e57373',dash:'dot'}}];
    L.annotations = [{xref:'paper', x:1, y:lock, text:'lock (drift ' + D.lock_threshold + ')',
      showarrow:false, xanchor:'right', yanchor:'bottom', font:{color:'#e57373'}}];
    return [boxTraces('similarity','box'), L]; },
  age: () => { const L = layoutBase('', '', 'estimated age');
    if (!D.rows.some(r => r.age !== null)) L.annotations = [{xref:'paper', yref:'paper', x:0.5, y:0.5,
      showarrow:false, text:'the ' + esc(D.backend) + ' backend does not estimate age (use insightface)'}];
    return [boxTraces('age','violin'), L]; },
  ratio: () => { const k = D.face_ratio_metric; return [boxTraces(k,'violin'), layoutBase('', '',
    k === 'face_aspect' ? 'face box height / width' : 'eye distance / eye-to-nose (landmarks)')]; },
  confidence: () => [boxTraces('det_score','box'), layoutBase('', '', 'detector confidence (0..1)')],
  profile: () => [scatterTraces(r => r.yaw === null ? null : Math.abs(r.yaw), r => r.similarity),
    layoutBase('', '|yaw| (degrees)', 'similarity')],
  pose: () => [scatterTraces(r => r.yaw, r => r.pitch, sizeOf), layoutBase('',
    'yaw (deg, + = nose to frame right)', 'pitch (deg, + = looking up)')],
  tsne: () => [scatterTraces(r => r.tsne_x, r => r.tsne_y), layoutBase(D.tsne_note, 't-SNE 1', 't-SNE 2')],
};
const plotDivs = [];
for (const [id, make] of Object.entries(panels)) {
  const div = document.getElementById('p-' + id); const [traces, layout] = make();
  Plotly.newPlot(div, traces, layout, cfg); plotDivs.push(div);
}
function applyVisibility(){
  for (const div of plotDivs) {
    const idx = div.data.map((_,i) => i);
    Plotly.restyle(div, {visible: div.data.map(t => visible[groups[t.meta]] ? true : 'legendonly')}, idx);
  }
  renderCards();
}
// group toggles
const bar = document.getElementById('toggles');
groups.forEach((g,i) => { const lab = document.createElement('label'); const cb = document.createElement('input');
  cb.type = 'checkbox'; cb.checked = true; cb.dataset.group = String(i);
  cb.addEventListener('change', () => { visible[g] = cb.checked; applyVisibility(); });
  const sw = document.createElement('span'); sw.className = 'swatch'; sw.style.background = color[g];
  lab.append(cb, sw, document.createTextNode(g)); bar.append(lab); });
let soloIdx = -1;
const setAll = on => { groups.forEach(g => visible[g] = on);
  bar.querySelectorAll('input[type=checkbox]').forEach(cb => cb.checked = on); };
document.getElementById('all-on').addEventListener('click', () => { soloIdx = -1; setAll(true); applyVisibility(); });
document.getElementById('solo').addEventListener('click', () => { soloIdx = (soloIdx + 1) % groups.length;
  setAll(false); visible[groups[soloIdx]] = true;
  bar.querySelectorAll('input[type=checkbox]')[soloIdx].checked = true; applyVisibility(); });
// copycat cards
const gsel = document.getElementById('f-group'), bsel = document.getElementById('f-band');
groups.filter(g => g !== 'reference').forEach(g => { const o = document.createElement('option');
  o.value = g; o.textContent = g; gsel.append(o); });
['low','ok','watch','danger','failed'].forEach(b => { const o = document.createElement('option');
  o.value = b; o.textContent = b; bsel.append(o); });
const img = (src, alt) => { if (typeof src === 'string' && src.startsWith('data:image/jpeg;base64,')) {
    const im = document.createElement('img'); im.src = src; im.alt = alt; return im; }
  const ph = document.createElement('span'); ph.className = 'ph'; ph.textContent = alt; return ph; };
const PAGE = 300; let limit = PAGE;
const more = document.getElementById('more-cards');
more.addEventListener('click', () => { limit += PAGE; renderCards(); });
function renderCards(){
  const box = document.getElementById('cards'); box.textContent = '';
  const q = document.getElementById('f-text').value.toLowerCase();
  let rs = D.rows.filter(r => r.kind === 'candidate' && visible[r.group]);
  if (gsel.value) rs = rs.filter(r => r.group === gsel.value);
  if (bsel.value) rs = rs.filter(r => r.band === bsel.value);
  if (q) rs = rs.filter(r => r.name.toLowerCase().includes(q));
  const s = document.getElementById('f-sort').value, ns = r => r.nearest_sim === null ? -9 : r.nearest_sim;
  const cmp = {'sim-desc':(a,b) => ns(b) - ns(a), 'sim-asc':(a,b) => ns(a) - ns(b),
    'group':(a,b) => a.group.localeCompare(b.group) || ns(b) - ns(a), 'name':(a,b) => a.name.localeCompare(b.name)}[s];
  rs.sort(cmp);
  document.getElementById('n-cards').textContent = rs.length + ' image(s)' +
    (rs.length > limit ? ', showing the first ' + limit : '');
  more.hidden = rs.length <= limit;
  for (const r of rs.slice(0, limit)) {
    const c = document.createElement('div'); c.className = 'card';
    c.style.borderColor = D.band_colors[r.band] || '#444';
    const pair = document.createElement('div'); pair.className = 'pair';
    const left = document.createElement('div'), right = document.createElement('div');
    left.append(img(r.thumb, r.status === 'failed' || r.status === 'error' ? '\u26a0 face not found' :
      (r.thumb ? 'generated' : 'thumbnail left out (report size cap)')));
    if (r.nearest_ref !== null) { right.append(img(D.ref_thumbs[r.nearest_ref], r.nearest_ref)); }
    else { const ph = document.createElement('span'); ph.className = 'ph';
      ph.textContent = r.status === 'error' ? '\u26a0 unreadable file' : '\u26a0 Failed to recognise face';
      right.append(ph); }
    pair.append(left, right); c.append(pair);
    const t = document.createElement('div'); t.className = 'name'; t.textContent = r.group + ' / ' + r.name; c.append(t);
    const b = document.createElement('div'); b.className = 'band'; b.style.color = D.band_colors[r.band] || '#ccc';
    b.textContent = r.band === 'failed' ? (r.error || 'no face') : r.band.toUpperCase() + '  ' + r.nearest_sim.toFixed(4) +
      '  \u2192 ' + r.nearest_ref; c.append(b);
    c.title = D.band_help[r.band] || ''; box.append(c);
  }
}
for (const id of ['f-group','f-band','f-sort','f-text']) document.getElementById(id).addEventListener('input',
  () => { limit = PAGE; renderCards(); });
renderCards();
// black holes
const tb = document.querySelector('#holes tbody');
D.black_holes.forEach((h,i) => { const tr = document.createElement('tr');
  const cells = [String(i+1), null, h.reference, String(h.count), (100*h.share).toFixed(0) + '%',
    h.mean_similarity === null ? 'n/a' : h.mean_similarity.toFixed(4),
    Object.entries(h.groups).map(([g,n]) => g + ': ' + n).join(', ')];
  cells.forEach((v,j) => { const td = document.createElement('td');
    if (j === 1) td.append(img(D.ref_thumbs[h.reference], '')); else td.textContent = v; tr.append(td); });
  tb.append(tr); });
// reference set, leave-one-out
const rb = document.querySelector('#refs tbody');
D.rows.filter(r => r.kind === 'reference').sort((a,b) => (a.similarity ?? -9) - (b.similarity ?? -9)).forEach(r => {
  const tr = document.createElement('tr');
  const cells = [null, r.name, r.similarity === null ? (r.error || 'n/a') : r.similarity.toFixed(4),
    r.outlier ? 'OUTLIER' : '', r.nearest_ref === null ? '' : r.nearest_ref + ' (' + r.nearest_sim.toFixed(4) + ')'];
  cells.forEach((v,j) => { const td = document.createElement('td');
    if (j === 0) td.append(img(r.thumb, '')); else td.textContent = v; if (j === 3 && v) td.className = 'warn';
    tr.append(td); });
  rb.append(tr); });
document.body.dataset.ready = '1';
})();
"""


def render_html(result: MetricsResult, data: dict[str, Any], title: str = "IdentityLock metrics") -> str:
    from plotly.offline import get_plotlyjs

    nonce = secrets.token_urlsafe(18)
    csp = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
        "connect-src 'none'; form-action 'none'; base-uri 'none'"
    )
    e = html.escape
    panels = "\n".join(
        f'<div class="panel"><h3>{e(t)}</h3><div id="p-{pid}"></div></div>' for pid, t in PANELS
    )
    lo, mid, hi = result.bands
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(csp)}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<div class="muted">{e(result.backend)} / {e(result.model)} &middot; similarity = cosine to the normalised
reference centroid (leave-one-out for reference images) &middot; lock at drift &le; {result.lock_threshold:.2f}
&middot; copycat bands for {e(result.backend)}: low &lt; {lo}, ok {lo}&ndash;{mid}, watch {mid}&ndash;{hi},
danger &gt; {hi} &middot; generated {e(stamp)}</div>
<div id="toggles"><strong>Groups:</strong> <button id="all-on" type="button">all</button>
<button id="solo" type="button">solo next</button></div>
<h2>Summary</h2>
{_tables(result)}
<h2>Dashboard</h2>
<div class="grid">
{panels}
</div>
<h2 id="copycat">Copycat report: each generated image beside its nearest reference</h2>
<div class="controls">
<label>sort <select id="f-sort"><option value="sim-desc">similarity high&rarr;low</option>
<option value="sim-asc">similarity low&rarr;high</option><option value="group">group</option>
<option value="name">name</option></select></label>
<label>group <select id="f-group"><option value="">all</option></select></label>
<label>band <select id="f-band"><option value="">all</option></select></label>
<label>name <input id="f-text" type="search" placeholder="filter by file name"></label>
<span id="n-cards" class="muted"></span>
</div>
<div id="cards"></div>
<button id="more-cards" type="button" hidden>show more</button>
<h2>Black-hole ranking: references by how many generations point at them</h2>
<table class="stats" id="holes"><thead><tr><th>#</th><th></th><th>reference</th><th>generations</th>
<th>share</th><th>mean similarity</th><th>per group</th></tr></thead><tbody></tbody></table>
<h2>Reference set (leave-one-out)</h2>
<table class="stats" id="refs"><thead><tr><th></th><th>image</th><th>similarity to the others</th>
<th>flag</th><th>nearest other reference</th></tr></thead><tbody></tbody></table>
<script type="application/json" id="il-data">{json_for_script(data)}</script>
<script nonce="{nonce}">{get_plotlyjs()}</script>
<script nonce="{nonce}">{_script()}</script>
</body></html>
"""


def write_report(
    result: MetricsResult,
    out_dir: str | os.PathLike,
    *,
    prefix: str = "identity_metrics",
    title: str = "IdentityLock metrics",
    thumbnails: bool = True,
) -> dict[str, Path]:
    """Write ``<prefix>.html`` (dashboard + copycat), ``<prefix>.csv`` and ``<prefix>.json`` into ``out_dir``.

    ``prefix`` is confined to one file-name component (``../../x`` cannot write outside ``out_dir``).
    """
    from ..fileio import check_output_dir, confined_name, write_text_atomic

    prefix = confined_name(prefix, "report prefix")
    out = check_output_dir(out_dir, "report folder")
    data = dashboard_data(result, thumbnails=thumbnails)
    paths = {
        "html": out / f"{prefix}.html",
        "csv": out / f"{prefix}.csv",
        "json": out / f"{prefix}.json",
    }
    write_text_atomic(paths["html"], render_html(result, data, title))
    write_csv(result, paths["csv"])
    write_json(result, paths["json"], {"files": {k: p.name for k, p in paths.items()}})
    return paths
