/* mdflow dashboard: live snapshots over Server-Sent Events, polling /snapshot.json as a
 * fallback. No dependencies, nothing fetched from elsewhere. All text goes in through
 * textContent; only the topology SVG (from mdflow's own renderer) is set as markup. */
(function () {
  "use strict";

  var body = document.body;
  var interval = Math.max(0.2, Number(body.dataset.interval) || 1);
  var serverTitle = body.dataset.title || "";
  var STALE_MS = Math.max(5000, 3000 * interval);  // no data for this long: not live
  var SSE_FAILURES_BEFORE_POLLING = 3;
  var SSE_RETRY_MS = 30000;                          // while polling, try the stream again
  var HEALTHS = ["ok", "lagging", "failing", "stopped"];

  var $ = function (id) { return document.getElementById(id); };
  var els = {
    dot: $("dot"), title: $("title"), status: $("status"), age: $("age"), mode: $("mode"),
    picture: $("picture"), fit: $("fit"), errors: $("errors"), errorsCard: $("errors-card"),
    errorsCount: $("errors-count"), nodes: $("nodes"), nodesCount: $("nodes-count"),
    streams: $("streams"), streamsCount: $("streams-count"),
    graphs: $("graphs"), graphsCount: $("graphs-count")
  };

  var state = {
    snapshot: null, lastDataAt: 0, svg: null, nodesShape: null, streamsShape: null,
    graphsShape: null, errorsKey: null, mode: "connecting",
    source: null, failures: 0, polling: false, pollTimer: null, retryTimer: null
  };

  // -- formatting --------------------------------------------------------------------

  var intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var oneFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  var twoFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

  function isNumber(v) { return typeof v === "number" && isFinite(v); }

  function fmtCount(v) {
    if (v === null || v === undefined || v === "") { return "–"; }
    return isNumber(v) ? intFormat.format(v) : String(v);
  }

  function fmtRate(v) {
    if (!isNumber(v)) { return v === null || v === undefined ? "–" : String(v); }
    var a = Math.abs(v);
    return (a >= 100 ? intFormat : a >= 10 ? oneFormat : twoFormat).format(v);
  }

  function fmtSeconds(s) {
    if (!isNumber(s)) { return "–"; }
    if (s < 10) { return s.toFixed(1) + " s"; }
    if (s < 120) { return Math.round(s) + " s"; }
    if (s < 7200) { return Math.round(s / 60) + " min"; }
    return Math.round(s / 3600) + " h";
  }

  function text(v) { return v === null || v === undefined ? "" : String(v); }

  function list(v) { return Array.isArray(v) ? v : []; }

  // -- DOM helpers -------------------------------------------------------------------

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (content !== undefined) { node.textContent = content; }
    return node;
  }

  function setText(node, value) {
    if (node.textContent !== value) { node.textContent = value; }
  }

  function setAttr(node, name, value) {
    if (node.getAttribute(name) !== value) { node.setAttribute(name, value); }
  }

  /* A numeric cell: data-field names the value, data-value holds it unformatted. */
  function numCell(field) {
    var td = el("td", "num");
    td.setAttribute("data-field", field);
    return td;
  }

  function setNum(td, value, format) {
    setText(td, format(value));
    setAttr(td, "data-value", isNumber(value) ? String(value) : "");
  }

  function field(row, name) {
    return row.querySelector('[data-field="' + CSS.escape(name) + '"]');
  }

  function healthClass(health) {
    return "h-" + (HEALTHS.indexOf(health) >= 0 ? health : "unknown");
  }

  // -- sections ----------------------------------------------------------------------

  function renderPicture(svg) {
    svg = text(svg);
    if (svg === state.svg) { return; }
    state.svg = svg;
    var box = els.picture;
    var top = box.scrollTop, left = box.scrollLeft;
    if (svg) {
      box.innerHTML = svg;  // our own renderer's SVG: the only markup set from data
    } else {
      box.replaceChildren(el("p", "empty", "No picture in this snapshot"));
    }
    box.scrollTop = top;
    box.scrollLeft = left;
  }

  function countsOf(n) {
    return n && typeof n.counts === "object" && n.counts ? n.counts : {};
  }

  function renderNodes(nodes) {
    // One "Counts" cell per node, holding only that node's own counters (an outlet's
    // read/acked, an engine's ticks/written...): no column full of dashes per kind.
    var shape = JSON.stringify(nodes.map(function (n) {
      return [text(n.id), Object.keys(countsOf(n))];
    }));
    var tbody = els.nodes.tBodies[0];
    if (shape !== state.nodesShape) {
      state.nodesShape = shape;
      var head = el("tr");
      ["Name", "Kind", "State"].forEach(function (h) { head.appendChild(el("th", "", h)); });
      head.appendChild(el("th", "num", "Rate/s"));
      head.appendChild(el("th", "", "Counts"));
      head.appendChild(el("th", "", "Text"));
      els.nodes.tHead.replaceChildren(head);
      var rows = nodes.map(function (n) {
        var tr = el("tr");
        tr.setAttribute("data-id", text(n.id));
        tr.appendChild(el("td", "name"));
        tr.appendChild(el("td", "kind"));
        var st = el("td", "state");
        st.appendChild(el("span", "dot"));
        st.appendChild(el("span", "state-text"));
        tr.appendChild(st);
        tr.appendChild(numCell("rate"));
        var counts = el("td", "counts");
        Object.keys(countsOf(n)).forEach(function (k) {
          var item = el("span", "count");
          item.appendChild(el("span", "count-name", k + " "));
          var value = el("span", "num");
          value.setAttribute("data-field", "counts." + k);
          item.appendChild(value);
          counts.appendChild(item);
        });
        tr.appendChild(counts);
        tr.appendChild(el("td", "text"));
        return tr;
      });
      if (!rows.length) { rows = [emptyRow(6, "No nodes")]; }
      tbody.replaceChildren.apply(tbody, rows);
    }
    nodes.forEach(function (n, i) {
      var tr = tbody.rows[i];
      if (!tr) { return; }
      var cells = tr.cells;
      setText(cells[0], text(n.name) || text(n.id));
      setAttr(cells[0], "title", text(n.id));
      setText(cells[1], text(n.kind));
      var health = text(n.health);
      setAttr(tr, "data-health", health);
      setAttr(cells[2].firstChild, "class", "dot " + healthClass(health));
      setAttr(cells[2], "title", health || "unknown health");
      setText(cells[2].lastChild, text(n.state) || health);
      setNum(cells[3], n.rate, fmtRate);
      var counts = countsOf(n);
      Object.keys(counts).forEach(function (k) {
        var target = field(cells[4], "counts." + k);
        if (target) { setNum(target, counts[k], fmtCount); }
      });
      setText(cells[cells.length - 1], text(n.text));
    });
    setText(els.nodesCount, nodes.length ? String(nodes.length) : "");
  }

  function emptyRow(span, message) {
    var tr = el("tr", "empty-row");
    var td = el("td", "empty", message);
    td.colSpan = span;
    tr.appendChild(td);
    return tr;
  }

  function renderStreams(streams) {
    var shape = JSON.stringify(streams.map(function (s) {
      return [text(s.name), list(s.groups).map(function (g) { return text(g.name); })];
    }));
    var tbody = els.streams.tBodies[0];
    if (shape !== state.streamsShape) {
      state.streamsShape = shape;
      var rows = streams.map(function (s) {
        var tr = el("tr");
        tr.setAttribute("data-id", text(s.name));
        var name = el("td", "name");
        name.appendChild(el("div", "s-name"));
        name.appendChild(el("div", "mono sub last-id"));
        tr.appendChild(name);
        tr.appendChild(numCell("length"));
        var groupsCell = el("td", "groups-cell");
        var groups = el("table", "groups");
        var gbody = el("tbody");
        list(s.groups).forEach(function (g) {
          var gtr = el("tr");
          gtr.setAttribute("data-id", text(g.name));
          gtr.appendChild(el("td", "g-name"));
          gtr.appendChild(numCell("lag"));
          gtr.appendChild(numCell("pending"));
          gtr.appendChild(numCell("consumers"));
          gbody.appendChild(gtr);
        });
        if (!list(s.groups).length) {
          var none = el("tr");
          none.appendChild(el("td", "g-none", "no consumer groups"));
          gbody.appendChild(none);
        }
        groups.appendChild(gbody);
        groupsCell.appendChild(groups);
        tr.appendChild(groupsCell);
        var dead = numCell("dead_letters");
        dead.classList.add("dead");
        tr.appendChild(dead);
        return tr;
      });
      if (!rows.length) { rows = [emptyRow(4, "No streams")]; }
      tbody.replaceChildren.apply(tbody, rows);
    }
    streams.forEach(function (s, i) {
      var tr = tbody.rows[i];
      if (!tr) { return; }
      setText(tr.cells[0].firstChild, text(s.name));
      setText(tr.cells[0].lastChild, text(s.last_id));
      setAttr(tr.cells[0].lastChild, "title", "last entry ID");
      setNum(tr.cells[1], s.length, fmtCount);
      var grows = tr.cells[2].querySelectorAll("tr[data-id]");
      list(s.groups).forEach(function (g, j) {
        var gtr = grows[j];
        if (!gtr) { return; }
        setText(gtr.cells[0], text(g.name));
        setNum(gtr.cells[1], g.lag, fmtCount);
        setNum(gtr.cells[2], g.pending, fmtCount);
        setNum(gtr.cells[3], g.consumers, fmtCount);
        gtr.classList.toggle("behind", isNumber(g.lag) && g.lag > 0);
      });
      var dead = tr.cells[3];
      setNum(dead, s.dead_letters, fmtCount);
      var bad = isNumber(s.dead_letters) && s.dead_letters > 0;
      dead.classList.toggle("bad", bad);
      tr.classList.toggle("has-dead", bad);
    });
    setText(els.streamsCount, streams.length ? String(streams.length) : "");
  }

  function renderGraphs(graphs) {
    var shape = JSON.stringify(graphs.map(function (g) { return text(g.id); }));
    var tbody = els.graphs.tBodies[0];
    if (shape !== state.graphsShape) {
      state.graphsShape = shape;
      var rows = graphs.map(function (g) {
        var tr = el("tr");
        tr.setAttribute("data-id", text(g.id));
        tr.appendChild(el("td", "mono"));
        tr.appendChild(el("td"));
        tr.appendChild(numCell("pid"));
        tr.appendChild(numCell("nodes"));
        tr.appendChild(numCell("age"));
        return tr;
      });
      if (!rows.length) { rows = [emptyRow(5, "No graphs")]; }
      tbody.replaceChildren.apply(tbody, rows);
    }
    graphs.forEach(function (g, i) {
      var tr = tbody.rows[i];
      if (!tr) { return; }
      setText(tr.cells[0], text(g.id));
      setText(tr.cells[1], text(g.host));
      setNum(tr.cells[2], g.pid, function (v) { return isNumber(v) ? String(v) : text(v); });
      setNum(tr.cells[3], g.nodes, fmtCount);
      setNum(tr.cells[4], g.age, function (v) { return isNumber(v) ? v.toFixed(1) : "–"; });
    });
    setText(els.graphsCount, graphs.length ? String(graphs.length) : "");
  }

  function renderErrors(errors) {
    var key = JSON.stringify(errors);
    if (key === state.errorsKey) { return; }
    state.errorsKey = key;
    var items = errors.map(function (e) { return el("li", "", text(e)); });
    if (!items.length) { items = [el("li", "none", "No errors")]; }
    els.errors.replaceChildren.apply(els.errors, items);
    els.errorsCard.classList.toggle("has-errors", errors.length > 0);
    setText(els.errorsCount, errors.length ? String(errors.length) : "");
  }

  function apply(snapshot) {
    if (!snapshot || typeof snapshot !== "object") { return; }
    state.snapshot = snapshot;
    state.lastDataAt = Date.now();
    var title = serverTitle || text(snapshot.title) || "mdflow";
    setText(els.title, title);
    if (document.title !== title) { document.title = title; }
    var sections = [
      function () { renderPicture(snapshot.svg); },
      function () { renderNodes(list(snapshot.nodes)); },
      function () { renderStreams(list(snapshot.streams)); },
      function () { renderGraphs(list(snapshot.graphs)); },
      function () { renderErrors(list(snapshot.errors)); }
    ];
    sections.forEach(function (render) {
      try { render(); } catch (err) { console.warn("dashboard: cannot render", err); }
    });
    body.setAttribute("data-snapshot-time", text(snapshot.time));
    tick();
  }

  // -- header: liveness and age ---------------------------------------------------------

  function tick() {
    var now = Date.now();
    var live = state.lastDataAt > 0 && now - state.lastDataAt < STALE_MS;
    els.dot.classList.toggle("live", live);
    var status;
    if (live) {
      status = state.polling ? "live (polling)" : "live";
    } else if (state.lastDataAt === 0 && state.mode === "connecting") {
      status = "connecting…";
    } else {
      status = "reconnecting…";
    }
    setText(els.status, status);
    setAttr(els.dot, "title", status);
    setText(els.mode, state.polling ? "polling snapshot.json" : "server-sent events");
    var t = state.snapshot && Number(state.snapshot.time);
    if (isNumber(t)) {
      setText(els.age, fmtSeconds(Math.max(0, now / 1000 - t)) + " ago");
      setAttr(els.age, "title", new Date(t * 1000).toLocaleString());
    }
  }

  // -- connection: events, polling as a fallback --------------------------------------

  function onMessage(event) {
    state.failures = 0;
    state.mode = "live";
    if (state.polling) { stopPolling(); }
    var snapshot;
    try { snapshot = JSON.parse(event.data); } catch (err) { return; }
    apply(snapshot);
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    if (state.source) { state.source.close(); }
    if (typeof EventSource !== "function") { startPolling(); return; }
    var source = new EventSource("events");
    state.source = source;
    source.onmessage = onMessage;
    source.onerror = function () {
      if (state.source !== source) { return; }
      state.failures += 1;
      if (state.mode === "live") { state.mode = "reconnecting"; }
      // The browser retries by itself unless the stream is CLOSED; after repeated
      // failures poll instead, and try the stream again now and then.
      if (source.readyState === EventSource.CLOSED ||
          state.failures >= SSE_FAILURES_BEFORE_POLLING) {
        source.close();
        state.source = null;
        if (state.failures >= SSE_FAILURES_BEFORE_POLLING) {
          startPolling();
          state.retryTimer = setTimeout(connect, SSE_RETRY_MS);
        } else {
          state.retryTimer = setTimeout(connect, 1000 * state.failures);
        }
      }
      tick();
    };
  }

  function startPolling() {
    if (state.polling) { return; }
    state.polling = true;
    poll();
  }

  function stopPolling() {
    state.polling = false;
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  function poll() {
    fetch("snapshot.json", { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (snapshot) { if (state.polling) { apply(snapshot); } })
      .catch(function () { tick(); })
      .then(function () {
        if (state.polling) { state.pollTimer = setTimeout(poll, 1000 * interval); }
      });
  }

  els.fit.addEventListener("click", function () {
    var fit = els.picture.classList.toggle("fit");
    setText(els.fit, fit ? "Actual size" : "Fit to width");
  });

  setInterval(tick, 500);
  connect();
})();
