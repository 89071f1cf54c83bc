// The gridbranch web map: the district the service holds drawn from its own vector tiles
// (/tiles/…/{z}/{x}/{y}.mvt, one composite source) — district, street and community
// boundaries, grids coloured by branch coverage, branch activity sites, events by their
// time state, coverage issues and member density per H3 cell.
//
// No basemap and no external URL of any kind (no glyphs or sprites): the map must work
// with no internet access. The names of the district, streets, communities and grids are
// written from the `labels` tile layer (one point per unit) in the browser's own fonts
// (MapLibre draws text locally when the style names no glyphs); every other text lives
// in HTML (the side panel and the popup).
//
// Personal data stays out: the page asks only for public tile layers (never `members`)
// and public endpoints. /map?embed=1 (for other portals) hides the side panel and draws
// only public aggregate layers; its popups show tile attributes only. Staff and members
// may sign in (session.js: the token lives in this page's memory, the session in an
// httpOnly cookie that survives a reload; members activate their own accounts): an admin then also gets the
// residences of members in their area (the `members` tiles, zoom 15 and above, a source
// of their own that alone carries the Authorization header), and admins and dispatchers
// get the summary line from the coverage analysis. A member registers at the grid where
// they live, and admins and grid workers confirm registrations (register.js); staff
// handle a clicked event through its lifecycle (dispatch.js); admins and dispatchers rank
// the units of their area (ranking.js); admins create, disable and re-enable the
// accounts below theirs in their area (accounts.js); district and street admins import
// their files (imports.js); anyone finds a place by name or code
// (search.js).
//
// This module wires the page together; the rooms it draws on: style.js (the service's
// style and the page's own layers), legend.js (the layer panel), popups.js (what a click
// explains, in a popup or the phone's sheet), stats.js (the summary line), signin.js and
// session.js (the account and its session), dom.js (helpers).
//
// Hooks for the browser tests:
//   window.gridbranchMap          the maplibregl.Map
//   window.gridbranchTileLayers   the tile layers the page's source asks for
//   document.body.dataset.ready   "1" once the tiles of the first view are rendered
//   document.body.dataset.error   "1" when loading the map's data failed
//   document.body.dataset.stats   "tiles", "api" or "coverage": where the summary line came from
//   document.body.dataset.role    the signed-in account's role (absent when anonymous)
//   #grid-info                    the last clicked grid (data-code, data-state)

import * as maplibregl from '../vendor/maplibre-gl/maplibre-gl.mjs';
import { apiCaller, apiDownloader, levelOf } from './api.js';
import { wireDepartment } from './dept.js';
import { wireDispatch } from './dispatch.js';
import { wireAccounts } from './accounts.js';
import { wireImports } from './imports.js';
import { wireCodes } from './codes.js';
import { wireRanking } from './ranking.js';
import { wireRegistration } from './register.js';
import { wireSearch } from './search.js';
import { wireSignIn } from './signin.js';
import { wireSheet } from './sheet.js';
import { formatTime, el } from './dom.js';
import { wireLegend } from './legend.js';
import { MAPLIBRE_ZH } from './locale.js';
import { EVENT_STATUS, ISSUE_KINDS, branchDetails, eventDetails, gridDetails, issueDetails, wirePopups } from './popups.js';
import { wireStats } from './stats.js';
import { wireUpkeep } from './upkeep.js';
import { MEMBERS_SOURCE, SOURCE, addStyleLayers, firstZooms, loadStyle } from './style.js';

// The API sits next to the page: this module is <base>/static/map/map.js and the page is
// <base>/map, so <base>/ is two levels up, whatever reverse-proxy prefix <base> carries.
const API_BASE = new URL('../../', import.meta.url);

const EMBED = new URLSearchParams(window.location.search).get('embed') === '1';
// /map?focus=<code> (also with embed=1): open on a street, community or grid — a link to
// share, or a portal's own part of the district. The search keeps the address on the
// place it found.
const FOCUS = new URLSearchParams(window.location.search).get('focus');

// The tile layers the page asks for, in drawing order: the style says which (the full
// map's, or the embedded map's public aggregates only), the TileJSON confirms them
// (style.js). `members` (individual residences) is never among them.
let TILE_LAYERS = [];
let mapStyle = null; // the service's style (/tiles/style.json)

