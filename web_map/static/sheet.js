// The side panel as a bottom sheet on narrow screens (phones): three heights — peek (the
// handle and the title, the map nearly whole), half and full — chosen by dragging the
// handle (it snaps to the nearest) or by tapping it (the next height up, from full back
// to peek). On wider screens the panel is a side panel and none of this applies.

const STATES = ['peek', 'half', 'full'];
const NARROW = '(max-width: 640px)';
const TAP_PX = 6; // a drag shorter than this is a tap

export function wireSheet(panel, handle) {
  const narrow = window.matchMedia(NARROW);

  function state() {
    return panel.dataset.sheet;
  }

  function set(next) {
    panel.dataset.sheet = next;
    panel.style.height = '';
    if (next !== 'peek') {
      handle.setAttribute('aria-expanded', 'true');
    } else {
      handle.setAttribute('aria-expanded', 'false');
      panel.scrollTop = 0;
    }
  }

  // the height (px) each state has now, read from the stylesheet
  function heights() {
    const saved = [panel.dataset.sheet, panel.style.height];
    const out = {};
    panel.classList.add('dragging');
    for (const s of STATES) {
      panel.dataset.sheet = s;
      panel.style.height = '';
      out[s] = panel.getBoundingClientRect().height;
    }
    [panel.dataset.sheet, panel.style.height] = saved;
    panel.classList.remove('dragging');
    return out;
  }

  let drag = null;
  handle.addEventListener('pointerdown', (event) => {
    if (!narrow.matches) {
      return;
    }
    drag = { y: event.clientY, start: panel.getBoundingClientRect().height, moved: 0, heights: heights() };
    handle.setPointerCapture(event.pointerId);
    panel.classList.add('dragging');
  });
  handle.addEventListener('pointermove', (event) => {
    if (!drag) {
      return;
    }
    const dy = drag.y - event.clientY;
    drag.moved = Math.max(drag.moved, Math.abs(dy));
    const h = Math.min(drag.heights.full, Math.max(drag.heights.peek, drag.start + dy));
    panel.style.height = `${h}px`;
  });
  function end(event) {
    if (!drag) {
      return;
    }
    const { moved, heights: hs } = drag;
    drag = null;
    panel.classList.remove('dragging');
    if (handle.hasPointerCapture(event.pointerId)) {
      handle.releasePointerCapture(event.pointerId);
    }
    if (moved < TAP_PX) {
      const i = STATES.indexOf(state());
      set(STATES[(i + 1) % STATES.length]);
      return;
    }
    const h = panel.getBoundingClientRect().height;
    set(STATES.reduce((best, s) => (Math.abs(hs[s] - h) < Math.abs(hs[best] - h) ? s : best), STATES[0]));
  }
  handle.addEventListener('pointerup', end);
  handle.addEventListener('pointercancel', end);
  // keyboard: Enter/Space act as a tap (a button's click), arrows move up and down
  handle.addEventListener('click', (event) => {
    if (event.detail === 0 && narrow.matches) {
      const i = STATES.indexOf(state());
      set(STATES[(i + 1) % STATES.length]);
    }
  });
  handle.addEventListener('keydown', (event) => {
    const i = STATES.indexOf(state());
    if (event.key === 'ArrowUp' && i < STATES.length - 1) {
      set(STATES[i + 1]);
      event.preventDefault();
    } else if (event.key === 'ArrowDown' && i > 0) {
      set(STATES[i - 1]);
      event.preventDefault();
    }
  });
  set(state() || 'half');

  return {
    narrow: () => narrow.matches,
    state,
    set,
    // at least this tall (opening details must not leave them under the fold)
    atLeast(s) {
      if (STATES.indexOf(state()) < STATES.indexOf(s)) {
        set(s);
      }
    },
    onChange(callback) {
      narrow.addEventListener('change', () => callback(narrow.matches));
    },
  };
}
