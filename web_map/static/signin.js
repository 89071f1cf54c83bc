// The map following the signed-in account (session.js keeps the session itself): the
// line saying who is signed in, `document.body.dataset.role` (the page's CSS and the
// browser tests read it), and an admin's residences (the `members` tiles of their area,
// drawn as the style describes them: style.js). `onChange(account)` then lets the page's
// panels follow.

import { wireSession } from './session.js';
import { addMembersLayer, removeMembersLayer } from './style.js';

export const ROLE_NAMES = {
  admin: '管理员',
  dispatcher: '指挥中心',
  grid_worker: '网格员',
  department_staff: '职能部门',
  member: '党员',
};

export function wireSignIn({ map, apiUrl, style, bounds, membersTiles, applyToggle, onChange }) {
  const signedInEl = document.getElementById('signed-in');
  const membersGroup = document.querySelector('.layer-group[data-group="members"]');

  function addMembers(account) {
    if (account.role !== 'admin' || !account.area_code) {
      return;
    }
    if (addMembersLayer(map, style, { tiles: membersTiles, bounds })) {
      membersGroup.hidden = false;
      applyToggle(membersGroup.querySelector('input'));
    }
  }

  function removeMembers() {
    removeMembersLayer(map, style);
    membersGroup.hidden = true;
  }

  function showWho(account) {
    if (account) {
      const role = ROLE_NAMES[account.role] || account.role;
      signedInEl.querySelector('.who').textContent =
        `已登录：${account.username}（${role}${account.area_code ? `，${account.area_code}` : ''}）`;
      document.body.dataset.role = account.role;
    } else {
      delete document.body.dataset.role;
    }
  }

  return wireSession({
    apiUrl,
    onChange: async (account) => {
      showWho(account);
      if (account) {
        addMembers(account);
      } else {
        removeMembers();
      }
      await onChange(account);
    },
  });
}
