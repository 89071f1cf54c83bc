// The signed-in session of the web map: signing in with a password, a member activating
// their account with member number, phone and activation code (激活账号), changing the
// password (forced after an admin's reset), signing out, and keeping the session across
// reloads.
//
// The access token lives in this page's memory only. The session itself is an httpOnly,
// SameSite=Strict cookie the page cannot read (POST v1/auth/refresh renews the token with
// it): a reload restores the session without the password. The token lasts the idle
// timeout; the page renews it shortly before it ends if the user did anything since the
// last renewal, and otherwise lets it end — and says so. A refusal of the token by the
// service (signed out elsewhere, password changed, account disabled, expired) signs the
// page out with the service's reason, in Chinese.
//
// A flag in localStorage (no secret: "a session cookie may exist") spares anonymous
// visitors the refresh request on every load.

const MARK = 'gridbranch.session';
// renew this many seconds before the token would end
const RENEW_AHEAD_S = 60;

const REASONS = {
  idle: '长时间未操作，已自动退出，请重新登录。',
  expired: '登录已到期，请重新登录。',
  revoked: '已退出登录、修改了密码或账号已变更，请重新登录。',
  disabled: '账号不存在或已停用。',
  invalid: '登录已失效，请重新登录。',
  signed_out: '已退出登录。',
};

function problemText(data, status) {
  return (data && (data.detail_zh || data.detail || data.title)) || `HTTP ${status}`;
}

