// Event handling on the web map (事件派遣与办理) for signed-in staff.
//
// A dispatcher, admin or grid worker who clicks an event gets, under the event's public
// details, its record as they may see it (GET /v1/events/{id}) and a button for each
// lifecycle action their role may take now. 派遣 (dispatch) proposes the department the
// service routes the event to (GET /v1/events/{id}/routing) and the nearby members whose
// role fits; 不予受理 / 暂缓 / 退回 need a reason; 标记重复 needs the original event's
// number; 处置完毕 asks for the feedback (处置反馈: what was done, and photo URLs, one a
// line). Department staff get the same block for their department's events (dept.js).
// No action is taken on one click: each opens its form with what it will do and a
// confirm and a cancel button, and the final ones (结案, 不予受理, 标记重复: the event
// leaves the queue for good) say so and are confirmed with a button of their own colour.
// Each action is sent with the version last seen (a stale one is refused with 409 and the
// record reloaded). After a change the map's tiles are fetched again, so the
// event's colour follows at once.
//
// The record shows what the tile cannot: the description, the photos (links: their
// hosts are not this service's, and the map requests nothing foreign), the reporter's
// contact where the service gives it (staff covering the event's grid), and the track
// (GET v1/events/{id}/log). After an action the event's public details above (办理状态,
// 办理时限) follow the record.
//
// Hooks for the browser tests:
//   .event-actions[data-id][data-status]   the record shown (status after the last action)

import { say } from './api.js';

const ACTION_NAMES = {
  register: '登记',
  dispatch: '派遣',
  start: '开始处置',
  handle: '处置完毕',
  close: '结案',
  reject: '不予受理',
  defer: '暂缓',
  return: '退回',
  mark_duplicate: '标记重复',
};
const NEEDS_REASON = ['reject', 'defer', 'return'];
const TRACK_NAMES = { report: '上报', ...ACTION_NAMES };
// Actions after which the event is finished (archived): nothing more can be done on it.
const FINAL = ['close', 'reject', 'mark_duplicate'];
// What each action does, said before it is confirmed.
const CONFIRM_TEXT = {
  register: '登记后事件进入派遣环节。',
  dispatch: '派遣后承办部门开始计算办理时限。',
  start: '开始处置后事件由您负责办理。',
  handle: '提交处置结果后，由指挥中心核实结案或退回。',
  close: '结案后事件归档，不能再办理。请确认处置结果已核实。',
  reject: '不予受理后事件结束，不能再办理。',
  defer: '暂缓后事件暂停计时，可恢复办理。',
  return: '退回后事件回到上一环节重新办理。',
  mark_duplicate: '标记为重复后事件结束，并入原事件办理。',
};
const STAFF = ['dispatcher', 'admin', 'grid_worker', 'department_staff'];

