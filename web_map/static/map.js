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
// Hooks for the browser tests:
//   window.gridbranchMap          the maplibregl.Map
//   window.gridbranchTileLayers   the tile layers the page's source asks for
//   document.body.dataset.ready   "1" once the tiles of the first view are rendered
//   document.body.dataset.error   "1" when loading the map's data failed
//   document.body.dataset.stats   "tiles", "api" or "coverage": where the summary line came from
//   document.body.dataset.role    the signed-in account's role (absent when anonymous)
//   #grid-info                    the last clicked grid (data-code, data-state)

import * as maplibregl from '../vendor/maplibre-gl/maplibre-gl.mjs';
import { apiCaller, apiDownloader } from './api.js';
import { wireDepartment } from './dept.js';
import { wireDispatch } from './dispatch.js';
import { wireAccounts } from './accounts.js';
import { wireImports } from './imports.js';
import { wireCodes } from './codes.js';
import { wireRanking } from './ranking.js';
import { wireRegistration } from './register.js';
import { wireSearch } from './search.js';
import { wireSession } from './session.js';
import { wireSheet } from './sheet.js';
import { wireUpkeep } from './upkeep.js';
import { SOURCE, addMembersLayer, addStyleLayers, firstZooms, loadStyle, removeMembersLayer } from './style.js';

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

const BRANCH_KINDS = { grid: '网格党支部', community: '社区党组织', work_unit: '单位党组织' };
const EVENT_STATUS = {
  reported: '已上报',
  registered: '已登记',
  dispatched: '已派遣',
  in_progress: '处置中',
  handled: '已处置',
  returned: '已退回',
  deferred: '暂缓',
  closed: '已结案',
  rejected: '不予受理',
  duplicate: '重复事件',
};
const TERMINAL = ['closed', 'rejected', 'duplicate'];
const ISSUE_KINDS = {
  gap: '缺口（未被网格覆盖）',
  overlap: '重叠（多个网格重复覆盖）',
  sliver: '细碎缺口或重叠',
  outside_community: '超出所属社区',
  invalid: '无效几何',
  stray_part: '游离碎块',
};
const ISSUE_FORMS = { gap: '缺口', overlap: '重叠' };

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

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined && text !== null) {
    node.textContent = text;
  }
  return node;
}