if (EMBED) {
  document.body.classList.add('embed');
}
const statusEl = document.getElementById('status');
const statsEl = document.getElementById('stats');
const infoEl = document.getElementById('grid-info');
const panelEl = document.getElementById('panel');
const embedLegendEl = document.getElementById('embed-legend');
if (EMBED) {
  panelEl.hidden = true;
  embedLegendEl.hidden = false;
}

function apiUrl(path) {
  return new URL(path, API_BASE);
}

// The tile URL template, relative to the page like every other URL. (Not the TileJSON's
// own `tiles`: the service builds those from the host and prefix it sees, which behind a
// proxy that sets no X-Forwarded-* headers are not the ones the browser reached.)
function tileTemplate(layers) {
  if (layers.includes('members')) {
    throw new Error('the public map never asks for the members layer');
  }
  return `${API_BASE.href}tiles/${layers.join(',')}/{z}/{x}/{y}.mvt`;
}

function showStatus(message, kind = 'info') {
  statusEl.textContent = message;
  statusEl.className = `status status-${kind}`;
  statusEl.hidden = !message;
}

async function fetchJson(url, { auth = false } = {}) {
  const headers = { Accept: 'application/geo+json, application/json' };
  if (auth && session) {
    headers.Authorization = `Bearer ${session.token}`;
  }
  const response = await fetch(url, { headers });
  if (!response.ok) {
    let detail = '';
    try {
      const body = await response.json();
      detail = body.detail_zh || body.detail || body.title || '';
      if (auth && sessions) {
        sessions.refused(response.status, body);
      }
    } catch {
      // not JSON: the status line is all we have
    }
    throw new Error(`HTTP ${response.status}${detail ? `：${detail}` : ''}（${url.pathname}）`);
  }
  return response.json();
}

// Padding that keeps the fitted district clear of the panel floating over the map.
function fitPadding() {
  const base = 24;
  const pad = { top: base, right: base + 40, bottom: base + 20, left: base };
  const rect = panelEl.getBoundingClientRect();
  const w = window.innerWidth;
  const h = window.innerHeight;
  if (rect.width > 0 && rect.width < w * 0.5) {
    pad.left = Math.round(rect.right + base);
  } else if (rect.height > 0 && rect.height < h * 0.6) {
    pad.bottom = Math.round(h - rect.top + base);
  }
  // never ask for more padding than the map has room for
  if (pad.left + pad.right > w - 100) {
    pad.left = base;
    pad.right = base;
  }
  if (pad.top + pad.bottom > h - 100) {
    pad.top = base;
    pad.bottom = base;
  }
  return pad;
}

// Bring a place into the part of the map the panel leaves clear (beside the side panel,
// above a phone's bottom sheet): `bounds`, or a `point` at `zoom`. Fitted with padding,
// never by flyTo's padding option (which would stay set on the map).
function reveal({ bounds, point, zoom = 16, animate = true }) {
  const [w, s, e, n] = bounds ? [...bounds[0], ...bounds[1]] : [point[0], point[1], point[0], point[1]];
  map.fitBounds([[w, s], [e, n]], { padding: EMBED ? 12 : fitPadding(), maxZoom: zoom, animate });
}

// --- the map --------------------------------------------------------------------

let map;
try {
  map = new maplibregl.Map({
    container: 'map',
    // empty until the service's style arrives (style.js)
    style: { version: 8, sources: {}, layers: [] },
    // only until the data's own bounds (TileJSON) are fitted, whatever the district
    center: [113.68, 34.8],
    zoom: 11,
    minZoom: 8,
    maxZoom: 19,
    dragRotate: false,
    pitchWithRotate: false,
    touchPitch: false,
    attributionControl: { compact: true, customAttribution: 'gridbranch' },
    locale: MAPLIBRE_ZH,
    // the signed-in admin's token goes with the members tiles and nothing else
    transformRequest: (url, resourceType) => {
      if (session && resourceType === 'Tile' && url.startsWith(`${API_BASE.href}tiles/members/`)) {
        return { url, headers: { Authorization: `Bearer ${session.token}` } };
      }
      return { url };
    },
  });
} catch (err) {
  showStatus('无法创建地图：浏览器可能不支持 WebGL。', 'error');
  document.body.dataset.error = '1';
  throw err;
}
window.gridbranchMap = map;
map.touchZoomRotate.disableRotation();
map.keyboard.disableRotation();
map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
map.addControl(new maplibregl.ScaleControl({ unit: 'metric', maxWidth: 120 }), 'bottom-right');