export function wireSession({ apiUrl, onChange }) {
  const signinForm = document.getElementById('signin');
  const signinError = signinForm.querySelector('.signin-error');
  const signedIn = document.getElementById('signed-in');
  const message = document.getElementById('session-message');
  const activateForm = document.getElementById('activate');
  const activateError = activateForm.querySelector('.signin-error');
  const activateToggle = document.getElementById('activate-toggle');
  const passwordForm = document.getElementById('password-change');
  const passwordError = passwordForm.querySelector('.signin-error');
  const passwordNote = passwordForm.querySelector('.password-note');
  const passwordToggle = document.getElementById('password-toggle');

  let current = null; // {token, username, role, area_code, member_id}
  let pending = null; // a token whose password must be changed first
  let renewTimer = null;
  let endTimer = null;
  let lastActivity = 0;
  let lastRenewal = 0;

  for (const kind of ['pointerdown', 'keydown', 'wheel', 'touchstart']) {
    document.addEventListener(kind, () => {
      lastActivity = Date.now();
    }, { passive: true, capture: true });
  }

  function tell(text, kind = 'info') {
    message.textContent = text;
    message.className = `session-message message-${kind}`;
    message.hidden = !text;
    document.body.dataset.sessionMessage = text;
  }

  async function post(path, { body, form, token } = {}) {
    const headers = { Accept: 'application/json' };
    if (token) {
      headers.Authorization = `Bearer ${token}`;
    }
    let payload;
    if (form) {
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      payload = new URLSearchParams(form);
    } else if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const response = await fetch(apiUrl(path), { method: 'POST', headers, body: payload, credentials: 'same-origin' });
    let data = null;
    try {
      data = await response.json();
    } catch {
      // 204, or no JSON body
    }
    if (!response.ok) {
      const error = new Error(problemText(data, response.status));
      error.status = response.status;
      error.reason = data && data.reason;
      error.field = data && data.field;
      throw error;
    }
    return data;
  }

  function clearTimers() {
    clearTimeout(renewTimer);
    clearTimeout(endTimer);
    renewTimer = null;
    endTimer = null;
  }

  function schedule(answer) {
    clearTimers();
    lastRenewal = Date.now();
    const life = Math.max(1, answer.expires_in);
    renewTimer = setTimeout(renewIfUsed, Math.max(1, life - RENEW_AHEAD_S) * 1000);
    endTimer = setTimeout(() => end('idle'), life * 1000);
  }

  async function renewIfUsed() {
    if (!current || lastActivity <= lastRenewal) {
      return; // unused since the last renewal: the token ends, and the page says so
    }
    try {
      const answer = await post('v1/auth/refresh');
      current = { ...current, token: answer.access_token };
      schedule(answer);
    } catch (err) {
      end(err.reason || 'invalid', err.message);
    }
  }

  function show() {
    signinForm.hidden = Boolean(current || pending);
    activateToggle.hidden = Boolean(current || pending);
    if (current || pending) {
      activateForm.hidden = true;
    }
    signedIn.hidden = !current;
    passwordToggle.hidden = !current;
    if (pending) {
      passwordForm.hidden = false;
      passwordNote.hidden = false;
    } else if (!current) {
      passwordForm.hidden = true;
    }
  }

  async function adopt(answer) {
    const response = await fetch(apiUrl('v1/auth/me'), {
      headers: { Accept: 'application/json', Authorization: `Bearer ${answer.access_token}` },
    });
    const me = await response.json();
    if (!response.ok) {
      throw new Error(problemText(me, response.status));
    }
    window.localStorage.setItem(MARK, '1');
    schedule(answer);
    tell('');
    if (answer.must_change_password) {
      pending = { token: answer.access_token, username: me.username };
      current = null;
      show();
      passwordForm.querySelector('input[name=current_password]').focus();
      return;
    }
    pending = null;
    current = { token: answer.access_token, username: me.username, role: me.role, area_code: me.area_code,
      member_id: me.member_id };
    show();
    await onChange(current);
  }

  // The session is over: forget it, say why (`reason`, or the service's own words).
  function end(reason, words) {
    const was = current || pending;
    clearTimers();
    current = null;
    pending = null;
    window.localStorage.removeItem(MARK);
    passwordForm.hidden = true;
    show();
    if (reason) {
      tell(words || REASONS[reason] || REASONS.invalid, reason === 'signed_out' ? 'info' : 'warning');
    }
    if (was) {
      onChange(null);
    }
  }

  signinForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(signinForm);
    signinError.hidden = true;
    try {
      await adopt(await post('v1/auth/token', { form: { username: data.get('username'), password: data.get('password') } }));
      signinForm.reset();
    } catch (err) {
      signinError.textContent = `登录失败：${err.status === 401 ? '用户名或密码错误' : err.message}`;
      signinError.hidden = false;
    }
  });

  activateToggle.addEventListener('click', () => {
    activateForm.hidden = !activateForm.hidden;
    if (!activateForm.hidden) {
      activateForm.querySelector('input[name=number]').focus();
    }
  });

  activateForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(activateForm);
    activateError.hidden = true;
    if (data.get('password') !== data.get('password2')) {
      activateError.textContent = '两次输入的密码不一致';
      activateError.hidden = false;
      return;
    }
    const body = { number: data.get('number'), phone: data.get('phone'), code: data.get('code'),
      password: data.get('password') };
    if (data.get('username')) {
      body.username = data.get('username');
    }
    try {
      await adopt(await post('v1/auth/activate', { body }));
      activateForm.reset();
      activateForm.hidden = true;
      tell('账号已激活，欢迎使用。', 'success');
    } catch (err) {
      if (err.field === 'username') {
        activateForm.querySelector('.activate-username').hidden = false;
      }
      activateError.textContent = `激活失败：${err.message}`;
      activateError.hidden = false;
    }
  });

  passwordToggle.addEventListener('click', () => {
    passwordForm.hidden = !passwordForm.hidden;
    passwordNote.hidden = true;
  });

  passwordForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(passwordForm);
    passwordError.hidden = true;
    if (data.get('new_password') !== data.get('new_password2')) {
      passwordError.textContent = '两次输入的新密码不一致';
      passwordError.hidden = false;
      return;
    }
    const token = (current || pending || {}).token;
    try {
      const answer = await post('v1/auth/password', {
        token,
        body: { current_password: data.get('current_password'), new_password: data.get('new_password') },
      });
      passwordForm.reset();
      passwordForm.hidden = true;
      await adopt(answer);
      tell('密码已修改。', 'success');
    } catch (err) {
      passwordError.textContent = `修改失败：${err.message}`;
      passwordError.hidden = false;
    }
  });

  document.getElementById('signout').addEventListener('click', () => signOut());

  async function signOut() {
    const token = (current || pending || {}).token;
    try {
      // with the token when it is still good, else the cookie alone: every session ends
      await post('v1/auth/logout', { token });
    } catch {
      try {
        await post('v1/auth/logout');
      } catch {
        // offline: the page forgets the session all the same
      }
    }
    end('signed_out');
  }

  // After a reload: the session of the cookie, if there is one.
  async function restore() {
    if (!window.localStorage.getItem(MARK)) {
      return;
    }
    try {
      await adopt(await post('v1/auth/refresh'));
    } catch (err) {
      end(err.reason || 'invalid', err.status === 401 ? undefined : err.message);
    }
  }

  // The service refused the token of a request made for the signed-in account.
  function refused(status, data) {
    if (status === 401 && (current || pending)) {
      end((data && data.reason) || 'invalid', data && data.detail_zh);
    }
  }

  show();
  return { current: () => current, restore, refused, signOut };
}
