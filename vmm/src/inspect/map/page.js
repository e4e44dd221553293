// The map's behaviour: details of the piece under the pointer, the
// frames of a clicked piece marked in the physical view, zoom and pan,
// and, when served live, a refresh of the views from the server.
"use strict";
const detail = document.getElementById("detail");
let picked = null;

function titleOf(el) {
  const t = el && el.querySelector && el.querySelector(":scope > title");
  return t ? t.textContent : null;
}

// Marks the physical cells "a-b c-d" of a piece's data-links.
function mark(links) {
  const hl = document.getElementById("highlight");
  if (!hl) return;
  hl.replaceChildren();
  for (const range of (links || "").split(" ").filter(Boolean)) {
    const [a, b] = range.split("-").map(Number);
    for (const seg of document.querySelectorAll("#physical rect.cell")) {
      const first = Number(seg.dataset.first), n = Number(seg.dataset.cells);
      const lo = Math.max(a, first), hi = Math.min(b, first + n - 1);
      if (lo > hi) continue;
      const w = Number(seg.getAttribute("width")) / n;
      const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      r.setAttribute("class", "hl");
      r.setAttribute("x", Number(seg.getAttribute("x")) + (lo - first) * w);
      r.setAttribute("y", seg.getAttribute("y"));
      r.setAttribute("width", (hi - lo + 1) * w);
      r.setAttribute("height", seg.getAttribute("height"));
      hl.appendChild(r);
    }
  }
}

document.addEventListener("mouseover", (e) => {
  const t = titleOf(e.target);
  if (t && !picked) detail.textContent = t;
});
document.addEventListener("click", (e) => {
  const t = titleOf(e.target);
  if (!t) return;
  if (picked) picked.classList.remove("picked");
  picked = e.target;
  picked.classList.add("picked");
  detail.textContent = t;
  mark(picked.dataset.links);
});

// Zoom (wheel) and pan (drag) by the view's viewBox; double-click resets.
function zoomable(svg) {
  const full = () => [0, 0, 1200, Number(svg.dataset.height)];
  let box = full(), drag = null;
  const set = () => svg.setAttribute("viewBox", box.join(" "));
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect();
    const fx = (e.clientX - r.left) / r.width, fy = (e.clientY - r.top) / r.height;
    const k = e.deltaY < 0 ? 0.8 : 1.25;
    const w = Math.min(box[2] * k, 1200), h = Math.min(box[3] * k, full()[3]);
    box = [box[0] + (box[2] - w) * fx, box[1] + (box[3] - h) * fy, w, h];
    set();
  }, { passive: false });
  svg.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY, box[0], box[1]]; });
  window.addEventListener("mouseup", () => { drag = null; });
  svg.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const s = box[2] / svg.getBoundingClientRect().width;
    box[0] = drag[2] - (e.clientX - drag[0]) * s;
    box[1] = drag[3] - (e.clientY - drag[1]) * s;
    set();
  });
  svg.addEventListener("dblclick", () => { box = full(); set(); });
}

function init() {
  document.querySelectorAll("svg.view").forEach(zoomable);
  picked = null;
}
init();

// Live: the server takes a new snapshot for each request of /views.
if (document.body.dataset.live === "true") {
  const status = document.getElementById("status");
  const refresh = async () => {
    try {
      const r = await fetch("/views", { cache: "no-store" });
      if (r.ok) {
        document.getElementById("views").innerHTML = await r.text();
        init();
        status.textContent = "live, updated " + new Date().toLocaleTimeString();
      } else {
        status.textContent = "live, the server said " + r.status + ": " + (await r.text());
      }
    } catch (err) {
      status.textContent = "live, server unreachable";
    }
    setTimeout(refresh, 2000);
  };
  setTimeout(refresh, 2000);
}
document.body.dataset.ready = "true";
