// scoria studio: the page behind /ui. Plain JavaScript, no framework, no other origin.
// Every piece of data (model names, tags, descriptions, hook sources, run records, error
// messages) reaches the page through textContent or element properties, never innerHTML.
// The API key is kept in sessionStorage (this tab only) and sent as Authorization: Bearer.
(function () {
  'use strict';

  var KEY_STORE = 'scoria.studio.key';
  var POLL_MS = 1500;
  var HISTORY = 160;
  var CPU_WINDOW = 6;

  var S = {
    server: null,
    role: null,
    models: [],
    modelsText: '',
    selectedModel: null,
    live: { snapshots: [], charts: null, timer: null, lastError: null },
    runs: [],
    selectedRuns: [],
    memKey: null,
  };

  // ---------------------------------------------------------------- DOM helpers

  function $(id) { return document.getElementById(id); }

  // el('div', {class: 'x', data: {k: v}, on: {click: fn}}, child, 'text', ...)
  function el(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === undefined || v === null) return;
        if (k === 'class') node.className = v;
        else if (k === 'data') Object.keys(v).forEach(function (d) { node.dataset[d] = String(v[d]); });
        else if (k === 'on') Object.keys(v).forEach(function (e) { node.addEventListener(e, v[e]); });
        else if (k === 'text') node.textContent = String(v);
        else if (k === 'title' || k === 'type' || k === 'value' || k === 'disabled' ||
                 k === 'checked' || k === 'colSpan' || k === 'rows' || k === 'hidden') node[k] = v;
        else throw new Error('el: unsupported property ' + k);
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    if (typeof child === 'string' || typeof child === 'number') {
      node.appendChild(document.createTextNode(String(child)));
    } else {
      node.appendChild(child);
    }
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function kv(rows) {
    return el('table', { class: 'kv' }, rows.filter(Boolean).map(function (r) {
      return el('tr', null, el('th', { text: r[0] }), el('td', null, r[1] === undefined || r[1] === null ? '-' : r[1]));
    }));
  }

  function badge(state) { return el('span', { class: 'state ' + state, text: state }); }

  function fmt(x, digits) {
    if (typeof x !== 'number' || !isFinite(x)) return '-';
    return x.toFixed(digits === undefined ? 1 : digits);
  }

  function bytes(n) {
    if (typeof n !== 'number') return '-';
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MiB';
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KiB';
    return n + ' B';
  }

  function duration(s) {
    s = Math.floor(s);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + (d || h || m ? m + 'm ' : '') + (s % 60) + 's';
  }

  var bannerTimer = null;

  // A message under the header; errors stay, news goes after a few seconds.
  function banner(message, bad, sticky) {
    var b = $('banner');
    clearTimeout(bannerTimer);
    if (!message) { b.hidden = true; return; }
    b.textContent = message;
    b.className = 'banner' + (bad ? ' bad' : '');
    b.hidden = false;
    if (!bad && !sticky) bannerTimer = setTimeout(function () { b.hidden = true; }, 6000);
  }

  // ---------------------------------------------------------------- API

  function key() {
    try { return sessionStorage.getItem(KEY_STORE) || S.memKey; } catch (e) { return S.memKey; }
  }

  function setKey(k) {
    S.memKey = k;
    try {
      if (k) sessionStorage.setItem(KEY_STORE, k); else sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage off: memory only */ }
  }

  // fetch on this origin with the key; resolves to {status, ok, json, text, ms}.
  function api(path, opts) {
    opts = opts || {};
    var headers = { 'Accept': 'application/json' };
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    var k = key();
    if (k) headers['Authorization'] = 'Bearer ' + k;
    var t0 = performance.now();
    return fetch(path, {
      method: opts.method || 'GET', headers: headers, body: opts.body,
      cache: 'no-store', credentials: 'omit', redirect: 'error',
    }).then(function (resp) {
      return resp.text().then(function (text) {
        var ms = performance.now() - t0;
        var json = null;
        try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
        if (resp.status === 401 && !opts.noPrompt) askKey(json && json.error);
        return { status: resp.status, ok: resp.ok, json: json, text: text, ms: ms };
      });
    }, function (err) {
      return { status: 0, ok: false, json: null, text: String(err), ms: performance.now() - t0 };
    });
  }

  function errorOf(r) {
    if (r.json && typeof r.json.error === 'string') return r.json.error;
    return r.status ? 'HTTP ' + r.status : r.text;
  }

  // ---------------------------------------------------------------- keys

  function askKey(reason) {
    S.server = null;
    document.body.dataset.role = '';
    document.querySelectorAll('.page').forEach(function (p) { p.hidden = true; });
    $('keyprompt').hidden = false;
    $('keyerror').textContent = key() ? (reason || 'the key was refused') : '';
    $('keyinput').focus();
  }

  function whoami() {
    var w = clear($('whoami'));
    if (!S.server) return;
    var keys = S.server.auth.keys;
    append(w, el('span', { data: { role: S.role }, text: keys ? 'key role: ' + S.role : 'no API keys (open server)' }));
    if (keys) {
      append(w, el('button', { type: 'button', text: 'Forget key', on: { click: function () {
        setKey(null); location.hash = '#/models'; askKey();
      } } }));
    }
  }

  function isAdmin() { return S.role === 'admin'; }

  // ---------------------------------------------------------------- routing

  var PAGES = {
    models: { enter: enterModels },
    live: { enter: enterLive },
    runs: { enter: enterRuns },
    try: { enter: enterTry },
    server: { enter: enterServer },
  };

  function currentPage() {
    var m = /^#\/([a-z]+)(?:\/(.*))?$/.exec(location.hash || '');
    var page = m && PAGES[m[1]] ? m[1] : 'models';
    var arg = m && m[2] ? decodeURIComponent(m[2]) : null;
    return { page: page, arg: arg };
  }

  function route() {
    if (!S.server) return;
    var cur = currentPage();
    document.querySelectorAll('.page').forEach(function (p) { p.hidden = p.id !== 'page-' + cur.page; });
    document.querySelectorAll('#nav a').forEach(function (a) {
      a.classList.toggle('active', a.dataset.page === cur.page);
    });
    document.body.dataset.page = cur.page;
    PAGES[cur.page].enter(cur.arg);
  }

  // ---------------------------------------------------------------- boot

  function loadServer() {
    return api('/ui/api/server').then(function (r) {
      if (r.status === 401) return;
      if (!r.ok || !r.json) { banner('cannot read the server: ' + errorOf(r), true); return; }
      S.server = r.json;
      S.role = r.json.auth.role;
      S.modelsText = ''; // what is drawn depends on the role: draw again

      document.body.dataset.role = S.role;
      $('keyprompt').hidden = true;
      banner(r.json.ready ? null : 'not ready: ' + (r.json.not_ready_reason || 'loading'), false, true);
      whoami();
      startPolling();
      route();
    });
  }

  function boot() {
    window.addEventListener('hashchange', route);
    $('keyform').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var k = $('keyinput').value.trim();
      if (!k) return;
      setKey(k);
      $('keyinput').value = '';
      loadServer();
    });
    var filterTimer = null;
    $('model-filter').addEventListener('input', function () {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(renderModels, 80); // once typing pauses
    });
    $('live-model').addEventListener('change', drawLive);
    $('runs-compare').addEventListener('click', compareRuns);
    $('try-model').addEventListener('change', function () { fillVersions(); exampleBody(); });
    $('try-version').addEventListener('change', exampleBody);
    $('try-route').addEventListener('change', exampleBody);
    $('try-example').addEventListener('click', exampleBody);
    $('try-form').addEventListener('submit', function (ev) { ev.preventDefault(); sendTry(); });
    loadServer();
  }

  // ---------------------------------------------------------------- models

  var modelsTimer = null;

  function enterModels(arg) {
    if (arg) S.selectedModel = arg;
    refreshModels();
    if (!modelsTimer) {
      modelsTimer = setInterval(function () {
        if (currentPage().page === 'models' && S.server) refreshModels();
      }, 3000);
    }
  }

  function refreshModels() {
    return api('/ui/api/models').then(function (r) {
      if (!r.ok || !r.json) { if (r.status !== 401) banner('cannot list models: ' + errorOf(r), true); return; }
      if (r.text === S.modelsText) return;
      S.modelsText = r.text;
      S.models = r.json.models || [];
      renderModels();
      fillLiveModels();
    });
  }

  function tagChips(tags) {
    return Object.keys(tags || {}).map(function (k) { return el('span', { class: 'tag', text: k + '=' + tags[k] }); });
  }

  // A config not loaded yet that sets no instances leaves the count to the engine.
  function instancesText(c) {
    if (!c) return '-';
    return c.instances === null || c.instances === undefined ? 'auto' : String(c.instances);
  }

  function batchingText(c) {
    if (!c) return '-';
    if (c.dynamic_batching) {
      var d = c.dynamic_batching;
      return 'dynamic, max ' + c.max_batch_size +
        (d.preferred_batch_size && d.preferred_batch_size.length ? ', preferred ' + d.preferred_batch_size.join('/') : '') +
        ', delay ' + d.max_queue_delay_us + ' µs';
    }
    // null: config.toml leaves it to auto-complete, which runs when a version loads.
    if (c.max_batch_size === null || c.max_batch_size === undefined) return 'auto';
    return c.max_batch_size > 0 ? 'max batch ' + c.max_batch_size + ', no queue' : 'off';
  }

  function backendOf(m) {
    var v = (m.versions || []).filter(function (v) { return v.backend; })[0];
    if (v) return v.backend;
    return m.config && m.config.backend ? m.config.backend : 'default';
  }

  function adminButtons(m) {
    if (!isAdmin()) return null;
    var loaded = m.state === 'READY' || m.state === 'LOADING';
    return el('span', { class: 'row' },
      el('button', { type: 'button', class: 'danger', text: 'Unload', disabled: !loaded && m.state !== 'UNAVAILABLE',
        data: { action: 'unload', model: m.name }, on: { click: function (ev) { ev.stopPropagation(); repoAction(m.name, 'unload'); } } }),
      el('button', { type: 'button', text: loaded ? 'Reload' : 'Load',
        data: { action: 'load', model: m.name }, on: { click: function (ev) { ev.stopPropagation(); repoAction(m.name, 'load'); } } }));
  }

  function renderModels() {
    var filter = $('model-filter').value.trim().toLowerCase();
    var body = clear(document.querySelector('#models-table tbody'));
    var shown = 0;
    var frag = document.createDocumentFragment();
    S.models.forEach(function (m) {
      if (filter) {
        var hay = (m.name + ' ' + Object.keys(m.tags || {}).map(function (k) { return k + '=' + m.tags[k]; }).join(' ') +
          ' ' + (m.description || '')).toLowerCase();
        if (hay.indexOf(filter) < 0) return;
      }
      shown++;
      var versions = (m.versions || []).map(function (v) {
        return el('div', null, v.version + ' ', badge(v.state));
      });
      var row = el('tr', { class: 'clickable' + (S.selectedModel === m.name ? ' selected' : ''),
        data: { model: m.name, state: m.state },
        on: { click: function () { S.selectedModel = m.name; renderModels(); } } },
        el('td', null, el('strong', { text: m.name }), m.description ? el('div', { class: 'muted', text: m.description }) : null),
        el('td', null, badge(m.state), m.reason ? el('div', { class: 'reason', text: m.reason }) : null),
        el('td', null, versions.length ? versions : '-'),
        el('td', { text: backendOf(m) }),
        el('td', { text: batchingText(m.config) }),
        el('td', { class: 'num', text: instancesText(m.config) }),
        el('td', null, tagChips(m.tags)),
        el('td', { class: 'actions' }, adminButtons(m)));
      frag.appendChild(row);
    });
    body.appendChild(frag);
    $('models-count').textContent = shown === S.models.length ? S.models.length + ' models' : shown + ' of ' + S.models.length + ' models';
    renderModelDetail();
  }

  function tensorTable(list) {
    if (!list || !list.length) return el('span', { class: 'muted', text: 'unknown until the version loads' });
    return el('table', { class: 'grid' },
      el('thead', null, el('tr', null, el('th', { text: 'name' }), el('th', { text: 'datatype' }), el('th', { text: 'shape' }))),
      el('tbody', null, list.map(function (t) {
        return el('tr', null, el('td', { text: t.name }), el('td', { text: t.datatype }), el('td', { text: '[' + t.shape.join(', ') + ']' }));
      })));
  }

  function renderModelDetail() {
    var box = clear($('model-detail'));
    var m = S.models.filter(function (x) { return x.name === S.selectedModel; })[0];
    if (!m) return;
    var c = m.config;
    var card = el('div', { class: 'card detail', data: { detail: m.name } },
      el('h3', null, 'Model ', el('span', { text: m.name }), ' ', badge(m.state)),
      m.reason ? el('p', { class: 'reason', text: m.reason }) : null,
      m.config_error ? el('p', { class: 'reason', text: 'config.toml: ' + m.config_error }) : null,
      el('div', { class: 'cols' },
        kv([
          ['description', m.description ? el('span', { text: m.description }) : null],
          ['tags', tagChips(m.tags)],
          ['backend', c ? (c.backend || 'server default') : null],
          ['batching', batchingText(c)],
          ['instances', c ? instancesText(c) : null],
          ['version policy', c ? JSON.stringify(c.version_policy) : null],
          ['versions on disk', (m.on_disk || []).join(', ')],
          ['score hook', m.hook ? m.hook.file : 'none'],
        ]),
        adminButtons(m)));
    (m.versions || []).forEach(function (v) {
      var meta = v.meta;
      card.appendChild(el('div', { class: 'card', data: { version: v.version } },
        el('h3', null, 'Version ' + v.version + ' ', badge(v.state)),
        v.reason ? el('p', { class: 'reason', text: v.reason }) : null,
        el('div', { class: 'cols' },
          kv([
            ['backend', v.backend],
            v.placement ? ['placement', v.placement.summary + ' (' + v.placement.device + '; ' + v.placement.nodes_on_device +
              ' nodes on the device, ' + v.placement.nodes_on_cpu + ' on the CPU via ' + v.placement.cpu_backend + ')'] : null,
            ['pending', v.pending === undefined ? null : String(v.pending)],
            ['sha256', meta ? meta.sha256 : (v.meta_error ? el('span', { class: 'reason', text: v.meta_error }) : 'no registration record')],
            meta ? ['size', bytes(meta.size)] : null,
            meta ? ['registered', meta.created] : null,
            meta ? ['source', meta.source] : null,
            meta && meta.description ? ['description', meta.description] : null,
            meta && meta.tags && Object.keys(meta.tags).length ? ['tags', tagChips(meta.tags)] : null,
            meta && meta.hook ? ['hook', meta.hook + ' (sha256 ' + (meta.hook_sha256 || '-') + ')'] : null,
          ]),
          el('div', null, el('h3', { text: 'Inputs' }), tensorTable(v.inputs), el('h3', { text: 'Outputs' }), tensorTable(v.outputs)))));
    });
    if (m.hook) {
      card.appendChild(el('div', { class: 'card' },
        el('h3', { text: 'Score hook ' + m.hook.file + ' (read-only)' }),
        m.hook.error ? el('p', { class: 'reason', text: m.hook.error }) : el('pre', { class: 'hook-source', text: m.hook.source })));
    }
    box.appendChild(card);
  }

  function repoAction(name, action) {
    banner((action === 'load' ? 'loading ' : 'unloading ') + name + ' ...', false, true);
    return api('/v2/repository/models/' + encodeURIComponent(name) + '/' + action, { method: 'POST', body: '{}' })
      .then(function (r) {
        banner(r.ok ? action + 'ed ' + name : action + ' ' + name + ' failed: ' + errorOf(r), !r.ok);
        S.modelsText = '';
        return refreshModels();
      });
  }

  // ---------------------------------------------------------------- live metrics

  // Parses the Prometheus text format: [{name, labels, value}].
  function parseMetrics(text) {
    var out = [];
    text.split('\n').forEach(function (line) {
      if (!line || line.charAt(0) === '#') return;
      var i = 0, n = line.length;
      while (i < n && line.charAt(i) !== '{' && line.charAt(i) !== ' ') i++;
      var name = line.slice(0, i), labels = {};
      if (line.charAt(i) === '{') {
        i++;
        while (i < n && line.charAt(i) !== '}') {
          var eq = line.indexOf('=', i);
          if (eq < 0) return;
          var lname = line.slice(i, eq).trim();
          i = eq + 2; // past ="
          var val = '';
          while (i < n && line.charAt(i) !== '"') {
            if (line.charAt(i) === '\\' && i + 1 < n) {
              var e = line.charAt(i + 1);
              val += e === 'n' ? '\n' : e;
              i += 2;
            } else { val += line.charAt(i); i++; }
          }
          i++; // closing quote
          labels[lname] = val;
          if (line.charAt(i) === ',') i++;
        }
        i++; // }
      }
      var value = parseFloat(line.slice(i).trim().split(' ')[0]);
      out.push({ name: name, labels: labels, value: value });
    });
    return out;
  }

  function emptyAgg() {
    return { ok: 0, err: 0, buckets: {}, qs: 0, qc: 0, cs: 0, cc: 0, bs: 0, bc: 0 };
  }

  // One poll: per model counters summed over versions and routes, and the process's.
  function snapshot(samples, t) {
    var per = {}, proc = { rss: null, cpu: null };
    function agg(m) { return per[m] || (per[m] = emptyAgg()); }
    samples.forEach(function (s) {
      var m = s.labels.model;
      switch (s.name) {
        case 'scoria_process_resident_memory_bytes': proc.rss = s.value; return;
        case 'scoria_process_cpu_seconds_total': proc.cpu = s.value; return;
      }
      if (!m) return; // requests that served no model (the studio's own, /metrics, ...)
      var a = agg(m);
      switch (s.name) {
        case 'scoria_requests_total':
          if (s.labels.outcome === 'success') a.ok += s.value; else a.err += s.value;
          break;
        case 'scoria_request_duration_seconds_bucket':
          a.buckets[s.labels.le] = (a.buckets[s.labels.le] || 0) + s.value;
          break;
        case 'scoria_request_queue_seconds_sum': a.qs += s.value; break;
        case 'scoria_request_queue_seconds_count': a.qc += s.value; break;
        case 'scoria_request_compute_seconds_sum': a.cs += s.value; break;
        case 'scoria_request_compute_seconds_count': a.cc += s.value; break;
        case 'scoria_batch_size_sum': a.bs += s.value; break;
        case 'scoria_batch_size_count': a.bc += s.value; break;
      }
    });
    return { t: t, per: per, proc: proc };
  }

  function sumAgg(snap, model) {
    if (model) return snap.per[model] || emptyAgg();
    var total = emptyAgg();
    Object.keys(snap.per).forEach(function (m) {
      var a = snap.per[m];
      ['ok', 'err', 'qs', 'qc', 'cs', 'cc', 'bs', 'bc'].forEach(function (k) { total[k] += a[k]; });
      Object.keys(a.buckets).forEach(function (le) { total.buckets[le] = (total.buckets[le] || 0) + a.buckets[le]; });
    });
    return total;
  }

  // histogram_quantile over the buckets' increase, linear within a bucket.
  function quantile(q, buckets) {
    var les = Object.keys(buckets).map(function (le) { return { le: le === '+Inf' ? Infinity : parseFloat(le), c: buckets[le] }; })
      .sort(function (a, b) { return a.le - b.le; });
    if (!les.length) return null;
    var total = les[les.length - 1].c;
    if (!(total > 0)) return null;
    var rank = q * total, prevLe = 0, prevC = 0;
    for (var i = 0; i < les.length; i++) {
      if (les[i].c >= rank) {
        if (les[i].le === Infinity) return prevLe;
        var inBucket = les[i].c - prevC;
        return prevLe + (les[i].le - prevLe) * (inBucket > 0 ? (rank - prevC) / inBucket : 0);
      }
      prevLe = les[i].le; prevC = les[i].c;
    }
    return prevLe;
  }

  function liveSeries(model) {
    var snaps = S.live.snapshots;
    var d = { t: [], rate: [], err: [], p50: [], p99: [], queue: [], compute: [], batch: [], rss: [], cpu: [] };
    for (var i = 1; i < snaps.length; i++) {
      var a = sumAgg(snaps[i - 1], model), b = sumAgg(snaps[i], model), dt = snaps[i].t - snaps[i - 1].t;
      if (!(dt > 0)) continue;
      var dOk = Math.max(0, b.ok - a.ok), dErr = Math.max(0, b.err - a.err);
      var buckets = {};
      Object.keys(b.buckets).forEach(function (le) { buckets[le] = Math.max(0, b.buckets[le] - (a.buckets[le] || 0)); });
      var p50 = quantile(0.5, buckets), p99 = quantile(0.99, buckets);
      var dqc = b.qc - a.qc, dcc = b.cc - a.cc, dbc = b.bc - a.bc;
      d.t.push(snaps[i].t);
      d.rate.push(dOk / dt);
      d.err.push(dErr / dt);
      d.p50.push(p50 === null ? null : p50 * 1000);
      d.p99.push(p99 === null ? null : p99 * 1000);
      d.queue.push(dqc > 0 ? (b.qs - a.qs) / dqc * 1000 : null);
      d.compute.push(dcc > 0 ? (b.cs - a.cs) / dcc * 1000 : null);
      d.batch.push(dbc > 0 ? (b.bs - a.bs) / dbc : null);
      // process_cpu_seconds_total counts whole seconds: CPU is averaged over CPU_WINDOW polls.
      var w = snaps[Math.max(0, i - CPU_WINDOW)], pb = snaps[i].proc, dw = snaps[i].t - w.t;
      d.rss.push(pb.rss === null ? null : pb.rss / (1 << 20));
      d.cpu.push(w.proc.cpu === null || pb.cpu === null || !(dw > 0) ? null : Math.max(0, (pb.cpu - w.proc.cpu) / dw * 100));
    }
    return d;
  }

  function startPolling() {
    if (S.live.timer) return;
    pollMetrics();
    S.live.timer = setInterval(pollMetrics, POLL_MS);
  }

  function pollMetrics() {
    if (!S.server || document.hidden) return;
    api('/metrics', { noPrompt: true }).then(function (r) {
      if (!r.ok) { S.live.lastError = errorOf(r); $('live-status').textContent = 'metrics: ' + S.live.lastError; return; }
      var snaps = S.live.snapshots;
      snaps.push(snapshot(parseMetrics(r.text), Date.now() / 1000));
      if (snaps.length > HISTORY) snaps.shift();
      var models = Object.keys(snaps[snaps.length - 1].per);
      fillLiveModels(models);
      $('live-status').textContent = 'polling /metrics every ' + (POLL_MS / 1000) + ' s; ' + snaps.length + ' samples';
      if (currentPage().page === 'live') drawLive();
    });
  }

  function fillLiveModels(extra) {
    var sel = $('live-model');
    var names = {};
    S.models.forEach(function (m) { names[m.name] = true; });
    (extra || []).forEach(function (m) { names[m] = true; });
    var have = {};
    Array.prototype.forEach.call(sel.options, function (o) { have[o.value] = true; });
    Object.keys(names).sort().forEach(function (n) {
      if (!have[n]) sel.appendChild(el('option', { value: n, text: n }));
    });
  }

  var CHARTS = [
    { id: 'chart-rate', series: [['requests/s', 'rate', '#c2410c']] },
    { id: 'chart-latency', series: [['p50 ms', 'p50', '#2563eb'], ['p99 ms', 'p99', '#9333ea']] },
    { id: 'chart-split', series: [['queue ms', 'queue', '#ca8a04'], ['compute ms', 'compute', '#15803d']] },
    { id: 'chart-batch', series: [['rows per batch', 'batch', '#0891b2']],
      empty: 'no batches: the dynamic batcher is off for this selection, or idle' },
    { id: 'chart-errors', series: [['errors/s', 'err', '#b91c1c']] },
    { id: 'chart-process', series: [['RSS MiB', 'rss', '#475569', 'mib'], ['CPU % (9 s mean)', 'cpu', '#db2777', 'pct']] },
  ];

  function makeChart(spec) {
    var box = $(spec.id);
    var width = Math.max(300, box.clientWidth - 30);
    var series = [{}];
    var axes = [{}];
    var scales = { x: { time: true } };
    spec.series.forEach(function (s, i) {
      var scale = s[3] || 'y';
      series.push({ label: s[0], stroke: s[2], width: 2, scale: scale, spanGaps: false,
        points: { show: true, size: 4 } });
      if (!scales[scale]) {
        scales[scale] = { auto: true, range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } };
        axes.push({ scale: scale, side: i === 0 ? 3 : 1, grid: { show: i === 0 }, size: 55 });
      }
    });
    var data = [[]].concat(spec.series.map(function () { return []; }));
    return new uPlot({ width: width, height: 190, series: series, axes: axes, scales: scales,
      legend: { live: false } }, data, box);
  }

  function enterLive() {
    if (!S.live.charts) {
      if (typeof uPlot === 'undefined') { $('live-status').textContent = 'chart library not loaded'; return; }
      S.live.charts = CHARTS.map(function (spec) { return { spec: spec, u: makeChart(spec) }; });
    }
    drawLive();
  }

  function drawLive() {
    if (!S.live.charts) return;
    var d = liveSeries($('live-model').value);
    S.live.charts.forEach(function (c) {
      var data = [d.t].concat(c.spec.series.map(function (s) { return d[s[1]]; }));
      c.u.setData(data);
      // For tests and curious users: how many points each chart holds, and how many are > 0.
      var points = 0, positive = 0;
      data.slice(1).forEach(function (arr) {
        arr.forEach(function (v) { if (v !== null) { points++; if (v > 0) positive++; } });
      });
      var box = $(c.spec.id);
      box.dataset.points = points;
      box.dataset.positive = positive;
      var note = box.querySelector('.empty-note');
      if (!note) { note = el('p', { class: 'empty-note' }); box.appendChild(note); }
      note.textContent = points ? '' : (c.spec.empty || 'no requests in this window');
    });
  }

  // ---------------------------------------------------------------- runs

  function enterRuns(arg) {
    api('/ui/api/runs').then(function (r) {
      if (!r.ok || !r.json) { if (r.status !== 401) banner('cannot list runs: ' + errorOf(r), true); return; }
      S.runs = r.json.runs || [];
      $('runs-dir').textContent = r.json.dir ? r.json.total + ' runs in ' + r.json.dir +
        (r.json.total > S.runs.length ? ' (newest ' + S.runs.length + ' shown)' : '') : 'no run history for this server';
      S.selectedRuns = S.selectedRuns.filter(function (id) { return S.runs.some(function (x) { return x.id === id; }); });
      renderRuns();
      if (arg) showRun(arg);
    });
  }

  function modelRef(c) {
    if (!c) return '-';
    return String(c.model === undefined ? '?' : c.model) + (c.version !== undefined && c.version !== null ? ':' + c.version : '');
  }

  function modeOf(c) {
    if (!c) return '-';
    return String(c.mode || '?') + (c.protocol ? '/' + c.protocol : '');
  }

  function num(v) { return typeof v === 'number' ? v : null; }

  function renderRuns() {
    var body = clear(document.querySelector('#runs-table tbody'));
    if (!S.runs.length) {
      body.appendChild(el('tr', null, el('td', { colSpan: 10, class: 'muted', text: 'No runs recorded yet: scoria bench --model NAME records one.' })));
    }
    S.runs.forEach(function (run) {
      if (!run.readable) {
        body.appendChild(el('tr', { data: { run: run.id, readable: 'false' } },
          el('td', null), el('td', { text: run.id }),
          el('td', { colSpan: 8 }, badge('UNREADABLE'), ' ', el('span', { class: 'reason', text: run.error }))));
        return;
      }
      var c = run.config || {}, res = run.results || {}, lat = res.latency_ms || {}, thr = res.throughput || {};
      var box = el('input', { type: 'checkbox', checked: S.selectedRuns.indexOf(run.id) >= 0,
        on: { click: function (ev) { ev.stopPropagation(); }, change: function (ev) { toggleRun(run.id, ev.target.checked); } } });
      body.appendChild(el('tr', { class: 'clickable', data: { run: run.id, readable: 'true' },
        on: { click: function () { location.hash = '#/runs/' + encodeURIComponent(run.id); } } },
        el('td', null, box),
        el('td', { text: run.id }),
        el('td', { text: typeof res.started === 'string' ? res.started.replace('T', ' ').slice(0, 19) : '-' }),
        el('td', { text: modelRef(c) }),
        el('td', { text: modeOf(c) }),
        el('td', { class: 'num', text: c.concurrency === undefined ? '-' : String(c.concurrency) }),
        el('td', { class: 'num', text: fmt(num(thr.requests_per_s), 1) }),
        el('td', { class: 'num', text: fmt(num(lat.p50), 3) }),
        el('td', { class: 'num', text: fmt(num(lat.p99), 3) }),
        el('td', { class: 'num', text: res.errors === undefined ? '-' : String(res.errors) })));
    });
    $('runs-compare').disabled = S.selectedRuns.length !== 2;
  }

  function toggleRun(id, on) {
    S.selectedRuns = S.selectedRuns.filter(function (x) { return x !== id; });
    if (on) S.selectedRuns.push(id);
    while (S.selectedRuns.length > 2) S.selectedRuns.shift();
    renderRuns();
  }

  var PCT = ['min', 'p50', 'p90', 'p99', 'max'];

  function latencyChart(box, runs) {
    if (typeof uPlot === 'undefined') return;
    var colors = ['#c2410c', '#2563eb'];
    var data = [[0, 1, 2, 3, 4]];
    var series = [{ label: 'percentile', value: function (u, v) { return v === null ? '-' : PCT[v]; } }];
    runs.forEach(function (run, i) {
      var lat = (run.results || {}).latency_ms || {};
      data.push(PCT.map(function (p) { return num(lat[p]); }));
      series.push({ label: run.id + ' (ms)', stroke: colors[i % 2], width: 2, points: { show: true, size: 6 } });
    });
    var holder = el('div', { class: 'chart', data: { chart: 'latency' } });
    box.appendChild(holder);
    new uPlot({
      width: Math.max(320, Math.min(700, box.clientWidth - 30)), height: 220, series: series,
      scales: { x: { time: false, range: [-0.2, 4.2] }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } },
      axes: [{ splits: function () { return [0, 1, 2, 3, 4]; }, values: function (u, splits) { return splits.map(function (s) { return PCT[s] || ''; }); } },
        { label: 'latency ms', size: 60 }],
    }, data, holder);
  }

  function throughputBars(box, runs) {
    var max = 0;
    runs.forEach(function (r) { max = Math.max(max, num(((r.results || {}).throughput || {}).requests_per_s) || 0); });
    box.appendChild(el('h3', { text: 'Throughput (requests/s)' }));
    runs.forEach(function (r, i) {
      var v = num(((r.results || {}).throughput || {}).requests_per_s) || 0;
      var bar = el('div', { class: 'bar' + (i ? ' b' : '') });
      bar.style.width = (max > 0 ? Math.max(1, v / max * 100) : 1) + '%';
      box.appendChild(el('div', { class: 'row' }, el('span', { text: fmt(v, 1) + ' req/s  ' + r.id })));
      box.appendChild(bar);
    });
  }

  function showRun(id) {
    var box = clear($('run-detail'));
    api('/ui/api/runs/' + encodeURIComponent(id)).then(function (r) {
      if (!r.ok || !r.json) {
        box.appendChild(el('div', { class: 'card' }, el('p', { class: 'reason', text: 'run ' + id + ': ' + errorOf(r) })));
        return;
      }
      var run = r.json, c = run.config || {}, res = run.results || {}, lat = res.latency_ms || {}, thr = res.throughput || {};
      var card = el('div', { class: 'card detail', data: { detail: run.id } },
        el('h3', { text: 'Run ' + run.id }),
        el('div', { class: 'cols' },
          kv([
            ['command', run.command],
            ['model', modelRef(c)],
            ['mode', modeOf(c)],
            ['backend', c.backend === undefined || c.backend === null ? '-' : String(c.backend)],
            ['concurrency', c.concurrency === undefined ? '-' : String(c.concurrency)],
            ['batch', c.batch === undefined ? '-' : String(c.batch)],
            ['requests', res.requests === undefined ? '-' : String(res.requests) + ' (' + String(res.errors) + ' errors)'],
            ['throughput', fmt(num(thr.requests_per_s), 1) + ' req/s, ' + fmt(num(thr.inferences_per_s), 1) + ' inferences/s'],
            ['latency', 'p50 ' + fmt(num(lat.p50), 3) + ' ms, p90 ' + fmt(num(lat.p90), 3) + ' ms, p99 ' + fmt(num(lat.p99), 3) + ' ms, max ' + fmt(num(lat.max), 3) + ' ms'],
          ]),
          el('div', { class: 'plots' })));
      box.appendChild(card);
      var plots = card.querySelector('.plots');
      plots.appendChild(el('h3', { text: 'Latency distribution' }));
      latencyChart(plots, [run]);
      throughputBars(plots, [run]);
      card.appendChild(el('h3', { text: 'results.json' }));
      card.appendChild(el('pre', { text: JSON.stringify(run.results, null, 2) }));
      card.appendChild(el('h3', { text: 'config.json' }));
      card.appendChild(el('pre', { text: JSON.stringify(run.config, null, 2) }));
      card.appendChild(el('h3', { text: 'environment.json' }));
      card.appendChild(el('pre', { text: JSON.stringify(run.environment, null, 2) }));
      card.appendChild(el('h3', { text: 'log.txt' }));
      card.appendChild(el('pre', { text: run.log }));
    });
  }

  function compareRuns() {
    var runs = S.selectedRuns.map(function (id) { return S.runs.filter(function (r) { return r.id === id; })[0]; }).filter(Boolean);
    if (runs.length !== 2) return;
    var box = clear($('run-detail'));
    var a = runs[0], b = runs[1];
    function get(run, path) {
      var v = run;
      path.forEach(function (p) { v = v && typeof v === 'object' ? v[p] : undefined; });
      return v;
    }
    var rows = [
      ['model', function (r) { return modelRef(r.config); }],
      ['mode', function (r) { return modeOf(r.config); }],
      ['backend', function (r) { return get(r, ['config', 'backend']); }],
      ['concurrency', function (r) { return get(r, ['config', 'concurrency']); }],
      ['batch', function (r) { return get(r, ['config', 'batch']); }],
      ['requests/s', function (r) { return get(r, ['results', 'throughput', 'requests_per_s']); }, true],
      ['inferences/s', function (r) { return get(r, ['results', 'throughput', 'inferences_per_s']); }, true],
      ['p50 ms', function (r) { return get(r, ['results', 'latency_ms', 'p50']); }, true],
      ['p90 ms', function (r) { return get(r, ['results', 'latency_ms', 'p90']); }, true],
      ['p99 ms', function (r) { return get(r, ['results', 'latency_ms', 'p99']); }, true],
      ['max ms', function (r) { return get(r, ['results', 'latency_ms', 'max']); }, true],
      ['errors', function (r) { return get(r, ['results', 'errors']); }],
    ];
    function show(v) { return typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : (v === undefined || v === null ? '-' : String(v)); }
    var table = el('table', { class: 'grid', data: { compare: a.id + ' ' + b.id } },
      el('thead', null, el('tr', null, el('th', { text: 'metric' }), el('th', { text: a.id }), el('th', { text: b.id }), el('th', { class: 'num', text: 'B vs A' }))),
      el('tbody', null, rows.map(function (row) {
        var va = row[1](a), vb = row[1](b);
        var delta = row[2] && typeof va === 'number' && typeof vb === 'number' && va !== 0 ? ((vb - va) / va * 100).toFixed(1) + ' %' : '';
        return el('tr', null, el('th', { text: row[0] }), el('td', { text: show(va) }), el('td', { text: show(vb) }), el('td', { class: 'num', text: delta }));
      })));
    var card = el('div', { class: 'card detail' }, el('h3', { text: 'Compare runs' }), el('div', { class: 'cols' }, table, el('div', { class: 'plots' })));
    box.appendChild(card);
    var plots = card.querySelector('.plots');
    plots.appendChild(el('h3', { text: 'Latency distribution' }));
    latencyChart(plots, [a, b]);
    throughputBars(plots, [a, b]);
  }

  // ---------------------------------------------------------------- try it

  function readyModels() {
    return S.models.filter(function (m) { return (m.versions || []).some(function (v) { return v.state === 'READY'; }); });
  }

  function enterTry(arg) {
    var go = function () {
      var sel = $('try-model');
      var before = sel.value || arg;
      clear(sel);
      readyModels().forEach(function (m) { sel.appendChild(el('option', { value: m.name, text: m.name })); });
      if (before && readyModels().some(function (m) { return m.name === before; })) sel.value = before;
      fillVersions();
      if (!$('try-body').value) exampleBody();
    };
    if (S.models.length) go(); else refreshModels().then(go);
  }

  function fillVersions() {
    var m = S.models.filter(function (x) { return x.name === $('try-model').value; })[0];
    var sel = clear($('try-version'));
    if (!m) return;
    m.versions.filter(function (v) { return v.state === 'READY'; }).reverse().forEach(function (v) {
      sel.appendChild(el('option', { value: v.version, text: v.version }));
    });
    $('try-route').value = m.hook ? 'score' : 'v2';
  }

  function tryUrl() {
    var m = encodeURIComponent($('try-model').value), v = encodeURIComponent($('try-version').value);
    return $('try-route').value === 'score' ? '/models/' + m + '/score' : '/v2/models/' + m + '/versions/' + v + '/infer';
  }

  function zero(datatype) {
    if (datatype === 'BOOL') return false;
    if (datatype === 'BYTES') return '';
    return 0;
  }

  function nested(shape, value) {
    if (!shape.length) return value;
    var out = [];
    for (var i = 0; i < shape[0]; i++) out.push(nested(shape.slice(1), value));
    return out;
  }

  // A valid request built from the version's v2 metadata: every dynamic dimension 1, zeros.
  function exampleBody() {
    var model = $('try-model').value, version = $('try-version').value;
    $('try-url').textContent = model ? 'POST ' + tryUrl() : 'no ready model';
    if (!model || !version) return Promise.resolve();
    var route = $('try-route').value;
    return api('/v2/models/' + encodeURIComponent(model) + '/versions/' + encodeURIComponent(version)).then(function (r) {
      if (!r.ok || !r.json) { $('try-body').value = ''; $('try-url').textContent = 'metadata: ' + errorOf(r); return; }
      var inputs = r.json.inputs || [];
      var body;
      if (route === 'v2') {
        body = { inputs: inputs.map(function (t) {
          var shape = t.shape.map(function (d) { return d < 0 ? 1 : d; });
          var count = shape.reduce(function (a, b) { return a * b; }, 1);
          var data = [];
          for (var i = 0; i < count; i++) data.push(zero(t.datatype));
          return { name: t.name, shape: shape, datatype: t.datatype, data: data };
        }) };
      } else if (inputs.length === 1) {
        var t = inputs[0];
        body = { data: nested(t.shape.map(function (d) { return d < 0 ? 1 : d; }), zero(t.datatype)) };
      } else {
        body = { inputs: {} };
        inputs.forEach(function (t) { body.inputs[t.name] = nested(t.shape.map(function (d) { return d < 0 ? 1 : d; }), zero(t.datatype)); });
      }
      $('try-body').value = JSON.stringify(body);
    });
  }

  function sendTry() {
    var out = $('try-response'), status = $('try-status');
    status.textContent = 'sending ...';
    status.className = 'status';
    out.textContent = '';
    var url = tryUrl();
    $('try-url').textContent = 'POST ' + url;
    return api(url, { method: 'POST', body: $('try-body').value, noPrompt: true }).then(function (r) {
      status.textContent = r.status ? r.status + (r.ok ? ' OK' : ' error') : 'no response';
      status.className = 'status ' + (r.ok ? 'ok' : 'bad');
      $('try-latency').textContent = fmt(r.ms, 1) + ' ms';
      out.dataset.status = r.status;
      out.textContent = r.json !== null ? JSON.stringify(r.json, null, 2) : r.text;
    });
  }

  // ---------------------------------------------------------------- server

  var serverTimer = null;

  function enterServer() {
    api('/ui/api/server').then(function (r) {
      if (!r.ok || !r.json) return;
      S.server = r.json;
      renderServer();
    });
    if (!serverTimer) {
      serverTimer = setInterval(function () { if (currentPage().page === 'server' && S.server) enterServer(); }, 5000);
    }
  }

  function renderServer() {
    var s = S.server, box = clear($('server-info'));
    box.appendChild(el('div', { class: 'card' }, kv([
      ['version', s.name + ' ' + s.version],
      ['uptime', duration(s.uptime_s) + ' (since ' + s.started + ')'],
      ['listening on', s.listen.length ? s.listen.join(', ') : '-'],
      ['API keys', s.auth.keys ? 'required (this key: ' + s.auth.role + ')' : 'none: every route is open'],
      ['readiness', (s.ready ? 'ready' : 'not ready: ' + (s.not_ready_reason || '')) + (s.strict_readiness ? ' (strict)' : ' (not strict)')],
      ['models', s.models.ready + ' of ' + s.models.total + ' ready'],
      ['repository', s.repository],
      ['run history', s.runs_dir || '-'],
      ['default model', s.default_model || '-'],
      ['max request body', bytes(s.max_body_bytes)],
    ])));
    var engines = el('table', { class: 'grid', data: { engines: '' } },
      el('thead', null, el('tr', null, el('th', { text: 'engine' }), el('th', { text: 'available' }), el('th', { text: 'detail' }))),
      el('tbody', null, s.engines.map(function (e) {
        var detail = [el('div', { text: e.detail })];
        (e.devices || []).forEach(function (d) { detail.push(el('div', { class: 'muted', text: d.kind + ': ' + d.name + ' (' + d.platform + ')' })); });
        return el('tr', { data: { engine: e.name, available: e.available } },
          el('td', { text: e.name }), el('td', null, badge(e.available ? 'READY' : 'UNAVAILABLE')), el('td', null, detail));
      })));
    box.appendChild(el('div', { class: 'card' }, el('h3', { text: 'Engines' }), engines));
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
