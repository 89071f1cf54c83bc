// Calls to the service's API from the map's modules: JSON in and out, with the signed-in
// account's token when there is one. A refusal becomes an Error whose message is the
// problem details' `detail` (the service names what was wrong) and whose `status` is the
// HTTP status.

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
