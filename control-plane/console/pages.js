// The console's pages. Each renders into `main` from /v1 calls; buttons
// appear only when `can()` says the user's level (and scope) allows them.

import {api, can, consoleSettings, listAll, login as logIn, withQuery} from './api.js';
import {h, fill, show, table, confirmDialog, toast} from './dom.js';
import {chart, columns, downsampleInterval} from './charts.js';
import {fleetMap} from './map.js';

const unitLink = (imei) => h('a', {href: `#/unit/${encodeURIComponent(imei)}`, class: 'imei'}, imei);
const eq = (name, val) => ({name, op: 'eq', val});

/** Runs an action after confirmation; toasts the answer; then `after()`. */
async function act(title, text, call, after, fields) {
  const values = await confirmDialog(title, text, fields);
  if (!values) return;
  try {
    const body = await call(values);
    toast(typeof body?.message === 'string' ? body.message : `${title}: done`);
  } catch (e) {
    toast(`${title} failed: ${e.message}`, 'error');
  }
  await after();
}

/** Previous/next buttons for a page of `total` results. */
function pager(page, per, total, go) {
  const pages = Math.max(1, Math.ceil(total / per));
  return h('div', {class: 'pager'},
    h('button', {disabled: page <= 1, onclick: () => go(page - 1)}, '‹ Previous'),
    h('span', {'data-testid': 'pager-text'}, ` page ${page} of ${pages} (${total} results) `),
    h('button', {disabled: page >= pages, onclick: () => go(page + 1)}, 'Next ›'));
}

// ------------------------------------------------------------------ login

export async function login(main) {
  const error = h('p', {class: 'error'});
  const form = h('form', {class: 'login', 'data-testid': 'login-form'},
    h('h2', {}, 'Log in'),
    h('label', {}, 'Username', h('input', {name: 'username', autocomplete: 'username', required: true})),
    h('label', {}, 'Password', h('input', {name: 'password', type: 'password', autocomplete: 'current-password', required: true})),
    h('button', {class: 'primary', type: 'submit'}, 'Log in'), error);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      await logIn(f.get('username'), f.get('password'));
      location.hash = '#/fleet';
    } catch (e) {
      fill(error, e.message);
    }
  });
  fill(main, form);
}

// ------------------------------------------------------------------ fleet

const fleetFilters = {search: '', entity: '', state: '', enabled: '', online: '', alerts: '', page: 1};
const FLEET_PER_PAGE = 20;
/** The map shows at most this many units (dashboard2 pages of 100). */
const MAP_MAX = 1000;

/** The dashboard2 `q` for the fleet filters. */
export function fleetQuery(f, now = Date.now()) {
  const filters = [];
  if (f.search) {
    const like = `%${f.search.trim()}%`;
    filters.push({or: [{name: 'product_imei', op: 'ilike', val: like}, {name: 'serial_number', op: 'ilike', val: like}]});
  }
  if (f.entity) filters.push({name: 'entities', op: 'eq', val: f.entity});
  if (f.state) filters.push(eq('latest_state__current_state_type', Number(f.state)));
  if (f.enabled) filters.push(eq('current_enable_flag', f.enabled === 'yes'));
  if (f.online) {
    // "24" = connected within 24 hours; "-24" = not connected for 24 hours.
    const hours = Number(f.online);
    const since = new Date(now - Math.abs(hours) * 3600e3).toISOString().slice(0, 19);
    filters.push({name: 'connections', op: hours > 0 ? 'any' : 'not_any', val: {name: 'date', op: 'ge', val: since}});
  }
  if (f.alerts) filters.push({name: 'alert', op: 'any', val: {name: 'dismissed_at', op: 'is_null'}});
  return {filters, order_by: [{field: 'product_imei', direction: 'asc'}]};
}

function enableText(u) {
  const now = u.current_enable_flag ? 'enabled' : 'disabled';
  if (u.desired_enable_flag === null || u.desired_enable_flag === u.current_enable_flag) return h('span', {}, now);
  return h('span', {}, now, ' ', h('span', {class: 'badge pending', 'data-testid': 'pending-enable'},
    `pending: ${u.desired_enable_flag ? 'enable' : 'disable'}`));
}

