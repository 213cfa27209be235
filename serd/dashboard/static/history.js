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
  const DAY_MS = 86400 * 1000;

  const $ = (id) => document.getElementById(id);
  const state = { labels: [], today: null };

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

  function duration(seconds) {
    const minutes = Math.round(seconds / 60);
    return minutes < 60 ? minutes + " min" : Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  // ---- one room ----------------------------------------------------------------------------------

  function query() {
    const room = $("room").value;
    const span = $("span").value;
    let every = $("every").value;
    let path = "/api/history/room?device=" + encodeURIComponent(room);
    if (span === "week") {
      every = "1h"; // a week per minute is 10,080 steps: more than the canvas has pixels
      path += "&days=7";
    } else {
      path += "&day=" + encodeURIComponent(span === "today" ? isoDay(state.today) : $("day").value);
    }
    return path + "&every=" + every;
  }

  async function showRoom() {
    $("day-label").hidden = $("span").value !== "day";
    $("every").disabled = $("span").value === "week";
    if (!$("room").value) return;
    if ($("span").value === "day" && !$("day").value) {
      $("day").value = isoDay(state.today - 86400);
    }
    $("status").textContent = "loading…";
    let data;
    try {
      data = await getJSON(query());
    } catch (error) {
      $("status").textContent = "could not load the history: " + error.message;
      return;
    }
    learnLabels(data.buckets);
    drawBands(data);
    drawLines(data);
    summarise(data);
    $("status").textContent = "";
  }

  function xOf(data, canvas, t) {
    return ((t - data.since) / (data.until - data.since)) * canvas.width;
  }

  function drawBands(data) {
    const canvas = $("bands");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    let drawn = 0;
    data.buckets.forEach(function (b) {
      const x0 = xOf(data, canvas, b.start);
      const w = Math.max(1, xOf(data, canvas, b.start + data.every_s) - x0);
      if (!b.probs) {
        ctx.fillStyle = SILENCE_COLOUR;
        ctx.fillRect(x0, 0, w, canvas.height);
        drawn++;
        return;
      }
      let y = canvas.height;
      state.labels.forEach(function (label) {
        const h = (b.probs[label] || 0) * canvas.height;
        ctx.fillStyle = colourFor(label);
        ctx.fillRect(x0, y - h, w, h);
        y -= h;
      });
      drawn++;
    });
    drawAxis(ctx, data, canvas);
    canvas.dataset.buckets = String(drawn);
  }

  function drawLines(data) {
    const canvas = $("lines");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    data.buckets.forEach(function (b) {
      const x0 = xOf(data, canvas, b.start);
      const w = Math.max(1, xOf(data, canvas, b.start + data.every_s) - x0);
      const h = b.speech_fraction * canvas.height;
      ctx.fillStyle = SPEECH_COLOUR;
      ctx.fillRect(x0, canvas.height - h, w, h);
    });
    ctx.strokeStyle = AROUSAL_COLOUR;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let pen = false;
    let points = 0;
    data.buckets.forEach(function (b) {
      if (b.arousal === null) { pen = false; return; }
      const x = xOf(data, canvas, b.start + data.every_s / 2);
      const y = canvas.height - b.arousal * canvas.height;
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
      points++;
    });
    ctx.stroke();
    drawAxis(ctx, data, canvas);
    canvas.dataset.arousalPoints = String(points);
  }

  function drawAxis(ctx, data, canvas) {
    // A tick every 3 hours within a day, every day across a week.
    const step = data.until - data.since > 2 * 86400 ? 86400 : 3 * 3600;
    ctx.fillStyle = "rgba(29, 29, 27, 0.65)";
    ctx.font = "12px system-ui, sans-serif";
    for (let t = data.since; t < data.until; t += step) {
      const x = xOf(data, canvas, t);
      ctx.fillRect(x, canvas.height - 6, 1, 6);
      const d = new Date(t * 1000);
      const text = step === 86400 ? isoDay(t).slice(5) : String(d.getHours()).padStart(2, "0") + ":00";
      ctx.fillText(text, x + 3, canvas.height - 8);
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
    const when = $("span").value === "week" ? "the last 7 days" : isoDay(data.since);
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
    data.days.forEach((t) => head.append(el("th", null, isoDay(t))));
    const rows = [head];
    data.rows.forEach(function (row) {
      const tr = el("tr");
      tr.dataset.device = row.device;
      tr.append(el("th", null, row.device));
      row.days.forEach(function (cell) {
        if (!cell) { tr.append(el("td", "empty", "–")); return; }
        const td = el("td");
        td.append(el("span", "speech", duration(cell.speech_s)));
        if (cell.label) {
          const dot = el("span", "dot");
          dot.style.backgroundColor = colourFor(cell.label);
          td.append(el("br"), dot, el("span", "label", cell.label));
        }
        if (cell.arousal !== null) td.append(el("br"), el("span", "arousal", "arousal " + cell.arousal.toFixed(2)));
        tr.append(td);
      });
      rows.push(tr);
    });
    table.replaceChildren(...rows);
  }

  async function start() {
    let rooms;
    try {
      rooms = await getJSON("/api/history/rooms");
    } catch (error) {
      $("status").textContent = "no history: " + error.message + " (start the dashboard with --db)";
      return;
    }
    state.today = rooms.today;
    const select = $("room");
    rooms.rooms.forEach((r) => select.append(el("option", null, r.device)));
    if (!rooms.rooms.length) $("status").textContent = "no rooms recorded yet (is serd record running?)";
    ["room", "span", "day", "every"].forEach((id) => $(id).addEventListener("change", showRoom));
    await Promise.all([showRoom(), showTable()]);
  }

  start();
})();
