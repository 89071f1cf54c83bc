// The public report form (随手拍) at /report, and a report's public state at
// /report/{number}: pick the spot on the map or by the phone's position, see the open
// reports near it first (possible duplicates), say what is wrong, add photos (kept by the
// service, without their metadata), an optional contact; submit, get a number. No
// account, no cookie: the service's anonymous API only (POST /v1/photos, POST /v1/events,
// GET /v1/public/nearby, Open311 for the categories and the public state).
import * as maplibregl from '../vendor/maplibre-gl/maplibre-gl.mjs';
import { say } from './api.js';

const MAX_PHOTOS = 9;
const MAX_PHOTO_BYTES = 10 * 1024 * 1024;
const $ = (id) => document.getElementById(id);
const apiUrl = (path) => new URL(path.replace(/^\//, ''), document.baseURI).toString();

async function call(path, { method = 'GET', body, type } = {}) {
  const headers = { Accept: 'application/json' };
  if (type) {
    headers['Content-Type'] = type;
  }
  const response = await fetch(apiUrl(path), { method, headers, body });
  let data = null;
  try {
    data = await response.json();
  } catch {
    // no JSON body
  }
  if (!response.ok) {
    const error = new Error((data && (data.detail_zh || data.detail || data.title)) || `请求失败（HTTP ${response.status}）`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function newMap(container, style, options = {}) {
  return new maplibregl.Map({
    container,
    style,
    attributionControl: false,
    locale: { 'NavigationControl.ZoomIn': '放大', 'NavigationControl.ZoomOut': '缩小', 'NavigationControl.ResetBearing': '指北' },
    ...options,
  });
}

// An instant as the district reads it (Beijing time, whatever the phone's zone).
const LOCAL = new Intl.DateTimeFormat('zh-CN', {
  timeZone: 'Asia/Shanghai', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: false,
});
function day(iso) {
  return iso ? LOCAL.format(new Date(iso)) : '—';
}

// ---- the form --------------------------------------------------------------------------

async function startForm() {
  const style = await call('tiles/style.json');
  const map = newMap('report-map', style);
  window.gridbranchReportMap = map; // the browser tests project points with it
  map.on('load', () => {
    // open reports only: the ones a resident might be about to report again
    if (map.getLayer('events-circle')) {
      map.setFilter('events-circle', ['!', ['in', ['get', 'status'], ['literal', ['closed', 'rejected', 'duplicate']]]]);
    }
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }));
  const marker = new maplibregl.Marker({ color: '#d00000' });
  let spot = null;

  async function choose(lon, lat, how) {
    spot = { lon, lat };
    marker.setLngLat([lon, lat]).addTo(map);
    $('report-where').textContent = `已选位置（${how}）：${lon.toFixed(6)}, ${lat.toFixed(6)}`;
    say($('report-message'), '');
    await showNearby(lon, lat);
  }

  map.on('click', (e) => choose(e.lngLat.lng, e.lngLat.lat, '地图点选'));
  $('report-locate').addEventListener('click', () => {
    if (!navigator.geolocation) {
      say($('report-message'), '此浏览器不能定位，请在地图上点选位置', 'error');
      return;
    }
    navigator.geolocation.getCurrentPosition(
      (p) => {
        map.flyTo({ center: [p.coords.longitude, p.coords.latitude], zoom: 17 });
        choose(p.coords.longitude, p.coords.latitude, '我的位置');
      },
      () => say($('report-message'), '无法获取您的位置，请在地图上点选', 'error'),
      { enableHighAccuracy: true, timeout: 10_000 },
    );
  });

  const services = await call('open311/v2/services.json');
  const select = $('report-category');
  select.append(new Option('请选择类别', ''));
  for (const s of services) {
    select.append(new Option(s.service_name, s.service_code));
  }

  $('report-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const message = $('report-message');
    const files = [...$('report-photos').files];
    const problem = !spot
      ? '请先在地图上点选问题位置'
      : !select.value
        ? '请选择问题类别'
        : !$('report-description').value.trim()
          ? '请填写问题描述'
          : files.length > MAX_PHOTOS
            ? `照片最多 ${MAX_PHOTOS} 张`
            : files.find((f) => f.size > MAX_PHOTO_BYTES)
              ? '每张照片不超过 10 MB'
              : null;
    if (problem) {
      say(message, problem, 'error');
      return;
    }
    const button = $('report-submit');
    button.disabled = true;
    try {
      const photos = [];
      for (const [i, f] of files.entries()) {
        say(message, `正在上传照片 ${i + 1}/${files.length}…`);
        photos.push((await call('v1/photos', { method: 'POST', body: f, type: f.type || 'application/octet-stream' })).url);
      }
      say(message, '正在提交…');
      const contact = $('report-contact').value.trim();
      const stored = await call('v1/events', {
        method: 'POST',
        type: 'application/json',
        body: JSON.stringify({
          lon: spot.lon,
          lat: spot.lat,
          crs: 'wgs84',
          category: select.value,
          description: $('report-description').value.trim(),
          photos,
          ...(contact ? { contact } : {}),
        }),
      });
      window.location.assign(apiUrl(`report/${stored.id}`));
    } catch (err) {
      say(message, err.message, 'error');
    } finally {
      button.disabled = false;
    }
  });
}

async function showNearby(lon, lat) {
  const box = $('report-nearby');
  const list = $('report-nearby-list');
  list.replaceChildren();
  let items = [];
  try {
    items = (await call(`v1/public/nearby?lon=${lon}&lat=${lat}`)).items;
  } catch {
    items = [];
  }
  box.hidden = items.length === 0;
  for (const r of items) {
    const li = document.createElement('li');
    const link = document.createElement('a');
    link.href = apiUrl(`report/${r.service_request_id}`);
    link.textContent = `查看 ${r.service_request_id}`;
    li.append(`${r.service_name} · ${r.status_notes} · ${day(r.requested_datetime)}`
      + (r.distance_m !== undefined ? ` · 约 ${r.distance_m} 米` : '') + ' ', link);
    list.append(li);
  }
}

// ---- a report's public state -------------------------------------------------------------

async function startTrack(number) {
  $('report-form-section').hidden = true;
  $('report-track').hidden = false;
  $('track-number').textContent = number;
  document.title = `上报 ${number} · 随手拍`;
  const details = $('track-details');
  try {
    const [r] = await call(`open311/v2/requests/${number}.json`);
    const rows = [
      ['状态', r.status_notes],
      ['类别', r.service_name],
      ['位置', r.address || '—'],
      ['上报时间', day(r.requested_datetime)],
      ['最近更新', day(r.updated_datetime)],
      ['办理时限', day(r.expected_datetime)],
      ['承办部门', r.agency_responsible || '—'],
    ];
    if (r.description) {
      rows.push(['描述', r.description]);
    }
    for (const [k, v] of rows) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      details.append(dt, dd);
    }
    if (r.media_url) {
      const img = document.createElement('img');
      img.src = r.media_url;
      img.alt = '上报的照片';
      const dd = document.createElement('dd');
      dd.append(img);
      const dt = document.createElement('dt');
      dt.textContent = '照片';
      details.append(dt, dd);
    }
    if (r.lat !== null) {
      const style = await call('tiles/style.json');
      const map = newMap('track-map', style, { center: [r.long, r.lat], zoom: 16, interactive: true });
      new maplibregl.Marker({ color: '#d00000' }).setLngLat([r.long, r.lat]).addTo(map);
    } else {
      $('track-map').hidden = true;
    }
  } catch (err) {
    const dd = document.createElement('dd');
    dd.textContent = err.status === 404 ? '没有这个编号的上报' : err.message;
    const dt = document.createElement('dt');
    dt.textContent = '查询结果';
    details.append(dt, dd);
    $('track-map').hidden = true;
  }
  document.body.dataset.state = 'tracked';
}

const tracked = /\/report\/(\d+)\/?$/.exec(window.location.pathname);
(tracked ? startTrack(tracked[1]) : startForm().then(() => { document.body.dataset.state = 'ready'; }))
  .catch((err) => say($('report-message'), `页面加载失败：${err.message}`, 'error'));
