// adperf dashboard: draws the inline data (adperf/sinks/dashboard.py) with Plotly, offline.
// Every chart re-aggregates the cohort cells under the filters; nothing is fetched.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("adperf-data").textContent);
  var C = D.cells, P = D.proas, CUR = D.currency;
  var COLORS = { facebook: "#1877F2", google_ads: "#EA4335" };
  // No mode bar: its icons cover the charts' titles; drag zooms, a double click resets.
  var CONFIG = { displayModeBar: false, responsive: true };
  var filters = { p: "", k: "", g: "", o: "" };
  var labels = {};
  D.campaigns.forEach(function (c) { labels[c.key] = c.label; });

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function money(v) {
    return v == null ? "n/a" : v.toLocaleString("en-US", { maximumFractionDigits: D.decimals,
      minimumFractionDigits: D.decimals }) + " " + CUR;
  }
  function pct(v) { return v == null ? "n/a" : Math.round(v * 100) + "%"; }
  function ratio(num, den) { return den > 0 ? num / den : null; }

  // ------------------------------------------------------------ filters
  function select(name, label, options) {
    var wrap = el("label", {}, label);
    var sel = el("select", { name: name, id: "filter-" + name });
    sel.appendChild(el("option", { value: "" }, "all"));
    options.forEach(function (o) { sel.appendChild(el("option", { value: o[0] }, o[1])); });
    sel.addEventListener("change", function () { filters[name] = sel.value; draw(); });
    wrap.appendChild(sel);
    document.getElementById("filters").appendChild(wrap);
  }
  select("p", "platform", D.platforms.map(function (p) { return [p, p]; }));
  select("k", "campaign (top by spend, then others)",
         D.campaigns.map(function (c) { return [c.key, c.label]; }));
  select("g", "country", D.countries.map(function (g) { return [g, g]; }));
  select("o", "OS", D.oses.map(function (o) { return [o, o]; }));

  function keep(p, k, g, o) {
    return (!filters.p || p === filters.p) && (!filters.k || k === filters.k) &&
      (g === null || !filters.g || g === filters.g) && (o === null || !filters.o || o === filters.o);
  }

  // ------------------------------------------------------------ aggregation
  // {date: {age: [revenue, spend, installs]}} and {platform: {date: [spend, installs]}} at D0.
  function aggregate() {
    var byDate = {}, byPlatform = {}, byCampaign = {};
    for (var i = 0; i < C.d.length; i++) {
      if (!keep(C.p[i], C.k[i], C.g[i], C.o[i])) continue;
      var d = C.d[i], a = C.a[i];
      var ages = byDate[d] || (byDate[d] = {});
      var cell = ages[a] || (ages[a] = [0, 0, 0]);
      cell[0] += C.r[i]; cell[1] += C.s[i]; cell[2] += C.i[i];
      if (a === 0) {
        var plat = byPlatform[C.p[i]] || (byPlatform[C.p[i]] = {});
        var day = plat[d] || (plat[d] = [0, 0]);
        day[0] += C.s[i]; day[1] += C.i[i];
        if (d >= D.heatmap_first) {
          var camp = byCampaign[C.k[i]] || (byCampaign[C.k[i]] = [0, 0]);
          camp[0] += C.s[i]; camp[1] += C.r[i];
        }
      }
    }
    return { byDate: byDate, byPlatform: byPlatform, byCampaign: byCampaign,
             dates: Object.keys(byDate).sort() };
  }

  function proasSeries() {
    var byDate = {};
    for (var i = 0; i < P.d.length; i++) {
      if (!keep(P.p[i], P.k[i], null, null)) continue;
      var row = byDate[P.d[i]] || (byDate[P.d[i]] = [0, 0, 0, 0]);
      row[0] += P.s[i]; row[1] += P.v[i]; row[2] += P.lo[i]; row[3] += P.hi[i];
    }
    var dates = Object.keys(byDate).sort();
    return {
      x: dates,
      y: dates.map(function (d) { return ratio(byDate[d][1], byDate[d][0]); }),
      lo: dates.map(function (d) { return ratio(byDate[d][2], byDate[d][0]); }),
      hi: dates.map(function (d) { return ratio(byDate[d][3], byDate[d][0]); })
    };
  }

  // ------------------------------------------------------------ charts
  var CHARTS = [
    ["spend", "Spend per day (" + CUR + "), by platform", ""],
    ["installs", "Paid installs per day, by platform", ""],
    ["cpi", "CPI (" + CUR + ") by install day", ""],
    ["roas", "ROAS by install day: D0 and D7", ""],
    ["proas", "Predicted ROAS (pROAS) with its 90% interval, by report day", ""],
    ["campaigns", "Spend of the last 30 days by campaign (top by spend, then others)", "wide"],
    ["heatmap", "Cohort ROAS triangle: cumulative ROAS by install day and age", "wide"]
  ];
  var main = document.getElementById("charts");
  CHARTS.forEach(function (c) {
    main.appendChild(el("div", { id: "chart-" + c[0], "class": "chart " + c[2] }));
  });

  function layout(title, extra) {
    var base = {
      title: { text: title, font: { size: 14 }, x: 0.01, xanchor: "left" },
      margin: { l: 60, r: 20, t: 40, b: 40 }, legend: { orientation: "h", y: -0.15 },
      font: { family: "Noto Sans, Noto Sans CJK KR, Noto Sans CJK JP, sans-serif" },
      hovermode: "x unified"
    };
    Object.keys(extra || {}).forEach(function (k) { base[k] = extra[k]; });
    return base;
  }
  function emptyNote(traces) {
    var any = traces.some(function (t) {
      return (t.y || t.x || []).some(function (v) { return v != null; });
    });
    return any ? [] : [{ text: "no data for this selection", showarrow: false,
                         xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
  }
  function plot(name, traces, extra) {
    var title = CHARTS.filter(function (c) { return c[0] === name; })[0][1];
    var lay = layout(title, extra);
    lay.annotations = (lay.annotations || []).concat(emptyNote(traces));
    Plotly.react("chart-" + name, traces, lay, CONFIG);
  }
  function targetLine() {
    return D.target_roas == null ? [] : [{ type: "line", xref: "paper", x0: 0, x1: 1,
      y0: D.target_roas, y1: D.target_roas, line: { dash: "dot", color: "grey", width: 1 } }];
  }

  function drawTrends(agg) {
    var platforms = Object.keys(agg.byPlatform).sort();
    var perPlatform = function (idx) {
      return platforms.map(function (p) {
        var days = agg.byPlatform[p], x = Object.keys(days).sort();
        return { type: "bar", name: p, x: x, marker: { color: COLORS[p] },
                 y: x.map(function (d) { return days[d][idx]; }) };
      });
    };
    plot("spend", perPlatform(0), { barmode: "stack", xaxis: dayAxis(agg.dates) });
    plot("installs", perPlatform(1), { barmode: "stack", xaxis: dayAxis(agg.dates) });
    var at = function (d, age) { return (agg.byDate[d] || {})[age]; };
    plot("cpi", [{ type: "scatter", mode: "lines+markers", name: "CPI", x: agg.dates,
      y: agg.dates.map(function (d) { var c = at(d, 0); return c ? ratio(c[1], c[2]) : null; }) }],
      { xaxis: dayAxis(agg.dates) });
    var roas = [0, 7].map(function (age) {
      return { type: "scatter", mode: "lines+markers", name: "D" + age, x: agg.dates,
        line: { dash: age ? "dash" : "solid" },
        y: agg.dates.map(function (d) { var c = at(d, age); return c ? ratio(c[0], c[1]) : null; })
      };
    });
    plot("roas", roas, { yaxis: { tickformat: ".0%" }, shapes: targetLine(),
                         xaxis: dayAxis(agg.dates) });
    var s = proasSeries();
    // Error bars rather than a band: a warehouse of one loaded day has one point to show.
    plot("proas", [{
      type: "scatter", mode: "lines+markers", x: s.x, y: s.y, name: "pROAS (90% interval)",
      line: { color: "#007a5a" },
      error_y: { type: "data", symmetric: false, color: "rgba(0,122,90,0.5)",
        array: s.y.map(function (v, j) { return v == null || s.hi[j] == null ? 0 : s.hi[j] - v; }),
        arrayminus: s.y.map(function (v, j) { return v == null || s.lo[j] == null ? 0 : v - s.lo[j]; }) }
    }], { yaxis: { tickformat: ".0%" }, shapes: targetLine(), xaxis: dayAxis(s.x) });
  }

  // A date axis of whole days: with one or two points Plotly would zoom to milliseconds.
  function dayAxis(dates) {
    var axis = { type: "date", tickformat: "%b %d" };
    if (dates.length && dates.length < 7) {
      var first = new Date(dates[0] + "T00:00:00Z"), last = new Date(dates[dates.length - 1] + "T00:00:00Z");
      first.setUTCDate(first.getUTCDate() - 3); last.setUTCDate(last.getUTCDate() + 3);
      axis.range = [first.toISOString().slice(0, 10), last.toISOString().slice(0, 10)];
    }
    return axis;
  }

  function drawCampaigns(agg) {
    var keys = D.campaigns.map(function (c) { return c.key; }).filter(function (k) {
      return agg.byCampaign[k];
    }).reverse();  // Plotly draws a horizontal bar chart's first category at the bottom
    plot("campaigns", [{
      type: "bar", orientation: "h", name: "spend",
      y: keys.map(function (k) { return labels[k]; }),
      x: keys.map(function (k) { return agg.byCampaign[k][0]; }),
      text: keys.map(function (k) { return "ROAS " + pct(ratio(agg.byCampaign[k][1],
                                                              agg.byCampaign[k][0])); }),
      textposition: "auto"
    }], { margin: { l: 280, r: 20, t: 40, b: 40 }, hovermode: "closest",
          yaxis: { automargin: true } });
  }

  function drawHeatmap(agg) {
    var dates = agg.dates.filter(function (d) { return d >= D.heatmap_first; });
    var ageSet = {};
    dates.forEach(function (d) {
      Object.keys(agg.byDate[d]).forEach(function (a) { ageSet[a] = true; });
    });
    var ages = Object.keys(ageSet).map(Number).sort(function (a, b) { return a - b; });
    var z = dates.map(function (d) {
      return ages.map(function (a) { var c = agg.byDate[d][a]; return c ? ratio(c[0], c[1]) : null; });
    });
    plot("heatmap", [{
      type: "heatmap", x: ages.map(function (a) { return "D" + a; }), y: dates, z: z,
      colorscale: "YlGnBu", reversescale: true, zmin: 0, hoverongaps: false,
      texttemplate: "%{z:.0%}", textfont: { size: 9 },
      hovertemplate: "cohort %{y}, %{x}: ROAS %{z:.1%}<extra></extra>",
      colorbar: { tickformat: ".0%" }
    }], { hovermode: "closest", margin: { l: 90, r: 20, t: 40, b: 50 },
          yaxis: { type: "category", autorange: "reversed", automargin: true },
          xaxis: { type: "category", title: { text: "age (days since install)" } } });
  }

  function drawKpis(agg) {
    var day = D.day, week = new Date(day + "T00:00:00Z");
    week.setUTCDate(week.getUTCDate() - 7);
    var d7 = week.toISOString().slice(0, 10);
    var c0 = (agg.byDate[day] || {})[0], c7 = (agg.byDate[d7] || {})[7];
    var s = proasSeries(), i = s.x.indexOf(day);
    var kpis = [
      ["Spend", money(c0 ? c0[1] : null)], ["Installs", c0 ? c0[2].toLocaleString("en-US") : "n/a"],
      ["CPI", money(c0 ? ratio(c0[1], c0[2]) : null)], ["ROAS D0", pct(c0 ? ratio(c0[0], c0[1]) : null)],
      ["ROAS D7 (" + d7 + ")", pct(c7 ? ratio(c7[0], c7[1]) : null)],
      ["pROAS", i < 0 ? "n/a" : pct(s.y[i]) + " (" + pct(s.lo[i]) + "–" + pct(s.hi[i]) + ")"]
    ];
    var box = document.getElementById("kpis");
    box.textContent = "";
    kpis.forEach(function (k) {
      var tile = el("div", { "class": "kpi" }, k[0]);
      tile.appendChild(el("b", {}, k[1]));
      box.appendChild(tile);
    });
  }

  function drawActions() {
    var box = document.getElementById("actions");
    box.textContent = "";
    var rows = D.actions.filter(function (a) { return keep(a.platform, a.key, null, null); });
    if (!rows.length) {
      box.appendChild(el("p", {}, "No scale, scale back or pause recommendations for this selection."));
    } else {
      var table = el("table"), head = el("tr");
      ["action", "object", "level", "spend", "ROAS", "pROAS (90%)", "P(> scale)", "P(< pause)",
       "reason"].forEach(function (h, j) {
        head.appendChild(el("th", j >= 3 && j <= 7 ? { "class": "n" } : {}, h));
      });
      table.appendChild(head);
      rows.forEach(function (a) {
        var tr = el("tr");
        var interval = a.proas_low == null ? "" : " (" + pct(a.proas_low) + "–" + pct(a.proas_high) + ")";
        // "unscale" is the actions column's 8-character name of a scale back.
        var said = a.action === "unscale" ? "scale back" : a.action;
        [[said, { "class": a.action }], [a.object], [a.platform + " " + a.level],
         [money(a.spend), { "class": "n" }], [pct(a.roas), { "class": "n" }],
         [pct(a.proas) + interval, { "class": "n" }], [pct(a.p_above), { "class": "n" }],
         [pct(a.p_below), { "class": "n" }], [a.reason]].forEach(function (c) {
          tr.appendChild(el("td", c[1] || {}, c[0]));
        });
        table.appendChild(tr);
      });
      box.appendChild(table);
    }
    box.appendChild(el("p", { "class": "muted" }, D.held.toLocaleString("en-US") +
      " held in all (not enough evidence either way). Actions are per campaign or adset: " +
      "the country and OS filters do not apply to them."));
  }

  function drawNotes() {
    var ul = document.getElementById("notes");
    (D.notes.length ? D.notes : ["No data-quality notes."]).forEach(function (n) {
      ul.appendChild(el("li", {}, n));
    });
  }

  function draw() {
    var agg = aggregate();
    drawKpis(agg);
    drawTrends(agg);
    drawCampaigns(agg);
    drawHeatmap(agg);
    drawActions();
    document.body.setAttribute("data-drawn", String(Number(document.body.getAttribute("data-drawn") || 0) + 1));
  }
  drawNotes();
  draw();
})();
