// What the map's panels (register.js, dispatch.js, ranking.js, search.js, upkeep.js) share: calls to the service's API —
// JSON in and out, with the signed-in account's token when there is one; a refusal
// becomes an Error whose message is the problem details' `detail_zh` or `detail` (the service names
// what was wrong) and whose `status` is the HTTP status — and the way they show an
// outcome in a message line.

export function apiCaller(apiUrl, session) {
  return async function call(path, { method = 'GET', body } = {}) {
    const s = session();
    const headers = { Accept: 'application/json' };
    if (s) {
      headers.Authorization = `Bearer ${s.token}`;
    }
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
    }
    const response = await fetch(apiUrl(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try {
      data = await response.json();
    } catch {
      // no JSON body
    }
    if (!response.ok) {
      throw refusal(response, data);
    }
    return data;
  };
}

// A file from the API (a CSV export), saved by the browser under the name the service
// gives it (Content-Disposition), or `fallback`.
export function apiDownloader(apiUrl, session) {
  return async function download(path, fallback) {
    const s = session();
    const response = await fetch(apiUrl(path), { headers: s ? { Authorization: `Bearer ${s.token}` } : {} });
    if (!response.ok) {
      let data = null;
      try {
        data = await response.json();
      } catch {
        // no JSON body
      }
      throw refusal(response, data);
    }
    const named = /filename="?([^";]+)"?/.exec(response.headers.get('Content-Disposition') || '');
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement('a');
    link.href = url;
    link.download = named ? named[1] : fallback;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  };
}

function refusal(response, data) {
  const error = new Error((data && (data.detail_zh || data.detail || data.title)) || `HTTP ${response.status}`);
  error.status = response.status;
  return error;
}

// Show `text` in the message line `node` (hidden when empty), styled by `kind`: info,
// success or error. The node keeps its first class name.
export function say(node, text, kind = 'info') {
  node.textContent = text;
  node.className = `${node.className.split(' ')[0]} message-${kind}`;
  node.hidden = !text;
}

// Statistical division codes, as layers.codes reads them (12 digits for an area, 15 for
// a grid): the prefix every area and grid inside `code` shares, and the level it names.
export function areaPrefix(code) {
  if (code.length === 12 && code.endsWith('000000')) {
    return code.slice(0, 6);
  }
  if (code.length === 12 && code.endsWith('000')) {
    return code.slice(0, 9);
  }
  return code;
}

export function levelOf(code) {
  if (code.length > 12) {
    return 'grid';
  }
  return { 6: 'district', 9: 'street' }[areaPrefix(code).length] || 'community';
}
