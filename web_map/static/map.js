// The gridbranch web map: district, streets, communities and grids of Jinshui District,
// grids coloured by whether a party branch covers them.
//
// No basemap and no external URL of any kind (no tiles, glyphs or sprites): the map
// must work with no internet access, so there are no `symbol` layers and all text lives
// in HTML (the side panel and the popup).
//
// Hooks for the browser tests:
//   window.gridbranchMap          the maplibregl.Map
//   document.body.dataset.ready   "1" once every source is loaded and rendered
//   document.body.dataset.error   "1" when loading the data failed
//   #grid-info                    the last clicked grid (data-code, data-state)

import * as maplibregl from '../vendor/maplibre-gl/maplibre-gl.mjs';

// The API sits next to the page: this module is <base>/static/map/map.js and the page is
// <base>/map, so <base>/ is two levels up, whatever reverse-proxy prefix <base> carries.
const API_BASE = new URL('../../', import.meta.url);

const COLORS = {
  outside: '#e6e9ed',
  district: '#fbfaf7',
  withBranch: '#8fbfe3',
  withoutBranch: '#f3a29b',
  gridLine: '#ffffff',
  community: '#6f7d8c',
  street: '#34495e',
  districtLine: '#b3261e',
  hover: '#1f2d3d',
  selected: '#f5a700',
};

const BRANCH_KINDS = {
  grid: '网格党支部',
  community: '社区党组织',
  work_unit: '单位党组织',
};

const statusEl = document.getElementById('status');
const statsEl = document.getElementById('stats');
const infoEl = document.getElementById('grid-info');
const panelEl = document.getElementById('panel');

function apiUrl(path) {
  return new URL(path, API_BASE);
}

function showStatus(message, kind = 'info') {
  statusEl.textContent = message;
  statusEl.className = `status status-${kind}`;
  statusEl.hidden = !message;
}

async function fetchJson(url) {
  const response = await fetch(url, { headers: { Accept: 'application/geo+json, application/json' } });
  if (!response.ok) {
    let detail = '';
    try {
      const body = await response.json();
      detail = body.detail || body.title || '';
    } catch {
      // not JSON: the status line is all we have
    }
    throw new Error(`HTTP ${response.status}${detail ? `：${detail}` : ''}（${url.pathname}）`);
  }
  return response.json();
}

// All current grids, following the OGC-API-Features "next" links. The server builds
// those links from the URL it saw, which may lack a reverse proxy's prefix, so only
// their query string is taken and applied to our own (relative) grids URL.
async function fetchAllGrids() {
  const features = [];
  let url = apiUrl('v1/grids?limit=1000');
  for (let page = 0; page < 1000; page += 1) {
    const body = await fetchJson(url);
    features.push(...body.features);
    const next = (body.links || []).find((link) => link.rel === 'next');
    if (!next || body.features.length === 0) {
      break;
    }
    const nextUrl = apiUrl('v1/grids');
    nextUrl.search = new URL(next.href, url).search;
    url = nextUrl;
  }
  return { type: 'FeatureCollection', features };
}

function boundaries(level) {
  return fetchJson(apiUrl(`v1/areas/boundaries?level=${level}`));
}

// [[minLon, minLat], [maxLon, maxLat]] of a FeatureCollection, or null when empty.
function boundsOf(collection) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  const visit = (coords) => {
    if (typeof coords[0] === 'number') {
      minX = Math.min(minX, coords[0]);
      maxX = Math.max(maxX, coords[0]);
      minY = Math.min(minY, coords[1]);
      maxY = Math.max(maxY, coords[1]);
    } else {
      coords.forEach(visit);
    }
  };
  for (const f of collection.features) {
    if (f.geometry) {
      visit(f.geometry.coordinates);
    }
  }
  return Number.isFinite(minX) ? [[minX, minY], [maxX, maxY]] : null;
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

// --- the map --------------------------------------------------------------------