map.on('error', (event) => {
  console.error('map error', event.error);
  showStatus(`地图出错：${event.error?.message || '未知错误'}`, 'error');
});

// The signed-in account: {token, username, role, area_code}, or null (session.js keeps it).
let session = null;
let sessions = null;
// Member registration and the admins' confirmations (register.js), and event handling
// for staff (dispatch.js); null on the embedded map.
let registration = null;
let dispatch = null;
let ranking = null; // rankings for admins and dispatchers (ranking.js)
let department = null; // a department's own events and figures (dept.js)
let accounts = null; // admins hand out accounts in their area (accounts.js)
let codes = null; // and activation codes to its members (codes.js)
let upkeep = null; // admins keep grid workers and branches current (upkeep.js)
let imports = null; // district and street admins import their data (imports.js)
let legend = null; // the layer panel (legend.js), once the style is drawn
const stats = wireStats({ map, statsEl, fetchJson, apiUrl, session: () => session });

const mapLoaded = new Promise((resolve) => map.once('load', resolve));

// --- details: grids, events, branches, coverage issues --------------------------

let selectedCode = null;
let selectedProps = null; // the selected grid's tile attributes (to read it again)
let hoveredId = null;
// On a phone the panel is a bottom sheet (sheet.js), and what a tap found opens inside it
// (popups.js).
const sheet = EMBED ? null : wireSheet(panelEl, document.getElementById('sheet-handle'));
const popups = wirePopups({ map, maplibregl, sheet, panel: panelEl, onClose: () => clearSelection() });

function renderGrid(props, branches, state) {
  const full = !EMBED && state === 'ready';
  const gridSection = popups.sections().find((s) => s.kind === 'grid');
  if (gridSection) {
    gridSection.title = props.name;
    gridSection.body = () => gridDetails(props, branches, { full });
  }
  popups.render();
  infoEl.replaceChildren(gridDetails(props, branches, { full }));
  const keep = full && upkeep ? upkeep.panelFor(props, branches) : null;
  if (keep) {
    infoEl.append(keep);
  }
  infoEl.dataset.code = props.code;
  infoEl.dataset.state = state;
}

async function selectGrid(props) {
  selectedCode = props.code;
  selectedProps = props;
  map.setFilter('grids-selected', ['==', ['get', 'code'], props.code]);
  if (EMBED) {
    // tile attributes only: the grid endpoint names the grid worker and their phone
    renderGrid(props, null, 'tiles');
    return;
  }
  renderGrid(props, null, 'loading');
  try {
    // signed in: the staff of the grid's area get its exact figures (others, as the tiles, small counts withheld)
    const full = await fetchJson(apiUrl(`v1/grids/${encodeURIComponent(props.code)}`), { auth: true });
    if (selectedCode !== props.code) {
      return; // another grid was clicked meanwhile
    }
    renderGrid({ ...props, ...full.properties }, full.properties.branches || [], 'ready');
  } catch (err) {
    if (selectedCode === props.code) {
      renderGrid(props, err, 'error');
    }
  }
}

// A place (GET /v1/places), found by the search or named by a link: fitted (a grid
// closer in than an area), and a grid selected as a click would select it once the map
// has moved there and drawn its tiles.
function showPlace(place, { animate = true } = {}) {
  const { level, code } = place.properties;
  const [w, s, e, n] = place.bbox;
  reveal({ bounds: [[w, s], [e, n]], zoom: level === 'grid' ? 16 : 15, animate });
  if (level !== 'grid') {
    return;
  }
  map.once('idle', () => {
    const [grid] = map.querySourceFeatures(SOURCE, { sourceLayer: 'grids', filter: ['==', ['get', 'code'], code] });
    if (grid) {
      selectGrid(grid.properties);
    }
  });
}

