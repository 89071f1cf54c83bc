// What the map's panels (register.js, dispatch.js) share: calls to the service's API —
// JSON in and out, with the signed-in account's token when there is one; a refusal
// becomes an Error whose message is the problem details' `detail` (the service names
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
      const error = new Error((data && (data.detail || data.title)) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  };
}

// Show `text` in the message line `node` (hidden when empty), styled by `kind`: info,
// success or error. The node keeps its first class name.
export function say(node, text, kind = 'info') {
  node.textContent = text;
  node.className = `${node.className.split(' ')[0]} message-${kind}`;
  node.hidden = !text;
}
