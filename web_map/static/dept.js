// A department's own events on the web map (本部门事件), for signed-in department staff
// (职能部门): the queue of events dispatched to their department — in hand (待办: 已派遣,
// 处置中) or every one it ever had (全部, the returned and closed ones included) — as a
// list ordered by due time with the warning state (预警 / 超期, by the service's clock)
// and as points on the map. A row (or a point) opens the event's record with the actions
// the department may take now (dispatch.js: 开始处置, 处置完毕 with the feedback, 退回 with
// a reason); after an action the queue and the map's tiles are loaded again. Below, the
// department's own figures of the evaluation (绩效一网考: 结案率, 按期结案率, 返工率,
// 退回) and its rank among the rated departments (GET /v1/events/evaluation), shown with
// the formatting of the rankings (ranking.js).
//
// The section is built here (not in index.html) and exists only while department staff
// are signed in; nothing of it is left on sign-out.
//
// Hooks for the browser tests:
//   #dept-queue[data-state]              "loading" | "ready" | "error"
//   #dept-queue[data-scope]              "open" | "all"
//   #dept-queue-list li[data-id][data-time-state][data-status]   one event each, in order
//   #dept-figures[data-rank]             the department's rank ("" when not rated)

import { say } from './api.js';
import { wireDispatch } from './dispatch.js';
import { count, percent } from './ranking.js';

const OPEN = 'dispatched,in_progress';
const TIME_STATES = { warning: '预警', overdue: '超期', normal: '正常' };
const SOURCE = 'dept-queue';
const LAYER = 'dept-queue-circle';
const FIGURES = [
  ['received', '派至本部门', count],
  ['closed', '结案', count],
  ['closure_rate', '结案率', percent],
  ['on_time_rate', '按期结案率', percent],
  ['rework_rate', '返工率', percent],
  ['returned', '退回', count],
  ['overdue_open', '超期未结', count],
];