// The place of /map?focus=<code>, fitted like the district (the first summary has been
// counted on the whole district by then); a code that is malformed or names nothing
// leaves the district in view and says so.
async function focusOn(code) {
  if (!/^[0-9]{12}([0-9]{3})?$/.test(code)) {
    showStatus(`链接中的地点代码“${code}”无效（应为 12 位区划代码或 15 位网格代码），显示全区。`, 'warning');
    return;
  }
  const found = await fetchJson(apiUrl(`v1/places?${new URLSearchParams({ q: code, limit: '1' })}`));
  const place = found.features.find((f) => f.properties.code === code);
  if (!place) {
    showStatus(`未找到代码为 ${code} 的地点，显示全区。`, 'warning');
    return;
  }
  showPlace(place, { animate: false });
  await idle();
}

function clearSelection() {
  selectedCode = null;
  selectedProps = null;
  if (map.getLayer('grids-selected')) {
    map.setFilter('grids-selected', ['==', ['get', 'code'], '']);
  }
}

function setHover(id) {
  if (hoveredId === id) {
    return;
  }
  if (hoveredId !== null) {
    map.setFeatureState({ source: SOURCE, sourceLayer: 'grids', id: hoveredId }, { hover: false });
  }
  hoveredId = id;
  if (id !== null) {
    map.setFeatureState({ source: SOURCE, sourceLayer: 'grids', id }, { hover: true });
  }
}

const POINT_LAYERS = ['events-circle', 'branches-circle'];
const MAX_PER_KIND = 4;

function visibleLayers(ids) {
  return ids.filter((id) => map.getLayer(id) && map.getLayoutProperty(id, 'visibility') !== 'none');
}

// Features under a click: points within a few pixels, polygons exactly under it; one
// of each feature (a feature cut by tile edges comes back once per tile).
function featuresAt(point) {
  const pad = 5;
  const box = [[point.x - pad, point.y - pad], [point.x + pad, point.y + pad]];
  const points = visibleLayers(POINT_LAYERS).length
    ? map.queryRenderedFeatures(box, { layers: visibleLayers(POINT_LAYERS) })
    : [];
  const polygons = visibleLayers(['coverage-issues-fill', 'grids-fill']).length
    ? map.queryRenderedFeatures(point, { layers: visibleLayers(['coverage-issues-fill', 'grids-fill']) })
    : [];
  const seen = new Set();
  const out = { events: [], branches: [], issues: [], grids: [] };
  const bucket = { 'events-circle': 'events', 'branches-circle': 'branches', 'coverage-issues-fill': 'issues', 'grids-fill': 'grids' };
  for (const f of [...points, ...polygons]) {
    const kind = bucket[f.layer.id];
    const key = `${kind}:${f.id ?? f.properties.code}`;
    if (!seen.has(key)) {
      seen.add(key);
      out[kind].push(f);
    }
  }
  return out;
}

function picking() {
  return Boolean((registration && registration.isPicking()) || (upkeep && upkeep.isPicking()));
}

function onClick(event) {
  if (picking()) {
    return; // the click places a residence (register.js) or a branch's site (upkeep.js)
  }
  const hits = featuresAt(event.point);
  const sections = [];
  const more = (list, noun) => (list.length > MAX_PER_KIND ? `（另有 ${list.length - MAX_PER_KIND} 个${noun}）` : '');
  hits.events.slice(0, MAX_PER_KIND).forEach((f, i) => {
    const handling = dispatch ? dispatch.panel(f.id) : null; // staff: the record and its actions (dispatch.js)
    sections.push({
      kind: 'event',
      title: `事件：${f.properties.category_name || f.properties.category}${i === 0 ? more(hits.events, '事件') : ''}`,
      body: () => {
        const details = eventDetails(f);
        if (!handling) {
          return details;
        }
        const both = el('div', 'event-body');
        both.append(details, handling);
        return both;
      },
    });
  });
  hits.branches.slice(0, MAX_PER_KIND).forEach((f) => {
    sections.push({ kind: 'branch', title: `党支部活动阵地：${f.properties.name}`, body: () => branchDetails(f) });
  });
  hits.issues.slice(0, MAX_PER_KIND).forEach((f) => {
    sections.push({ kind: 'issue', title: `覆盖问题：${ISSUE_KINDS[f.properties.kind] || f.properties.kind}`, body: () => issueDetails(f) });
  });
  const grid = hits.grids[0];
  if (grid) {
    sections.push({ kind: 'grid', title: grid.properties.name, body: () => gridDetails(grid.properties, null) });
  }
  if (sections.length === 0) {
    popups.close();
    return;
  }
  popups.show(sections, event.lngLat);
  if (grid) {
    selectGrid(grid.properties);
  } else {
    clearSelection();
  }
}

