// What a click on the map explains: the details of a grid, an event, a branch site or a
// coverage issue (from their tile attributes and, for a grid, the API), and where they
// open — a popup at the click on a wide screen, the details section at the top of the
// bottom sheet on a phone (a popup would lie under the sheet).

import { detailsList, el, formatNumber, formatTime } from './dom.js';
import { MAPLIBRE_ZH } from './locale.js';

export const BRANCH_KINDS = { grid: '网格党支部', community: '社区党组织', work_unit: '单位党组织' };
export const EVENT_STATUS = {
  reported: '已上报',
  registered: '已登记',
  dispatched: '已派遣',
  in_progress: '处置中',
  handled: '已处置',
  returned: '已退回',
  deferred: '暂缓',
  closed: '已结案',
  rejected: '不予受理',
  duplicate: '重复事件',
};
export const TERMINAL = ['closed', 'rejected', 'duplicate'];
export const ISSUE_KINDS = {
  gap: '缺口（未被网格覆盖）',
  overlap: '重叠（多个网格重复覆盖）',
  sliver: '细碎缺口或重叠',
  outside_community: '超出所属社区',
  invalid: '无效几何',
  stray_part: '游离碎块',
};
export const ISSUE_FORMS = { gap: '缺口', overlap: '重叠' };

const SUPPRESSED_TEXT = '—（人数较少，不公开）';

function rateText(props) {
  if (props.rate === undefined || props.rate === null) {
    return '—（无在住党员）';
  }
  return `${(Number(props.rate) * 100).toFixed(1)}%`;
}

function rolesText(props) {
  if (props.roles_missing === undefined || props.roles_missing === null) {
    return '—';
  }
  if (Number(props.roles_missing) === 0) {
    return '六员齐全';
  }
  return `缺 ${props.roles_missing} 项：${props.roles_missing_names || ''}`;
}

// A <dl> describing a grid from its tile attributes and, once fetched, /v1/grids/{code};
// `branches` is an array, null while loading (or not to be loaded), or an Error.
export function gridDetails(props, branches, { full = false } = {}) {
  const rows = [
    ['网格编码', props.code, 'grid-code'],
    ['网格名称', props.name, 'grid-name'],
  ];
  const community = props.community_name ? `${props.community_name}（${props.community}）` : props.community || '—';
  rows.push(['所属社区', community, 'grid-community']);
  if (full) {
    const worker = props.grid_worker
      ? `${props.grid_worker}${props.grid_worker_phone ? `（${props.grid_worker_phone}）` : ''}`
      : '未配备';
    rows.push(['网格员', worker, 'grid-worker']);
  }
  let value;
  if (branches instanceof Error) {
    value = el('span', 'error-text', `党支部信息加载失败：${branches.message}`);
  } else if (Array.isArray(branches) && branches.length > 0) {
    value = el('ul', 'branch-list');
    for (const b of branches) {
      const li = el('li');
      li.append(el('span', 'branch-name', b.name));
      li.append(el('span', 'branch-kind', BRANCH_KINDS[b.kind] || b.kind));
      li.title = b.code;
      value.append(li);
    }
  } else if (props.has_branch === false || (Array.isArray(branches) && branches.length === 0)) {
    value = el('span', 'no-branch', '无党支部');
  } else {
    value = el('span', 'branch-name', props.branch || '—');
  }
  rows.push(['党支部', value, 'grid-branches']);
  // figures of grids with few registered members are withheld from the public (suppressed)
  const withheld = props.suppressed === true;
  const registered = props.registered === undefined || props.registered === null ? '—' : `${props.registered} 人`;
  rows.push(['报到党员', withheld ? SUPPRESSED_TEXT : registered, 'grid-registered']);
  rows.push(['报到率', withheld ? SUPPRESSED_TEXT : rateText(props), 'grid-rate']);
  rows.push(['六员缺额', withheld ? SUPPRESSED_TEXT : rolesText(props), 'grid-roles']);
  return detailsList(rows);
}