const entityNames = (u) => (u.entities || []).map((e) => e.name).join(', ') || '–';

export async function fleet(main) {
  const [entities, states] = await Promise.all([
    listAll('/entities', {order_by: [{field: 'name', direction: 'asc'}]}),
    listAll('/state_types', {order_by: [{field: 'state_type_id', direction: 'asc'}]}),
  ]);
  const f = fleetFilters;
  const select = (key, label, options) => h('label', {}, label,
    h('select', {name: key, onchange: (ev) => { f[key] = ev.target.value; f.page = 1; load(); }},
      options.map(([v, l]) => h('option', {value: v, selected: String(f[key]) === String(v)}, l))));
  const search = h('input', {type: 'search', placeholder: 'IMEI or serial number', value: f.search, 'data-testid': 'fleet-search'});
  search.addEventListener('change', () => { f.search = search.value; f.page = 1; load(); });
  const filters = h('div', {class: 'filters'},
    h('label', {}, 'Search', search),
    select('entity', 'Entity', [['', 'all'], ...entities.map((e) => [e.name, e.name])]),
    select('state', 'State', [['', 'all'], ...states.map((s) => [s.state_type_id, s.name])]),
    select('enabled', 'Enabled', [['', 'all'], ['yes', 'enabled'], ['no', 'disabled']]),
    select('online', 'Online', [['', 'all'], ['24', 'seen in the last 24 h'], ['168', 'seen in the last 7 days'],
      ['-24', 'not seen for 24 h'], ['-168', 'not seen for 7 days']]),
    select('alerts', 'Alerts', [['', 'all'], ['open', 'with open alerts']]));
  const counts = h('div', {class: 'counts', 'data-testid': 'fleet-counts'});
  const mapBox = h('section', {class: 'map-section'});
  const tableBox = h('section', {});
  fill(main, h('h2', {}, 'Fleet'), filters, counts, mapBox, tableBox);

  // The map and the counts cover every matching unit (up to MAP_MAX), so they are fetched
  // again only when the filters change, not on a pager click. A newer load (another filter,
  // another page) makes an older one's answers stale: `loading` tells them apart.
  let loading = 0;
  let mappedKey = null;
  let mapped = [];
  async function load() {
    const mine = ++loading;
    const q = fleetQuery(f);
    const key = JSON.stringify(q);
    const pick = (u) => { location.hash = `#/unit/${encodeURIComponent(u.product_imei)}`; };
    const tablePage = await api('GET', withQuery('/dashboard2', q, {page: f.page, results_per_page: FLEET_PER_PAGE}));
    if (mine !== loading) return;
    if (key !== mappedKey) {
      const units = [];
      for (let page = 1; units.length < MAP_MAX; page++) {
        const body = await api('GET', withQuery('/dashboard2', q, {page, results_per_page: 100}));
        if (mine !== loading) return;
        units.push(...body.data);
        if (!body.data.length || units.length >= body.num_results_filtered) break;
      }
      mapped = units;
      mappedKey = key;
      fill(mapBox, await fleetMap(mapped, consoleSettings(), pick));
      if (mine !== loading) return;
    }
    const located = mapped.filter((u) => u.latitude !== null && u.longitude !== null).length;
    const enabled = mapped.filter((u) => u.current_enable_flag).length;
    const alerted = mapped.filter((u) => (u.alerts || []).length).length;
    const byState = {};
    for (const u of mapped) byState[u.state || 'no state'] = (byState[u.state || 'no state'] || 0) + 1;
    fill(counts,
      h('span', {}, h('b', {'data-testid': 'count-filtered'}, tablePage.num_results_filtered), ` of ${tablePage.num_results} units match`),
      h('span', {}, h('b', {}, enabled), ' enabled'),
      h('span', {}, h('b', {}, alerted), ' with open alerts'),
      h('span', {}, h('b', {}, located), ' located'),
      Object.entries(byState).map(([s, n]) => h('span', {class: 'state'}, `${s}: ${n}`)),
      mapped.length >= MAP_MAX ? h('span', {class: 'muted'}, `(map and counts show the first ${MAP_MAX})`) : null);
    fill(tableBox,
      table(tablePage.data, [
        [(u) => unitLink(u.product_imei), 'IMEI'],
        ['serial_number', 'Serial'],
        ['hardware_type', 'Type'],
        [entityNames, 'Entity'],
        ['state', 'State'],
        [enableText, 'Enable'],
        ['recent_connection', 'Last connection'],
        [(u) => (u.alerts || []).length || '–', 'Open alerts'],
        ['software', 'Software'],
      ], {empty: 'No unit matches these filters.', testid: 'fleet-table'}),
      pager(f.page, FLEET_PER_PAGE, tablePage.num_results_filtered, (p) => { f.page = p; load(); }));
  }
  await load();
}