function wireInteraction() {
  map.on('click', onClick);
  map.on('mousemove', (event) => {
    if (picking()) {
      map.getCanvas().style.cursor = 'crosshair';
      return;
    }
    const hits = featuresAt(event.point);
    const any = hits.events.length || hits.branches.length || hits.issues.length || hits.grids.length;
    map.getCanvas().style.cursor = any ? 'pointer' : '';
    setHover(hits.grids.length && hits.grids[0].id !== undefined ? hits.grids[0].id : null);
  });
  map.on('mouseout', () => setHover(null));
  if (sheet) {
    sheet.onChange(popups.close); // turned between phone and wide layout
  }
}

// --- the summary line -----------------------------------------------------------

// --- sign-in (staff and members) ---------------------------------------------------

let gridsMinzoom = 9;

// The members tiles are served to admins only (inside their area, zoom 15 and above).
const MEMBERS_TILES = `${API_BASE.href}tiles/members/{z}/{x}/{y}.mvt`;

// After a write through the page (an event handled, a registration made or decided): the
// tiles again — revalidated, their ETags follow the data, so only what changed comes
// back — so the map shows the write at once.
function refreshTiles() {
  map.getSource(SOURCE).setTiles([tileTemplate(TILE_LAYERS)]);
  map.getSource(MEMBERS_SOURCE)?.setTiles([MEMBERS_TILES]);
}

// The panels of the account's role follow it (each panel decides what it shows).
function panelsFollow() {
  for (const panel of [registration, ranking, department, accounts, imports, codes]) {
    panel?.sessionChanged();
  }
  if (selectedProps) {
    selectGrid(selectedProps); // its details again: the upkeep panel comes or goes with the account
  }
}

// The first view's figures are counted (on the whole district) before an account moves
// the map to its area.
let firstCounted;
const counted = new Promise((resolve) => {
  firstCounted = resolve;
});

// An account with an area sees it: the map fitted to it (a street or community, or a
// grid worker's grid; the district is what the map opens on), unless a link named the
// place to show. Then document.body.dataset.area holds the area shown ("" for none).
async function showArea(account) {
  delete document.body.dataset.area;
  const code = account?.area_code;
  if (!code || levelOf(code) === 'district' || FOCUS !== null) {
    document.body.dataset.area = '';
    return;
  }
  await counted;
  try {
    const found = await fetchJson(apiUrl(`v1/places?${new URLSearchParams({ q: code, limit: '1' })}`));
    const place = found.features.find((f) => f.properties.code === code);
    if (place && session === account) {
      const [w, s, e, n] = place.bbox;
      reveal({ bounds: [[w, s], [e, n]], zoom: place.properties.level === 'grid' ? 16 : 15, animate: false });
    }
  } catch (err) {
    console.warn('showing the account\'s area failed', err);
  }
  document.body.dataset.area = code;
}

// Signing in and out, and the session across reloads (signin.js, session.js); the map
// follows the account: its members tiles, its summary line, the panels of its role.
function follow(bounds) {
  if (EMBED) {
    return;
  }
  sessions = wireSignIn({
    map,
    apiUrl,
    style: mapStyle,
    bounds,
    membersTiles: MEMBERS_TILES,
    applyToggle: legend.applyToggle,
    onChange: async (account) => {
      session = account;
      panelsFollow();
      await showArea(account);
      await stats.summarise(gridsMinzoom).catch((err) => showStatus(`网格统计加载失败：${err.message}`, 'error'));
    },
  });
}

function idle() {
  return new Promise((resolve) => {
    if (map.loaded() && map.areTilesLoaded()) {
      resolve();
    } else {
      map.once('idle', resolve);
    }
  });
}

