// Rankings of the units inside the signed-in staff member's area (辖区排名) on the web map:
// for admins (their area) and dispatchers (the district), the coverage analysis of each
// street, community or grid below — registration rate, branch coverage, role coverage,
// members registered, coverage findings — as a table sorted by any of those figures, with
// the rank the service gives (GET /v1/coverage/summary; the same figures as its CSV and
// the `gridbranch coverage report` command). A row flies the map to the unit; 导出 CSV
// saves the service's CSV of the same table.
//
// The figures are aggregates, but the endpoint is for staff only: the section exists for
// signed-in admins and dispatchers and is emptied on sign-out.
//
// Hooks for the browser tests:
//   #ranking[data-level]          the level shown (street, community, grid)
//   #ranking[data-sort]           the figure the rows are sorted by
//   #ranking[data-state]          "loading" | "ready" | "error"
//   #ranking-table tbody tr[data-code]   one unit each, in the order shown

import { levelOf, say } from './api.js';

const LEVELS = ['district', 'street', 'community', 'grid'];
const LEVEL_NAMES = { street: '街道', community: '社区', grid: '网格' };
// The figures a table can be sorted by: [key, heading, how a value is shown]. Those the
// service ranks carry its rank; the others are numbered in the order shown.
// (shared with the department's own figures, dept.js)
export const percent = (v) => (v === null || v === undefined ? '—' : `${(v * 100).toFixed(1)}%`);
export const count = (v) => (v === null || v === undefined ? '—' : Number(v).toLocaleString('zh-CN'));
const COLUMNS = [
  ['registration_rate', '报到率', percent],
  ['members_registered', '已报到', count],
  ['branch_share', '支部覆盖', percent],
  ['roles_filled_share', '岗位齐全', percent],
  ['issues', '问题', count],
];
const ISSUE_NAMES = {
  gap: '缺口',
  overlap: '重叠',
  sliver: '细碎缺口或重叠',
  outside_community: '超出所属社区',
  invalid: '无效几何',
  stray_part: '游离碎块',
  no_branch: '无党支部',
  roles_missing: '缺岗位',
};

function issueTotal(issues) {
  return Object.values(issues || {}).reduce((sum, n) => sum + n, 0);
}

function bboxOf(geometry) {
  let [w, s, e, n] = [Infinity, Infinity, -Infinity, -Infinity];
  const walk = (c) => {
    if (typeof c[0] === 'number') {
      w = Math.min(w, c[0]);
      e = Math.max(e, c[0]);
      s = Math.min(s, c[1]);
      n = Math.max(n, c[1]);
    } else {
      c.forEach(walk);
    }
  };
  if (geometry && geometry.coordinates) {
    walk(geometry.coordinates);
  }
  return Number.isFinite(w) ? [[w, s], [e, n]] : null;
}

