/* serd dashboard, history view: one room's day or week from the database `serd record` writes,
 * and a rooms x days table. Plain JavaScript, no library; every string from the server goes into
 * the page with textContent, never as HTML.
 */
(function () {
  "use strict";

  // The live view's colours (app.js), so that an emotion looks the same on both pages.
  const EMOTION_COLOURS = {
    neutral: "#0072B2", happy: "#E69F00", sad: "#56B4E9", angry: "#D55E00", fearful: "#CC79A7", disgust: "#009E73",
  };
  const SPARE_COLOURS = ["#F0E442", "#000000", "#999999"];
  const SILENCE_COLOUR = "#c9c9c9";
  const SPEECH_COLOUR = "#b9b9b3";
  const AROUSAL_COLOUR = "#1d1d1b";
  const AXIS_COLOUR = "rgba(29, 29, 27, 0.75)";
  const FONT = "12px system-ui, sans-serif";
  // Margins of each chart (CSS pixels): the axes' labels live there, never over the bands.
  const MARGIN = { left: 44, right: 30, top: 8, bottom: 20 };
  const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  // The page refreshes itself while what it shows includes now: every 60 s, or ?refresh=N (at least 2 s).
  const REFRESH_S = Math.max(2, Number(new URLSearchParams(window.location.search).get("refresh")) || 60);

  const $ = (id) => document.getElementById(id);
  const state = { labels: [], today: null, everyChoice: null, roomRequest: 0, refreshing: false, lastRoom: null };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function colourFor(label) {
    const i = state.labels.indexOf(label);
    return EMOTION_COLOURS[label] || SPARE_COLOURS[Math.max(0, i) % SPARE_COLOURS.length];
  }

  function learnLabels(buckets) {
    buckets.forEach(function (b) {
      Object.keys(b.probs || {}).forEach(function (label) {
        if (state.labels.indexOf(label) < 0) state.labels.push(label);
      });
    });
    const order = Object.keys(EMOTION_COLOURS);
    state.labels.sort(function (a, b) {
      const ia = order.indexOf(a), ib = order.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    const legend = $("legend");
    legend.replaceChildren();
    state.labels.concat(["no speech"]).forEach(function (label) {
      const item = el("li", "legend-item");
      const swatch = el("span", "swatch");
      swatch.style.backgroundColor = label === "no speech" ? SILENCE_COLOUR : colourFor(label);
      item.append(swatch, el("span", null, label));
      legend.append(item);
    });
  }

  async function getJSON(path) {
    const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function isoDay(t) {
    const d = new Date(t * 1000);
    return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
  }

  // "Thu 3 Dec": a date a person reads at a glance (the API takes isoDay).
  function dayName(t, withMonth) {
    const d = new Date(t * 1000);
    return WEEKDAYS[d.getDay()] + " " + d.getDate() + (withMonth === false ? "" : " " + MONTHS[d.getMonth()]);
  }

  // 37 s, 4 min 5 s, 23 min, 1 h 05 min: seconds while they matter, whole minutes past ten.
  function duration(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    if (s < 600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
    const minutes = Math.round(s / 60);
    return minutes < 60 ? minutes + " min" : Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  // ---- one room ----------------------------------------------------------------------------------

  function query() {
    const room = $("room").value;
    let path = "/api/history/room?device=" + encodeURIComponent(room);
    if ($("span").value === "week") {
      path += "&days=7";
    } else {
      path += "&day=" + encodeURIComponent($("span").value === "today" ? isoDay(state.today) : $("day").value);
    }
    return path + "&every=" + $("every").value;
  }

  // A week per minute is 10,080 steps, more than a chart has pixels: the week is per hour, and the
  // control says so (per minute offered again, as the person had it, once they leave the week).
  function syncSteps() {
    const week = $("span").value === "week";
    const every = $("every");
    every.querySelector("option[value='1m']").disabled = week;
    if (week && every.value !== "1h") {
      state.everyChoice = every.value;
      every.value = "1h";
    } else if (!week && state.everyChoice) {
      every.value = state.everyChoice;
      state.everyChoice = null;
    }
  }

  function includesNow() {
    return $("span").value !== "day" || $("day").value === isoDay(state.today);
  }

  async function showRoom() {
    $("day-label").hidden = $("span").value !== "day";
    syncSteps();
    if (!$("room").value) return;
    if ($("span").value === "day" && !$("day").value) {
      $("day").value = isoDay(state.today - 86400);
    }
    const request = ++state.roomRequest; // an older answer arriving late never replaces a newer one
    const shown = query();
    if (shown !== state.lastRoom) $("status").textContent = "loading…"; // a refresh keeps the charts quietly
    let data;
    try {
      data = await getJSON(shown);
    } catch (error) {
      if (request === state.roomRequest) $("status").textContent = "could not load the history: " + error.message;
      return;
    }
    if (request !== state.roomRequest) return;
    state.lastRoom = shown;
    learnLabels(data.buckets);
    drawBands(data);
    drawLines(data);
    summarise(data);
    $("status").textContent = "";
    $("updated").textContent = "updated " + new Date().toTimeString().slice(0, 5) +
      (includesNow() ? " · refreshes every " + (REFRESH_S >= 60 ? REFRESH_S / 60 + " min" : REFRESH_S + " s") : "");
  }

  // The canvas's pixels follow its size on the page (and the screen's density), so that a phone gets
  // a chart as wide as it is and 12-pixel labels, not a 1100-pixel drawing shrunk to a third.
  function fitCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const box = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(box.width * ratio));
    canvas.height = Math.max(1, Math.round(box.height * ratio));
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, box.width, box.height);
    const plot = { x: MARGIN.left, y: MARGIN.top, w: box.width - MARGIN.left - MARGIN.right,
                   h: box.height - MARGIN.top - MARGIN.bottom };
    canvas.dataset.plot = JSON.stringify(plot);
    canvas._labels = [];
    return { ctx: ctx, plot: plot };
  }

  function xOf(data, plot, t) {
    return plot.x + ((t - data.since) / (data.until - data.since)) * plot.w;
  }

  function label(ctx, canvas, text, x, y, align) {
    ctx.textAlign = align;
    const w = ctx.measureText(text).width;
    const left = align === "right" ? x - w : align === "center" ? x - w / 2 : x;
    ctx.fillText(text, x, y);
    canvas._labels.push({ x: left, y: y - 10, w: w, h: 13, text: text });
  }

  function drawBands(data) {
    const canvas = $("bands");
    const { ctx, plot } = fitCanvas(canvas);
    let drawn = 0;
    data.buckets.forEach(function (b) {
      const x0 = xOf(data, plot, b.start);
      const w = Math.max(1, xOf(data, plot, b.start + data.every_s) - x0);
      if (!b.probs) {
        ctx.fillStyle = SILENCE_COLOUR;
        ctx.fillRect(x0, plot.y, w, plot.h);
        drawn++;
        return;
      }
      let y = plot.y + plot.h;
      state.labels.forEach(function (l) {
        const h = (b.probs[l] || 0) * plot.h;
        ctx.fillStyle = colourFor(l);
        ctx.fillRect(x0, y - h, w, h);
        y -= h;
      });
      drawn++;
    });
    drawTimeAxis(ctx, canvas, data, plot);
    drawScale(ctx, canvas, plot, "left", ["0 %", "50 %", "100 %"]);
    canvas.dataset.buckets = String(drawn);
    canvas.dataset.labelBoxes = JSON.stringify(canvas._labels);
  }

  function drawLines(data) {
    const canvas = $("lines");
    const { ctx, plot } = fitCanvas(canvas);
    data.buckets.forEach(function (b) {
      const x0 = xOf(data, plot, b.start);
      const w = Math.max(1, xOf(data, plot, b.start + data.every_s) - x0);
      const h = b.speech_fraction * plot.h;
      ctx.fillStyle = SPEECH_COLOUR;
      ctx.fillRect(x0, plot.y + plot.h - h, w, h);
    });
    ctx.strokeStyle = AROUSAL_COLOUR;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let pen = false;
    let points = 0;
    data.buckets.forEach(function (b) {
      if (b.arousal === null) { pen = false; return; }
      const x = xOf(data, plot, b.start + data.every_s / 2);
      const y = plot.y + plot.h - b.arousal * plot.h;
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
      points++;
    });
    ctx.stroke();
    drawTimeAxis(ctx, canvas, data, plot);
    drawScale(ctx, canvas, plot, "left", ["0 %", "50 %", "100 %"]); // speech: share of the time
    drawScale(ctx, canvas, plot, "right", ["0", "0.5", "1"]); // arousal: calm 0 to activated 1
    canvas.dataset.arousalPoints = String(points);
    canvas.dataset.labelBoxes = JSON.stringify(canvas._labels);
  }

  // Gridlines at 0, half and full, with their values in the margin.
  function drawScale(ctx, canvas, plot, side, texts) {
    ctx.font = FONT;
    texts.forEach(function (text, i) {
      const y = plot.y + plot.h - (i / (texts.length - 1)) * plot.h;
      ctx.fillStyle = "rgba(29, 29, 27, 0.12)";
      ctx.fillRect(plot.x, Math.round(y), plot.w, 1);
      ctx.fillStyle = AXIS_COLOUR;
      const baseline = Math.min(plot.y + plot.h, Math.max(plot.y + 9, y + 4));
      if (side === "left") label(ctx, canvas, text, plot.x - 5, baseline, "right");
      else label(ctx, canvas, text, plot.x + plot.w + 5, baseline, "left");
    });
  }

  // Ticks below the chart: every 3 hours in a day (6 on a narrow screen), every day across a week.
  function drawTimeAxis(ctx, canvas, data, plot) {
    const week = data.until - data.since > 2 * 86400;
    const step = week ? 86400 : (plot.w < 500 ? 6 : 3) * 3600;
    ctx.font = FONT;
    ctx.fillStyle = AXIS_COLOUR;
    let lastRight = -Infinity;
    for (let t = data.since; t < data.until; t += step) {
      const x = xOf(data, plot, t);
      ctx.fillRect(x, plot.y + plot.h, 1, 4);
      const text = week ? dayName(t, plot.w >= 500) : String(new Date(t * 1000).getHours()).padStart(2, "0") + ":00";
      const w = ctx.measureText(text).width;
      if (x - w / 2 < lastRight + 4) continue; // never one label over another
      const at = Math.min(Math.max(x, plot.x + w / 2), plot.x + plot.w - w / 2);
      label(ctx, canvas, text, at, plot.y + plot.h + 15, "center");
      lastRight = at + w / 2;
    }
  }

  function summarise(data) {
    const recorded = data.buckets.reduce((s, b) => s + b.recorded_s, 0);
    const speech = data.buckets.reduce((s, b) => s + b.speech_s, 0);
    const sums = {};
    let speechWindows = 0, arousalSum = 0, arousalN = 0;
    data.buckets.forEach(function (b) {
      if (!b.probs) return;
      speechWindows += b.speech_windows;
      Object.keys(b.probs).forEach((k) => { sums[k] = (sums[k] || 0) + b.probs[k] * b.speech_windows; });
      if (b.arousal !== null) { arousalSum += b.arousal * b.speech_windows; arousalN += b.speech_windows; }
    });
    const room = $("room").value;
    const when = $("span").value === "week" ? "the 7 days to " + dayName(data.until - 1)
      : dayName(data.since) + " (" + isoDay(data.since) + ")";
    if (!data.buckets.length) {
      $("summary").textContent = room + ", " + when + ": nothing recorded.";
      return;
    }
    let text = room + ", " + when + ": " + duration(speech) + " of speech in " + duration(recorded) + " recorded";
    const top = Object.keys(sums).sort((a, b) => sums[b] - sums[a])[0];
    if (top) text += "; heard most: " + top + " (" + Math.round((sums[top] / speechWindows) * 100) + " %)";
    if (arousalN) text += "; mean arousal " + (arousalSum / arousalN).toFixed(2);
    const lost = data.gaps.reduce((s, g) => s + g.missing, 0);
    if (lost) text += "; " + lost + " windows missing (" + data.gaps.length + " gaps)";
    $("summary").textContent = text + ".";
  }

  // ---- rooms x days --------------------------------------------------------------------------------

  async function showTable() {
    let data;
    try {
      data = await getJSON("/api/history/table?days=7");
    } catch (error) {
      $("table").replaceChildren(el("caption", null, "could not load: " + error.message));
      return;
    }
    const table = $("table");
    const head = el("tr");
    head.append(el("th", null, "room"));
    data.days.forEach((t) => head.append(el("th", null, dayName(t))));
    const rows = [head];
    data.rows.forEach(function (row) {
      const tr = el("tr");
      tr.dataset.device = row.device;
      tr.append(el("th", null, row.device));
      row.days.forEach(function (cell, i) {
        if (!cell) { tr.append(el("td", "empty", "–")); return; }
        const td = el("td");
        // A button: the day opens in the charts above, by click, tap or keyboard.
        const open = el("button", "day-cell");
        open.type = "button";
        open.title = "show " + row.device + " on " + dayName(data.days[i]);
        open.dataset.day = isoDay(data.days[i]);
        open.append(el("span", "speech", duration(cell.speech_s)));
        if (cell.label) {
          const dot = el("span", "dot");
          dot.style.backgroundColor = colourFor(cell.label);
          open.append(el("br"), dot, el("span", "label", cell.label));
        }
        if (cell.arousal !== null) open.append(el("br"), el("span", "arousal", "arousal " + cell.arousal.toFixed(2)));
        open.addEventListener("click", function () { openDay(row.device, data.days[i]); });
        td.append(open);
        tr.append(td);
      });
      rows.push(tr);
    });
    table.replaceChildren(...rows);
  }

  function openDay(device, dayStart) {
    $("room").value = device;
    $("span").value = dayStart === state.today ? "today" : "day";
    $("day").value = isoDay(dayStart);
    showRoom();
    $("room-title").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  async function loadRooms() {
    const rooms = await getJSON("/api/history/rooms");
    state.today = rooms.today;
    const select = $("room");
    const known = Array.from(select.options).map((o) => o.value);
    rooms.rooms.forEach(function (r) { // new rooms join the list; the one chosen stays chosen
      if (known.indexOf(r.device) < 0) select.append(el("option", null, r.device));
    });
    return rooms;
  }

  // Periodic refresh: one at a time (a slow database never piles requests up), and only what can
  // have changed: a range that includes now, and the table (today is its last column).
  async function refresh() {
    if (state.refreshing || document.hidden) return;
    state.refreshing = true;
    try {
      await loadRooms();
      await Promise.all([includesNow() ? showRoom() : Promise.resolve(), showTable()]);
    } catch (error) {
      $("status").textContent = "could not refresh: " + error.message;
    } finally {
      state.refreshing = false;
    }
  }

  async function start() {
    let rooms;
    try {
      rooms = await loadRooms();
    } catch (error) {
      $("status").textContent = "no history: " + error.message + " (start the dashboard with --db)";
      return;
    }
    if (!rooms.rooms.length) $("status").textContent = "no rooms recorded yet (is serd record running?)";
    ["room", "span", "day", "every"].forEach((id) => $(id).addEventListener("change", showRoom));
    let resized = null;
    window.addEventListener("resize", function () { // redraw at the new width, once the resizing stops
      clearTimeout(resized);
      resized = setTimeout(function () { state.lastRoom = null; showRoom(); }, 200);
    });
    await Promise.all([showRoom(), showTable()]);
    setInterval(refresh, REFRESH_S * 1000);
  }

  start();
})();