// --- start ----------------------------------------------------------------------

// The page is named after the district the service holds (the Jinshui demo's or any
// other deployment's); the embed map has no title to write and asks for nothing more.
async function nameTheMap() {
  try {
    const { areas } = await fetchJson(apiUrl('v1/areas'));
    const district = (areas || []).find((a) => a.level === 'district');
    if (district) {
      const title = `${district.name}网格党支部地图`;
      document.querySelector('#panel h1').textContent = title;
      document.title = `${title} · gridbranch`;
    }
  } catch (err) {
    console.warn('naming the map failed', err);
  }
}

async function main() {
  const naming = EMBED ? Promise.resolve() : nameTheMap();
  let drawing;
  try {
    drawing = await loadStyle({ fetchJson, apiUrl, embed: EMBED });
  } catch (err) {
    console.warn('loading the map data failed', err);
    showStatus(`地图数据加载失败：${err.message}。请检查网络或稍后刷新重试。`, 'error');
    document.body.dataset.error = '1';
    return;
  }
  const { tilejson } = drawing;
  mapStyle = drawing.style;
  TILE_LAYERS = drawing.tileLayers;
  window.gridbranchTileLayers = TILE_LAYERS;
  await mapLoaded;
  addStyleLayers(map, drawing, tileTemplate(TILE_LAYERS));
  legend = wireLegend({ map, embed: EMBED, tileLayers: TILE_LAYERS });
  wireInteraction();
  const minzoom = firstZooms(tilejson);
  minzoom.members = 15;
  gridsMinzoom = minzoom.grids ?? 9;
  map.on('zoomend', () => legend.updateZoomHints(minzoom));
  follow(tilejson.bounds);
  if (!EMBED) {
    const call = apiCaller(apiUrl, () => session, (status, data) => sessions.refused(status, data));
    registration = wireRegistration({ map, maplibregl, call, el, formatTime, reveal, refreshTiles, session: () => session });
    ranking = wireRanking({ call, download: apiDownloader(apiUrl, () => session), el, reveal, session: () => session });
    accounts = wireAccounts({ call, el, session: () => session });
    // an import changes the district's layers: its tiles and the summary line again
    const imported = () => {
      refreshTiles();
      stats.summarise(gridsMinzoom).catch((err) => showStatus(`网格统计加载失败：${err.message}`, 'error'));
    };
    imports = wireImports({ map, apiUrl, call, el, session: () => session, refreshTiles: imported, reveal });
    codes = wireCodes({ call, el, session: () => session });
    wireSearch({ call, el, showPlace });
    upkeep = wireUpkeep({
      map,
      call,
      el,
      formatTime,
      session: () => session,
      refreshTiles,
      reload: async (code) => {
        if (selectedProps && selectedProps.code === code) {
          await selectGrid(selectedProps);
        }
      },
    });
    dispatch = wireDispatch({
      call,
      el,
      formatTime,
      session: () => session,
      statusNames: EVENT_STATUS,
      refreshTiles,
    });
    department = wireDepartment({
      map, call, el, formatTime, reveal, session: () => session, statusNames: EVENT_STATUS, refreshTiles,
    });
  }

  // a reload keeps the session (its cookie); the panels are wired to follow it
  const restoring = sessions ? sessions.restore() : Promise.resolve();

  if (Array.isArray(tilejson.bounds)) {
    const [w, s, e, n] = tilejson.bounds;
    map.fitBounds([[w, s], [e, n]], { padding: EMBED ? 12 : fitPadding(), animate: false });
  }
  legend.updateZoomHints(minzoom);
  await idle();
  try {
    const figures = await stats.summarise(gridsMinzoom);
    showStatus(figures.total === 0 ? '暂无网格数据。' : '', 'warning');
  } catch (err) {
    console.warn('counting the grids failed', err);
    showStatus(`网格统计加载失败：${err.message}`, 'error');
  }
  firstCounted();
  if (FOCUS !== null) {
    try {
      await focusOn(FOCUS);
    } catch (err) {
      console.warn('finding the linked place failed', err);
      showStatus(`定位链接中的地点失败：${err.message}`, 'warning');
    }
  }
  await naming;
  await restoring;
  document.body.dataset.ready = '1';
}

main();
