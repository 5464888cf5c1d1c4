#pragma once
// GET / of `orchard serve`: one self-contained page (inline CSS and JS, no external resources) that POSTs a photo to /v1/classify?top=5.
#include <string_view>

namespace orchard::serve {

inline constexpr std::string_view kPageHtml = R"PAGE(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>Orchard — what fruit is this?</title>
<style>
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:17px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  color:#1b1b1b;background:#f6f7f4}
main{max-width:34rem;margin:0 auto;padding:1rem 1rem 3rem}
h1{font-size:1.45rem;margin:.4rem 0 .2rem;color:#1b5e20}
.lead{margin:0 0 1rem;color:#444}
.visually-hidden{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;
  clip:rect(0 0 0 0);clip-path:inset(50%);white-space:nowrap;border:0}
.pick{display:flex;align-items:center;justify-content:center;min-height:3.5rem;padding:.75rem 1rem;
  border-radius:.75rem;background:#1b5e20;color:#fff;font-weight:600;font-size:1.1rem;cursor:pointer;
  user-select:none;-webkit-user-select:none;touch-action:manipulation}
.pick:hover{background:#174f1b}
.pick:active{background:#103d13}
#photo:focus-visible+.pick{outline:3px solid #f9a825;outline-offset:3px}
.frame{margin:1rem 0 .5rem;text-align:center}
#preview{display:block;margin:0 auto;max-width:100%;height:200px;width:auto;object-fit:contain;
  border-radius:.5rem;background:#e8e8e8;box-shadow:0 1px 3px rgba(0,0,0,.2)}
#preview[hidden]{display:none}
#status{min-height:1.6em;margin:.5rem 0;font-weight:500}
#status.error{color:#b71c1c}
#status.busy{color:#555}
#results{list-style:none;margin:0;padding:0}
.prediction{padding:.6rem .1rem .7rem;border-bottom:1px solid #dde1d9}
.prediction:first-child .label{font-weight:700;font-size:1.15rem}
.row{display:flex;justify-content:space-between;align-items:baseline;gap:.75rem}
.label{overflow-wrap:anywhere}
.pct{font-variant-numeric:tabular-nums;color:#333;white-space:nowrap}
.info{font-size:.85rem;color:#555;margin:.1rem 0 .2rem;overflow-wrap:anywhere}
.bar{height:.8rem;margin-top:.3rem;border-radius:.4rem;background:#e3e7df;overflow:hidden}
.fill{height:100%;background:#2e7d32;border-radius:.4rem 0 0 .4rem}
.meta{font-size:.8rem;color:#666;margin-top:1rem}
</style>
</head>
<body>
<main>
<h1>What fruit is this?</h1>
<p class="lead">Take or choose a photo of one fruit and Orchard names it.</p>
<input class="visually-hidden" type="file" id="photo" name="image" accept="image/*" capture="environment">
<label class="pick" for="photo">Take or choose a photo</label>
<div class="frame"><img id="preview" alt="The photo being classified" hidden></div>
<p id="status" role="status" aria-live="polite"></p>
<ol id="results" aria-label="Predictions, best first"></ol>
<p class="meta" id="meta"></p>
</main>
<script>
(function () {
  "use strict";
  var photo = document.getElementById("photo");
  var preview = document.getElementById("preview");
  var statusLine = document.getElementById("status");
  var results = document.getElementById("results");
  var meta = document.getElementById("meta");
  var previewUrl = null;
  var current = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setStatus(text, kind) {
    statusLine.textContent = text;
    statusLine.className = kind || "";
  }

  function share(p) {
    return Math.max(0, Math.min(1, Number(p) || 0)) * 100;
  }

  function percent(p) {
    var v = share(p);
    if (v > 0 && v < 0.05) return "<0.1%";
    return (v >= 99.95 || v === 0 ? v.toFixed(0) : v.toFixed(1)) + "%";
  }

  function infoText(info) {
    if (!info || typeof info !== "object") return "";
    return Object.keys(info).map(function (k) {
      var v = info[k];
      if (v === null || v === undefined) v = "";
      else if (typeof v === "object") v = JSON.stringify(v);
      return k + ": " + v;
    }).join(" · ");
  }

  function render(body) {
    results.replaceChildren();
    body.predictions.forEach(function (p) {
      var li = el("li", "prediction");
      var row = el("div", "row");
      row.appendChild(el("span", "label", String(p.label)));
      row.appendChild(el("span", "pct", percent(p.probability)));
      li.appendChild(row);
      var info = infoText(p.info);
      if (info) li.appendChild(el("div", "info", info));
      var bar = el("div", "bar");
      bar.setAttribute("aria-hidden", "true");
      var fill = el("div", "fill");
      fill.style.width = share(p.probability).toFixed(2) + "%";
      bar.appendChild(fill);
      li.appendChild(bar);
      results.appendChild(li);
    });
    var best = body.predictions[0];
    setStatus(best ? "Looks like " + best.label + " (" + percent(best.probability) + ")." : "No prediction.");
    var t = body.timings_ms || {};
    var m = body.model || {};
    meta.textContent = (t.total !== undefined ? "Answered in " + Number(t.total).toFixed(0) + " ms" : "") +
      (m.classes !== undefined ? (t.total !== undefined ? " · " : "") + m.classes + " classes" : "");
  }

  async function classify(file) {
    var mine = ++current;
    results.replaceChildren();
    meta.textContent = "";
    setStatus("Looking at the photo…", "busy");
    var response, text;
    try {
      response = await fetch("/v1/classify?top=5", {
        method: "POST",
        headers: {"Content-Type": file.type || "application/octet-stream"},
        body: file
      });
      text = await response.text();
    } catch (e) {
      if (mine === current) setStatus("Could not reach the server: " + e.message, "error");
      return;
    }
    if (mine !== current) return;
    var body = null;
    try { body = JSON.parse(text); } catch (e) { body = null; }
    if (!response.ok || !body || !Array.isArray(body.predictions)) {
      var msg = body && body.error ? body.error : (text.trim().slice(0, 300) || response.statusText);
      var retry = response.headers.get("Retry-After");
      setStatus("Error " + response.status + ": " + msg + (retry ? " (try again in " + retry + " s)" : ""),
                "error");
      return;
    }
    render(body);
  }

  photo.addEventListener("change", function () {
    var file = photo.files && photo.files[0];
    if (!file) return;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
    classify(file);
  });
})();
</script>
</body>
</html>
)PAGE";

}  // namespace orchard::serve
