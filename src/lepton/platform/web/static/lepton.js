// Lepton dashboard: our own small script, no library.
// - forms with data-confirm ask first;
// - a job page tails its log from /api/v1/jobs/{id}/logs?offset=... and reloads once the
//   job ends, so its outcome (and the register form) shows;
// - a chat form with data-stream shows the assistant's answer as it streams in;
// - a deployment page polls /api/v1/deployments/{name}/metrics and redraws its charts
//   with the same geometry as the server's first drawing (lepton/platform/_charts.py).
"use strict";

(function () {
  const TERMINAL = ["succeeded", "failed", "cancelled", "lost"];
  const SVG = "http://www.w3.org/2000/svg";

  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  async function getJson(url) {
    const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (answer.status === 401) {
      window.location.assign("/login-help");
      throw new Error("signed out");
    }
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    return answer.json();
  }

  // -- job log -------------------------------------------------------------------------
  function tailLog(pre) {
    const url = pre.dataset.logUrl;
    const stateEl = document.querySelector("[data-job-state]");
    const status = document.getElementById("log-status");
    const endedAtLoad = stateEl && TERMINAL.includes(stateEl.dataset.jobState);
    let offset = 0;
    let first = true;

    async function poll() {
      let chunk;
      try {
        chunk = await getJson(url + "?offset=" + offset);
      } catch (err) {
        if (status) status.textContent = "log unavailable (" + err.message + "), retrying";
        window.setTimeout(poll, 3000);
        return;
      }
      const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      if (first) {
        pre.textContent = "";
        first = false;
      }
      if (chunk.text) pre.append(document.createTextNode(chunk.text));
      offset = chunk.next_offset;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      if (chunk.finished) {
        if (!pre.textContent) pre.textContent = "(no output)";
        if (status) status.textContent = "";
        if (!endedAtLoad) window.setTimeout(function () { window.location.reload(); }, 300);
        return;
      }
      window.setTimeout(poll, chunk.text ? 300 : 1000);
    }
    poll();
  }

  // -- deployment metrics ----------------------------------------------------------------
  const W = 480, H = 200, PAD_L = 52, PAD_R = 12, PAD_T = 26, PAD_B = 30, WINDOW_S = 300, MARKERS = 60;

  function niceMax(value) {
    if (!(value > 0) || !isFinite(value)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt3(value) {
    return Number(value.toPrecision(3)).toString();
  }

  function drawChart(holder, points, now) {
    const title = holder.dataset.title, unit = holder.dataset.unit, color = holder.dataset.color;
    const shown = points.filter(function (p) { return isFinite(p[1]) && p[0] >= now - WINDOW_S && p[0] <= now; });
    const top = niceMax(Math.max.apply(null, [0].concat(shown.map(function (p) { return p[1]; }))));
    const pw = W - PAD_L - PAD_R, ph = H - PAD_T - PAD_B;
    const at = function (t, v) { return [PAD_L + (1 - (now - t) / WINDOW_S) * pw, PAD_T + (1 - v / top) * ph]; };
    const svg = el("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title });
    svg.append(el("text", { x: PAD_L, y: 16, class: "chart-title" }, title));
    for (let i = 0; i < 5; i++) {
      const value = top * i / 4, y = at(now, value)[1];
      svg.append(el("line", { x1: PAD_L, y1: y.toFixed(1), x2: PAD_L + pw, y2: y.toFixed(1), class: "gridline" }));
      svg.append(el("text", { x: PAD_L - 6, y: (y + 4).toFixed(1), class: "tick", "text-anchor": "end" }, fmt3(value)));
    }
    for (let i = 0; i < 6; i++) {
      const ago = WINDOW_S * (5 - i) / 5, x = at(now - ago, 0)[0];
      const label = ago === 0 ? "now" : ago >= 60 ? "-" + ago / 60 + " min" : "-" + ago + " s";
      svg.append(el("text", { x: x.toFixed(1), y: H - 10, class: "tick", "text-anchor": "middle" }, label));
    }
    svg.append(el("text", { x: W - PAD_R, y: 16, class: "tick", "text-anchor": "end" }, unit));
    if (shown.length) {
      const coords = shown.map(function (p) { const xy = at(p[0], p[1]); return xy[0].toFixed(1) + "," + xy[1].toFixed(1); });
      svg.append(el("polyline", { points: coords.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      if (shown.length <= MARKERS) {
        shown.forEach(function (p) {
          const xy = at(p[0], p[1]);
          svg.append(el("circle", { cx: xy[0].toFixed(1), cy: xy[1].toFixed(1), r: 2.5, fill: color }));
        });
      }
    } else {
      svg.append(el("text", { x: PAD_L + pw / 2, y: PAD_T + ph / 2, class: "tick", "text-anchor": "middle" }, "no requests yet"));
    }
    holder.replaceChildren(svg);
  }

  function num(value) {
    if (value === null || value === undefined) return "—";
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    if (Math.abs(value) >= 1000) return value.toLocaleString("en-US", { maximumFractionDigits: 1 });
    if (Math.abs(value) < 1e-3) return value.toExponential(2);
    return Number(value.toPrecision(4)).toString();
  }

  function watchMetrics(box) {
    const url = box.dataset.metricsUrl;
    const status = document.getElementById("metrics-status");
    async function poll() {
      try {
        const m = await getJson(url);
        box.querySelectorAll("[data-metric]").forEach(function (node) {
          node.textContent = num(m[node.dataset.metric]);
        });
        const series = m.series || [];
        const now = m.scraped_at || Date.now() / 1000;
        document.querySelectorAll("[data-chart]").forEach(function (holder) {
          const key = holder.dataset.chart;
          const points = series
            .filter(function (s) { return s[key] !== null && s[key] !== undefined; })
            .map(function (s) { return [s.t, s[key]]; });
          drawChart(holder, points, now);
        });
        const state = document.querySelector("#deployment-state .badge");
        if (state && m.state) {
          state.textContent = m.state;
          state.className = "badge " + m.state;
        }
        if (status) status.textContent = "live, last 5 minutes";
      } catch (err) {
        if (status) status.textContent = "metrics unavailable (" + err.message + "), retrying";
      }
      window.setTimeout(poll, 2000);
    }
    poll();
  }

  // -- chat (the Text page): the answer shown as it streams in -------------------------
  // A form with data-stream="URL" asks URL (NDJSON events, lepton/serve/_text.py) instead
  // of reloading the page; without fetch streams it stays a plain form.
  function streamChat(form) {
    form.addEventListener("submit", async function (event) {
      if (!window.fetch || !window.ReadableStream || !window.TextDecoder) return;
      const input = form.querySelector("input[name=message]");
      if (!input || !input.value.trim()) return;
      event.preventDefault();
      const url = form.dataset.stream + "?" + new URLSearchParams(new FormData(form));
      let list = document.getElementById("turns");
      if (!list) {
        list = document.createElement("ol");
        list.id = "turns";
        list.className = "chat";
        form.parentNode.insertBefore(list, form);
      }
      const item = document.createElement("li");
      const asked = document.createElement("p");
      asked.textContent = "You: " + input.value;
      const said = document.createElement("p");
      said.textContent = "Assistant: ";
      item.append(asked, said);
      list.append(item);
      const hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = "history";
      hidden.value = input.value;
      input.value = "";
      try {
        const answer = await fetch(url, { credentials: "same-origin" });
        if (!answer.ok) throw new Error("HTTP " + answer.status);
        const reader = answer.body.getReader();
        const decoder = new TextDecoder();
        let buffered = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, { stream: true });
          const lines = buffered.split("\n");
          buffered = lines.pop();
          lines.filter(Boolean).forEach(function (line) {
            const e = JSON.parse(line);
            if (e.event === "start" && !e.known) said.classList.add("muted");
            if (e.event === "delta") said.append(document.createTextNode(e.text));
            if (e.error) said.append(document.createTextNode(" (" + e.error.message + ")"));
          });
        }
        form.insertBefore(hidden, input.parentNode);
      } catch (err) {
        said.append(document.createTextNode("(no answer: " + err.message + ")"));
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    confirmForms();
    document.querySelectorAll("form[data-stream]").forEach(streamChat);
    const log = document.getElementById("job-log");
    if (log) tailLog(log);
    const metrics = document.getElementById("live-metrics");
    if (metrics) watchMetrics(metrics);
  });
})();