// ------------------------------------------------------------------- unit

const RANGES = [['24', 'last 24 hours'], ['168', 'last 7 days'], ['720', 'last 30 days'], ['2160', 'last 90 days']];
const SERIES = [
  ['voltage', 'Voltage', 'V', '#1f6feb'],
  ['current', 'Current', 'A', '#8250df'],
  ['temperature', 'Temperature', '°C', '#bc4c00'],
  ['state_of_charge_percent', 'State of charge', '%', '#1a7f37'],
];
let unitRange = '168';

export async function unit(main, imei) {
  const path = `/products/${encodeURIComponent(imei)}`;
  const summary = await api('GET', withQuery('/dashboard2', {filters: [eq('product_imei', imei)]}));
  const u = summary.data[0];
  if (!u) throw new Error(`No unit ${imei} among the units you can see`);
  const byImei = {filters: [eq('product_imei', imei)]};
  const [product, stateTypes, alertTypes, states, enables, connections, sms, parts, money, mts] = await Promise.all([
    api('GET', path),
    listAll('/state_types'),
    listAll('/alert_types'),
    listAll('/states', {...byImei, order_by: [{field: 'state_id', direction: 'desc'}]}, {max: 50}),
    listAll('/enable_history', {...byImei, order_by: [{field: 'enable_history_id', direction: 'desc'}]}, {max: 50}),
    listAll('/connections', {...byImei, order_by: [{field: 'date', direction: 'desc'}]}, {max: 50}),
    listAll('/sms_histories', {...byImei, order_by: [{field: 'sms_history_id', direction: 'desc'}]}, {max: 50}),
    api('GET', `${path}/parts`).catch((e) => ({error: e.message})),
    api('GET', `${path}/balance_and_pending_payments`).catch((e) => ({error: e.message})),
    listAll('/rtc_message_history', {...byImei, order_by: [{field: 'rtc_message_history_id', direction: 'desc'}]}, {max: 50}),
  ]);
  const stateName = (id) => stateTypes.find((s) => s.state_type_id === id)?.name ?? show(id);
  const reload = () => unit(main, imei);

  const status = h('dl', {class: 'status', 'data-testid': 'unit-status'},
    [['Serial', u.serial_number], ['Type', u.hardware_type], ['State', u.state], ['Since', u.state_date],
      ['Entity', entityNames(u)], ['Software', u.software], ['Last connection', u.recent_connection],
      ['Location', u.latitude === null ? null : `${u.latitude}, ${u.longitude}`],
      ['Tamper switch', u.current_tamper_flag ? 'enabled' : 'disabled'], ['RTC', product.rtc_enabled_flag],
      ['Balance', money.data?.balance]]
      .map(([k, v]) => [h('dt', {}, k), h('dd', {}, show(v))]),
    h('dt', {}, 'Enable'), h('dd', {'data-testid': 'unit-enable'}, enableText(u)));

  const pending = [];
  if (u.desired_enable_flag !== null && u.desired_enable_flag !== u.current_enable_flag) {
    pending.push(`${u.desired_enable_flag ? 'Enable' : 'Disable'} (requested, waiting for the unit to confirm)`);
  }
  if (u.desired_tamper_flag !== null && u.desired_tamper_flag !== u.current_tamper_flag) {
    pending.push(`Tamper switch ${u.desired_tamper_flag ? 'on' : 'off'}`);
  }
  if (u.pending_software) pending.push(`Software update to ${u.pending_software} (since ${show(u.pending_software_created_at)})`);
  for (const c of money.data?.pending_payment_commands || []) {
    pending.push(`Payment command: ${c.category} ${show(c.value)} (${show(c.created_at)})`);
  }

  const id = '/products/{product_imei}';
  const button = (label, method, route, text, {fields, body, show: visible = true} = {}) =>
    visible && can(method, `${id}/${route}`) && h('button', {
      'data-action': route,
      onclick: () => act(label, text, (v) => api(method, `${path}/${route}`, body ? body(v) : undefined), reload, fields),
    }, label);
  const actions = [
    button('Enable', 'PUT', 'enable', `Enable unit ${imei}? It stays pending until the unit confirms.`),
    button('Disable', 'PUT', 'disable', `Disable unit ${imei}? It stays pending until the unit confirms.`),
    button('Tamper switch on', 'PUT', 'enable_tamper_switch', `Enable the tamper switch of ${imei}?`),
    button('Tamper switch off', 'PUT', 'disable_tamper_switch', `Disable the tamper switch of ${imei}?`),
    button('Send wakeup SMS', 'POST', 'send_wakeup', `Send a WAKEUP SMS to ${imei}?`),
    button('Sync now', 'POST', 'sync', `Ask ${imei} for its status and telemetry now?`, {show: !!product.rtc_enabled_flag}),
    button('Change state', 'PUT', 'change_state', `Change the lifecycle state of ${imei}.`, {
      fields: [{name: 'new_state', label: 'New state', options: stateTypes.map((s) => [s.state_type_id, s.name])}],
      body: (v) => ({new_state: Number(v.new_state)}),
    }),
    button('Add payment command', 'POST', 'add_payment_command', `Add a payment command for ${imei}.`, {
      fields: [
        {name: 'category', label: 'Category', options: [['payment', 'payment'], ['bad-payment', 'bad payment'], ['zero-command', 'zero command']]},
        {name: 'value', label: 'Value', type: 'number', value: 0, required: true},
        {name: 'transaction_id', label: 'Transaction id', required: true},
      ],
      body: (v) => ({category: v.category, value: Number(v.value), transaction_id: v.transaction_id}),
    }),
  ].filter(Boolean);

  const telemetry = h('div', {class: 'charts', 'data-testid': 'charts'});
  const rangeSelect = h('select', {'data-testid': 'range', onchange: (ev) => { unitRange = ev.target.value; drawCharts(); }},
    RANGES.map(([v, l]) => h('option', {value: v, selected: v === unitRange}, l)));
  let drawing = 0; // the latest request; older answers are dropped
  async function drawCharts() {
    const mine = ++drawing;
    const end = new Date();
    const start = new Date(end - Number(unitRange) * 3600e3);
    const ds = downsampleInterval((end - start) / 1000);
    const params = {start: start.toISOString(), end: end.toISOString(), fields: SERIES.map((s) => s[0]).join(',')};
    if (ds) Object.assign(params, {ds_interval: ds, ds_function: 'mean'});
    fill(telemetry, h('p', {class: 'muted'}, 'Loading telemetry…'));
    delete telemetry.dataset.range;
    const [data, balances] = await Promise.all([
      api('GET', withQuery(`${path}/data`, null, params)),
      listAll('/balances', {filters: [eq('product_imei', imei), {name: 'created_at', op: 'ge', val: start.toISOString().slice(0, 19)}],
        order_by: [{field: 'created_at', direction: 'asc'}]}),
    ]);
    if (mine !== drawing) return;
    telemetry.dataset.range = unitRange;
    fill(telemetry,
      h('p', {class: 'muted'}, ds ? `Downsampled: mean per ${ds}.` : 'Raw points.'),
      SERIES.map(([field, title, unitName, color]) => chart(title, unitName, columns(data.data[field]), {color, testid: `chart-${field}`})),
      chart('Balance', '', columns(balances.map((b) => [b.balance, `${b.created_at}Z`])), {color: '#953800', testid: 'chart-balance'}));
  }

  const history = [
    ['States', table(states, [['created_at', 'When'], [(s) => stateName(s.prev_state_type), 'From'], [(s) => stateName(s.current_state_type), 'To'], ['created_by', 'By']], {testid: 'history-states'})],
    ['Enable', table(enables, [['date', 'When'], ['prev_enable_state', 'From'], ['current_enable_state', 'To'], ['user', 'By']], {testid: 'history-enable'})],
    ['Connections', table(connections, [['date', 'When'], ['latitude', 'Latitude'], ['longitude', 'Longitude'], ['error_radius', 'Radius'], ['mcc', 'MCC'], ['mnc', 'MNC']], {testid: 'history-connections'})],
    // An SMS without a status is in flight; NotSent and Failed say why.
    ['SMS', table(sms, [['sent_time', 'When'], ['message', 'Message'], ['trigger', 'Trigger'],
      [(m) => m.status ?? 'Sent, awaiting receipt', 'Status'], ['status_info', 'Why']], {empty: 'No SMS.', testid: 'history-sms'})],
  ];
  // Every MT sent to the unit: delivered or failed once the unit (or the gateway's
  // expiry) answered, else still waiting for the unit.
  const mtType = (m) => { try { return JSON.parse(m.message_json).type; } catch { return null; } };
  const mtHistory = table(mts, [['message_sent_time', 'Sent'], [(m) => show(mtType(m)), 'Type'],
    [(m) => m.delivery_status ?? 'pending', 'Delivery'], ['delivery_status_time', 'Since'], ['delivery_status_info', 'Details']],
  {empty: 'No messages sent to this unit.', testid: 'mt-history'});
  // /parts answers {part_id: part row with its part_type and part_product_linker}.
  const partRows = Object.values(parts.data || {});
  const partColumns = [['part_id', 'Part'], [(p) => show(p.part_type?.name), 'Type'], ['serial_number', 'Serial'],
    [(p) => show(p.part_product_linker?.date_added), 'Added'], [(p) => show(p.part_product_linker?.date_removed), 'Removed']];

  fill(main,
    h('h2', {}, 'Unit ', h('span', {'data-testid': 'unit-imei'}, imei)),
    h('div', {class: 'two'},
      h('section', {}, h('h3', {}, 'Status'), status),
      h('section', {},
        h('h3', {}, 'Pending changes'),
        pending.length ? h('ul', {'data-testid': 'pending'}, pending.map((p) => h('li', {}, p))) : h('p', {class: 'muted', 'data-testid': 'pending'}, 'Nothing pending.'),
        h('h3', {}, 'Actions'),
        actions.length ? h('div', {class: 'actions', 'data-testid': 'actions'}, actions)
          : h('p', {class: 'muted', 'data-testid': 'no-actions'}, 'Your permission level allows no actions on units.'),
        h('h3', {}, 'Open alerts'),
        table((u.alerts || []), [['alert_id', 'Alert'], [(a) => alertTypes.find((t) => t.alert_type_id === a.alert_type_id)?.name ?? show(a.alert_type_id), 'Type'],
          ['start_time', 'Since'], ['extra_info', 'Details']], {empty: 'No open alerts.', testid: 'unit-alerts'}))),
    h('section', {}, h('h3', {}, 'Telemetry ', rangeSelect), telemetry),
    h('section', {}, h('h3', {}, 'History'), h('div', {class: 'three'}, history.map(([t, el]) => h('div', {}, h('h4', {}, t), el)))),
    h('section', {}, h('h3', {}, 'Messages to the unit'), mtHistory),
    h('div', {class: 'two'},
      h('section', {}, h('h3', {}, 'Parts'), parts.error ? h('p', {class: 'error'}, parts.error) : table(partRows, partColumns, {empty: 'No parts linked.', testid: 'parts-table'})),
      h('section', {}, h('h3', {}, 'Notes'), table(u.notes || [], [['created_at', 'When'], ['created_by', 'By'], ['note_text', 'Note']], {empty: 'No notes.', testid: 'notes-table'}))));
  await drawCharts();
}