export function wireRanking({ call, download, el, reveal, session }) {
  const section = document.getElementById('ranking');
  const levelSelect = document.getElementById('ranking-level');
  const csvButton = document.getElementById('ranking-csv');
  const reportMonth = document.getElementById('ranking-report-month');
  const reportButton = document.getElementById('ranking-report');
  const message = section.querySelector('.ranking-message');
  const table = document.getElementById('ranking-table');
  const body = table.querySelector('tbody');
  let units = [];
  let sortKey = 'registration_rate';
  let ascending = false;
  let loading = 0; // the latest request; older answers are dropped

  // the header: a sort button per figure
  const headRow = table.querySelector('thead tr');
  headRow.replaceChildren(el('th', 'rank', '#'), el('th', 'name', '名称'));
  for (const [key, heading] of COLUMNS) {
    const th = el('th', 'figure');
    const button = el('button', 'sort', heading);
    button.type = 'button';
    button.dataset.key = key;
    button.addEventListener('click', () => {
      ascending = key === sortKey ? !ascending : false;
      sortKey = key;
      render();
    });
    th.append(button);
    headRow.append(th);
  }

  function value(unit, key) {
    return key === 'issues' ? issueTotal(unit.issues) : unit[key];
  }

  function render() {
    const sorted = [...units].sort((a, b) => {
      const x = value(a, sortKey);
      const y = value(b, sortKey);
      if (x === y) {
        return a.code < b.code ? -1 : 1;
      }
      if (x === null || x === undefined) {
        return 1; // no figure (no residents): last either way
      }
      if (y === null || y === undefined) {
        return -1;
      }
      return ascending ? x - y : y - x;
    });
    const rankedByService = units.some((u) => u.rank && u.rank[sortKey] !== undefined);
    section.dataset.sort = sortKey;
    for (const button of headRow.querySelectorAll('button.sort')) {
      const on = button.dataset.key === sortKey;
      button.classList.toggle('active', on);
      button.parentElement.setAttribute('aria-sort', on ? (ascending ? 'ascending' : 'descending') : 'none');
      button.textContent = `${COLUMNS.find(([k]) => k === button.dataset.key)[1]}${on ? (ascending ? ' ↑' : ' ↓') : ''}`;
    }
    body.replaceChildren(...sorted.map((unit, i) => {
      const tr = el('tr');
      tr.dataset.code = unit.code;
      // the service's rank while its order is shown (best first), else the position
      const rank = rankedByService && !ascending ? (unit.rank || {})[sortKey] : i + 1;
      tr.append(el('td', 'rank', rank === null || rank === undefined ? '—' : String(rank)));
      const name = el('td', 'name');
      const link = el('button', 'link', unit.name);
      link.type = 'button';
      link.title = `${unit.code}：在地图上查看`;
      link.addEventListener('click', () => {
        if (unit.bounds) {
          reveal({ bounds: unit.bounds });
        }
      });
      name.append(link);
      tr.append(name);
      for (const [key, , show] of COLUMNS) {
        const td = el('td', 'figure', show(value(unit, key)));
        if (key === 'issues') {
          td.title = Object.entries(unit.issues || {}).map(([k, n]) => `${ISSUE_NAMES[k] || k} ${n}`).join('，') || '无';
        }
        if (key === 'roles_filled_share' && unit.roles_missing && unit.roles_missing.length) {
          td.title = `缺：${unit.roles_missing.join('、')}`;
        }
        tr.append(td);
      }
      return tr;
    }));
  }

  async function load() {
    const level = levelSelect.value;
    const ticket = ++loading;
    section.dataset.state = 'loading';
    section.dataset.level = level;
    say(message, '正在加载…');
    try {
      const answer = await call(`v1/coverage/summary?level=${level}&format=geojson`);
      if (ticket !== loading) {
        return;
      }
      units = answer.features.map((f) => ({ ...f.properties, bounds: bboxOf(f.geometry) }));
      render();
      const total = answer.total || {};
      say(message, `${total.name || ''}：${units.length} 个${LEVEL_NAMES[level]}（点击表头排序，点击名称定位）`);
      section.dataset.state = 'ready';
    } catch (err) {
      if (ticket === loading) {
        units = [];
        body.replaceChildren();
        say(message, `排名加载失败：${err.message}`, 'error');
        section.dataset.state = 'error';
      }
    }
  }

  levelSelect.addEventListener('change', load);

  csvButton.addEventListener('click', async () => {
    const level = levelSelect.value;
    try {
      await download(`v1/coverage/summary?level=${level}&format=csv`, `覆盖分析_${level}.csv`);
    } catch (err) {
      say(message, `导出失败：${err.message}`, 'error');
    }
  });

  // the monthly report (月度报告) of the caller's area, as the service prints it
  reportButton.addEventListener('click', async () => {
    const month = reportMonth.value;
    if (!/^\d{4}-\d{2}$/.test(month)) {
      say(message, '请选择报告月份', 'error');
      return;
    }
    reportButton.disabled = true;
    say(message, `正在生成 ${month} 月度报告…`);
    try {
      await download(`v1/reports/monthly?month=${month}&format=pdf`, `月度报告_${month}.pdf`);
      say(message, `已下载 ${month} 月度报告`, 'success');
    } catch (err) {
      say(message, `月度报告生成失败：${err.message}`, 'error');
    } finally {
      reportButton.disabled = false;
    }
  });

  function lastMonth() {
    // the month before this one, as the district reads the calendar (Beijing time)
    const [y, m] = new Intl.DateTimeFormat('en-CA', { timeZone: 'Asia/Shanghai', year: 'numeric', month: '2-digit' })
      .format(new Date()).split('-').map(Number);
    return m === 1 ? `${y - 1}-12` : `${y}-${String(m - 1).padStart(2, '0')}`;
  }

  async function sessionChanged() {
    const s = session();
    const staff = Boolean(s && ['admin', 'dispatcher'].includes(s.role));
    section.hidden = !staff;
    loading += 1;
    units = [];
    body.replaceChildren();
    delete section.dataset.state;
    if (!staff) {
      levelSelect.replaceChildren();
      say(message, '');
      return;
    }
    const own = s.role === 'admin' && s.area_code ? levelOf(s.area_code) : 'district'; // dispatchers: the district
    const below = LEVELS.slice(LEVELS.indexOf(own) + 1);
    if (!below.length) {
      section.hidden = true; // a grid's admin: nothing below to rank
      return;
    }
    if (!reportMonth.value) {
      reportMonth.value = lastMonth();
    }
    levelSelect.replaceChildren(...below.map((level) => {
      const option = el('option', null, LEVEL_NAMES[level]);
      option.value = level;
      return option;
    }));
    await load();
  }

  return { sessionChanged };
}
