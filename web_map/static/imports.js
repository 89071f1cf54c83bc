// Importing data on the web map (数据导入), for admins of the district or of a street: pick
// a file, say what it holds (areas, grids, members, branches, departments, categories,
// registrations) and its CRS (or let the file say), watch it upload and its dry run
// (POST /v1/imports, then GET /v1/imports/{id} until it is checked), read the report and,
// for boundaries, the preview on the map — added, changed and absent units in colours of
// their own, and the gaps and overlaps the new set would leave — then commit it
// (POST /v1/imports/{id}/commit). The service decides what the admin may import and
// refuses, row by row, what lies outside their area; this panel only shows it.
//
// Hooks for the browser tests:
//   #imports[data-state]      "idle" | "uploading" | "checking" | "ready" | "failed" | "committing" | "committed"
//   #imports-recheck          a new dry run of the uploaded file with the form's options (or the CRS named)
//   #imports[data-preview]    the preview's features per action, as JSON (boundaries only)
//   the map layers            import-preview-fill, import-preview-line (while previewed)

import { levelOf, say } from './api.js';

const KINDS = [
  ['grids', '网格'],
  ['areas', '街道和社区'],
  ['members', '党员花名册'],
  ['branches', '党支部'],
  ['registrations', '报到名单'],
  ['departments', '职能部门'],
  ['categories', '事件类别'],
];
const DISTRICT_ONLY = new Set(['departments', 'categories']);
const CRSS = [
  ['', '按文件（文件声明的坐标系）'],
  ['wgs84', 'WGS84（GPS）'],
  ['gcj02', 'GCJ-02（高德、腾讯、微信）'],
  ['bd09', 'BD-09（百度）'],
  ['cgcs2000', 'CGCS2000 经纬度'],
  ['EPSG:4547', 'CGCS2000 高斯-克吕格 114°E（EPSG:4547）'],
  ['EPSG:4526', 'CGCS2000 高斯-克吕格 38 带（EPSG:4526）'],
];
const PHASES = { queued: '排队中', reading: '读取文件', checking: '检查数据', comparing: '与库中数据比对', preview: '生成预览' };
// preview colours: what the import does with each unit, and the coverage findings
export const PREVIEW = {
  add: ['#1b9e77', '新增'],
  change: ['#f28e2b', '修改'],
  absent: ['#7f7f7f', '文件中没有（保留）'],
  retire: ['#555555', '撤销'],
  reject: ['#d62728', '拒绝'],
  gap: ['#7b2cbf', '缺口'],
  overlap: ['#ff6d00', '重叠'],
};
const COUNT_NAMES = {
  add: '新增', change: '修改', unchanged: '不变', reject: '拒绝', absent: '文件中没有（保留）', retire: '撤销', errors: '错误', warnings: '警告',
  added: '新增', renamed_or_reparented: '改名或改上级', redrawn: '重绘边界', retired: '撤销',
  members_created: '新增党员', members_updated: '更新党员', residences_recorded: '记录居住地',
  residences_kept_registered: '已报到保留居住地', residences_ended: '结束旧居住地',
  branches_created: '新增支部', branches_updated: '更新支部', coverage_changed: '覆盖网格变化',
  departments_created: '新增部门', departments_updated: '更新部门',
  categories_created: '新增类别', categories_updated: '更新类别',
  registrations_created: '新增报到', moves: '迁移报到',
  located: '落入网格', nearest: '就近网格', unmatched: '未匹配', invalid: '无效',
};
const SOURCE = 'import-preview';

function countsText(counts) {
  return Object.entries(counts || {})
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => `${COUNT_NAMES[k] || k} ${v}`)
    .join('，');
}

