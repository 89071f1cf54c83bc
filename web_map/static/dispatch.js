// Event handling on the web map (事件派遣与办理) for signed-in staff.
//
// A dispatcher, admin or grid worker who clicks an event gets, under the event's public
// details, its record as they may see it (GET /v1/events/{id}) and a button for each
// lifecycle action their role may take now. 派遣 (dispatch) proposes the department the
// service routes the event to (GET /v1/events/{id}/routing) and the nearby members whose
// role fits; 不予受理 / 暂缓 / 退回 need a reason; 标记重复 needs the original event's
// number; 处置完毕 asks for the feedback (处置反馈: what was done, and photo URLs, one a
// line). Department staff get the same block for their department's events (dept.js). Each action is sent with the version last seen (a stale one is refused with
// 409 and the record reloaded). After a change the map's tiles are fetched again, so the
// event's colour follows at once.
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

  function render(box, event, message = '', kind = 'info') {
    box.dataset.status = event.status;
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
    box.replaceChildren(el('p', 'action-summary', summary), buttons, form, note);
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
    const submit = el('button', 'action-submit', `确定${ACTION_NAMES[action] || action}`);
    submit.type = 'button';
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
    form.replaceChildren(...inputs.nodes, submit);
    form.dataset.action = action;
    form.hidden = false;
    if (!inputs.nodes.length) {
      submit.click(); // nothing to ask: the button was the decision
    }
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
