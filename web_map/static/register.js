// Registration at the residence grid (到居住地网格报到) on the web map.
//
// A signed-in member finds where they live — the phone's position (browser geolocation,
// WGS84), a click on the map, or coordinates typed in from another map app in WGS84,
// GCJ-02 (Amap, Tencent, WeChat) or BD-09 (Baidu) — sees the grid it falls in (the
// service's /v1/locate converts and locates), picks a service role and registers; the
// registration waits for a community or grid admin. Admins and grid workers get the
// pending registrations of their area with 确认 / 退回 (a rejection needs a reason).
//
// Residences are personal: they are shown to the member themselves and to the
// entitled staff only, through the API with the signed-in token, never in public tiles.
//
// Hooks for the browser tests:
//   #register[data-state]     "none" | "pending" | "confirmed" (the member's active registration)
//   #register[data-home]      "lon,lat" of that registration's residence (its grey pin)
//   #register-located[data-grid]  the grid code the chosen point falls in
//   #pending-list li[data-id] one pending registration each

import { say } from './api.js';

const STATUS_NAMES = { pending: '待确认', confirmed: '已确认', rejected: '已退回', ended: '已结束' };
const PAGE = 50; // pending registrations per page
const MATCH_NOTES = {
  inside: '',
  boundary: '（位于网格边界上，已按规则归入该网格）',
};