export function wireImports({ map, apiUrl, call, el, session, refreshTiles, reveal }) {
  const section = document.getElementById('imports');
  const form = document.getElementById('imports-form');
  const kindSelect = form.elements.kind;
  const crsSelect = form.elements.crs;
  const generation = form.querySelector('.imports-generation');
  const progressBox = section.querySelector('.imports-progress');
  const bar = section.querySelector('progress');
  const phaseText = section.querySelector('.imports-phase');
  const message = section.querySelector('.imports-message');
  const reportBox = document.getElementById('imports-report');
  const summary = reportBox.querySelector('.imports-summary');
  const legend = reportBox.querySelector('.imports-legend');
  const problems = reportBox.querySelector('.imports-problems');
  const retry = section.querySelector('.imports-retry');
  const recheckButton = document.getElementById('imports-recheck');
  const commitButton = document.getElementById('imports-commit');
  const cancelButton = document.getElementById('imports-cancel');
  let current = null; // the import being shown: {id, kind}
  let ticket = 0; // bumped whenever what is shown is dropped (sign-out, a new upload)

  crsSelect.replaceChildren(...CRSS.map(([value, label]) => {
    const option = el('option', null, label);
    option.value = value;
    return option;
  }));

  function setState(state) {
    section.dataset.state = state;
    form.querySelector('button[type="submit"]').disabled = ['uploading', 'checking', 'committing'].includes(state);
    if (['failed', 'ready', 'committed'].includes(state)) {
      // the outcome's line in view: on a phone it may lie below the sheet's fold
      requestAnimationFrame(() => {
        if (!message.hidden) {
          message.scrollIntoView({ block: 'nearest' });
        }
      });
    }
  }

  function showProgress(share, text) {
    progressBox.hidden = share === null;
    if (share !== null) {
      bar.value = share;
      phaseText.textContent = text;
    }
  }

  function dropPreview() {
    for (const id of ['import-preview-line', 'import-preview-fill']) {
      if (map.getLayer(id)) {
        map.removeLayer(id);
      }
    }
    if (map.getSource(SOURCE)) {
      map.removeSource(SOURCE);
    }
    delete section.dataset.preview;
  }

  function reset() {
    ticket += 1;
    current = null;
    dropPreview();
    reportBox.hidden = true;
    retry.hidden = true;
    showProgress(null);
    say(message, '');
    setState('idle');
  }

  // the options of the form, as the query of an upload or of a new dry run
  function options() {
    const params = new URLSearchParams({ kind: kindSelect.value });
    if (crsSelect.value) {
      params.set('crs', crsSelect.value);
    }
    const mapping = form.elements.map.value.trim();
    if (mapping) {
      params.set('map', mapping);
    }
    // grids only: a generation taking effect on a later day, retiring what the file lacks
    if (kindSelect.value === 'grids') {
      if (form.elements.effective.value) {
        params.set('effective', form.elements.effective.value);
      }
      if (form.elements.retire_missing.checked) {
        params.set('retire_missing', 'true');
      }
    }
    return params;
  }

  function kindChanged() {
    generation.hidden = kindSelect.value !== 'grids';
  }

  // the file is kept for another dry run (a boundary file, until it expires): offer it,
  // in the CRS the service names as the file's real one when it names one
  function offerRecheck(suggested) {
    retry.hidden = false;
    recheckButton.textContent = '按所选选项重新预检';
    if (suggested) {
      if (![...crsSelect.options].some((o) => o.value === suggested)) {
        const option = el('option', null, suggested);
        option.value = suggested;
        crsSelect.append(option);
      }
      crsSelect.value = suggested;
      const label = crsSelect.selectedOptions[0].textContent;
      recheckButton.textContent = `按 ${label} 重新预检`;
    }
  }

  // from an import just created (or checked again) to its report, preview and state
  async function follow(id, mine) {
    setState('checking');
    const job = await poll(id, mine);
    if (!job) {
      return;
    }
    showProgress(null);
    if (job.status === 'failed') {
      setState('failed');
      say(message, `预检失败：${job.error.detail_zh || job.error.detail}`, 'error');
      if (job.kept) {
        offerRecheck(job.error.crs_suggestion);
      }
      return;
    }
    showReport(job);
    if (job.report.preview) {
      await showPreview(job.id, mine);
    }
    setState('ready');
    if (job.report.committable) {
      say(message, '预检完成：请核对报告和地图预览，再确认导入。', 'info');
    } else {
      say(message, '预检发现错误：不能导入，请修正文件或选项后重新预检。', 'error');
      offerRecheck(job.report.crs_suggestion);
    }
  }

  // the upload, through XMLHttpRequest for its upload progress (fetch reports none)
  function send(file, params) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', apiUrl(`v1/imports?${params}`));
      xhr.setRequestHeader('Authorization', `Bearer ${session().token}`);
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) {
          showProgress(0.3 * (event.loaded / event.total), `上传中 ${Math.round((100 * event.loaded) / event.total)}%`);
        }
      };
      xhr.onload = () => {
        let data = null;
        try {
          data = JSON.parse(xhr.responseText);
        } catch {
          // no JSON body
        }
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve(data);
        } else {
          reject(new Error((data && (data.detail_zh || data.detail)) || `HTTP ${xhr.status}`));
        }
      };
      xhr.onerror = () => reject(new Error('网络错误，上传未完成'));
      xhr.send(file);
    });
  }

  async function poll(id, mine) {
    for (;;) {
      const job = await call(`v1/imports/${id}`);
      if (mine !== ticket) {
        return null;
      }
      if (job.status !== 'checking') {
        return job;
      }
      showProgress(0.3 + 0.7 * job.progress, `${PHASES[job.phase] || job.phase || '检查中'}…`);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  }

  function problemItems(report) {
    const rows = (report.problems || []).map((p) => {
      const where = p.feature ? `第 ${p.feature} 个要素` : '文件';
      return el('li', `imports-${p.severity}`,
        `${p.severity === 'error' ? '错误' : '警告'}：${where}${p.code ? `（${p.code}）` : ''}：${p.reason_zh || p.reason}`);
    });
    rows.push(...(report.rejects || []).map((r) => el('li', 'imports-error',
      `拒绝：第 ${r.row} 行${r.key ? `（${r.key}）` : ''}：${r.reason_zh || r.reason}`)));
    return rows;
  }

  async function showPreview(id, mine) {
    const response = await fetch(apiUrl(`v1/imports/${id}/preview`), {
      headers: { Authorization: `Bearer ${session().token}`, Accept: 'application/geo+json' },
    });
    if (!response.ok || mine !== ticket) {
      return;
    }
    const data = await response.json();
    dropPreview();
    map.addSource(SOURCE, { type: 'geojson', data });
    const colour = ['match', ['get', 'action'], ...Object.entries(PREVIEW).flatMap(([k, [c]]) => [k, c]), '#9aa5b1'];
    const shown = ['!=', ['get', 'action'], 'unchanged'];
    map.addLayer({ id: 'import-preview-fill', type: 'fill', source: SOURCE, filter: shown,
      paint: { 'fill-color': colour, 'fill-opacity': 0.6 } });
    map.addLayer({ id: 'import-preview-line', type: 'line', source: SOURCE,
      paint: { 'line-color': colour, 'line-width': ['case', shown, 2, 0.8] } });
    const counts = {};
    let bounds = null;
    for (const f of data.features) {
      counts[f.properties.action] = (counts[f.properties.action] || 0) + 1;
      const walk = (c) => {
        if (typeof c[0] === 'number') {
          bounds = bounds ? [[Math.min(bounds[0][0], c[0]), Math.min(bounds[0][1], c[1])],
            [Math.max(bounds[1][0], c[0]), Math.max(bounds[1][1], c[1])]] : [[c[0], c[1]], [c[0], c[1]]];
        } else {
          c.forEach(walk);
        }
      };
      walk(f.geometry.coordinates);
    }
    section.dataset.preview = JSON.stringify(counts);
    legend.replaceChildren(...Object.entries(PREVIEW).filter(([k]) => counts[k]).map(([k, [c, label]]) => {
      const li = el('li');
      const swatch = el('span', 'swatch swatch-fill');
      swatch.style.background = c;
      li.append(swatch, `${label} ${counts[k]}`);
      return li;
    }));
    if (bounds) {
      reveal({ bounds, zoom: 15 });
    }
  }

  function showReport(job) {
    const r = job.report || {};
    const source = r.source ? `${r.source.file}：${r.source.features} 个要素，坐标系 ${r.source.crs}；` : '';
    const when = r.effective ? `；${r.effective.slice(0, 10)} 起生效` : '';
    summary.textContent = `${source}${countsText(r.counts)}${when}`;
    problems.replaceChildren(...problemItems(r), ...(r.notes || []).map((n) => el('li', 'imports-note', `说明：${n}`)));
    legend.replaceChildren();
    commitButton.hidden = !r.committable;
    retry.hidden = true;
    commitButton.disabled = false;
    reportBox.hidden = false;
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) {
      say(message, '请选择文件', 'error');
      return;
    }
    reset();
    const mine = ticket;
    const params = options();
    params.set('filename', file.name);
    setState('uploading');
    showProgress(0, '上传中 0%');
    try {
      const created = await send(file, params);
      if (mine !== ticket) {
        return;
      }
      current = { id: created.id, kind: created.kind };
      await follow(created.id, mine);
    } catch (err) {
      if (mine === ticket) {
        showProgress(null);
        setState('failed');
        say(message, `导入失败：${err.message}`, 'error');
      }
    }
  });

  recheckButton.addEventListener('click', async () => {
    if (!current) {
      return;
    }
    ticket += 1;
    const mine = ticket;
    dropPreview();
    reportBox.hidden = true;
    retry.hidden = true;
    say(message, '');
    showProgress(0.3, '重新预检…');
    try {
      const job = await call(`v1/imports/${current.id}/check?${options()}`, { method: 'POST' });
      current = { id: job.id, kind: job.kind };
      await follow(job.id, mine);
    } catch (err) {
      if (mine === ticket) {
        showProgress(null);
        setState('failed');
        say(message, `重新预检失败：${err.message}`, 'error');
      }
    }
  });

  commitButton.addEventListener('click', async () => {
    if (!current) {
      return;
    }
    const mine = ticket;
    commitButton.disabled = true;
    setState('committing');
    try {
      const done = await call(`v1/imports/${current.id}/commit`, { method: 'POST' });
      if (mine !== ticket) {
        return;
      }
      dropPreview();
      reportBox.hidden = true;
      setState('committed');
      say(message, `已导入：${countsText(done.result)}`, 'success');
      refreshTiles();
    } catch (err) {
      setState('ready');
      commitButton.disabled = false;
      say(message, `导入失败：${err.message}`, 'error');
    }
  });

  cancelButton.addEventListener('click', reset);

  function sessionChanged() {
    const s = session();
    const level = s && s.role === 'admin' && s.area_code ? levelOf(s.area_code) : null;
    section.hidden = !(level === 'district' || level === 'street');
    for (const option of kindSelect.options) {
      option.hidden = level !== 'district' && DISTRICT_ONLY.has(option.value);
    }
    reset();
  }

  kindSelect.replaceChildren(...KINDS.map(([value, label]) => {
    const option = el('option', null, label);
    option.value = value;
    return option;
  }));
  kindSelect.addEventListener('change', kindChanged);
  kindChanged();
  reset();
  return { sessionChanged };
}
