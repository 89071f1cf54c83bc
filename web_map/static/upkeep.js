// Keeping a grid's worker and branches current (维护) on the web map: in the details of a
// clicked grid, for a signed-in admin whose area holds it — the grid worker's name and
// phone (PUT /v1/grids/{code}/worker); each grid or community branch covering the grid
// (GET /v1/branches/{code}) to rename, give a new secretary, move its activity site by a
// click on the map, or dissolve (PATCH /v1/branches/{code}); a new grid branch for a
// grid without one (POST /v1/branches); and 恢复 for a branch the log shows dissolved last. After each change the map fetches its tiles again
// and the grid's details are read afresh. The panel ends with the last changes made to
// the grid's worker and branches, and by whom (GET /v1/upkeep).
//
// Hooks for the browser tests:
//   .upkeep[data-code]                    the grid the panel keeps
//   .upkeep-branch[data-code]             a branch covering it; .upkeep-new-branch: the form for a new one
//   .upkeep-message                       the outcome of the last change

import { areaPrefix, say } from './api.js';

const KINDS = { grid: '网格党支部', community: '社区党组织' };

const ACTIONS = { worker: '网格员变更', create: '建立', update: '修改', dissolve: '撤销', restore: '恢复' };

// One line of the upkeep log: when, who, what.
function logLine(entry, formatTime) {
  const what = entry.subject === 'grid'
    ? `${ACTIONS.worker}：${entry.before?.name || '未配备'} → ${entry.after?.name || '未配备'}`
    : `${ACTIONS[entry.action] || entry.action}：${entry.after?.name || entry.code}`;
  return `${formatTime(entry.at)} ${entry.actor} ${what}`;
}