let map;
try {
  map = new maplibregl.Map({
    container: 'map',
    style: {
      version: 8,
      sources: {},
      layers: [{ id: 'background', type: 'background', paint: { 'background-color': COLORS.outside } }],
    },
    center: [113.68, 34.8],
    zoom: 11,
    minZoom: 8,
    maxZoom: 19,
    dragRotate: false,
    pitchWithRotate: false,
    touchPitch: false,
    attributionControl: { compact: true, customAttribution: 'gridbranch' },
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

const mapLoaded = new Promise((resolve) => map.once('load', resolve));

function addLayers(data) {
  map.addSource('district', { type: 'geojson', data: data.district });
  map.addSource('streets', { type: 'geojson', data: data.streets });
  map.addSource('communities', { type: 'geojson', data: data.communities });
  map.addSource('grids', { type: 'geojson', data: data.grids, promoteId: 'code' });

  const widthBy = (z10, z16) => ['interpolate', ['linear'], ['zoom'], 10, z10, 16, z16];

  map.addLayer({
    id: 'district-fill',
    type: 'fill',
    source: 'district',
    paint: { 'fill-color': COLORS.district },
  });
  map.addLayer({
    id: 'grids-fill',
    type: 'fill',
    source: 'grids',
    paint: {
      'fill-color': ['case', ['to-boolean', ['get', 'has_branch']], COLORS.withBranch, COLORS.withoutBranch],
      'fill-opacity': ['case', ['boolean', ['feature-state', 'hover'], false], 0.95, 0.7],
    },
  });
  map.addLayer({
    id: 'grids-line',
    type: 'line',
    source: 'grids',
    layout: { 'line-join': 'round' },
    paint: { 'line-color': COLORS.gridLine, 'line-width': widthBy(0.5, 1.5), 'line-opacity': 0.9 },
  });
  map.addLayer({
    id: 'communities-line',
    type: 'line',
    source: 'communities',
    layout: { 'line-join': 'round' },
    paint: {
      'line-color': COLORS.community,
      'line-width': widthBy(0.6, 1.4),
      'line-opacity': 0.75,
      'line-dasharray': [3, 2],
    },
  });
  map.addLayer({
    id: 'streets-line',
    type: 'line',
    source: 'streets',
    layout: { 'line-join': 'round', 'line-cap': 'round' },
    paint: { 'line-color': COLORS.street, 'line-width': widthBy(1.4, 3), 'line-opacity': 0.85 },
  });
  map.addLayer({
    id: 'grids-hover',
    type: 'line',
    source: 'grids',
    paint: {
      'line-color': COLORS.hover,
      'line-width': 1.6,
      'line-opacity': ['case', ['boolean', ['feature-state', 'hover'], false], 0.9, 0],
    },
  });
  map.addLayer({
    id: 'district-casing',
    type: 'line',
    source: 'district',
    layout: { 'line-join': 'round', 'line-cap': 'round' },
    paint: { 'line-color': '#ffffff', 'line-width': widthBy(6, 10), 'line-opacity': 0.9 },
  });
  map.addLayer({
    id: 'district-line',
    type: 'line',
    source: 'district',
    layout: { 'line-join': 'round', 'line-cap': 'round' },
    paint: { 'line-color': COLORS.districtLine, 'line-width': widthBy(2.6, 4.5) },
  });
  map.addLayer({
    id: 'grids-selected',
    type: 'line',
    source: 'grids',
    filter: ['==', ['get', 'code'], ''],
    layout: { 'line-join': 'round' },
    paint: { 'line-color': COLORS.selected, 'line-width': widthBy(2.5, 4) },
  });
}

// --- legend toggles -------------------------------------------------------------

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
  for (const id of TOGGLED_LAYERS[what] || []) {
    map.setLayoutProperty(id, 'visibility', input.checked ? 'visible' : 'none');
  }
}

function wireToggles() {
  for (const input of document.querySelectorAll('[data-toggle]')) {
    input.addEventListener('change', () => applyToggle(input));
    if (!input.checked) {
      applyToggle(input);
    }
  }
}

// --- grid details ---------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

// A <dl> describing a grid; `branches` is an array, null while loading, or an Error.
function gridDetails(props, branches) {
  const dl = el('dl', 'grid-details');
  const row = (label, value, className) => {
    dl.append(el('dt', null, label));
    const dd = el('dd', className);
    if (value instanceof Node) {
      dd.append(value);
    } else {
      dd.textContent = value;
    }
    dl.append(dd);
    return dd;
  };
  row('网格编码', props.code, 'grid-code');
  row('网格名称', props.name, 'grid-name');
  row('所属社区', `${props.community_name || '—'}（${props.community || '—'}）`, 'grid-community');
  const worker = props.grid_worker
    ? `${props.grid_worker}${props.grid_worker_phone ? `（${props.grid_worker_phone}）` : ''}`
    : '未配备';
  row('网格员', worker, 'grid-worker');

  let value;
  if (branches === null) {
    value = el('span', 'muted', '正在加载…');
  } else if (branches instanceof Error) {
    value = el('span', 'error-text', `党支部信息加载失败：${branches.message}`);
  } else if (branches.length === 0) {
    value = el('span', 'no-branch', '无党支部');
  } else {
    value = el('ul', 'branch-list');
    for (const b of branches) {
      const li = el('li');
      li.append(el('span', 'branch-name', b.name));
      li.append(el('span', 'branch-kind', BRANCH_KINDS[b.kind] || b.kind));
      li.title = b.code;
      value.append(li);
    }
  }
  row('党支部', value, 'grid-branches');
  return dl;
}

let selectedCode = null;
let hoveredCode = null;
const popup = new maplibregl.Popup({ closeButton: true, closeOnClick: false, maxWidth: '340px', className: 'grid-popup' });

function renderSelection(props, branches, state) {
  const title = el('div', 'popup-title', props.name);
  const popupBody = el('div');
  popupBody.append(title, gridDetails(props, branches));
  popup.setDOMContent(popupBody);

  infoEl.replaceChildren(gridDetails(props, branches));
  infoEl.dataset.code = props.code;
  infoEl.dataset.state = state;
}

async function selectGrid(props, lngLat) {
  selectedCode = props.code;
  map.setFilter('grids-selected', ['==', ['get', 'code'], props.code]);
  popup.setLngLat(lngLat);
  renderSelection(props, null, 'loading');
  if (!popup.isOpen()) {
    popup.addTo(map);
  }
  try {
    const full = await fetchJson(apiUrl(`v1/grids/${encodeURIComponent(props.code)}`));
    if (selectedCode !== props.code) {
      return; // another grid was clicked meanwhile
    }
    renderSelection({ ...props, ...full.properties }, full.properties.branches || [], 'ready');
  } catch (err) {
    if (selectedCode === props.code) {
      renderSelection(props, err, 'error');
    }
  }
}

function clearSelection() {
  selectedCode = null;
  map.setFilter('grids-selected', ['==', ['get', 'code'], '']);
}

function setHover(code) {
  if (hoveredCode === code) {
    return;
  }
  if (hoveredCode !== null) {
    map.setFeatureState({ source: 'grids', id: hoveredCode }, { hover: false });
  }
  hoveredCode = code;
  if (code !== null) {
    map.setFeatureState({ source: 'grids', id: code }, { hover: true });
  }
}

function wireInteraction() {
  map.on('click', 'grids-fill', (event) => {
    const feature = event.features && event.features[0];
    if (feature) {
      selectGrid(feature.properties, event.lngLat);
    }
  });
  map.on('mousemove', 'grids-fill', (event) => {
    map.getCanvas().style.cursor = 'pointer';
    const feature = event.features && event.features[0];
    setHover(feature ? feature.properties.code : null);
  });
  map.on('mouseleave', 'grids-fill', () => {
    map.getCanvas().style.cursor = '';
    setHover(null);
  });
  // a click beside every grid closes the popup (closeOnClick would also close it when
  // the click selects another grid)
  map.on('click', (event) => {
    if (map.queryRenderedFeatures(event.point, { layers: ['grids-fill'] }).length === 0) {
      popup.remove();
    }
  });
  popup.on('close', clearSelection);
}

function showStats(grids) {
  const total = grids.features.length;
  const without = grids.features.filter((f) => !f.properties.has_branch).length;
  const rate = total ? (((total - without) / total) * 100).toFixed(1) : '0.0';
  statsEl.replaceChildren(
    document.createTextNode(`共 ${total} 个网格，其中 `),
    el('strong', 'no-branch', `${without}`),
    document.createTextNode(` 个无党支部；党支部覆盖率 ${rate}%。`),
  );
  statsEl.hidden = false;
}

// --- start ----------------------------------------------------------------------

async function main() {
  let data;
  try {
    const [district, streets, communities, grids] = await Promise.all([
      boundaries('district'),
      boundaries('street'),
      boundaries('community'),
      fetchAllGrids(),
    ]);
    data = { district, streets, communities, grids };
  } catch (err) {
    console.warn('loading the map data failed', err);
    showStatus(`地图数据加载失败：${err.message}。请检查网络或稍后刷新重试。`, 'error');
    document.body.dataset.error = '1';
    return;
  }
  await mapLoaded;
  addLayers(data);
  wireToggles();
  wireInteraction();
  showStats(data.grids);

  const bounds = boundsOf(data.district) || boundsOf(data.grids);
  if (bounds) {
    map.fitBounds(bounds, { padding: fitPadding(), animate: false });
  }
  if (data.grids.features.length === 0) {
    showStatus('暂无网格数据。', 'warning');
  } else {
    showStatus('');
  }
  map.once('idle', () => {
    document.body.dataset.ready = '1';
  });
}

main();