export function wireDispatch({ call, el, formatTime, session, statusNames, refreshTiles }) {
  function field(label, input) {
    const l = el('label', 'action-field', label);
    l.append(input);
    return l;
  }

  // The inputs an action needs, and how they become the request's fields.
  async function inputsFor(action, event) {
    if (action === 'dispatch') {
      const routing = await call(`v1/events/${event.id}/routing`);
      const department = el('input', 'department');
      department.value = routing.department ? routing.department.name : '';
      department.required = true;
      const member = el('select', 'member');
      member.append(Object.assign(el('option', null, '（不指派协助党员）'), { value: '' }));
      for (const m of routing.suggestions || []) {
        const text = `${m.name}（${m.role ? m.role.name : ''}，${m.distance_band}，在办 ${m.open_tasks} 件）`;
        member.append(Object.assign(el('option', null, text), { value: String(m.member_id) }));
      }
      return {
        nodes: [field('承办部门', department), field('协助党员', member)],
        values: () => ({ department: department.value.trim() || null, member_id: member.value ? Number(member.value) : null }),
        check: () => (department.value.trim() ? '' : '请填写承办部门。'),
      };
    }
    if (NEEDS_REASON.includes(action)) {
      const reason = el('input', 'reason');
      reason.placeholder = '原因（必填）';
      return {
        nodes: [field('原因', reason)],
        values: () => ({ reason: reason.value.trim() }),
        check: () => (reason.value.trim() ? '' : '请填写原因。'),
      };
    }
    if (action === 'handle') {
      const note = el('textarea', 'feedback');
      note.rows = 3;
      note.placeholder = '处置情况（必填）';
      const photos = el('textarea', 'feedback-photos');
      photos.rows = 2;
      photos.placeholder = 'https://…（每行一个，可不填）';
      const urls = () => photos.value.split('\n').map((u) => u.trim()).filter(Boolean);
      return {
        nodes: [field('处置反馈', note), field('照片链接', photos)],
        values: () => ({ note: note.value.trim(), photos: urls() }),
        check: () => {
          if (!note.value.trim()) {
            return '请填写处置情况。';
          }
          return urls().every((u) => /^https?:\/\//.test(u)) ? '' : '照片链接须以 http:// 或 https:// 开头。';
        },
      };
    }
    if (action === 'mark_duplicate') {
      const original = el('input', 'duplicate-of');
      original.inputMode = 'numeric';
      return {
        nodes: [field('原事件编号', original)],
        values: () => ({ duplicate_of: Number(original.value.replace(/^#/, '')) }),
        check: () => (/^#?[1-9][0-9]*$/.test(original.value.trim()) ? '' : '请填写原事件编号。'),
      };
    }
    return { nodes: [], values: () => ({}), check: () => '' };
  }

  // The record's own rows: what was reported, by whom (when the service says), photos.
  function record(event) {
    const dl = el('dl', 'event-record');
    const row = (label, value, className) => {
      dl.append(el('dt', null, label));
      const dd = el('dd', className);
      dd.append(value instanceof Node ? value : document.createTextNode(value));
      dl.append(dd);
    };
    row('事件描述', event.description || '—', 'event-description');
    if (event.photos && event.photos.length) {
      const list = el('span', 'event-photos');
      event.photos.forEach((url, i) => {
        const a = el('a', null, `照片 ${i + 1}`);
        a.href = url;
        a.target = '_blank';
        a.rel = 'noopener noreferrer';
        list.append(a, document.createTextNode(' '));
      });
      row('照片', list, 'event-photos-row');
    }
    if ('contact' in event || 'reporter' in event) {
      const who = [event.reporter ? `账号 ${event.reporter}` : null, event.contact || null].filter(Boolean).join('，');
      row('上报人联系方式', who || '未留联系方式', 'event-contact');
    }
    if (event.duplicate_of) {
      row('重复于', `#${event.duplicate_of}`, 'event-duplicate-of');
    }
    return dl;
  }

  // The track, oldest first, fetched once per render.
  function track(event) {
    const list = el('ol', 'event-track');
    list.append(el('li', 'muted', '正在加载办理记录…'));
    call(`v1/events/${event.id}/log`)
      .then(({ log }) => {
        list.replaceChildren(...log.map((entry) => {
          const to = entry.to ? `→ ${statusNames[entry.to] || entry.to}` : '';
          const where = entry.department ? `（${entry.department.name}）` : '';
          const li = el('li', 'event-track-entry', `${formatTime(entry.at)} ${TRACK_NAMES[entry.action] || entry.action}${where} ${to}`);
          if (entry.note) {
            li.append(el('span', 'event-track-note', `：${entry.note}`));
          }
          return li;
        }));
      })
      .catch((err) => list.replaceChildren(el('li', 'error-text', `办理记录加载失败：${err.message}`)));
    const details = el('details', 'event-track-box');
    details.append(el('summary', null, '办理记录'), list);
    return details;
  }

  // The event's public details (from its tile) in the same popup section follow the record.
  function syncHeader(box, event) {
    const section = box.closest('.popup-section');
    const status = section?.querySelector('dd.event-status');
    if (status) {
      status.textContent = statusNames[event.status] || event.status;
    }
    const due = section?.querySelector('dd.event-due');
    if (due && event.due_at) {
      due.textContent = formatTime(event.due_at);
    }
  }

  function render(box, event, message = '', kind = 'info') {
    box.dataset.status = event.status;
    syncHeader(box, event);
    const summary = [
      `办理状态：${statusNames[event.status] || event.status}`,
      event.department ? `承办：${event.department.name}` : null,
      event.assignee ? `处置人：${event.assignee}` : null,
      event.due_at ? `时限：${formatTime(event.due_at)}` : null,
    ].filter(Boolean).join(' · ');
    const buttons = el('div', 'action-buttons');
    const form = el('div', 'action-form');
    form.hidden = true;
    const note = el('p', 'action-message');
    say(note, message, kind);
    for (const action of event.actions || []) {
      const b = el('button', `action action-${action}`, ACTION_NAMES[action] || action);
      b.type = 'button';
      b.dataset.action = action;
      b.addEventListener('click', () => open(box, event, action, form, note));
      buttons.append(b);
    }
    if (!(event.actions || []).length) {
      buttons.append(el('span', 'muted', '当前无可办理的操作。'));
    }
    box.replaceChildren(record(event), el('p', 'action-summary', summary), buttons, form, note, track(event));
  }

  async function open(box, event, action, form, note) {
    note.hidden = true;
    let inputs;
    try {
      inputs = await inputsFor(action, event);
    } catch (err) {
      say(note, `加载失败：${err.message}`, 'error');
      return;
    }
    const name = ACTION_NAMES[action] || action;
    const final = FINAL.includes(action);
    const warning = el('p', `action-confirm${final ? ' action-final' : ''}`, CONFIRM_TEXT[action] || `确定要${name}吗？`);
    const submit = el('button', `action-submit${final ? ' action-submit-final' : ''}`, `确定${name}`);
    submit.type = 'button';
    const cancel = el('button', 'action-cancel', '取消');
    cancel.type = 'button';
    cancel.addEventListener('click', () => {
      form.hidden = true;
      form.replaceChildren();
      delete form.dataset.action;
      note.hidden = true;
    });
    submit.addEventListener('click', async () => {
      const problem = inputs.check();
      if (problem) {
        say(note, problem, 'error');
        return;
      }
      try {
        const updated = await call(`v1/events/${event.id}/transitions`, {
          method: 'POST',
          body: { action, version: event.version, ...inputs.values() },
        });
        render(box, updated, `已${ACTION_NAMES[action] || action}。`, 'success');
        refreshTiles();
      } catch (err) {
        if (err.status === 409) {
          const fresh = await call(`v1/events/${event.id}`).catch(() => event);
          render(box, fresh, `未能${ACTION_NAMES[action] || action}：${err.message}（已刷新）`, 'error');
        } else {
          say(note, `未能${ACTION_NAMES[action] || action}：${err.message}`, 'error');
        }
      }
    });
    const row = el('div', 'action-confirm-buttons');
    row.append(submit, cancel);
    form.replaceChildren(...inputs.nodes, warning, row);
    form.dataset.action = action;
    form.hidden = false;
    submit.focus({ preventScroll: true });
  }

  // The block under an event's details in the popup: null for anonymous callers and
  // members (they see the public details only).
  function panel(eventId) {
    const s = session();
    if (!s || !STAFF.includes(s.role) || eventId === undefined || eventId === null) {
      return null;
    }
    const box = el('div', 'event-actions', '正在加载办理信息…');
    box.dataset.id = String(eventId);
    call(`v1/events/${eventId}`)
      .then((event) => render(box, event))
      .catch((err) => {
        const outside = s.role === 'department_staff' ? '该事件未派至本部门。' : '该事件不在您的辖区。';
        box.textContent = err.status === 403 ? outside : `办理信息加载失败：${err.message}`;
      });
    return box;
  }

  return { panel };
}
