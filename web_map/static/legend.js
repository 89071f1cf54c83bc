// The layer panel and its legend: switches that show and hide the style's layers (and
// filter the grids by branch coverage and the events by state), the legend entries that
// fold away with their layer, and the hint of how far to zoom in for a layer that starts
// further in. Groups of tile layers the page does not draw are removed.

import { TERMINAL } from './popups.js';

export function wireLegend({ map, embed, tileLayers }) {
  function gridFilter() {
    const withBranch = document.querySelector('[data-toggle="with-branch"]').checked;
    const withoutBranch = document.querySelector('[data-toggle="without-branch"]').checked;
    if (withBranch && withoutBranch) {
      return null;
    }
    if (!withBranch && !withoutBranch) {
      return ['==', ['get', 'code'], ''];
    }
    return ['==', ['to-boolean', ['get', 'has_branch']], withBranch];
  }

  const TOGGLED_LAYERS = {
    communities: ['communities-line'],
    streets: ['streets-line'],
    district: ['district-casing', 'district-line'],
    branches: ['branches-circle'],
    events: ['events-circle'],
    'coverage-issues': ['coverage-issues-fill', 'coverage-issues-line'],
    'members-h3': ['members-h3-fill', 'members-h3-line'],
    members: ['members-circle'],
    labels: ['labels-text'],
  };

  function applyToggle(input) {
    const what = input.dataset.toggle;
    if (what === 'with-branch' || what === 'without-branch') {
      const filter = gridFilter();
      for (const id of ['grids-fill', 'grids-line', 'grids-hover']) {
        map.setFilter(id, filter);
      }
      // the branchless grids' outline goes with their fill
      if (map.getLayer('grids-nobranch-line')) {
        const shown = document.querySelector('[data-toggle="without-branch"]').checked;
        map.setLayoutProperty('grids-nobranch-line', 'visibility', shown ? 'visible' : 'none');
      }
      return;
    }
    if (what === 'events-closed') {
      map.setFilter('events-circle', input.checked ? null : ['!', ['in', ['get', 'status'], ['literal', TERMINAL]]]);
      return;
    }
    for (const id of TOGGLED_LAYERS[what] || []) {
      if (map.getLayer(id)) {
        map.setLayoutProperty(id, 'visibility', input.checked ? 'visible' : 'none');
      }
    }
    // the legend follows: a switched-off layer's legend entries fold away
    const group = input.closest('.layer-group');
    const items = group && group.querySelector('.legend-items');
    if (items && group.querySelector('h3 input') === input) {
      items.hidden = !input.checked;
      group.classList.toggle('off', !input.checked);
    }
  }

  function wireToggles() {
    for (const group of document.querySelectorAll('.layer-group')) {
      const layer = group.dataset.tileLayer;
      if (layer === 'members' ? embed : !tileLayers.includes(layer)) {
        group.remove(); // not drawn here (the embedded map)
      }
    }
    if (embed && new URLSearchParams(window.location.search).get('h3') === '1') {
      document.querySelector('[data-toggle="members-h3"]').checked = true; // /map?embed=1&h3=1
      document.getElementById('embed-legend-h3').hidden = false;
    }
    for (const input of document.querySelectorAll('[data-toggle]')) {
      input.addEventListener('change', () => applyToggle(input));
      applyToggle(input);
    }
  }

  // Below a layer's first zoom its legend says how far to zoom in.
  function updateZoomHints(minzoom) {
    const zoom = map.getZoom();
    for (const group of document.querySelectorAll('.layer-group')) {
      const hint = group.querySelector('.zoom-hint');
      const first = minzoom[group.dataset.tileLayer];
      if (!hint || first === undefined) {
        continue;
      }
      const out = zoom < first;
      hint.hidden = !out;
      hint.textContent = out ? `放大到第 ${first} 级以上显示（当前 ${zoom.toFixed(1)} 级）` : '';
      group.classList.toggle('out-of-range', out);
    }
  }

  wireToggles();
  return { applyToggle, updateZoomHints };
}
