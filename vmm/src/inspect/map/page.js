// The map's behaviour: details of the piece under the pointer, the
// frames of a clicked piece marked in the physical view, zoom and pan
// (zoomed in, the physical view's cells open into their frames), and,
// when served live, a refresh of the views from the server that keeps
// the zoom and the piece picked.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const PAGE = 4096;
// Most frames drawn one by one: past it, zoom in further.
const MAX_FRAMES = 8192;
const detail = document.getElementById("detail");
const live = document.body.dataset.live === "true";
const boxes = {}; // each view's viewBox, by id, kept across refreshes
let frames = null; // the snapshot's finest runs (the #frames JSON)
let picked = null; // the data-key of the piece clicked
let marked = []; // its frames: [first, last] pfn ranges

const hex = (n) => "0x" + n.toString(16);
const num = (el, name) => Number(el.getAttribute(name));

function titleOf(el) {
  const t = el && el.querySelector && el.querySelector(":scope > title");
  return t ? t.textContent : null;
}

// The owner index of the piece that holds pfn, by binary search of the
// runs ([first pfn, owner] pairs, flat).
function ownerAt(pfn) {
  const r = frames.runs;
  let lo = 0, hi = r.length / 2;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (r[2 * mid] <= pfn) lo = mid; else hi = mid;
  }
  return r[2 * lo + 1];
}

// What the page knows of a frame: where it is, where the direct map has
// it, and its owner as drawn. (ptov, which `serve` asks on a click, also
// lists every other mapping.)
function frameText(pfn) {
  const [label] = frames.owners[ownerAt(pfn)];
  let s = "PHYSICAL " + hex(pfn * PAGE) + " (pfn " + hex(pfn) + ")\n";
  if (pfn < frames.max_low_pfn) {
    const va = frames.page_offset + pfn * PAGE;
    s += "  0x" + va.toString(16).padStart(16, "0") + "  in the direct map\n";
  }
  const n = frames.frames_per_piece;
  s += n > 1 ? "drawn as: " + label + " (most of its " + n + " frames)" : "drawn as: " + label;
  if (!live) s += "\n`vmm inspect ptov " + hex(pfn * PAGE) + "` lists every mapping";
  return s;
}

function describe(el) {
  if (el.classList && el.classList.contains("frame")) return frameText(Number(el.dataset.pfn));
  return titleOf(el);
}

function inMarked(a, b) {
  return marked.some(([lo, hi]) => lo <= b && a <= hi);
}

// Outlines the cells that hold the picked piece's frames.
function markCells() {
  const hl = document.getElementById("highlight");
  if (!hl || !frames) return;
  hl.replaceChildren();
  const fpc = frames.frames_per_cell;
  for (const seg of document.querySelectorAll("#physical rect.cell")) {
    const first = Number(seg.dataset.first), n = Number(seg.dataset.cells);
    const w = num(seg, "width") / n;
    for (const [lo, hi] of marked) {
      const a = Math.max(Math.floor(lo / fpc), first), b = Math.min(Math.floor(hi / fpc), first + n - 1);
      if (a > b) continue;
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("class", "hl");
      r.setAttribute("x", num(seg, "x") + (a - first) * w);
      r.setAttribute("y", seg.getAttribute("y"));
      r.setAttribute("width", (b - a + 1) * w);
      r.setAttribute("height", seg.getAttribute("height"));
      hl.appendChild(r);
    }
  }
}

// Zoomed in far enough to tell frames apart, the cells in sight open
// into their pieces, a grid of frames per cell, each coloured by owner:
// as many as MAX_FRAMES allows, nearest the middle of the view first.
function refine() {
  const svg = document.getElementById("physical");
  const layer = document.getElementById("fine");
  if (!svg || !layer || !frames) return;
  layer.replaceChildren();
  const box = boxes.physical;
  const fpc = frames.frames_per_cell, piece = frames.frames_per_piece;
  const per = fpc / piece;
  if (!box || per < 2) return;
  const cols = 2 ** Math.ceil(Math.log2(per) / 2), rows = per / cols;
  const seen = [];
  for (const seg of svg.querySelectorAll("rect.cell")) {
    const x = num(seg, "x"), y = num(seg, "y"), w = num(seg, "width"), h = num(seg, "height");
    if (y + h < box[1] || y > box[1] + box[3] || x + w < box[0] || x > box[0] + box[2]) continue;
    const first = Number(seg.dataset.first), n = Number(seg.dataset.cells), cw = w / n;
    for (let i = 0; i < n; i++) {
      const cx = x + i * cw;
      if (cx + cw >= box[0] && cx <= box[0] + box[2]) seen.push([first + i, cx, y, cw, h]);
    }
  }
  const pixels = svg.getBoundingClientRect().width / box[2];
  const pieceWidth = (seen.length ? seen[0][3] / cols : 0) * pixels;
  if (pieceWidth < 2) return;
  const [mx, my] = [box[0] + box[2] / 2, box[1] + box[3] / 2];
  const away = ([, x, y, w, h]) => Math.hypot(x + w / 2 - mx, y + h / 2 - my);
  seen.sort((a, b) => away(a) - away(b));
  for (const [cell, x, y, w, h] of seen.slice(0, Math.floor(MAX_FRAMES / per))) {
    for (let k = 0; k < per; k++) {
      const pfn = cell * fpc + k * piece;
      if (pfn >= frames.end_pfn) break;
      const [label, fill] = frames.owners[ownerAt(pfn)];
      const key = "pfn:" + pfn;
      const r = document.createElementNS(SVG, "rect");
      let cls = "frame";
      if (inMarked(pfn, pfn + piece - 1)) cls += " linked";
      if (key === picked) cls += " picked";
      r.setAttribute("class", cls);
      r.setAttribute("x", x + (k % cols) * w / cols);
      r.setAttribute("y", y + Math.floor(k / cols) * h / rows);
      r.setAttribute("width", w / cols);
      r.setAttribute("height", h / rows);
      r.setAttribute("fill", fill);
      r.dataset.pfn = hex(pfn);
      r.dataset.owner = label;
      r.dataset.key = key;
      layer.appendChild(r);
    }
  }
}

