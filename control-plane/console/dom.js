// Small DOM helpers: elements are built with createElement and text nodes,
// never from HTML strings, so API data cannot inject markup.

/** h('div', {class: 'x', onclick: f}, child, ...) -> Element */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A value for a table cell: dates shortened, objects as JSON, null as a dash. */
export function show(v) {
  if (v === null || v === undefined || v === '') return '–';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'object') return JSON.stringify(v);
  const s = String(v);
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(s) ? s.slice(0, 19).replace('T', ' ') : s;
}

/** A table of `rows` with `columns` ([key, label] or [fn, label]). */
export function table(rows, columns, {empty = 'Nothing to show.', testid} = {}) {
  if (!rows.length) return h('p', {class: 'muted', 'data-testid': testid}, empty);
  return h('table', {class: 'grid', 'data-testid': testid},
    h('thead', {}, h('tr', {}, columns.map(([, label]) => h('th', {}, label)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, columns.map(([key]) =>
      h('td', {}, typeof key === 'function' ? key(r) : show(r[key])))))));
}

/**
 * Asks for confirmation in a modal dialog; resolves to the form's values
 * (an object) on confirm, or null on cancel. `fields` are extra inputs:
 * [{name, label, type, options, value, required}].
 */
export function confirmDialog(title, text, fields = []) {
  return new Promise((resolve) => {
    const inputs = fields.map((f) => {
      const input = f.options
        ? h('select', {name: f.name}, f.options.map(([v, l]) => h('option', {value: v, selected: String(v) === String(f.value)}, l)))
        : h('input', {name: f.name, type: f.type || 'text', value: f.value ?? '', required: !!f.required});
      return h('label', {}, f.label, input);
    });
    const dialog = h('dialog', {class: 'confirm', 'data-testid': 'confirm-dialog'},
      h('form', {method: 'dialog'},
        h('h3', {}, title), h('p', {}, text), inputs,
        h('div', {class: 'buttons'},
          h('button', {value: 'cancel', type: 'button', onclick: () => dialog.close('cancel')}, 'Cancel'),
          h('button', {value: 'ok', class: 'primary', 'data-testid': 'confirm-ok'}, 'Confirm'))));
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      const values = Object.fromEntries(new FormData(dialog.querySelector('form')));
      dialog.remove();
      resolve(ok ? values : null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A short message at the top of the page. */
export function toast(message, kind = 'ok') {
  const t = h('div', {class: `toast ${kind}`, role: 'status', 'data-testid': 'toast'}, message);
  document.body.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}