// ----------------------------------------------------------------- alerts

const alertView = {dismissed: false, page: 1};

export async function alerts(main) {
  const types = await listAll('/alert_types');
  const typeName = (id) => types.find((t) => t.alert_type_id === id)?.name ?? show(id);
  const box = h('section', {});
  const toggle = h('label', {}, h('input', {type: 'checkbox', checked: alertView.dismissed,
    onchange: (ev) => { alertView.dismissed = ev.target.checked; alertView.page = 1; load(); }}), ' show dismissed alerts too');
  fill(main, h('h2', {}, 'Alerts'), toggle, box);
  async function load() {
    const filters = alertView.dismissed ? [] : [{name: 'dismissed_at', op: 'is_null'}];
    const body = await api('GET', withQuery('/alerts', {filters, order_by: [{field: 'alert_id', direction: 'desc'}]}, {page: alertView.page, results_per_page: 25}));
    const dismiss = (a) => !a.dismissed_at && can('PUT', '/alerts/{alert_id}/dismiss') && h('button', {
      'data-action': 'dismiss',
      onclick: () => act('Dismiss alert', `Dismiss alert #${a.alert_id} of ${a.product_imei}?`,
        (v) => api('PUT', `/alerts/${a.alert_id}/dismiss`, v.dismissal_reason ? {dismissal_reason: v.dismissal_reason} : {}), load,
        [{name: 'dismissal_reason', label: 'Reason'}]),
    }, 'Dismiss');
    fill(box,
      table(body.objects, [['alert_id', '#'], [(a) => unitLink(a.product_imei), 'Unit'], [(a) => typeName(a.alert_type_id), 'Type'],
        ['start_time', 'Since'], ['extra_info', 'Details'], ['dismissed_at', 'Dismissed'], ['dismissed_by', 'By'], ['dismissal_reason', 'Reason'],
        [dismiss, '']], {empty: 'No alerts.', testid: 'alerts-table'}),
      pager(alertView.page, 25, body.num_results, (p) => { alertView.page = p; load(); }));
  }
  await load();
}

