// Activation codes (激活码) for admins, beside the accounts panel: one-time codes for the
// members of a community (or grid) who have no account yet (POST v1/activation-codes),
// shown this once as a list to print and hand out — the service keeps only their
// hashes. A member activates with the code, their member number and phone (session.js).
// A community admin's own community is the default; street and district admins name one.
//
// Hooks for the browser tests:
//   #codes[data-state]                      "issuing" | "ready" | "error"
//   #codes-table tbody tr[data-number]      one member each, its code in .code

import { levelOf, say } from './api.js';

export function wireCodes({ call, el, session }) {
  const section = document.getElementById('codes');
  const form = document.getElementById('codes-form');
  const message = section.querySelector('.codes-message');
  const sheet = document.getElementById('codes-sheet');
  const body = document.querySelector('#codes-table tbody');
  const title = sheet.querySelector('.codes-title');

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const within = form.elements.within.value.trim();
    const days = Number(form.elements.days.value) || undefined;
    section.dataset.state = 'issuing';
    say(message, '正在发放…');
    try {
      const issued = await call('v1/activation-codes', { method: 'POST', body: { within: within || undefined, days } });
      body.replaceChildren(...issued.codes.map((c) => {
        const row = el('tr');
        row.append(el('td', '', c.number || '（无编号）'), el('td', '', c.name), el('td', 'code', c.code),
          el('td', '', new Date(c.expires_at).toLocaleDateString('zh-CN')));
        row.dataset.number = c.number || '';
        return row;
      }));
      title.textContent = `${issued.within} 党员激活码（${issued.codes.length} 人，仅显示这一次）`;
      sheet.hidden = issued.codes.length === 0;
      say(message, issued.codes.length ? `已发放 ${issued.codes.length} 个激活码；请打印后分发，关闭页面后无法再次查看。`
        : '该范围内的党员都已有账号。', 'success');
      section.dataset.state = 'ready';
    } catch (err) {
      say(message, `发放失败：${err.message}`, 'error');
      section.dataset.state = 'error';
    }
  });

  document.getElementById('codes-print').addEventListener('click', () => {
    document.body.classList.add('printing-codes');
    window.print();
    document.body.classList.remove('printing-codes');
  });

  function sessionChanged() {
    const s = session();
    section.hidden = !(s && s.role === 'admin');
    body.replaceChildren();
    sheet.hidden = true;
    say(message, '');
    delete section.dataset.state;
    const own = s && s.area_code && ['community', 'grid'].includes(levelOf(s.area_code));
    form.elements.within.value = own ? s.area_code : '';
  }

  return { sessionChanged };
}
