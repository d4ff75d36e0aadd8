// The console's shell: settings, the session, the navigation bar and the
// hash router (#/fleet, #/unit/<imei>, #/alerts, #/dead-letters, #/webhooks).

import {session, loadSettings, logout} from './api.js';
import {h, fill, toast} from './dom.js';
import * as pages from './pages.js';

const routes = [
  [/^#\/login$/, () => pages.login],
  [/^#\/fleet$/, () => pages.fleet],
  [/^#\/unit\/([^/]+)$/, () => pages.unit],
  [/^#\/alerts$/, () => pages.alerts],
  [/^#\/dead-letters$/, () => pages.deadLetters],
  [/^#\/webhooks$/, () => pages.webhooks],
];

function nav() {
  const s = session();
  const here = location.hash.split('/')[1] || '';
  const link = (hash, label) => h('a', {href: hash, class: hash.split('/')[1] === here ? 'active' : ''}, label);
  return h('nav', {},
    h('strong', {class: 'brand'}, 'SMARTSolar console'),
    s?.user && [link('#/fleet', 'Fleet'), link('#/alerts', 'Alerts'), link('#/dead-letters', 'Dead letters'), link('#/webhooks', 'Webhooks'),
      h('span', {class: 'who', 'data-testid': 'who'}, `${s.user.username} · ${s.user.permissions} · ${s.user.user_product_visibility}`),
      h('button', {onclick: () => { logout(); location.hash = '#/login'; }}, 'Log out')]);
}

async function render() {
  const header = document.querySelector('header');
  const main = document.querySelector('main');
  if (!session()?.user && location.hash !== '#/login') {
    location.hash = '#/login';
    return;
  }
  if (!location.hash || location.hash === '#/') {
    location.hash = '#/fleet';
    return;
  }
  fill(header, nav());
  const found = routes.find(([re]) => re.test(location.hash));
  if (!found) {
    fill(main, h('p', {}, 'No such page. ', h('a', {href: '#/fleet'}, 'Go to the fleet.')));
    return;
  }
  const args = location.hash.match(found[0]).slice(1).map(decodeURIComponent);
  fill(main, h('p', {class: 'muted'}, 'Loading…'));
  try {
    await found[1]()(main, ...args);
  } catch (e) {
    fill(main, h('p', {class: 'error', 'data-testid': 'page-error'}, `Could not load this page: ${e.message}`));
    toast(e.message, 'error');
  }
}

await loadSettings();
window.addEventListener('hashchange', render);
render();
