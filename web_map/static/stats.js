// The summary line (共 N 个网格，其中 M 个无党支部；党支部覆盖率 …) of the account's area:
// from the coverage analysis for the accounts that may read it (admins: their area;
// dispatchers: the district), a grid worker's own grid, else from the grids the tiles of the
// whole-district view carry, else from the public grid list.

import { el } from './dom.js';
import { SOURCE } from './style.js';

export function wireStats({ map, statsEl, fetchJson, apiUrl, session }) {
  function showStats(total, without) {
    const rate = total ? (((total - without) / total) * 100).toFixed(1) : '0.0';
    statsEl.replaceChildren(
      document.createTextNode(`共 ${total} 个网格，其中 `),
      el('strong', 'no-branch', `${without}`),
      document.createTextNode(` 个无党支部；党支部覆盖率 ${rate}%。`),
    );
    statsEl.hidden = false;
  }

  // Branch coverage per grid is public (the coverage summary is not, for anonymous
  // callers), so the figures come from the grids the tiles of the whole-district view
  // carry — every grid, unless the view is below the grids' first zoom or a tile was cut
  // by its feature limit; then from the paged public grid list.
  function statsFromTiles(gridsMinzoom) {
    if (map.getZoom() < gridsMinzoom) {
      return null;
    }
    const cut = map.querySourceFeatures(SOURCE, { sourceLayer: 'truncated' }).some((f) => f.properties.layer === 'grids');
    if (cut) {
      return null;
    }
    const grids = new Map();
    for (const f of map.querySourceFeatures(SOURCE, { sourceLayer: 'grids' })) {
      grids.set(f.properties.code, Boolean(f.properties.has_branch));
    }
    const without = [...grids.values()].filter((has) => !has).length;
    return { total: grids.size, without };
  }

  // All current grids' branch flags, following the OGC-API-Features "next" links. The
  // server builds those links from the URL it saw, which may lack a reverse proxy's
  // prefix, so only their query string is taken and applied to our own grids URL.
  async function statsFromApi() {
    let total = 0;
    let without = 0;
    let url = apiUrl('v1/grids?limit=1000');
    for (let page = 0; page < 1000; page += 1) {
      const body = await fetchJson(url);
      total += body.features.length;
      without += body.features.filter((f) => !f.properties.has_branch).length;
      const next = (body.links || []).find((link) => link.rel === 'next');
      if (!next || body.features.length === 0) {
        break;
      }
      const nextUrl = apiUrl('v1/grids');
      nextUrl.search = new URL(next.href, url).search;
      url = nextUrl;
    }
    return { total, without };
  }

  // Admins (their area) and dispatchers (the district) may read the coverage analysis.
  async function statsFromCoverage() {
    const summary = await fetchJson(apiUrl('v1/coverage/summary'), { auth: true });
    const t = summary.total;
    return { total: t.grids, without: t.grids - t.grids_with_branch, name: t.name, rate: t.registration_rate };
  }

  // A grid worker's area is their grid: its own figures, exact for them (GET v1/grids/{code}).
  async function statsFromGrid(code) {
    const grid = await fetchJson(apiUrl(`v1/grids/${encodeURIComponent(code)}`), { auth: true });
    const p = grid.properties;
    return { total: 1, without: p.has_branch ? 0 : 1, name: p.name, rate: p.rate, label: '本网格' };
  }

  let publicFigures = null;

  async function summarise(gridsMinzoom) {
    let figures = null;
    let from = 'coverage';
    const account = session();
    if (account && ['admin', 'dispatcher'].includes(account.role)) {
      figures = await statsFromCoverage();
    } else if (account && account.role === 'grid_worker' && account.area_code) {
      figures = await statsFromGrid(account.area_code);
      from = 'grid';
    }
    if (figures === null && publicFigures !== null) {
      ({ figures, from } = publicFigures); // counted once, on the whole-district view
    }
    if (figures === null) {
      figures = statsFromTiles(gridsMinzoom);
      from = 'tiles';
      if (figures === null) {
        figures = await statsFromApi();
        from = 'api';
      }
      publicFigures = { figures, from };
    }
    showStats(figures.total, figures.without);
    if (figures.name) {
      const rate = figures.rate === null || figures.rate === undefined ? '—' : `${(figures.rate * 100).toFixed(1)}%`;
      statsEl.append(el('span', 'stats-extra', `${figures.name}（${figures.label || '覆盖分析'}）：党员报到率 ${rate}`));
    }
    document.body.dataset.stats = from;
    return figures;
  }

  return { summarise };
}