// ptov from the guest, as `vmm inspect ptov` prints it (live only).
async function askPtov(pfn, key) {
  let text;
  try {
    const r = await fetch("/ptov?pa=" + hex(pfn * PAGE), { cache: "no-store" });
    text = await r.text();
  } catch (err) {
    text = detail.textContent + "\n(the server did not answer)";
  }
  if (picked === key) detail.textContent = text;
}

// "a-b c-d" of data-links: ranges of pfns, both ends in.
const ranges = (links) => (links || "").split(" ").filter(Boolean).map((r) => r.split("-").map(Number));

function pick(el) {
  document.querySelectorAll(".picked").forEach((p) => p.classList.remove("picked"));
  picked = el ? el.dataset.key : null;
  marked = el ? ranges(el.dataset.links) : [];
  if (el) {
    el.classList.add("picked");
    detail.textContent = describe(el);
    if (live && el.classList.contains("frame")) askPtov(Number(el.dataset.pfn), picked);
  }
  markCells();
  refine();
}

document.addEventListener("mouseover", (e) => {
  const t = describe(e.target);
  if (t && !picked) detail.textContent = t;
});

// A press and release in place in a view picks what was pressed, found
// again by its key should a refresh have drawn it anew meanwhile (a click
// event would go to what the two have in common); one that moved is a
// drag.
let pressed = null, dragged = false, pressedKey = null;
document.addEventListener("mousedown", (e) => {
  dragged = false;
  pressedKey = e.target.closest("svg.view") ? (e.target.dataset && e.target.dataset.key) || "" : null;
});
window.addEventListener("mouseup", () => {
  if (pressedKey !== null && !dragged) {
    pick(pressedKey ? document.querySelector('[data-key="' + CSS.escape(pressedKey) + '"]') : null);
  }
  pressed = null;
  pressedKey = null;
});

// Zoom (wheel) and pan (drag) by the view's viewBox; double-click resets.
function zoomable(svg) {
  const height = Number(svg.dataset.height);
  const full = () => [0, 0, 1200, height];
  // The element keeps its shape whatever part of the view it shows.
  svg.style.aspectRatio = "1200 / " + height;
  // The box stays on the view: zoomed in at an edge, what is by the
  // edge shows whole.
  const within = ([x, y, w]) => {
    const h = w * height / 1200;
    return [Math.min(Math.max(x, 0), 1200 - w), Math.min(Math.max(y, 0), height - h), w, h];
  };
  let box = boxes[svg.id] ? within(boxes[svg.id]) : full();
  const set = () => {
    box = within(box);
    boxes[svg.id] = box;
    svg.setAttribute("viewBox", box.join(" "));
    if (svg.id === "physical") refine();
  };
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect();
    const fx = (e.clientX - r.left) / r.width, fy = (e.clientY - r.top) / r.height;
    const k = e.deltaY < 0 ? 0.8 : 1.25;
    const w = Math.min(Math.max(box[2] * k, 1), 1200);
    const h = w * height / 1200;
    box = [box[0] + (box[2] - w) * fx, box[1] + (box[3] - h) * fy, w, h];
    set();
  }, { passive: false });
  svg.addEventListener("mousedown", (e) => {
    pressed = [e.clientX, e.clientY, box[0], box[1], svg];
  });
  svg.addEventListener("mousemove", (e) => {
    if (!pressed || pressed[4] !== svg) return;
    const dx = e.clientX - pressed[0], dy = e.clientY - pressed[1];
    if (Math.abs(dx) + Math.abs(dy) < 4 && !dragged) return;
    dragged = true;
    const s = box[2] / svg.getBoundingClientRect().width;
    box = [pressed[2] - dx * s, pressed[3] - dy * s, box[2], box[3]];
    set();
  });
  svg.addEventListener("dblclick", () => { box = full(); set(); });
  set();
}

function init() {
  const data = document.getElementById("frames");
  frames = data ? JSON.parse(data.textContent) : null;
  // The piece picked before a refresh, where it still is (a frame is
  // drawn again as the physical view is zoomed back).
  const el = picked && document.querySelector('[data-key="' + CSS.escape(picked) + '"]');
  if (el) {
    el.classList.add("picked");
    marked = ranges(el.dataset.links);
  }
  document.querySelectorAll("svg.view").forEach(zoomable);
  markCells();
}
init();

// Live: the server takes a new snapshot for each request of /views (or
// shares one taken since the request came).
if (live) {
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