export function wireUpkeep({ map, call, el, formatTime, session, refreshTiles, reload }) {
  let picking = null; // while a site is being picked: the function taking the clicked point

  map.on('click', (event) => {
    if (picking) {
      const take = picking;
      picking = null;
      map.getCanvas().style.cursor = '';
      take([event.lngLat.lng, event.lngLat.lat]);
    }
  });

  function mayKeep(code) {
    const s = session();
    return Boolean(s && s.role === 'admin' && s.area_code && code.startsWith(areaPrefix(s.area_code)));
  }

  function field(label, name, value, attrs = {}) {
    const wrap = el('label', 'upkeep-field');
    const input = el('input');
    Object.assign(input, { name, value: value ?? '', ...attrs });
    wrap.append(el('span', null, label), input);
    return wrap;
  }

  function button(text, className, type = 'button') {
    const b = el('button', className, text);
    b.type = type;
    return b;
  }

  // After a change: the message, fresh tiles, the grid read again (its panel rebuilt).
  async function done(message, text, grid) {
    refreshTiles();
    await reload(grid);
    const fresh = document.querySelector(`.upkeep[data-code="${grid}"] .upkeep-message`);
    say(fresh || message, text, 'success');
  }

  async function attempt(message, work) {
    try {
      await work();
    } catch (err) {
      say(message, `保存失败：${err.message}`, 'error');
    }
  }

  function workerForm(props, message) {
    const form = el('form', 'upkeep-worker');
    form.append(
      field('网格员', 'name', props.grid_worker, { maxLength: 64, placeholder: '姓名' }),
      field('电话', 'phone', props.grid_worker_phone, { maxLength: 20, placeholder: '手机或区号-座机', inputMode: 'tel' }),
      button('保存网格员', 'save', 'submit'),
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const name = form.elements.name.value.trim();
      const phone = form.elements.phone.value.trim();
      const body = name || phone ? { name, phone } : { name: null, phone: null };
      attempt(message, async () => {
        await call(`v1/grids/${props.code}/worker`, { method: 'PUT', body });
        await done(message, name ? `已更新网格员：${name}。` : '已清空网格员。', props.code);
      });
    });
    return form;
  }

  // A branch's form: `branch` is the record to edit, or null for a new grid branch.
  function branchForm(props, branch, message, close) {
    const form = el('form', branch ? 'upkeep-branch-form' : 'upkeep-branch-form upkeep-new-branch');
    let site = branch && branch.site ? [branch.site.lon, branch.site.lat] : null;
    let siteMoved = false; // an edit sends the site only when it was picked anew
    const siteText = el('span', 'upkeep-site');
    const showSite = () => {
      siteText.textContent = site ? `阵地：${site[0].toFixed(6)}, ${site[1].toFixed(6)}` : '阵地：未设置';
    };
    showSite();
    const pick = button('在地图上点选阵地', 'pick-site link');
    pick.addEventListener('click', () => {
      siteText.textContent = '请在地图上点击阵地位置…';
      map.getCanvas().style.cursor = 'crosshair';
      picking = (point) => {
        site = point;
        siteMoved = true;
        showSite();
      };
    });
    form.append(
      field('名称', 'name', branch ? branch.name : `${props.name}党支部`, { maxLength: 64, required: true }),
      field('书记', 'secretary_name', branch?.secretary_name, { maxLength: 64 }),
      field('书记电话', 'secretary_phone', branch?.secretary_phone, { maxLength: 20, inputMode: 'tel' }),
    );
    const siteRow = el('div', 'upkeep-site-row');
    siteRow.append(siteText, pick);
    const actions = el('div', 'upkeep-actions');
    const save = button(branch ? '保存' : '建立党支部', 'save', 'submit');
    const cancel = button('取消', 'cancel link');
    cancel.addEventListener('click', () => {
      picking = null;
      close();
    });
    actions.append(save, cancel);
    if (branch) {
      const dissolve = button('撤销该党支部', 'dissolve');
      dissolve.addEventListener('click', () => {
        if (!dissolve.classList.contains('armed')) {
          dissolve.classList.add('armed');
          dissolve.textContent = '确认撤销';
          return;
        }
        attempt(message, async () => {
          await call(`v1/branches/${encodeURIComponent(branch.code)}`, { method: 'PATCH', body: { active: false } });
          await done(message, `已撤销：${branch.name}。`, props.code);
        });
      });
      actions.append(dissolve);
    }
    form.append(siteRow, actions);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      picking = null;
      const secretaryName = form.elements.secretary_name.value.trim();
      const secretaryPhone = form.elements.secretary_phone.value.trim();
      const body = {
        name: form.elements.name.value.trim(),
        secretary_name: secretaryName || null,
        secretary_phone: secretaryPhone || null,
      };
      if (!branch || siteMoved) {
        body.site = site ? { lon: site[0], lat: site[1] } : null;
      }
      attempt(message, async () => {
        if (branch) {
          await call(`v1/branches/${encodeURIComponent(branch.code)}`, { method: 'PATCH', body });
          await done(message, `已保存：${body.name}。`, props.code);
        } else {
          const made = await call('v1/branches', {
            method: 'POST',
            body: { ...body, kind: 'grid', community: props.community, grids: [props.code] },
          });
          await done(message, `已建立：${made.name}（${made.code}）。`, props.code);
        }
      });
    });
    return form;
  }

  function branchRow(props, b, message) {
    const row = el('div', 'upkeep-branch');
    row.dataset.code = b.code;
    const head = el('div', 'upkeep-branch-head');
    const edit = button('编辑', 'edit link');
    head.append(el('span', 'branch-name', b.name), el('span', 'branch-kind', KINDS[b.kind] || b.kind), edit);
    row.append(head);
    edit.addEventListener('click', () => attempt(message, async () => {
      const branch = await call(`v1/branches/${encodeURIComponent(b.code)}`);
      edit.hidden = true;
      const form = branchForm(props, branch, message, () => {
        form.remove();
        edit.hidden = false;
      });
      row.append(form);
    }));
    return row;
  }

  // The upkeep panel for a grid's details, or null when the caller may not keep it.
  function panelFor(props, branches) {
    if (!mayKeep(props.code) || !Array.isArray(branches)) {
      return null;
    }
    const panel = el('section', 'upkeep');
    panel.dataset.code = props.code;
    const message = el('p', 'upkeep-message');
    message.hidden = true;
    panel.append(el('h4', null, '维护 · 网格员与党支部'), workerForm(props, message));
    const kept = branches.filter((b) => b.kind in KINDS);
    for (const b of kept) {
      panel.append(branchRow(props, b, message));
    }
    if (!kept.some((b) => b.kind === 'grid')) {
      const add = button('新建网格党支部', 'new-branch');
      add.addEventListener('click', () => {
        add.hidden = true;
        const form = branchForm(props, null, message, () => {
          form.remove();
          add.hidden = false;
        });
        panel.insertBefore(form, message);
      });
      panel.append(add);
    }
    panel.append(message);
    // the last changes to this grid's worker and branches (GET /v1/upkeep)
    const history = el('ul', 'upkeep-log');
    history.hidden = true;
    panel.append(history);
    // the grid's own entries, and those of branches that covered it before or after
    const concerns = (e) => e.code === props.code
      || [e.before, e.after].some((view) => Array.isArray(view?.grids) && view.grids.includes(props.code));
    const hasGridBranch = branches.some((b) => b.kind === 'grid');
    call(`v1/upkeep?${new URLSearchParams({ within: props.community, limit: '200' })}`)
      .then(({ items }) => {
        const mine = items.filter(concerns);
        const latest = new Map(); // branch code → its newest entry (the list is newest first)
        for (const e of mine) {
          if (e.subject === 'branch' && !latest.has(e.code)) {
            latest.set(e.code, e);
          }
        }
        history.replaceChildren(el('li', 'upkeep-log-head', '最近维护记录'), ...mine.slice(0, 5).map((e) => {
          const li = el('li', null, logLine(e, formatTime));
          // a branch dissolved last of all may be restored (if the grid has no other grid branch)
          if (e.action === 'dissolve' && latest.get(e.code) === e && !(e.after.kind === 'grid' && hasGridBranch)) {
            const restore = button('恢复', 'restore link');
            restore.addEventListener('click', () => attempt(message, async () => {
              await call(`v1/branches/${encodeURIComponent(e.code)}`, { method: 'PATCH', body: { active: true } });
              await done(message, `已恢复：${e.after.name}。`, props.code);
            }));
            li.append(' ', restore);
          }
          return li;
        }));
        history.hidden = mine.length === 0;
      })
      .catch(() => {}); // the record is a help, not the panel's purpose
    return panel;
  }

  return { panelFor, isPicking: () => picking !== null };
}
