// dfsmr dashboard: countdowns, live refresh of a page's #live part, the
// changelog tail and print alerts. Everything reads the changelog from
// /events (Server-Sent Events); every event carries its seq as its id.
(function () {
  'use strict';
  var body = document.body;

  function fmt(s) {
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + (s % 60 ? ' ' + (s % 60) + 's' : '');
    return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  }
  function tick() {
    var els = document.querySelectorAll('[data-until]');
    for (var i = 0; i < els.length; i++) {
      var s = Math.round((Date.parse(els[i].dataset.until) - Date.now()) / 1000);
      els[i].textContent = s >= 0 ? 'in ' + fmt(s) : fmt(-s) + ' ago';
    }
  }
  tick();
  setInterval(tick, 1000);

  // follow opens an EventSource on url and keeps it open: the browser
  // reconnects by itself with Last-Event-ID after a dropped connection; when
  // it gives up (the server answered with an error while restarting), we
  // open a new one after the last seq we saw. onChange gets each change.
  function follow(url, onChange, onState) {
    var last = null, es = null, stopped = false, timer = null;
    function open(u) {
      es = new EventSource(u);
      es.onopen = function () { onState('live'); };
      es.addEventListener('change', function (e) {
        last = e.lastEventId;
        onChange(JSON.parse(e.data), e.lastEventId);
      });
      es.addEventListener('out-of-range', function () {
        // Retention dropped what we asked for: start over from now.
        onState('reset');
        last = null;
        es.close();
        open(withAfter(url, null));
      });
      es.onerror = function () {
        if (stopped) return;
        onState('reconnecting');
        if (es.readyState === EventSource.CLOSED) {
          clearTimeout(timer);
          timer = setTimeout(function () { if (!stopped) open(withAfter(url, last)); }, 1000);
        }
      };
    }
    open(url);
    return {
      pause: function () { stopped = true; clearTimeout(timer); es.close(); onState('paused'); },
      resume: function () { stopped = false; open(withAfter(url, last)); },
      last: function () { return last; }
    };
  }
  function withAfter(url, after) {
    var u = new URL(url, location.href);
    if (after !== null) { u.searchParams.delete('tail'); u.searchParams.set('after', after); }
    return u.pathname + u.search;
  }

  // A page with a #live part fetches it again shortly after a change, at
  // most one fetch at a time and at most two a second, and once more if
  // changes came meanwhile: the last change is never left out.
  var live = document.getElementById('live');
  if (live && body.dataset.events) {
    var busy = false, again = false, lastStart = 0;
    var refresh = function () {
      if (busy) { again = true; return; }
      busy = true;
      var wait = Math.max(100, 500 - (Date.now() - lastStart));
      setTimeout(function () {
        lastStart = Date.now();
        fetch(location.href, { headers: { 'X-Fragment': '1' }, credentials: 'same-origin' })
          .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
          .then(function (html) { live.innerHTML = html; tick(); })
          .catch(function () {})
          .then(function () { busy = false; if (again) { again = false; refresh(); } });
      }, wait);
    };
    follow(body.dataset.events, function (c) {
      if (body.dataset.page === 'printers') alertPrint(c);
      refresh();
    }, function (state) { body.dataset.live = state; });
  }

  function alertPrint(c) {
    if (c.machine !== 'print_job' || (c.to !== 'awaiting_retrieval' && c.to !== 'failed')) return;
    var box = document.getElementById('alerts');
    var p = document.createElement('p');
    p.textContent = (c.to === 'failed' ? 'Print FAILED: job ' : 'Print finished: job ') + c.instance +
      (c.device ? ' on ' + c.device : '') + (c.to === 'failed' ? ' needs an operator.' : ' needs retrieval.');
    box.prepend(p);
    while (box.children.length > 5) box.lastChild.remove();
  }

  // The changelog page's tail.
  var tail = document.getElementById('tail');
  if (tail) {
    var stateEl = document.getElementById('tail-state');
    var lastEl = document.getElementById('last-seq');
    var pauseBtn = document.getElementById('pause');
    var q = tail.dataset.query;
    var url = body.dataset.base + '/events?' + (q ? q + '&' : '') + 'tail=50';
    var f = follow(url, function (c, id) {
      var li = document.createElement('li');
      li.dataset.seq = id;
      var parts = ['#' + c.seq, c.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), c.kind];
      if (c.machine) parts.push(c.machine);
      if (c.instance) parts.push(c.instance);
      if (c.device) parts.push('device ' + c.device);
      if (c.transition) parts.push('(' + c.transition + ')');
      if (c.from || c.to) parts.push((c.from ? c.from + ' → ' : '') + (c.to || ''));
      if (c.status) parts.push(c.status);
      if (c.actor) parts.push('by ' + c.actor);
      if (c.reason) parts.push('“' + c.reason + '”');
      li.textContent = parts.join('  ');
      tail.prepend(li);
      while (tail.children.length > 500) tail.lastChild.remove();
      lastEl.textContent = id;
    }, function (state) {
      stateEl.textContent = state === 'paused' ? 'paused at seq ' + (f ? f.last() : '—') : state;
      tail.dataset.state = state;
    });
    pauseBtn.addEventListener('click', function () {
      if (pauseBtn.textContent === 'Pause') { f.pause(); pauseBtn.textContent = 'Resume'; }
      else { f.resume(); pauseBtn.textContent = 'Pause'; }
    });
  }
})();