export function eventDetails(feature) {
  const p = feature.properties;
  let state;
  let stateClass;
  if (p.overdue) {
    state = '超期';
    stateClass = 'state-overdue';
  } else if (p.warning) {
    state = '预警';
    stateClass = 'state-warning';
  } else if (TERMINAL.includes(p.status)) {
    state = '已结束';
    stateClass = 'state-closed';
  } else {
    state = '正常';
    stateClass = 'state-normal';
  }
  return detailsList([
    ['事件编号', `#${feature.id ?? '—'}`, 'event-id'],
    ['事件类别', `${p.category_name || p.category}（${p.category}）`, 'event-category'],
    ['办理状态', EVENT_STATUS[p.status] || p.status, 'event-status'],
    ['办理时限', p.due_at ? formatTime(p.due_at) : '未派遣，尚未起算', 'event-due'],
    ['时限状态', el('span', `time-state ${stateClass}`, state), 'event-state'],
  ]);
}

export function branchDetails(feature) {
  const p = feature.properties;
  return detailsList([
    ['党组织编码', p.code, 'branch-code'],
    ['类型', BRANCH_KINDS[p.kind] || p.kind, 'branch-kind-text'],
    ['所属社区', p.community || '—', 'branch-community'],
    ['覆盖网格', p.grids === undefined ? '—' : `${p.grids} 个`, 'branch-grids'],
  ]);
}

export function issueDetails(feature) {
  const p = feature.properties;
  const codes = el('ul', 'code-list');
  for (const code of String(p.codes || '').split(',').filter(Boolean)) {
    codes.append(el('li', 'grid-code', code));
  }
  const kind = ISSUE_KINDS[p.kind] || p.kind;
  return detailsList([
    ['说明', p.message || '—', 'issue-message'],
    ['问题类型', `${kind}${p.kind === 'sliver' && ISSUE_FORMS[p.form] ? `（${ISSUE_FORMS[p.form]}）` : ''}`, 'issue-kind'],
    ['涉及编码', codes.childElementCount ? codes : '—', 'issue-codes'],
    ['面积', p.area_m2 === undefined ? '—' : `${formatNumber(p.area_m2)} m²`, 'issue-area'],
  ]);
}

// The popup and the sheet's details section, showing `sections` ({kind, title, body()})
// one under the other. `onClose` runs when the details close (the selection ends).
export function wirePopups({ map, maplibregl, sheet, panel, onClose }) {
  const popup = new maplibregl.Popup({ closeButton: true, closeOnClick: false, maxWidth: '360px', className: 'grid-popup' });
  const detailsEl = document.getElementById('details');
  const detailsBodyEl = document.getElementById('details-body');
  let sections = [];

  function section(kind, title, body) {
    const node = el('section', `popup-section popup-${kind}`);
    node.dataset.kind = kind;
    node.append(el('div', 'popup-title', title), body);
    return node;
  }


  function inSheet() {
    return sheet !== null && sheet.narrow();
  }

  function renderPopup() {
    const body = el('div', 'popup-body');
    for (const s of sections) {
      body.append(section(s.kind, s.title, s.body()));
    }
    if (inSheet()) {
      detailsBodyEl.replaceChildren(body);
    } else {
      popup.setDOMContent(body);
      labelClose();
    }
  }

  // MapLibre names the close button (its locale) only when the popup first opens: the
  // button new content brings would have no name for a screen reader.
  function labelClose() {
    const close = popup.getElement()?.querySelector('.maplibregl-popup-close-button');
    if (close) {
      close.setAttribute('aria-label', MAPLIBRE_ZH['Popup.Close']);
      close.title = MAPLIBRE_ZH['Popup.Close'];
    }
  }

  function openDetails(lngLat) {
    if (inSheet()) {
      detailsEl.hidden = false;
      sheet.atLeast('half');
      panel.scrollTop = 0;
      return;
    }
    popup.setLngLat(lngLat);
    if (!popup.isOpen()) {
      popup.addTo(map);
    }
    labelClose();
  }

  function closeDetails() {
    popup.remove(); // its close event clears the selection
    if (!detailsEl.hidden) {
      detailsEl.hidden = true;
      detailsBodyEl.replaceChildren();
      onClose();
    }
  }

  popup.on('close', onClose);
  document.getElementById('details-close').addEventListener('click', closeDetails);
  return {
    show(list, lngLat) {
      sections = list;
      renderPopup();
      openDetails(lngLat);
    },
    sections: () => sections,
    render: renderPopup,
    close: closeDetails,
    inSheet,
  };
}