export function wireRegistration({ map, maplibregl, call, el, formatTime, reveal, refreshTiles, session }) {
  const section = document.getElementById('register');
  const current = document.getElementById('register-current');
  const form = document.getElementById('register-form');
  const located = document.getElementById('register-located');
  const message = section.querySelector('.register-message');
  const again = document.getElementById('register-again');
  const moveLabel = form.querySelector('.register-move');
  const pickButton = document.getElementById('register-pick');
  const pendingSection = document.getElementById('pending');
  const pendingList = document.getElementById('pending-list');
  const pendingSummary = pendingSection.querySelector('.pending-summary');
  let picking = false;
  let marker = null;
  let home = null;
  let accuracy = null;
  let lookup = 0; // the latest locate request; older answers are dropped
  let activeReg = null; // the member's active registration, as /v1/registrations/mine gave it
  let confirmedAgain = null; // the grid whose confirmed registration the member was warned about

  // --- where the member lives -----------------------------------------------------

  function setMarker(point) {
    if (!marker) {
      marker = new maplibregl.Marker({ color: '#c8102e' });
    }
    marker.setLngLat(point).addTo(map);
  }

  function clearPoint() {
    if (marker) {
      marker.remove();
    }
    located.hidden = true;
    delete located.dataset.grid;
  }

  // typed (or pasted) coordinates bring the map to them; a click on the map is there already
  async function locate({ fly = false } = {}) {
    const data = new FormData(form);
    const lon = String(data.get('lon')).trim();
    const lat = String(data.get('lat')).trim();
    if (!lon || !lat) {
      clearPoint();
      return;
    }
    const mine = ++lookup;
    const query = new URLSearchParams({ lon, lat, crs: String(data.get('crs')) });
    try {
      const found = await call(`v1/locate?${query}`);
      if (mine !== lookup) {
        return;
      }
      const note = found.match === 'nearest'
        ? `（在网格间隙中，距该网格 ${Number(found.distance_m).toFixed(1)} 米）`
        : MATCH_NOTES[found.match] || '';
      located.replaceChildren(
        document.createTextNode('该位置属于：'),
        el('strong', 'register-grid', found.grid.name),
        document.createTextNode(`（${found.community.name}，${found.street.name}）${note}`),
      );
      located.className = 'register-located';
      located.hidden = false;
      located.dataset.grid = found.grid.code;
      setMarker(found.point);
      if (fly) {
        reveal({ point: found.point, zoom: Math.max(map.getZoom(), 15) });
      }
    } catch (err) {
      if (mine !== lookup) {
        return;
      }
      clearPoint();
      const why = err.status === 404 ? '该位置不在服务范围内' : '坐标有误';
      say(located, `${why}：${err.message}`, 'error');
    }
  }

  function setPoint(lon, lat, crs, acc = null) {
    form.elements.lon.value = lon.toFixed(7);
    form.elements.lat.value = lat.toFixed(7);
    form.elements.crs.value = crs;
    accuracy = acc;
    return locate();
  }

  function setPicking(on) {
    picking = on;
    pickButton.setAttribute('aria-pressed', String(on));
    pickButton.classList.toggle('active', on);
    map.getCanvas().style.cursor = on ? 'crosshair' : '';
  }

  pickButton.addEventListener('click', () => setPicking(!picking));
  map.on('click', (event) => {
    if (picking) {
      setPicking(false);
      setPoint(event.lngLat.lng, event.lngLat.lat, 'wgs84');
    }
  });

  document.getElementById('register-locate-me').addEventListener('click', () => {
    if (!navigator.geolocation) {
      say(message, '此浏览器不支持定位，请在地图上点选或输入坐标。', 'error');
      return;
    }
    say(message, '正在获取当前位置…');
    navigator.geolocation.getCurrentPosition(
      async (position) => {
        say(message, '');
        const { longitude, latitude, accuracy: acc } = position.coords;
        await setPoint(longitude, latitude, 'wgs84', Number.isFinite(acc) ? Math.round(acc * 10) / 10 : null);
        reveal({ point: [longitude, latitude], zoom: Math.max(map.getZoom(), 15) });
      },
      (error) => {
        const why = error.code === error.PERMISSION_DENIED ? '未获得定位权限' : error.message || '定位失败';
        say(message, `无法获取当前位置：${why}。请在地图上点选或输入坐标。`, 'error');
      },
      { enableHighAccuracy: true, timeout: 15000, maximumAge: 0 },
    );
  });

  // A pair copied from another map app ("113.6956271,34.8045814", Amap's order, or with
  // a space or a full-width comma) pasted into either field fills both; a pair whose
  // first number can only be a latitude and whose second only a longitude is taken in
  // that order (Baidu's and Google's "lat,lon").
  function splitPair(value) {
    const parts = value.trim().split(/\s*[,，;；\s]\s*/).filter(Boolean);
    if (parts.length !== 2 || !parts.every((p) => /^[+-]?\d+(\.\d+)?$/.test(p))) {
      return null;
    }
    let [a, b] = parts;
    if (Math.abs(Number(a)) <= 90 && Math.abs(Number(b)) > 90) {
      [a, b] = [b, a];
    }
    return [a, b];
  }

  function typed() {
    accuracy = null; // typed coordinates carry no accuracy of their own
    if (message.classList.contains('message-error')) {
      say(message, ''); // a geolocation failure is past once the member types a point
    }
    locate({ fly: true });
  }

  for (const name of ['lon', 'lat']) {
    form.elements[name].addEventListener('input', () => {
      const pair = splitPair(form.elements[name].value);
      if (pair) {
        [form.elements.lon.value, form.elements.lat.value] = pair;
        typed();
      }
    });
  }
  for (const name of ['lon', 'lat', 'crs']) {
    form.elements[name].addEventListener('change', typed);
  }

  // --- the member's registration --------------------------------------------------

  async function loadRoles() {
    if (form.elements.role.options.length > 0) {
      return;
    }
    const { roles } = await call('v1/registrations/roles');
    form.elements.role.replaceChildren(
      el('option', null, '请选择服务岗位'),
      ...roles.map((r) => Object.assign(el('option', null, r.name), { value: r.code })),
    );
    form.elements.role.options[0].value = '';
  }

  // where the active registration puts the member: a grey pin (the red one is a new point)
  function showHome(point) {
    if (!point) {
      if (home) {
        home.remove();
      }
      delete section.dataset.home;
      return;
    }
    if (!home) {
      home = new maplibregl.Marker({ color: '#6f7d8c' });
      home.getElement().title = '当前报到的居住地';
    }
    home.setLngLat(point).addTo(map);
    section.dataset.home = point.join(',');
  }

  async function loadMine() {
    const { active, items } = await call('v1/registrations/mine');
    activeReg = active;
    confirmedAgain = null;
    section.dataset.state = active ? active.status : 'none';
    moveLabel.hidden = !active;
    // with an active registration the form waits behind 重新报到 (it would end that one)
    form.hidden = Boolean(active);
    again.hidden = !active;
    showHome(active ? active.residence.point : null);
    if (active) {
      const role = active.role ? ` · ${active.role.name}` : '';
      current.textContent = `当前报到：${active.grid.name}（${active.community.name}）${role} · ${STATUS_NAMES[active.status]}`;
    } else if (items.length && items[0].status === 'rejected') {
      current.textContent = `上次报到（${items[0].grid.name}）已被退回：${items[0].reason || '未说明原因'}。请核对后重新报到。`;
    } else {
      current.textContent = '尚未在居住地网格报到。';
    }
  }

  again.addEventListener('click', () => {
    again.hidden = true;
    form.hidden = false;
    form.elements.move.checked = true;
    form.scrollIntoView({ block: 'nearest' });
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      lon: Number(data.get('lon')),
      lat: Number(data.get('lat')),
      crs: String(data.get('crs')),
      role: String(data.get('role')),
      move: data.get('move') === 'on',
    };
    if (accuracy !== null) {
      body.accuracy_m = accuracy;
    }
    if (!body.role) {
      say(message, '请选择服务岗位。', 'error');
      return;
    }
    // registering again in the grid of a confirmed registration (another role, say) sends
    // it back to 待确认: say so once, and go ahead on the second press
    const sameGrid = activeReg && activeReg.status === 'confirmed' && located.dataset.grid === activeReg.grid.code;
    if (sameGrid && confirmedAgain !== activeReg.grid.code) {
      confirmedAgain = activeReg.grid.code;
      say(message, `您在${activeReg.grid.name}的报到已确认；重新提交后将变为待确认，需管理员重新审核。确需修改请再次点击“提交报到”。`, 'warning');
      return;
    }
    try {
      const reg = await call('v1/registrations', { method: 'POST', body });
      say(message, `已提交报到：${reg.grid.name}，等待社区或网格管理员确认。`, 'success');
      form.elements.move.checked = false;
      refreshTiles();
      await loadMine();
    } catch (err) {
      say(message, `提交失败：${err.message}`, 'error'); // (a 409 says how to move house)
    }
  });

  // --- pending registrations (admins, grid workers) -------------------------------

  function pendingItem(reg) {
    const li = el('li', 'pending-item');
    li.dataset.id = String(reg.id);
    const who = el('button', 'pending-who link', `${reg.member.name} → ${reg.grid.name}`);
    who.type = 'button';
    who.title = '在地图上查看居住地';
    who.addEventListener('click', () => reveal({ point: reg.residence.point, zoom: 16 }));
    const role = reg.role ? reg.role.name : '未选岗位';
    li.append(who, el('span', 'pending-meta', `${reg.community.name} · ${role} · ${formatTime(reg.created_at)}`));
    const actions = el('div', 'pending-actions');
    const confirm = el('button', 'confirm', '确认');
    const reject = el('button', 'reject', '退回');
    const reason = el('input', 'reason');
    reason.placeholder = '退回原因（必填）';
    reason.hidden = true;
    const note = el('p', 'pending-error error-text');
    note.hidden = true;
    for (const b of [confirm, reject]) {
      b.type = 'button';
    }
    confirm.addEventListener('click', () => decide(reg, 'confirm', null, note));
    reject.addEventListener('click', () => {
      if (reason.hidden) {
        reason.hidden = false;
        reason.focus();
        return;
      }
      if (!reason.value.trim()) {
        say(note, '请填写退回原因。', 'error');
        return;
      }
      decide(reg, 'reject', reason.value.trim(), note);
    });
    actions.append(confirm, reject, reason);
    li.append(actions, note);
    return li;
  }

  async function decide(reg, action, reason, note) {
    try {
      await call(`v1/registrations/${reg.id}/${action}`, { method: 'POST', body: action === 'reject' ? { reason } : {} });
      refreshTiles(); // the grid's figures, the residence's colour
      await loadPending(action === 'confirm' ? `已确认 ${reg.member.name} 的报到。` : `已退回 ${reg.member.name} 的报到。`);
    } catch (err) {
      say(note, `操作失败：${err.message}`, 'error');
    }
  }

  // newest first, a page at a time ("显示更多" appends the next page)
  async function loadPending(done = '', more = false) {
    const offset = more ? pendingList.querySelectorAll('li.pending-item').length : 0;
    const { total, items } = await call(`v1/registrations?status=pending&limit=${PAGE}&offset=${offset}`);
    const rows = items.map(pendingItem);
    if (more) {
      pendingList.querySelector('li.pending-more')?.remove();
      pendingList.append(...rows);
    } else {
      pendingList.replaceChildren(...rows);
    }
    const shown = pendingList.querySelectorAll('li.pending-item').length;
    if (shown < total) {
      const li = el('li', 'pending-more');
      const button = el('button', 'link', `显示更多（还有 ${total - shown} 条）`);
      button.type = 'button';
      button.addEventListener('click', () => loadPending('', true).catch((err) => say(pendingSummary, `加载失败：${err.message}`, 'error')));
      li.append(button);
      pendingList.append(li);
    }
    const part = shown < total ? `（已显示最新 ${shown} 条）` : '';
    pendingSummary.textContent = `${done}${total ? `本辖区有 ${total} 条报到待确认${part}。` : '本辖区没有待确认的报到。'}`;
  }

  // --- who is signed in -----------------------------------------------------------

  async function sessionChanged() {
    const s = session();
    const member = Boolean(s && s.role === 'member');
    const decider = Boolean(s && ['admin', 'grid_worker'].includes(s.role));
    section.hidden = !member;
    pendingSection.hidden = !decider;
    if (!member) {
      setPicking(false);
      clearPoint();
      showHome(null);
      form.reset();
      say(message, '');
      delete section.dataset.state;
    }
    if (!decider) {
      pendingList.replaceChildren();
    }
    if (member) {
      // signed in from the bottom of the panel (on a phone, a sheet under the map): bring
      // the registration form up
      section.scrollIntoView({ block: 'start' });
    }
    try {
      if (member) {
        await Promise.all([loadRoles(), loadMine()]);
      } else if (decider) {
        await loadPending();
      }
    } catch (err) {
      say(member ? message : pendingSummary, `报到信息加载失败：${err.message}`, 'error');
    }
  }

  return { sessionChanged, isPicking: () => picking };
}
