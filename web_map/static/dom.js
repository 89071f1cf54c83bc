// Small DOM and formatting helpers every panel of the web map uses.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined && text !== null) {
    node.textContent = text;
  }
  return node;
}

export function formatNumber(value, digits = 1) {
  return Number(value).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

// ISO 8601 → "YYYY-MM-DD HH:MM" in Beijing time (what the time limits are reckoned in).
const BEIJING = new Intl.DateTimeFormat('en-CA', {
  timeZone: 'Asia/Shanghai',
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
});

export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) {
    return iso;
  }
  const p = Object.fromEntries(BEIJING.formatToParts(date).map((part) => [part.type, part.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

// A <dl> of [label, value, className] rows (value: text or a node).
export function detailsList(rows) {
  const dl = el('dl', 'grid-details');
  for (const [label, value, className] of rows) {
    dl.append(el('dt', null, label));
    const dd = el('dd', className);
    if (value instanceof Node) {
      dd.append(value);
    } else {
      dd.textContent = value;
    }
    dl.append(dd);
  }
  return dl;
}