export function wireDepartment({ map, call, el, formatTime, reveal, session, statusNames, refreshTiles }) {
  let section = null;
  let scope = 'open';
  let ticket = 0;
  const actions = wireDispatch({
    call,
    el,
    formatTime,
    session,
    statusNames,
    refreshTiles: () => {
      refreshTiles();
      load();
    },
  });

  function build() {
    section = el('section', 'panel-section dept-queue');
    section.id = 'dept-queue';
    section.setAttribute('aria-labelledby', 'dept-queue-title');
    const title = el('h2', null, '本部门事件 ');
    title.id = 'dept-queue-title';
    title.append(el('span', 'en', 'Department queue'));
    const tabs = el('div', 'dept-tabs');
    for (const [key, label] of [['open', '待办'], ['all', '全部']]) {
      const b = el('button', 'dept-tab', label);
      b.type = 'button';
      b.dataset.scope = key;
      b.addEventListener('click', () => {
        scope = key;
        load();
      });
      tabs.append(b);
    }
    const message = el('p', 'dept-message');
    message.setAttribute('role', 'status');
    const list = el('ul', 'dept-queue-list');
    list.id = 'dept-queue-list';
    const figures = el('div', 'dept-figures');
    figures.id = 'dept-figures';
    section.append(title, tabs, message, list, el('h3', null, '本部门考核（近 30 天）'), figures);
    // before the rankings: the first thing a department works with
    const anchor = document.getElementById('ranking');
    anchor.parentNode.insertBefore(section, anchor);
  }

  function addLayer() {
    if (map.getSource(SOURCE)) {
      return;
    }
    map.addSource(SOURCE, { type: 'geojson', data: { type: 'FeatureCollection', features: [] } });
    map.addLayer({
      id: LAYER,
      type: 'circle',
      source: SOURCE,
      paint: {
        'circle-color': ['match', ['get', 'time_state'], 'overdue', '#d62828', 'warning', '#f77f00', '#1d3557'],
        'circle-radius': 7,
        'circle-stroke-color': '#ffffff',
        'circle-stroke-width': 2,
      },
    });
    map.on('click', LAYER, (e) => {
      const id = e.features && e.features[0] ? Number(e.features[0].properties.id) : null;
      const row = id === null ? null : section && section.querySelector(`li[data-id='${id}']`);
      if (row) {
        open(row, false);
        row.scrollIntoView({ block: 'nearest' });
      }
    });
  }

  function removeLayer() {
    if (map.getLayer(LAYER)) {
      map.removeLayer(LAYER);
    }
    if (map.getSource(SOURCE)) {
      map.removeSource(SOURCE);
    }
  }

  // the row's record and actions, under it (one open at a time)
  function open(row, fly = true) {
    for (const other of section.querySelectorAll('li.open')) {
      if (other !== row) {
        other.classList.remove('open');
        other.querySelector('.event-actions')?.remove();
      }
    }
    if (!row.querySelector('.event-actions')) {
      row.append(actions.panel(Number(row.dataset.id)));
    }
    row.classList.add('open');
    if (fly && row.dataset.lon) {
      reveal({ point: [Number(row.dataset.lon), Number(row.dataset.lat)], zoom: 16 });
    }
  }

  function item(event) {
    const li = el('li', `dept-item time-${event.time_state || 'none'}`);
    li.dataset.id = String(event.id);
    li.dataset.status = event.status;
    li.dataset.timeState = event.time_state || '';
    [li.dataset.lon, li.dataset.lat] = event.point.map(String);
    const head = el('button', 'dept-item-head link');
    head.type = 'button';
    head.append(el('span', 'dept-id', `#${event.id}`), el('span', 'dept-category', event.category.name));
    if (event.time_state && event.time_state !== 'normal') {
      head.append(el('span', `badge badge-${event.time_state}`, TIME_STATES[event.time_state]));
    }
    head.addEventListener('click', () => open(li));
    const where = [event.street && event.street.name, event.grid && event.grid.name].filter(Boolean).join(' · ');
    const when = event.due_at ? `时限 ${formatTime(event.due_at)}` : '';
    li.append(head, el('p', 'dept-item-meta',
      [statusNames[event.status] || event.status, where, when].filter(Boolean).join(' · ')),
    el('p', 'dept-item-text', event.description));
    return li;
  }

  async function loadFigures(figures) {
    try {
      const answer = await call('v1/events/evaluation?level=department');
      const unit = answer.units[0];
      figures.dataset.rank = unit && unit.rank ? String(unit.rank) : '';
      if (!unit) {
        figures.replaceChildren(el('p', 'muted', '近 30 天无派至本部门的事件。'));
        return;
      }
      const dl = el('dl', 'dept-figure-list');
      for (const [key, label, show] of FIGURES) {
        dl.append(el('dt', null, label), el('dd', `figure figure-${key}`, show(unit[key])));
      }
      const rank = unit.rank
        ? `排名：第 ${unit.rank} 名 / 共 ${answer.ranked} 个参评部门`
        : `应结案 ${unit.due} 件，少于 ${answer.min_sample} 件，暂不排名`;
      figures.replaceChildren(el('p', 'dept-rank', rank), dl);
    } catch (err) {
      figures.replaceChildren(el('p', 'error', `考核加载失败：${err.message}`));
    }
  }

  async function load() {
    if (!section) {
      return;
    }
    const mine = ++ticket;
    const message = section.querySelector('.dept-message');
    const list = section.querySelector('.dept-queue-list');
    const openId = section.querySelector('li.open')?.dataset.id;
    section.dataset.state = 'loading';
    section.dataset.scope = scope;
    for (const b of section.querySelectorAll('.dept-tab')) {
      b.classList.toggle('active', b.dataset.scope === scope);
      b.setAttribute('aria-pressed', String(b.dataset.scope === scope));
    }
    try {
      const answer = await call(`v1/events?limit=500${scope === 'open' ? `&status=${OPEN}` : ''}`);
      if (mine !== ticket) {
        return;
      }
      // the most urgent first: due time, then the events with none (not dispatched yet)
      const events = [...answer.items].sort((a, b) => (a.due_at || '9999') < (b.due_at || '9999') ? -1
        : (a.due_at || '9999') > (b.due_at || '9999') ? 1 : a.id - b.id);
      list.replaceChildren(...events.map(item));
      const late = events.filter((e) => e.time_state === 'overdue').length;
      const warned = events.filter((e) => e.time_state === 'warning').length;
      const shown = answer.total > events.length ? `，显示最新 ${events.length} 件` : '';
      say(message, events.length
        ? `${scope === 'open' ? '待办' : '共'} ${answer.total} 件（超期 ${late}，预警 ${warned}${shown}）`
        : (scope === 'open' ? '暂无待办事件。' : '暂无派至本部门的事件。'));
      map.getSource(SOURCE)?.setData({
        type: 'FeatureCollection',
        features: events.map((e) => ({
          type: 'Feature',
          geometry: { type: 'Point', coordinates: e.point },
          properties: { id: e.id, time_state: e.time_state || 'none' },
        })),
      });
      const again = openId && list.querySelector(`li[data-id='${openId}']`);
      if (again) {
        open(again, false);
      }
      section.dataset.state = 'ready';
      await loadFigures(section.querySelector('.dept-figures'));
    } catch (err) {
      if (mine === ticket) {
        say(message, `本部门事件加载失败：${err.message}`, 'error');
        section.dataset.state = 'error';
      }
    }
  }

  function sessionChanged() {
    const s = session();
    ticket += 1;
    if (!s || s.role !== 'department_staff') {
      section?.remove();
      section = null;
      removeLayer();
      return;
    }
    if (!section) {
      build();
    }
    addLayer();
    scope = 'open';
    load();
  }

  return { sessionChanged };
}