// ----------------------------------------------------------- dead letters

const letterView = {status: '', page: 1};

export async function deadLetters(main) {
  const box = h('section', {});
  const global = {global: true};
  const importButton = (label, route) => can('POST', route, global) && h('button', {
    onclick: () => act(label, 'Move the letters waiting on the bus into this list?', () => api('POST', route), load),
  }, label);
  const status = h('select', {onchange: (ev) => { letterView.status = ev.target.value; letterView.page = 1; load(); }},
    [['', 'all'], ['replayed', 'replayed'], ['discarded', 'discarded']].map(([v, l]) => h('option', {value: v, selected: v === letterView.status}, l)));
  fill(main, h('h2', {}, 'Dead letters'),
    h('div', {class: 'filters'}, h('label', {}, 'Status', status),
      importButton('Import MO dead letters', '/rtc_import_mo_dead_letters'),
      importButton('Import MT reply dead letters', '/rtc_import_mt_reply_dead_letters')),
    box);
  async function load() {
    const filters = letterView.status ? [eq('status', letterView.status)] : [];
    const body = await api('GET', withQuery('/rtc_dead_letters', {filters, order_by: [{field: 'rtc_dead_letter_id', direction: 'desc'}]}, {page: letterView.page, results_per_page: 25}));
    const decoded = h('pre', {class: 'decoded', 'data-testid': 'decoded', hidden: true});
    const letterAction = (d, verb, label) => can('PUT', `/rtc_dead_letters/{rtc_dead_letter_id}/${verb}`, global) && h('button', {
      'data-action': verb,
      onclick: () => act(label, `${label} dead letter #${d.rtc_dead_letter_id}?`, () => api('PUT', `/rtc_dead_letters/${d.rtc_dead_letter_id}/${verb}`), load),
    }, label);
    const decode = (d) => can('GET', '/rtc_dead_letters/{rtc_dead_letter_id}/decode') && h('button', {
      'data-action': 'decode',
      onclick: async () => {
        try {
          const r = await api('GET', `/rtc_dead_letters/${d.rtc_dead_letter_id}/decode`);
          decoded.hidden = false;
          fill(decoded, `#${d.rtc_dead_letter_id}\n`, typeof r.data === 'string' ? r.data : JSON.stringify(r.data ?? r, null, 2));
        } catch (e) {
          toast(`Decode failed: ${e.message}`, 'error');
        }
      },
    }, 'Decode');
    fill(box,
      table(body.objects, [['rtc_dead_letter_id', '#'], ['queue_name', 'Queue'], ['status', 'Status'], ['status_time', 'Since'],
        ['replay_status', 'Replay'], ['replay_status_text', 'Replay detail'], ['created_at', 'Imported'],
        [(d) => h('span', {class: 'row-actions'}, decode(d), letterAction(d, 'replay', 'Replay'), letterAction(d, 'discard', 'Discard')), '']],
      {empty: 'No dead letters.', testid: 'dead-letters-table'}),
      pager(letterView.page, 25, body.num_results, (p) => { letterView.page = p; load(); }),
      decoded);
  }
  await load();
}