function formatNumber(value, digits = 1) {
  return Number(value).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

// ISO 8601 → "YYYY-MM-DD HH:MM" in Beijing time (what the time limits are reckoned in).
const BEIJING = new Intl.DateTimeFormat('en-CA', {
  timeZone: 'Asia/Shanghai',
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
});

function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) {
    return iso;
  }
  const p = Object.fromEntries(BEIJING.formatToParts(date).map((part) => [part.type, part.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
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

const mapLoaded = new Promise((resolve) => map.once('load', resolve));

// --- layer panel and legend -----------------------------------------------------

function gridFilter() {
  const withBranch = document.querySelector('[data-toggle="with-branch"]').checked;
  const withoutBranch = document.querySelector('[data-toggle="without-branch"]').checked;
  if (withBranch && withoutBranch) {
    return null;
  }
  if (!withBranch && !withoutBranch) {
    return ['==', ['get', 'code'], ''];
  }
  return ['==', ['to-boolean', ['get', 'has_branch']], withBranch];
}

const TOGGLED_LAYERS = {
  communities: ['communities-line'],
  streets: ['streets-line'],
  district: ['district-casing', 'district-line'],
  branches: ['branches-circle'],
  events: ['events-circle'],
  'coverage-issues': ['coverage-issues-fill', 'coverage-issues-line'],
  'members-h3': ['members-h3-fill', 'members-h3-line'],
  members: ['members-circle'],
  labels: ['labels-text'],
};

function applyToggle(input) {
  const what = input.dataset.toggle;
  if (what === 'with-branch' || what === 'without-branch') {
    const filter = gridFilter();
    for (const id of ['grids-fill', 'grids-line', 'grids-hover']) {
      map.setFilter(id, filter);
    }
    return;
  }
  if (what === 'events-closed') {
    map.setFilter('events-circle', input.checked ? null : ['!', ['in', ['get', 'status'], ['literal', TERMINAL]]]);
    return;
  }
  for (const id of TOGGLED_LAYERS[what] || []) {
    if (map.getLayer(id)) {
      map.setLayoutProperty(id, 'visibility', input.checked ? 'visible' : 'none');
    }
  }
  // the legend follows: a switched-off layer's legend entries fold away
  const group = input.closest('.layer-group');
  const items = group && group.querySelector('.legend-items');
  if (items && group.querySelector('h3 input') === input) {
    items.hidden = !input.checked;
    group.classList.toggle('off', !input.checked);
  }
}

function wireToggles() {
  for (const group of document.querySelectorAll('.layer-group')) {
    const layer = group.dataset.tileLayer;
    if (layer === 'members' ? EMBED : !TILE_LAYERS.includes(layer)) {
      group.remove(); // not drawn here (the embedded map)
    }
  }
  if (EMBED && new URLSearchParams(window.location.search).get('h3') === '1') {
    document.querySelector('[data-toggle="members-h3"]').checked = true; // /map?embed=1&h3=1
    document.getElementById('embed-legend-h3').hidden = false;
  }
  for (const input of document.querySelectorAll('[data-toggle]')) {
    input.addEventListener('change', () => applyToggle(input));
    applyToggle(input);
  }
}

// Below a layer's first zoom its legend says how far to zoom in.
function updateZoomHints(minzoom) {
  const zoom = map.getZoom();
  for (const group of document.querySelectorAll('.layer-group')) {
    const hint = group.querySelector('.zoom-hint');
    const first = minzoom[group.dataset.tileLayer];
    if (!hint || first === undefined) {
      continue;
    }
    const out = zoom < first;
    hint.hidden = !out;
    hint.textContent = out ? `放大到第 ${first} 级以上显示（当前 ${zoom.toFixed(1)} 级）` : '';
    group.classList.toggle('out-of-range', out);
  }
}

// --- details: grids, events, branches, coverage issues --------------------------

function detailsList(rows) {
  const dl = el('dl', 'grid-details');
  for (const [label, value, className] of rows) {
    dl.append(el('dt', null, label));
    const dd = el('dd', className);
    if (value instanceof Node) {
      dd.append(value);
    } else {
      dd.textContent = value;
    }
    dl.append(dd);
  }
  return dl;
}

const SUPPRESSED_TEXT = '—（人数较少，不公开）';

function rateText(props) {
  if (props.rate === undefined || props.rate === null) {
    return '—（无在住党员）';
  }
  return `${(Number(props.rate) * 100).toFixed(1)}%`;
}

function rolesText(props) {
  if (props.roles_missing === undefined || props.roles_missing === null) {
    return '—';
  }
  if (Number(props.roles_missing) === 0) {
    return '六员齐全';
  }
  return `缺 ${props.roles_missing} 项：${props.roles_missing_names || ''}`;
}

// A <dl> describing a grid from its tile attributes and, once fetched, /v1/grids/{code};
// `branches` is an array, null while loading (or not to be loaded), or an Error.
function gridDetails(props, branches, { full = false } = {}) {
  const rows = [
    ['网格编码', props.code, 'grid-code'],
    ['网格名称', props.name, 'grid-name'],
  ];
  const community = props.community_name ? `${props.community_name}（${props.community}）` : props.community || '—';
  rows.push(['所属社区', community, 'grid-community']);
  if (full) {
    const worker = props.grid_worker
      ? `${props.grid_worker}${props.grid_worker_phone ? `（${props.grid_worker_phone}）` : ''}`
      : '未配备';
    rows.push(['网格员', worker, 'grid-worker']);
  }
  let value;
  if (branches instanceof Error) {
    value = el('span', 'error-text', `党支部信息加载失败：${branches.message}`);
  } else if (Array.isArray(branches) && branches.length > 0) {
    value = el('ul', 'branch-list');
    for (const b of branches) {
      const li = el('li');
      li.append(el('span', 'branch-name', b.name));
      li.append(el('span', 'branch-kind', BRANCH_KINDS[b.kind] || b.kind));
      li.title = b.code;
      value.append(li);
    }
  } else if (props.has_branch === false || (Array.isArray(branches) && branches.length === 0)) {
    value = el('span', 'no-branch', '无党支部');
  } else {
    value = el('span', 'branch-name', props.branch || '—');
  }
  rows.push(['党支部', value, 'grid-branches']);
  // figures of grids with few registered members are withheld from the public (suppressed)
  const withheld = props.suppressed === true;
  const registered = props.registered === undefined || props.registered === null ? '—' : `${props.registered} 人`;
  rows.push(['报到党员', withheld ? SUPPRESSED_TEXT : registered, 'grid-registered']);
  rows.push(['报到率', withheld ? SUPPRESSED_TEXT : rateText(props), 'grid-rate']);
  rows.push(['六员缺额', withheld ? SUPPRESSED_TEXT : rolesText(props), 'grid-roles']);
  return detailsList(rows);
}

function eventDetails(feature) {
  const p = feature.properties;
  let state;
  let stateClass;
  if (p.overdue) {
    state = '超期';
    stateClass = 'state-overdue';
  } else if (p.warning) {
    state = '预警';
    stateClass = 'state-warning';
  } else if (TERMINAL.includes(p.status)) {
    state = '已结束';
    stateClass = 'state-closed';
  } else {
    state = '正常';
    stateClass = 'state-normal';
  }
  return detailsList([
    ['事件编号', `#${feature.id ?? '—'}`, 'event-id'],
    ['事件类别', `${p.category_name || p.category}（${p.category}）`, 'event-category'],
    ['办理状态', EVENT_STATUS[p.status] || p.status, 'event-status'],
    ['办理时限', p.due_at ? formatTime(p.due_at) : '未派遣，尚未起算', 'event-due'],
    ['时限状态', el('span', `time-state ${stateClass}`, state), 'event-state'],
  ]);
}

function branchDetails(feature) {
  const p = feature.properties;
  return detailsList([
    ['党组织编码', p.code, 'branch-code'],
    ['类型', BRANCH_KINDS[p.kind] || p.kind, 'branch-kind-text'],
    ['所属社区', p.community || '—', 'branch-community'],
    ['覆盖网格', p.grids === undefined ? '—' : `${p.grids} 个`, 'branch-grids'],
  ]);
}

function issueDetails(feature) {
  const p = feature.properties;
  const codes = el('ul', 'code-list');
  for (const code of String(p.codes || '').split(',').filter(Boolean)) {
    codes.append(el('li', 'grid-code', code));
  }
  const kind = ISSUE_KINDS[p.kind] || p.kind;
  return detailsList([
    ['问题类型', `${kind}${p.kind === 'sliver' && ISSUE_FORMS[p.form] ? `（${ISSUE_FORMS[p.form]}）` : ''}`, 'issue-kind'],
    ['涉及编码', codes.childElementCount ? codes : '—', 'issue-codes'],
    ['面积', p.area_m2 === undefined ? '—' : `${formatNumber(p.area_m2)} m²`, 'issue-area'],
  ]);
}

let selectedCode = null;
let selectedProps = null; // the selected grid's tile attributes (to read it again)
let hoveredId = null;
const popup = new maplibregl.Popup({ closeButton: true, closeOnClick: false, maxWidth: '360px', className: 'grid-popup' });
// what the popup shows, section by section: {kind, title, body}
let popupSections = [];

function section(kind, title, body) {
  const node = el('section', `popup-section popup-${kind}`);
  node.dataset.kind = kind;
  node.append(el('div', 'popup-title', title), body);
  return node;
}

// On a phone the panel is a bottom sheet (sheet.js), and what a tap found opens inside it,
// above everything else in the sheet: a popup on the map would lie under the sheet.
const detailsEl = document.getElementById('details');
const detailsBodyEl = document.getElementById('details-body');
const sheet = EMBED ? null : wireSheet(panelEl, document.getElementById('sheet-handle'));

function inSheet() {
  return sheet !== null && sheet.narrow();
}

function renderPopup() {
  const body = el('div', 'popup-body');
  for (const s of popupSections) {
    body.append(section(s.kind, s.title, s.body()));
  }
  if (inSheet()) {
    detailsBodyEl.replaceChildren(body);
  } else {
    popup.setDOMContent(body);
  }
}

function openDetails(lngLat) {
  if (inSheet()) {
    detailsEl.hidden = false;
    sheet.atLeast('half');
    panelEl.scrollTop = 0;
    return;
  }
  popup.setLngLat(lngLat);
  if (!popup.isOpen()) {
    popup.addTo(map);
  }
}

function closeDetails() {
  popup.remove(); // its close event clears the selection
  if (!detailsEl.hidden) {
    detailsEl.hidden = true;
    detailsBodyEl.replaceChildren();
    clearSelection();
  }
}

function renderGrid(props, branches, state) {
  const full = !EMBED && state === 'ready';
  const gridSection = popupSections.find((s) => s.kind === 'grid');
  if (gridSection) {
    gridSection.title = props.name;
    gridSection.body = () => gridDetails(props, branches, { full });
  }
  renderPopup();
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
    closeDetails();
    return;
  }
  popupSections = sections;
  renderPopup();
  openDetails(event.lngLat);
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
  popup.on('close', clearSelection);
  document.getElementById('details-close').addEventListener('click', closeDetails);
  if (sheet) {
    sheet.onChange(closeDetails); // turned between phone and wide layout
  }
}

// --- the summary line -----------------------------------------------------------

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

let publicFigures = null;

async function summarise(gridsMinzoom) {
  let figures = null;
  let from = 'coverage';
  if (session && ['admin', 'dispatcher'].includes(session.role)) {
    figures = await statsFromCoverage();
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
    statsEl.append(el('span', 'stats-extra', `${figures.name}（覆盖分析）：党员报到率 ${rate}`));
  }
  document.body.dataset.stats = from;
  return figures;
}

// --- sign-in (staff and members) ---------------------------------------------------

const ROLE_NAMES = { admin: '管理员', dispatcher: '指挥中心', grid_worker: '网格员', department_staff: '职能部门', member: '党员' };
const signedInEl = document.getElementById('signed-in');
const membersGroup = document.querySelector('.layer-group[data-group="members"]');
let gridsMinzoom = 9;

// The members tiles are served to admins only (inside their area, zoom 15 and above).
const MEMBERS_TILES = `${API_BASE.href}tiles/members/{z}/{x}/{y}.mvt`;

// After a write through the page (an event handled, a registration made or decided): the
// tiles again — revalidated, their ETags follow the data, so only what changed comes
// back — so the map shows the write at once.
function refreshTiles() {
  map.getSource(SOURCE).setTiles([tileTemplate(TILE_LAYERS)]);
  map.getSource('members')?.setTiles([MEMBERS_TILES]);
}

function addMembers(bounds) {
  if (!session || session.role !== 'admin' || !session.area_code || !mapStyle) {
    return;
  }
  if (addMembersLayer(map, mapStyle, { tiles: MEMBERS_TILES, bounds })) {
    membersGroup.hidden = false;
    applyToggle(membersGroup.querySelector('input'));
  }
}

function removeMembers() {
  removeMembersLayer(map, mapStyle);
  membersGroup.hidden = true;
}

function showSession() {
  if (session) {
    signedInEl.querySelector('.who').textContent =
      `已登录：${session.username}（${ROLE_NAMES[session.role] || session.role}${session.area_code ? `，${session.area_code}` : ''}）`;
    document.body.dataset.role = session.role;
  } else {
    delete document.body.dataset.role;
  }
  if (registration) {
    registration.sessionChanged();
  }
  if (ranking) {
    ranking.sessionChanged();
  }
  if (department) {
    department.sessionChanged();
  }
  if (accounts) {
    accounts.sessionChanged();
  }
  if (imports) {
    imports.sessionChanged();
  }
  if (codes) {
    codes.sessionChanged();
  }
  if (selectedProps) {
    selectGrid(selectedProps); // its details again: the upkeep panel comes or goes with the account
  }
}

// Signing in and out, and the session across reloads (session.js); the map follows the
// account: its members tiles, its summary line, the panels of its role.
function wireSignIn(bounds) {
  if (EMBED) {
    return;
  }
  sessions = wireSession({
    apiUrl,
    onChange: async (account) => {
      session = account;
      if (session) {
        showSession();
        addMembers(bounds);
      } else {
        removeMembers();
        showSession();
      }
      await summarise(gridsMinzoom).catch((err) => showStatus(`网格统计加载失败：${err.message}`, 'error'));
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
  wireToggles();
  wireInteraction();
  const minzoom = firstZooms(tilejson);
  minzoom.members = 15;
  gridsMinzoom = minzoom.grids ?? 9;
  map.on('zoomend', () => updateZoomHints(minzoom));
  wireSignIn(tilejson.bounds);
  if (!EMBED) {
    const call = apiCaller(apiUrl, () => session, (status, data) => sessions.refused(status, data));
    registration = wireRegistration({ map, maplibregl, call, el, formatTime, reveal, refreshTiles, session: () => session });
    ranking = wireRanking({ call, download: apiDownloader(apiUrl, () => session), el, reveal, session: () => session });
    accounts = wireAccounts({ call, el, session: () => session });
    // an import changes the district's layers: its tiles and the summary line again
    const imported = () => {
      refreshTiles();
      summarise(gridsMinzoom).catch((err) => showStatus(`网格统计加载失败：${err.message}`, 'error'));
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
  updateZoomHints(minzoom);
  await idle();
  try {
    const figures = await summarise(gridsMinzoom);
    showStatus(figures.total === 0 ? '暂无网格数据。' : '', 'warning');
  } catch (err) {
    console.warn('counting the grids failed', err);
    showStatus(`网格统计加载失败：${err.message}`, 'error');
  }
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
