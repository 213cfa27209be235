/* serd dashboard: live tiles from Server-Sent Events, and the upload panel.
 *
 * Plain JavaScript, no library and no build step: the page is served by a Pi that
 * may have no internet, and the whole thing is small enough to read.
 *
 * Every string that comes from the stream or an upload goes into the page with
 * textContent / setAttribute, never as HTML, so a device called
 * "<img src=x onerror=alert(1)>" is shown as exactly those characters.
 */
(function () {
  "use strict";

  // Okabe–Ito: distinguishable with the common colour-vision deficiencies.
  const EMOTION_COLOURS = {
    neutral: "#0072B2",
    happy: "#E69F00",
    sad: "#56B4E9",
    angry: "#D55E00",
    fearful: "#CC79A7",
    disgust: "#009E73",
  };
  const SPARE_COLOURS = ["#F0E442", "#000000", "#0072B2", "#E69F00", "#56B4E9", "#D55E00", "#CC79A7", "#009E73"];
  const SILENCE_COLOUR = "#c9c9c9";
  const TIMELINE_BACKGROUND = "#f4f4f1";
  const DEFAULT_HOP_S = 0.5;
  const MB = 1024 * 1024;
  const STATE_TEXT = {
    running: ["●", "running"],
    starting: ["◐", "starting"],
    source_lost: ["▲", "source lost"],
    stopping: ["■", "stopping"],
    stale: ["○", "stale"],
    unknown: ["?", "no status yet"],
  };

  const view = {
    offsetS: 0, // browser clock minus server clock, seconds
    staleAfterS: 15,
    historyS: 300,
    info: {},
    devices: new Map(), // name -> {summary, points, tile}
    labels: [],
    dirty: new Set(),
    frameRequested: false,
  };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function colourFor(label, index) {
    return EMOTION_COLOURS[label] || SPARE_COLOURS[index % SPARE_COLOURS.length];
  }

  function percent(p) {
    return Math.round(p * 100) + " %";
  }

  function serverNow() {
    return Date.now() / 1000 - view.offsetS;
  }

  function ago(seconds) {
    if (!isFinite(seconds)) return "never";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  function minutesText(seconds) {
    return seconds >= 120 ? Math.round(seconds / 60) + " min" : Math.round(seconds) + " s";
  }

  // ---- legend -------------------------------------------------------------------------------

  function renderLegend() {
    const legend = document.getElementById("legend");
    legend.replaceChildren();
    view.labels.forEach(function (label, i) {
      const item = el("li", "legend-item");
      const swatch = el("span", "swatch");
      swatch.style.backgroundColor = colourFor(label, i);
      item.append(swatch, el("span", null, label));
      legend.append(item);
    });
    const silence = el("li", "legend-item");
    const swatch = el("span", "swatch silence");
    silence.append(swatch, el("span", null, "no speech"));
    legend.append(silence);
  }

  function learnLabels(labels) {
    if (!labels || !labels.length) return;
    if (labels.join("\u0000") === view.labels.join("\u0000")) return;
    view.labels = labels.slice();
    renderLegend();
  }

  // ---- tiles --------------------------------------------------------------------------------

  function makeTile(name) {
    const tile = el("article", "tile");
    tile.setAttribute("data-device", name);
    const head = el("header", "tile-head");
    const title = el("h3", "device-name", name);
    title.title = name;
    const badge = el("span", "badge");
    const badgeIcon = el("span", "badge-icon");
    badgeIcon.setAttribute("aria-hidden", "true");
    const badgeText = el("span", "badge-text");
    badge.append(badgeIcon, badgeText);
    head.append(title, badge);

    const heard = el("p", "heard");
    const now = el("p", "now");
    const nowPrefix = el("span", "now-prefix");
    const nowLabel = el("span", "now-label");
    const nowConfidence = el("span", "now-confidence");
    now.append(nowPrefix, nowLabel, nowConfidence);

    const bars = el("div", "bars");
    bars.setAttribute("role", "list");

    // calm <-> activated: the smoothed arousal, a marker on a track (hidden until a reading comes).
    const arousal = el("div", "arousal");
    arousal.hidden = true;
    const arousalTrack = el("span", "arousal-track");
    const arousalMarker = el("span", "arousal-marker");
    arousalTrack.append(arousalMarker);
    const arousalValue = el("span", "arousal-value");
    arousal.append(el("span", "arousal-end", "calm"), arousalTrack, el("span", "arousal-end", "activated"), arousalValue);

    const figure = el("figure", "timeline");
    const canvas = el("canvas", "timeline-canvas");
    canvas.setAttribute("role", "img");
    canvas.height = 90;
    const axis = el("figcaption", "axis");
    const axisStart = el("span", "axis-start");
    const axisEnd = el("span", "axis-end", "now");
    axis.append(axisStart, axisEnd);
    figure.append(canvas, axis);

    const meta = el("p", "meta");
    const detail = el("p", "detail");
    tile.append(head, heard, now, bars, arousal, figure, meta, detail);
    return {
      root: tile, badge: badge, badgeIcon: badgeIcon, badgeText: badgeText, heard: heard,
      nowPrefix: nowPrefix, nowLabel: nowLabel, nowConfidence: nowConfidence, bars: bars, barRows: new Map(),
      arousal: arousal, arousalMarker: arousalMarker, arousalValue: arousalValue,
      canvas: canvas, axisStart: axisStart, meta: meta, detail: detail,
    };
  }

  function deviceEntry(name) {
    let entry = view.devices.get(name);
    if (!entry) {
      entry = { summary: null, points: [], tile: makeTile(name) };
      view.devices.set(name, entry);
      placeTile(name, entry.tile.root);
    }
    return entry;
  }

  function placeTile(name, node) {
    // Tiles in name order, so a room is always in the same place.
    const tiles = document.getElementById("tiles");
    const names = Array.from(view.devices.keys()).sort();
    const next = names[names.indexOf(name) + 1];
    const before = next === undefined ? null : view.devices.get(next).tile.root;
    tiles.insertBefore(node, before && before.parentNode === tiles ? before : null);
  }

  function lastSpeech(entry) {
    for (let i = entry.points.length - 1; i >= 0; i--) {
      if (entry.points[i].smoothed) return entry.points[i].smoothed;
    }
    const e = entry.summary && entry.summary.emotion;
    return e && e.smoothed ? e.smoothed : null;
  }

  function lastArousal(entry) {
    for (let i = entry.points.length - 1; i >= 0; i--) {
      if (typeof entry.points[i].smoothed_arousal === "number") return entry.points[i].smoothed_arousal;
    }
    const e = entry.summary && entry.summary.emotion;
    return e && typeof e.smoothed_arousal === "number" ? e.smoothed_arousal : null;
  }

  function renderArousal(tile, value, dim) {
    // Older daemons send no arousal: keep the gauge hidden rather than show a made-up middle.
    tile.arousal.hidden = value === null;
    if (value === null) return;
    tile.arousal.classList.toggle("dim", dim);
    tile.arousal.setAttribute("data-value", value.toFixed(5));
    tile.arousalMarker.style.left = (Math.min(1, Math.max(0, value)) * 100).toFixed(1) + "%";
    tile.arousalValue.textContent = percent(value) + " activated";
    tile.arousal.title = "arousal: how activated the voice sounds (angry, happy, fearful) against calm (neutral, sad)";
  }

  function renderBars(tile, labels, probs, dim) {
    tile.bars.classList.toggle("dim", dim);
    const keep = new Set(labels);
    tile.barRows.forEach(function (row, label) {
      if (!keep.has(label)) {
        row.root.remove();
        tile.barRows.delete(label);
      }
    });
    labels.forEach(function (label, i) {
      let row = tile.barRows.get(label);
      if (!row) {
        row = { root: el("div", "bar-row"), name: el("span", "bar-name", label), track: el("span", "bar-track"),
          fill: el("span", "bar-fill"), value: el("span", "bar-value") };
        row.root.setAttribute("role", "listitem");
        row.root.setAttribute("data-label", label);
        row.fill.style.backgroundColor = colourFor(label, i);
        row.track.append(row.fill);
        row.root.append(row.name, row.track, row.value);
        tile.bars.append(row.root);
        tile.barRows.set(label, row);
      }
      const p = probs && typeof probs[label] === "number" ? probs[label] : 0;
      row.fill.style.width = (p * 100).toFixed(1) + "%";
      row.value.textContent = probs ? percent(p) : "–";
      row.root.setAttribute("data-value", p.toFixed(5));
    });
  }

  function renderTile(name) {
    const entry = view.devices.get(name);
    if (!entry || !entry.summary) return;
    const s = entry.summary;
    const tile = entry.tile;
    const state = STATE_TEXT[s.state] ? s.state : "unknown";
    tile.root.setAttribute("data-state", state);
    tile.badge.setAttribute("data-state", state);
    tile.badgeIcon.textContent = STATE_TEXT[state][0];
    tile.badgeText.textContent = STATE_TEXT[state][1];
    tile.root.classList.toggle("is-stale", state === "stale" || state === "stopping");

    const labels = s.labels && s.labels.length ? s.labels : view.labels;
    learnLabels(labels);
    const e = s.emotion;
    const speechNow = !!(e && e.speech && e.smoothed);
    const probs = speechNow ? e.smoothed : lastSpeech(entry);
    const live = state === "running" || state === "starting" || state === "unknown";
    tile.nowPrefix.textContent = !live && e ? "last result:" : "";
    if (speechNow && e.label) {
      tile.nowLabel.textContent = e.label;
      tile.nowConfidence.textContent = percent(e.confidence || 0);
    } else {
      tile.nowLabel.textContent = e ? "no speech right now" : "waiting for results";
      tile.nowConfidence.textContent = "";
    }
    tile.root.setAttribute("data-label", speechNow && e.label ? e.label : "");
    renderBars(tile, labels, probs, !speechNow);
    renderArousal(tile, speechNow && typeof e.smoothed_arousal === "number" ? e.smoothed_arousal : lastArousal(entry),
      !speechNow);

    const parts = [];
    if (e) parts.push("level " + Math.round(e.level_dbfs) + " dBFS");
    const st = s.status;
    if (st) {
      parts.push(st.windows + " windows", "CPU " + Number(st.cpu_percent).toFixed(0) + " %",
        Math.round(st.rss_mb) + " MB");
      if (st.dropped) parts.push(st.dropped + " dropped");
      if (st.overruns) parts.push(st.overruns + " overruns");
    }
    if (s.lost) parts.push(s.lost + " messages lost");
    const modelId = (e && e.model) || (st && st.model);
    if (modelId) parts.push("model " + modelId);
    tile.meta.textContent = parts.join(" · ");
    tile.detail.textContent = st && st.detail ? st.detail : "";
    tile.detail.hidden = !(st && st.detail);
    renderHeard(entry);
    drawDeviceTimeline(entry, labels);
  }

  function renderHeard(entry) {
    const age = serverNow() - entry.summary.last_heard;
    entry.tile.heard.textContent = "last heard " + ago(age);
    entry.tile.root.setAttribute("data-age", Math.max(0, age).toFixed(1));
  }

  function renderOverview() {
    const counts = {};
    view.devices.forEach(function (entry) {
      const state = entry.summary ? entry.summary.state : "unknown";
      counts[state] = (counts[state] || 0) + 1;
    });
    const n = view.devices.size;
    const parts = [n + (n === 1 ? " room" : " rooms")];
    Object.keys(STATE_TEXT).forEach(function (state) {
      if (counts[state]) parts.push(counts[state] + " " + STATE_TEXT[state][1]);
    });
    document.getElementById("overview").textContent = n ? parts.join(" · ") : "";
    document.getElementById("empty").hidden = n > 0;
  }

  // ---- timelines ----------------------------------------------------------------------------

  function prepareCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = TIMELINE_BACKGROUND;
    ctx.fillRect(0, 0, width, height);
    return { ctx: ctx, width: width, height: height };
  }

  // One column: probabilities stacked bottom-up in label order, or grey for no speech.
  function drawColumn(ctx, x0, x1, height, labels, probs) {
    const w = Math.max(1, x1 - x0);
    if (!probs) {
      ctx.fillStyle = SILENCE_COLOUR;
      ctx.fillRect(x0, 0, w, height);
      return;
    }
    let y = height;
    labels.forEach(function (label, i) {
      const h = (probs[label] || 0) * height;
      if (h <= 0) return;
      ctx.fillStyle = colourFor(label, i);
      ctx.fillRect(x0, y - h, w, h);
      y -= h;
    });
  }

  // Faint vertical lines every `every` seconds (whole minutes on the clock for live timelines).
  function drawGrid(c, spanS, phaseS, every) {
    const scale = c.width / spanS;
    c.ctx.fillStyle = "rgba(255, 255, 255, 0.75)";
    for (let s = spanS - phaseS; s > 0; s -= every) {
      c.ctx.fillRect(Math.round(s * scale), 0, 1, c.height);
    }
  }

  function typicalStep(times) {
    const steps = [];
    for (let i = Math.max(1, times.length - 20); i < times.length; i++) steps.push(times[i] - times[i - 1]);
    if (!steps.length) return DEFAULT_HOP_S;
    steps.sort(function (a, b) { return a - b; });
    return Math.max(0.05, steps[Math.floor(steps.length / 2)]);
  }

  function drawDeviceTimeline(entry, labels) {
    const canvas = entry.tile.canvas;
    const points = entry.points;
    const c = prepareCanvas(canvas);
    const end = serverNow();
    const start = end - view.historyS;
    const scale = c.width / view.historyS;
    const step = typicalStep(points.map(function (p) { return p.t; }));
    const maxGap = Math.max(3 * step, 2.5);
    let speech = 0;
    for (let i = 0; i < points.length; i++) {
      const p = points[i];
      if (p.smoothed) speech++;
      const next = points[i + 1];
      // Several points on one pixel column: only the newest is drawn.
      if (next && Math.floor((next.t - start) * scale) === Math.floor((p.t - start) * scale)) continue;
      const previous = i > 0 ? points[i - 1].t : p.t - step;
      const span = p.t - previous > maxGap ? step : p.t - previous;
      const x1 = (p.t - start) * scale;
      const x0 = x1 - span * scale;
      if (x1 < 0) continue;
      drawColumn(c.ctx, Math.floor(x0), Math.ceil(x1), c.height, labels, p.smoothed);
    }
    drawGrid(c, view.historyS, end % 60, 60);
    canvas.setAttribute("data-points", String(points.length));
    canvas.setAttribute("data-speech-points", String(speech));
    canvas.setAttribute("aria-label", "Timeline of the last " + minutesText(view.historyS) + ": " +
      points.length + " windows, " + speech + " with speech.");
    entry.tile.axisStart.textContent = minutesText(view.historyS) + " ago";
  }

  // ---- live updates -------------------------------------------------------------------------

  function scheduleRender(name) {
    view.dirty.add(name);
    if (view.frameRequested) return;
    view.frameRequested = true;
    window.requestAnimationFrame(function () {
      view.frameRequested = false;
      const names = Array.from(view.dirty);
      view.dirty.clear();
      names.forEach(renderTile);
      renderOverview();
    });
  }

  function setClock(serverTime) {
    if (typeof serverTime === "number") view.offsetS = Date.now() / 1000 - serverTime;
  }

  function prune(entry) {
    const horizon = serverNow() - view.historyS;
    let drop = 0;
    while (drop < entry.points.length && entry.points[drop].t < horizon) drop++;
    if (drop) entry.points.splice(0, drop);
  }

  function onSnapshot(data) {
    setClock(data.server_time);
    view.staleAfterS = data.stale_after_s;
    view.historyS = data.history_s;
    view.info = data.info || {};
    showInfo();
    const seen = new Set();
    data.devices.forEach(function (d) {
      seen.add(d.device);
      const entry = deviceEntry(d.device);
      entry.points = d.points || [];
      delete d.points;
      entry.summary = d;
      scheduleRender(d.device);
    });
    view.devices.forEach(function (entry, name) {
      if (!seen.has(name)) {
        entry.tile.root.remove();
        view.devices.delete(name);
      }
    });
    renderOverview();
  }

  function onUpdate(data) {
    setClock(data.server_time);
    const d = data.device;
    const entry = deviceEntry(d.device);
    entry.summary = d;
    if (data.point) {
      entry.points.push(data.point);
      prune(entry);
    }
    scheduleRender(d.device);
  }

  function onForget(data) {
    // The server stopped tracking this device (too many devices): drop its tile too.
    const entry = view.devices.get(data.device);
    if (entry) {
      entry.tile.root.remove();
      view.devices.delete(data.device);
      renderOverview();
    }
  }

  function setConnection(state, text) {
    const node = document.getElementById("connection");
    node.setAttribute("data-state", state);
    node.textContent = text;
    document.body.classList.toggle("offline", state !== "live");
  }

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("open", function () { setConnection("live", "live"); });
    source.addEventListener("error", function () {
      setConnection("lost", source.readyState === EventSource.CLOSED
        ? "disconnected — reload the page" : "connection lost — reconnecting…");
    });
    source.addEventListener("snapshot", function (event) { onSnapshot(JSON.parse(event.data)); });
    source.addEventListener("update", function (event) { onUpdate(JSON.parse(event.data)); });
    source.addEventListener("forget", function (event) { onForget(JSON.parse(event.data)); });
  }

  function tick() {
    // "last heard" ages and the timelines' time axis move on even when nothing arrives.
    view.devices.forEach(function (entry, name) {
      if (entry.summary) {
        prune(entry);
        scheduleRender(name);
      }
    });
  }

  function showInfo() {
    document.getElementById("version").textContent = view.info.version ? "v" + view.info.version : "";
    document.getElementById("history-link").hidden = !view.info.history;
    const hint = document.getElementById("upload-hint");
    if (view.info.model && view.info.model_available === false) {
      hint.textContent = "The upload panel needs the model “" + view.info.model + "”, which was not found. " +
        "Start the dashboard with --model NAME_OR_PATH to use it.";
      hint.classList.add("warning");
    }
  }

  // ---- upload panel -------------------------------------------------------------------------

  function uploadStatus(text, kind) {
    const node = document.getElementById("upload-status");
    node.textContent = text;
    node.setAttribute("data-kind", kind || "");
  }

  function extensionOf(name) {
    const dot = name.lastIndexOf(".");
    return dot < 0 ? "" : name.slice(dot).toLowerCase();
  }

  async function analyse(event) {
    event.preventDefault();
    const input = document.getElementById("upload-file");
    const file = input.files && input.files[0];
    const result = document.getElementById("upload-result");
    if (!file) {
      uploadStatus("Choose a recording first.", "error");
      return;
    }
    const types = view.info.upload_types || [".wav", ".flac", ".ogg"];
    if (types.indexOf(extensionOf(file.name)) < 0) {
      uploadStatus(file.name + ": not a " + types.join(", ") + " file.", "error");
      return;
    }
    const limit = view.info.max_upload_bytes;
    if (limit && file.size > limit) {
      uploadStatus(file.name + " is " + (file.size / MB).toFixed(1) + " MB; the limit is " +
        Math.round(limit / MB) + " MB.", "error");
      return;
    }
    const button = document.getElementById("upload-button");
    button.disabled = true;
    result.hidden = true;
    uploadStatus("Analysing " + file.name + "…", "busy");
    try {
      const response = await fetch("/api/analyze", {
        method: "POST",
        body: file,
        credentials: "same-origin",
        headers: { "Content-Type": "application/octet-stream", "X-Filename": encodeURIComponent(file.name) },
      });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      if (!response.ok) {
        uploadStatus((body && body.error) || ("The server answered " + response.status + "."), "error");
        return;
      }
      uploadStatus("", "done");
      renderResult(body);
    } catch (err) {
      uploadStatus("Upload failed: " + err.message, "error");
    } finally {
      button.disabled = false;
    }
  }

  function renderResult(r) {
    const box = document.getElementById("upload-result");
    box.replaceChildren();
    box.setAttribute("data-label", r.label || "");
    box.setAttribute("data-windows", String(r.windows.length));
    const labels = r.labels || Object.keys(r.probs || {});
    learnLabels(labels);

    const head = el("p", "result-head");
    head.append(el("span", "result-file", r.file), document.createTextNode(": "));
    if (r.label) {
      head.append(el("strong", "result-label", r.label), document.createTextNode(" (" + percent(r.probs[r.label]) + " on average)"));
    } else {
      head.append(el("strong", "result-label", "no speech found"));
    }
    box.append(head);
    box.append(el("p", "result-meta",
      r.speech_windows + " of " + r.windows.length + " windows with speech · " + Number(r.duration_s).toFixed(1) +
      " s · model " + r.model));

    if (r.probs) {
      const tile = { bars: el("div", "bars"), barRows: new Map() };
      tile.bars.setAttribute("role", "list");
      renderBars(tile, labels, r.probs, false);
      box.append(tile.bars);
    }

    const figure = el("figure", "timeline");
    const canvas = el("canvas", "timeline-canvas result-canvas");
    canvas.setAttribute("role", "img");
    const axis = el("figcaption", "axis");
    axis.append(el("span", null, "0 s"), el("span", null, Number(r.duration_s).toFixed(1) + " s"));
    figure.append(canvas, axis);
    box.append(figure);
    box.hidden = false;
    drawResultTimeline(canvas, r, labels);
  }

  function drawResultTimeline(canvas, r, labels) {
    const c = prepareCanvas(canvas);
    const windows = r.windows;
    const end = Math.max(r.duration_s || 0, windows.length ? windows[windows.length - 1].end : 0, 0.001);
    const scale = c.width / end;
    const centres = windows.map(function (w) { return (w.start + w.end) / 2; });
    windows.forEach(function (w, i) {
      // Windows overlap; each gets the stretch nearest its centre (first from 0 s, last to the end).
      const from = i === 0 ? 0 : (centres[i - 1] + centres[i]) / 2;
      const to = i === windows.length - 1 ? end : (centres[i] + centres[i + 1]) / 2;
      drawColumn(c.ctx, Math.floor(from * scale), Math.ceil(to * scale), c.height, labels, w.probs);
    });
    const every = end >= 120 ? 60 : end >= 20 ? 10 : 1;
    drawGrid(c, end, end % every, every);
    canvas.setAttribute("data-points", String(windows.length));
    canvas.setAttribute("aria-label", "Per-window result: " + windows.length + " windows, " +
      r.speech_windows + " with speech.");
  }

  // ---- start --------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", function () {
    learnLabels(Object.keys(EMOTION_COLOURS));
    renderOverview();
    document.getElementById("upload-form").addEventListener("submit", analyse);
    connect();
    window.setInterval(tick, 1000);
    window.addEventListener("resize", tick);
  });
})();
