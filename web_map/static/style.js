// The map's drawing: the service's one style (/tiles/style.json, tiles/style.py) with
// this page's own interactive layers added (the hovered and the selected grid). Which
// tile layers the page draws (the full map or the embedded one) is the style's to say
// (metadata `gridbranch:composites`); their zooms, bounds and vector layers come from the
// composite's TileJSON. A layer whose tile layer the page does not ask for is left out.

export const SOURCE = 'gridbranch';
export const MEMBERS_SOURCE = 'members';

// Drawn by the page only: they follow the pointer and the selection (feature state and
// filters), which a style for other clients has no use for.
const INTERACTIVE = [
  {
    before: 'district-casing',
    layer: {
      id: 'grids-hover',
      'source-layer': 'grids',
      type: 'line',
      paint: {
        'line-color': '#1f2d3d',
        'line-width': 1.6,
        'line-opacity': ['case', ['boolean', ['feature-state', 'hover'], false], 0.9, 0],
      },
    },
  },
  {
    before: 'branches-circle',
    layer: {
      id: 'grids-selected',
      'source-layer': 'grids',
      type: 'line',
      filter: ['==', ['get', 'code'], ''],
      layout: { 'line-join': 'round' },
      paint: { 'line-color': '#f5a700', 'line-width': ['interpolate', ['linear'], ['zoom'], 10, 2.5, 16, 4] },
    },
  },
];

// The style, the tile layers to draw and their TileJSON. `fetchJson(url)` reads JSON
// (rejecting on a refusal), `apiUrl(path)` resolves a path against the service.
export async function loadStyle({ fetchJson, apiUrl, embed }) {
  const style = await fetchJson(apiUrl('tiles/style.json'));
  const composites = style.metadata?.['gridbranch:composites'];
  const wanted = composites?.[embed ? 'embed' : 'map'];
  if (!Array.isArray(wanted) || wanted.length === 0) {
    throw new Error('样式未说明要绘制的图层');
  }
  const tilejson = await fetchJson(apiUrl(`tiles/${wanted.join(',')}.json`));
  const served = new Set((tilejson.vector_layers || []).map((l) => l.id));
  const tileLayers = wanted.filter((name) => served.has(name));
  return { style, tilejson, tileLayers };
}

// The first zoom of each tile layer, from the TileJSON.
export function firstZooms(tilejson) {
  return Object.fromEntries((tilejson.vector_layers || []).map((l) => [l.id, l.minzoom]));
}

// Add the style's layers whose tile layer is drawn here, and the interactive ones, to a
// map whose own style is still empty. `tiles` is the tile URL template the page uses.
export function addStyleLayers(map, { style, tilejson, tileLayers }, tiles) {
  map.addSource(SOURCE, {
    type: 'vector',
    tiles: [tiles],
    minzoom: tilejson.minzoom,
    maxzoom: tilejson.maxzoom,
    bounds: tilejson.bounds,
    attribution: tilejson.attribution,
    // no promoteId: features keep their tile ids (grid, event, branch ids), which the
    // hover state and the popups use; a per-layer promoteId would drop the others' ids
  });
  const drawn = (layer) => layer.type === 'background' || (layer.source === SOURCE && tileLayers.includes(layer['source-layer']));
  for (const layer of style.layers.filter(drawn)) {
    map.addLayer(layer);
  }
  for (const { before, layer } of INTERACTIVE) {
    if (tileLayers.includes(layer['source-layer'])) {
      map.addLayer({ ...layer, source: SOURCE, minzoom: map.getLayer('grids-fill')?.minzoom }, map.getLayer(before) ? before : undefined);
    }
  }
}

// The admin's residences: their own source (whose requests alone carry the token) and
// the layer the style describes for them, under the events.
export function addMembersLayer(map, style, { tiles, bounds }) {
  const layer = style.metadata?.['gridbranch:members_layer'];
  if (!layer || map.getSource(MEMBERS_SOURCE)) {
    return false;
  }
  map.addSource(MEMBERS_SOURCE, { type: 'vector', tiles: [tiles], minzoom: layer.minzoom, maxzoom: 16, bounds });
  map.addLayer({ ...layer, source: MEMBERS_SOURCE }, map.getLayer('events-circle') ? 'events-circle' : undefined);
  return true;
}

export function removeMembersLayer(map, style) {
  const id = style?.metadata?.['gridbranch:members_layer']?.id;
  if (id && map.getLayer(id)) {
    map.removeLayer(id);
  }
  if (map.getSource(MEMBERS_SOURCE)) {
    map.removeSource(MEMBERS_SOURCE);
  }
}
