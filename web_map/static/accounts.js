// Account management (账号管理) on the web map, for signed-in admins: the accounts of
// their area (GET /v1/accounts), a form creating an account of a kind the admin may
// create (the service says which: `creatable`), the generated password shown once, and
// disabling or re-enabling an account with a second click to confirm. The service
// decides who may do what (layers.accounts); this panel only offers what it allows.
//
// Hooks for the browser tests:
//   #accounts[data-state]                       "loading" | "ready" | "error"
//   #accounts-table tbody tr[data-username]     one account each, [data-active] "true"/"false"
//   #accounts-password                          the generated password, shown once

import { say } from './api.js';

export const KIND_NAMES = {
  district_admin: '区级管理员',
  street_admin: '街道管理员',
  community_admin: '社区管理员',
  grid_worker: '网格员',
  dispatcher: '指挥中心',
  department_staff: '职能部门',
  member: '党员',
};
// what an account of each kind is bound to: [body member, label, placeholder]
const BINDING = {
  street_admin: ['area_code', '街道编码', '12 位区划代码'],
  community_admin: ['area_code', '社区编码', '12 位区划代码'],
  grid_worker: ['area_code', '网格或社区编码', '15 位网格编码或 12 位社区代码'],
  department_staff: ['department', '部门编码', '如 D01'],
  member: ['member_id', '党员记录编号', '数字'],
};
const ROLE_OF = { street_admin: 'admin', community_admin: 'admin' };

export function wireAccounts({ call, el, session }) {
  const section = document.getElementById('accounts');
  const message = section.querySelector('.accounts-message');
  const body = document.querySelector('#accounts-table tbody');
  const form = document.getElementById('accounts-form');
  const kindSelect = form.elements.kind;
  const bindingLabel = form.querySelector('.accounts-binding');
  const bindingText = bindingLabel.querySelector('span');
  const bindingInput = form.elements.binding;
  const passwordNote = document.getElementById('accounts-password');
  let loading = 0;

  function showBinding() {
    const binding = BINDING[kindSelect.value];
    bindingLabel.hidden = !binding;
    bindingInput.required = Boolean(binding);
    if (binding) {
      bindingText.textContent = binding[1];
      bindingInput.placeholder = binding[2];
    }
    bindingInput.value = '';
  }
  kindSelect.addEventListener('change', showBinding);

  function boundTo(account) {
    if (account.department) {
      return `部门 ${account.department}`;
    }
    if (account.member_id) {
      return `党员 #${account.member_id}`;
    }
    return account.area_code || '全区';
  }

  function row(account) {
    const tr = el('tr');
    tr.dataset.username = account.username;
    tr.dataset.active = String(account.active);
    tr.append(
      el('td', 'username', account.username),
      el('td', 'kind', KIND_NAMES[account.kind] || account.kind),
      el('td', 'bound', boundTo(account)),
      el('td', 'state', account.active ? '启用' : '已停用'),
    );
    const actions = el('td', 'actions');
    if (account.manageable) {
      const label = account.active ? '停用' : '启用';
      const button = el('button', 'toggle', label);
      button.type = 'button';
      button.addEventListener('click', async () => {
        if (button.dataset.confirm !== 'true') {
          // a second click confirms: nobody is locked out by a slip of the finger
          button.dataset.confirm = 'true';
          button.textContent = `确认${label}？`;
          return;
        }
        button.disabled = true;
        try {
          await call(`v1/accounts/${encodeURIComponent(account.username)}/${account.active ? 'disable' : 'enable'}`,
            { method: 'POST' });
          say(message, `已${label}账号 ${account.username}`, 'success');
          await load();
        } catch (err) {
          say(message, `${label}失败：${err.message}`, 'error');
          button.disabled = false;
        }
      });
      actions.append(button);
    }
    tr.append(actions);
    return tr;
  }

  async function load() {
    const ticket = ++loading;
    section.dataset.state = 'loading';
    try {
      const page = await call('v1/accounts?limit=1000');
      if (ticket !== loading) {
        return;
      }
      body.replaceChildren(...page.items.map(row));
      const chosen = kindSelect.value;
      kindSelect.replaceChildren(...page.creatable.map((kind) => {
        const option = el('option', null, KIND_NAMES[kind] || kind);
        option.value = kind;
        return option;
      }));
      if (page.creatable.includes(chosen)) {
        kindSelect.value = chosen;
      } else {
        showBinding();
      }
      form.hidden = !page.creatable.length;
      section.dataset.state = 'ready';
    } catch (err) {
      if (ticket === loading) {
        section.dataset.state = 'error';
        say(message, `读取账号失败：${err.message}`, 'error');
      }
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const kind = kindSelect.value;
    const payload = { username: form.elements.username.value.trim(), role: ROLE_OF[kind] || kind };
    const binding = BINDING[kind];
    if (binding) {
      const value = bindingInput.value.trim();
      payload[binding[0]] = binding[0] === 'member_id' ? Number(value) : value;
    }
    if (form.elements.display_name.value.trim()) {
      payload.display_name = form.elements.display_name.value.trim();
    }
    if (form.elements.password.value) {
      payload.password = form.elements.password.value;
    }
    passwordNote.hidden = true;
    passwordNote.textContent = '';
    try {
      const created = await call('v1/accounts', { method: 'POST', body: payload });
      say(message, `已创建账号 ${created.account.username}（${KIND_NAMES[created.account.kind]}）`, 'success');
      if (created.password) {
        // shown this once: the service keeps only its hash
        passwordNote.textContent = `初始密码（仅显示一次，请妥善转交）：${created.password}`;
        passwordNote.hidden = false;
      }
      form.reset();
      showBinding();
      await load();
    } catch (err) {
      say(message, `创建失败：${err.message}`, 'error');
    }
  });

  function sessionChanged() {
    const s = session();
    const admin = Boolean(s && s.role === 'admin');
    section.hidden = !admin;
    loading += 1;
    body.replaceChildren();
    passwordNote.hidden = true;
    passwordNote.textContent = '';
    say(message, '');
    delete section.dataset.state;
    if (admin) {
      load();
    }
  }

  return { sessionChanged };
}