// --------------------------------------------------------------- webhooks

export async function webhooks(main) {
  const box = h('section', {});
  const log = h('section', {'data-testid': 'delivery-log'});
  fill(main, h('h2', {}, 'Webhook subscriptions'), box, log);
  async function load() {
    const [channels, subscribers] = await Promise.all([listAll('/channels'), listAll('/subscribers')]);
    const admin = can('POST', '/channels/{name}/subscribe');
    const form = !admin ? null : h('form', {class: 'filters', 'data-testid': 'subscribe-form'},
      h('label', {}, 'Channel', h('select', {name: 'channel'}, channels.map((c) => h('option', {value: c.name}, c.name)))),
      h('label', {}, 'URL', h('input', {name: 'url', type: 'url', required: true, placeholder: 'https://receiver.example/hook'})),
      h('button', {class: 'primary'}, 'Subscribe'));
    form?.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      try {
        const r = await api('POST', `/channels/${encodeURIComponent(f.get('channel'))}/subscribe`, {url: f.get('url')});
        await confirmDialog('Subscribed', `Keep this signing key now; it is not shown again: ${r.data.key}`);
      } catch (e) {
        toast(`Subscribe failed: ${e.message}`, 'error');
      }
      load();
    });
    const rowActions = (s) => h('span', {class: 'row-actions'},
      can('GET', '/subscribers/{subscriber_id}/deliveries') && h('button', {onclick: () => deliveries(s, 1)}, 'Deliveries'),
      can('POST', '/channels/{name}/unsubscribe') && h('button', {
        onclick: () => act('Unsubscribe', `Stop sending '${s.channel_name}' to ${s.url}?`,
          () => api('POST', `/channels/${encodeURIComponent(s.channel_name)}/unsubscribe`, {url: s.url}), load),
      }, 'Unsubscribe'));
    fill(box, form,
      table(subscribers, [['subscriber_id', '#'], ['channel_name', 'Channel'], ['url', 'URL'], ['entity_id', 'Entity'], ['created_at', 'Since'], ['created_by', 'By'], [rowActions, '']],
        {empty: 'No subscriptions.', testid: 'subscribers-table'}));
  }
  async function deliveries(s, page) {
    const body = await api('GET', withQuery(`/subscribers/${s.subscriber_id}/deliveries`, null, {page, results_per_page: 25}));
    const resend = (d) => can('POST', '/subscribers/{subscriber_id}/deliveries/{delivery_id}/resend') && h('button', {
      onclick: () => act('Resend', `Send delivery #${d.webhook_delivery_id} again?`,
        () => api('POST', `/subscribers/${s.subscriber_id}/deliveries/${d.webhook_delivery_id}/resend`), () => deliveries(s, page)),
    }, 'Resend');
    fill(log, h('h3', {}, `Deliveries to ${s.url} (${s.channel_name})`),
      table(body.objects, [['webhook_delivery_id', '#'], ['channel', 'Channel'], ['notification_id', 'Notification'], ['status', 'Status'],
        ['attempts', 'Attempts'], ['last_status_code', 'Last HTTP status'], ['last_error', 'Last error'], ['next_attempt_at', 'Next attempt'],
        ['delivered_at', 'Delivered'], [resend, '']],
      {empty: 'Nothing delivered yet.'}),
      pager(page, 25, body.num_results, (p) => deliveries(s, p)));
  }
  await load();
}
