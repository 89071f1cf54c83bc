// Finding a place on the web map (搜索): the district, a street, community or grid by
// name, part of a name (its characters in order suffice: 凤鸣3 → 凤鸣社区第3网格) or code,
// from GET /v1/places — public names and boundaries only, so anyone may search. A result
// flies the map to the place, clear of the panel (a grid is then selected as a click
// would select it) and puts the place in the address (/map?focus=<code>).
//
// Hooks for the browser tests:
//   #place-results[data-state]      "loading" | "ready" | "empty" | "error"
//   #place-results li[data-code]     one place each, best first

import { say } from './api.js';

const LEVEL_NAMES = { district: '区', street: '街道', community: '社区', grid: '网格' };
const LIMIT = 8;
const DELAY_MS = 150; // typing pauses this long before a search goes out

export function wireSearch({ call, el, showPlace }) {
  const form = document.getElementById('place-search');
  const input = document.getElementById('place-q');
  const list = document.getElementById('place-results');
  const note = document.getElementById('place-note');
  let asked = 0; // the latest search sent: older answers are dropped
  let timer = null;
  let shown = [];

  function clear() {
    list.replaceChildren();
    list.hidden = true;
    delete list.dataset.state;
    shown = [];
    say(note, '');
  }

  function choose(place) {
    input.value = place.properties.name;
    clear();
    showPlace(place);
    // the address now opens the map on this place (/map?focus=<code>): a link to share
    const address = new URL(window.location.href);
    address.searchParams.set('focus', place.properties.code);
    window.history.replaceState(null, '', address);
  }

  function render(places, matched, q) {
    shown = places;
    list.replaceChildren(...places.map((place) => {
      const p = place.properties;
      const button = el('button', 'place-result');
      button.type = 'button';
      button.append(el('span', 'place-name', p.name), el('span', 'place-level', LEVEL_NAMES[p.level] || p.level));
      if (p.within.length) {
        button.append(el('span', 'place-within', p.within.join(' · ')));
      }
      button.addEventListener('click', () => choose(place));
      const item = el('li');
      item.dataset.code = p.code;
      item.append(button);
      return item;
    }));
    list.hidden = places.length === 0;
    list.dataset.state = places.length ? 'ready' : 'empty';
    if (!places.length) {
      say(note, `未找到“${q}”。可输入街道、社区、网格名称的一部分或代码。`, 'info');
    } else if (matched > places.length) {
      say(note, `共 ${matched} 处，显示前 ${places.length} 处；输入更多字可缩小范围。`, 'info');
    } else {
      say(note, '');
    }
  }

  async function search(q) {
    const mine = ++asked;
    list.dataset.state = 'loading';
    try {
      const found = await call(`v1/places?${new URLSearchParams({ q, limit: String(LIMIT) })}`);
      if (mine === asked) {
        render(found.features, found.numberMatched, q);
      }
    } catch (err) {
      if (mine === asked) {
        list.replaceChildren();
        list.hidden = true;
        list.dataset.state = 'error';
        say(note, `搜索失败：${err.message}`, 'error');
      }
    }
  }

  input.addEventListener('input', () => {
    clearTimeout(timer);
    const q = input.value.trim();
    if (!q) {
      asked += 1; // an answer still on its way is no longer wanted
      clear();
      return;
    }
    timer = setTimeout(() => search(q), DELAY_MS);
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      input.value = '';
      asked += 1;
      clear();
    } else if (event.key === 'ArrowDown' && !list.hidden) {
      event.preventDefault();
      list.querySelector('button')?.focus();
    }
  });
  // the arrow keys walk the results; Escape goes back to the box
  list.addEventListener('keydown', (event) => {
    const buttons = [...list.querySelectorAll('button')];
    const at = buttons.indexOf(document.activeElement);
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      const next = at + (event.key === 'ArrowDown' ? 1 : -1);
      (next < 0 ? input : buttons[Math.min(next, buttons.length - 1)]).focus();
    } else if (event.key === 'Escape') {
      input.focus();
    }
  });
  // Enter: the best result (searching at once when the list is not there yet)
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const q = input.value.trim();
    if (!q) {
      return;
    }
    clearTimeout(timer);
    if (!shown.length || list.dataset.state !== 'ready') {
      await search(q);
    }
    if (shown.length) {
      choose(shown[0]);
    }
  });
}
