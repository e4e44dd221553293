//! The memory map in a real browser: Debian's chromium, headless, loads
//! the page `vmm inspect serve` serves from a live guest and the page
//! `map --html` draws from a dump and from a monitor, and the tests read
//! the DOM it built: the zones, the kernel's regions, the vmalloc areas
//! with their callers, the pkmap slots, a running process and its VMAs,
//! each figure checked against what `layout`, `buddyinfo`, `vmallocinfo`,
//! `pkmap`, `ps` and `vma` print for the same (stopped) state. Screenshots
//! at 2G and 8G; no console message (a script error, a refused request)
//! is allowed.
//!
//! Then they use the page as a person would, through the DevTools
//! protocol (tests/chromium/cdp.rs): hover and click a piece and read
//! what `vtop` says of it, turn the wheel over its frame until the cell
//! opens into single frames, click the frame and read what `ptov` says;
//! and leave the served page open while the guest runs, until it shows
//! the guest's pkmap counts move without a reload. What they need comes
//! from tests/chromium/setup.sh (`make chromium`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use system_tests::{inspect, tmp, MonitoredVm, Run, Running, HANG};

#[path = "chromium/cdp.rs"]
mod cdp;
use cdp::Browser;

/// Runs chromium headless on `url` with `args`: what it printed on stdout.
/// Console messages (script errors, CSP refusals, console.log) fail the
/// test: chromium logs each as a `:CONSOLE` line on stderr.
fn chromium(url: &str, args: &[&str]) -> String {
    static PROFILES: AtomicUsize = AtomicUsize::new(0);
    let profile = tmp(&format!(
        "chromium-profile-{}",
        PROFILES.fetch_add(1, Ordering::Relaxed)
    ));
    let out = Command::new("timeout")
        .arg(HANG.as_secs().to_string())
        .arg("chromium")
        .args(cdp::HEADLESS)
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run chromium: `make chromium` installs it");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed on {url}:\n{stderr}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "console messages on {url}:\n{}",
        console.join("\n")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM after the page's script ran.
fn dom(url: &str) -> String {
    let dom = chromium(url, &["--dump-dom"]);
    assert!(
        dom.contains(r#"data-ready="true""#),
        "the script did not finish:\n{dom}"
    );
    dom
}

/// Takes a screenshot of `url` into `png` and checks it.
fn screenshot(url: &str, png: &Path) {
    chromium(url, &[&format!("--screenshot={}", png.display())]);
    is_a_picture(png);
}

/// Checks `png` is a PNG of the window's width, not blank.
fn is_a_picture(png: &Path) {
    let bytes = std::fs::read(png).expect("no screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(width, 1400);
    assert!(
        bytes.len() > 20_000,
        "a blank screenshot? {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
}

/// The start tags of the elements whose `class` attribute starts with
/// `class`.
fn tags<'a>(dom: &'a str, element: &str, class: &str) -> Vec<&'a str> {
    let open = format!("{element} class=\"{class}");
    dom.split('<')
        .filter(|t| t.starts_with(&open))
        .map(|t| t.split('>').next().unwrap_or(t))
        .collect()
}

/// An attribute of a start tag, unescaped as the DOM serializes it.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let value = &tag[at..at + tag[at..].find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn num(tag: &str, name: &str) -> u64 {
    let v = attr(tag, name).unwrap_or_else(|| panic!("no {name} in <{tag}>"));
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => v.parse().unwrap(),
    }
}

fn json(run: &Run) -> Value {
    run.expect_status(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
}

/// The kernel's half of the picture against the text commands: zones and
/// their free blocks (`buddyinfo`), regions and what is mapped in each
/// (`layout`), every vmalloc area with its caller and size
/// (`vmallocinfo`), the pkmap slots in use (`pkmap`).
fn kernel_agrees(dom: &str, src: &[&str]) {
    let buddy = json(&inspect(src, &["buddyinfo", "--json"]));
    for z in buddy["zones"].as_array().unwrap() {
        let name = z["zone"].as_str().unwrap();
        assert_eq!(
            tags(dom, "g", "zone")
                .iter()
                .filter(|t| attr(t, "data-zone").as_deref() == Some(name))
                .count(),
            1,
            "zone {name}"
        );
        let nr: Vec<String> = z["nr_free"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let label = format!("free blocks by order: {}", nr.join(" "));
        assert!(dom.contains(&label), "zone {name}: no {label:?}");
    }

    let layout = json(&inspect(src, &["layout", "--json"]));
    let want: Vec<(String, u64, u64, u64)> = layout["regions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] != "user")
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["start"].as_u64().unwrap(),
                r["end"].as_u64().unwrap(),
                r["mapped"].as_u64().unwrap(),
            )
        })
        .collect();
    let drawn: Vec<(String, u64, u64, u64)> = tags(dom, "rect", "region")
        .iter()
        .map(|t| {
            (
                attr(t, "data-region").unwrap(),
                num(t, "data-start"),
                num(t, "data-end"),
                num(t, "data-mapped"),
            )
        })
        .collect();
    assert_eq!(drawn, want);
    for name in ["lowmem", "hole", "vmalloc", "pkmap", "fixmap"] {
        assert!(drawn.iter().any(|r| r.0 == name), "no region {name}");
    }

    let vmalloc = json(&inspect(src, &["vmallocinfo", "--json"]));
    let mut want: Vec<(u64, String, u64)> = vmalloc["areas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["start"].as_u64().unwrap(),
                a["caller"].as_str().unwrap().to_string(),
                a["nr_pages"].as_u64().unwrap(),
            )
        })
        .collect();
    want.sort();
    // Each area is drawn in the whole range and in the stretched span.
    let mut drawn: Vec<(u64, String, u64)> = tags(dom, "rect", "area")
        .iter()
        .map(|t| {
            (
                num(t, "data-start"),
                attr(t, "data-caller").unwrap(),
                num(t, "data-pages"),
            )
        })
        .collect();
    drawn.sort();
    drawn.dedup();
    assert_eq!(drawn, want);

    let pkmap = json(&inspect(src, &["pkmap", "--json"]));
    let in_use = tags(dom, "rect", "slot pkmap used").len();
    assert_eq!(in_use as u64, pkmap["in_use"].as_u64().unwrap());

    // Slab frames are named by their cache, as `slabinfo` names it.
    let slabinfo = json(&inspect(src, &["slabinfo", "--json"]));
    let caches: Vec<&str> = slabinfo["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let slabs: Vec<&str> = dom
        .split("</span>")
        .filter_map(|item| item.split("</li>").next()?.strip_prefix("slab "))
        .collect();
    assert!(!slabs.is_empty(), "no slab in the legend");
    for name in slabs {
        assert!(
            caches.contains(&name),
            "slab {name:?} is no cache of {caches:?}"
        );
    }
}

/// `linger` keeps a 4-page vmalloc area and a kmap of a highmem page;
/// `plant=dmap` maps a slab frame again in vmalloc.
fn linger_state(dom: &str) {
    let areas = tags(dom, "rect", "area");
    let keep = areas
        .iter()
        .find(|t| attr(t, "data-caller").as_deref() == Some("linger_keep"))
        .unwrap_or_else(|| panic!("no linger_keep area:\n{dom}"));
    assert_eq!(num(keep, "data-pages"), 4);
    // Its four frames are marked in the physical view when clicked.
    assert!(!attr(keep, "data-links").unwrap().is_empty(), "{keep}");
    assert!(areas
        .iter()
        .any(|t| attr(t, "data-caller").as_deref() == Some("plant_dmap")));
    assert!(!tags(dom, "rect", "guard").is_empty());
    assert!(
        !tags(dom, "rect", "slot pkmap used").is_empty(),
        "the linger kmap"
    );
    assert!(dom.contains("kernel image") && dom.contains("mem_map"));
}

/// The centre of the element the script expression `find` gives, once
/// scrolled into view, where the mouse points at it.
fn centre_of(b: &mut Browser, find: &str) -> (f64, f64) {
    let v = b.eval(&format!(
        "(() => {{ const el = {find}; el.scrollIntoView({{ block: 'center' }}); \
         const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
    ));
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

/// What the page's details pane shows.
fn detail(b: &mut Browser) -> String {
    let v = b.eval("document.getElementById('detail').textContent");
    v.as_str().unwrap().to_string()
}

/// A piece of the kernel's or a process's view (found by `find`),
/// hovered then clicked: it shows the walk `vtop` prints (`walk`) and
/// marks its frames in the physical view.
fn point_at(b: &mut Browser, find: &str, vtop: &Run) {
    vtop.expect_status(0);
    let walk = vtop.stdout.trim_end();
    let (x, y) = centre_of(b, find);
    b.hover(x, y);
    let hovered = detail(b);
    assert!(hovered.contains(walk), "hovered:\n{hovered}\nvtop:\n{walk}");
    b.click(x, y);
    assert!(detail(b).contains(walk));
    let marked = b.eval("document.querySelectorAll('#highlight rect.hl').length");
    assert!(marked.as_u64().unwrap() > 0, "no frames marked");
}

/// The linger_keep area, pointed at: what `vtop` says of its start
/// under swapper_pg_dir. Its first page's frame.
fn point_at_linger_keep(b: &mut Browser, src: &[&str]) -> u64 {
    // The widest of its two drawings (the areas' span, stretched).
    let find = "[...document.querySelectorAll('rect.area[data-caller=\"linger_keep\"]')]\
                .reduce((a, b) => b.getBoundingClientRect().width > a.getBoundingClientRect().width ? b : a)";
    let start = b.eval(&format!("({find}).dataset.start"));
    let start = start.as_str().unwrap();
    let swapper = json(&inspect(src, &["ps", "--json"]))["tasks"][0]["pgd"]
        .as_u64()
        .unwrap();
    let cr3 = format!("{swapper:#x}");
    point_at(b, find, &inspect(src, &["vtop", start, "--cr3", &cr3]));
    let walk = json(&inspect(src, &["vtop", start, "--cr3", &cr3, "--json"]));
    let pfn = walk["pa"].as_u64().unwrap() / 4096;
    let links = b.eval(&format!("({find}).dataset.links"));
    assert!(
        links.as_str().unwrap().split(' ').any(|r| {
            let (a, z) = r.split_once('-').unwrap();
            (a.parse().unwrap()..=z.parse().unwrap()).contains(&pfn)
        }),
        "frame {pfn:#x} not in {links}"
    );
    pfn
}

/// Turns the wheel over the cell that holds `pfn`, as a user zooms in,
/// until the cell opens into single frames, each drawn with its owner.
/// The frame's selector.
fn zoom_to_frame(b: &mut Browser, pfn: u64) -> String {
    let frames = b.eval("JSON.parse(document.getElementById('frames').textContent)");
    let fpc = frames["frames_per_cell"].as_u64().unwrap();
    let piece = frames["frames_per_piece"].as_u64().unwrap();
    let cell = pfn / fpc;
    let segment = format!(
        "[...document.querySelectorAll('#physical rect.cell')].find((s) => \
         Number(s.dataset.first) <= {cell} && {cell} < Number(s.dataset.first) + Number(s.dataset.cells))"
    );
    let at = b.eval(&format!(
        "(() => {{ const s = {segment}; s.scrollIntoView({{ block: 'center' }}); \
         const r = s.getBoundingClientRect(), n = Number(s.dataset.cells); \
         return [r.x + ({cell} - Number(s.dataset.first) + 0.5) * r.width / n, r.y + r.height / 2]; }})()"
    ));
    let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
    let frame = format!("#fine rect[data-pfn=\"{pfn:#x}\"]");
    let shown = format!("document.querySelector('{frame}') !== null");
    let fine = "document.querySelectorAll('#fine rect.frame').length";
    assert_eq!(b.eval(fine), 0, "single frames before zooming in");
    let mut notches = 0;
    while b.eval(&shown) != true {
        assert!(notches < 60, "no single frames after {notches} notches");
        b.wheel_in(x, y);
        notches += 1;
    }
    // The whole cell, frame by frame: finer than the cell it was.
    let drawn = b.eval(&format!(
        "[...document.querySelectorAll('#fine rect.frame')]\
         .filter((r) => Math.floor(Number(r.dataset.pfn) / {fpc}) === {cell}).length"
    ));
    assert_eq!(drawn.as_u64().unwrap(), fpc / piece);
    assert!(fpc / piece > 1, "cells of one frame have nothing finer");
    frame
}

/// Clicks the frame: a served page asks the guest and shows what `ptov`
/// prints; a file shows where the frame is and its owner as drawn.
fn click_frame(b: &mut Browser, src: &[&str], frame: &str, pfn: u64, live: bool, owner: &str) {
    let el = format!("document.querySelector('{frame}')");
    assert_eq!(b.eval(&format!("{el}.dataset.owner")), owner);
    assert_eq!(
        b.eval(&format!("{el}.classList.contains('linked')")),
        true,
        "the frame is not marked as the piece's"
    );
    // Zoomed in at the cell, the frame can lie past the view's edge: the
    // user drags it to the middle.
    let at = |b: &mut Browser, find: &str| {
        let r = b.eval(&format!(
            "(() => {{ const r = {find}.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        (r[0].as_f64().unwrap(), r[1].as_f64().unwrap())
    };
    let (fx, fy) = at(b, &el);
    let (cx, cy) = at(b, "document.getElementById('physical')");
    let (dx, dy) = ((cx - fx) / 2.0, (cy - fy) / 2.0);
    b.drag((cx - dx, cy - dy), (cx + dx, cy + dy));
    let (x, y) = at(b, &el);
    let seen = b.eval(&format!("document.elementFromPoint({x}, {y}) === {el}"));
    assert_eq!(seen, true, "the frame is not in sight");
    b.click(x, y);
    assert_eq!(b.eval(&format!("{el}.classList.contains('picked')")), true);
    let ptov = inspect(src, &["ptov", &format!("{:#x}", pfn * 4096)]);
    ptov.expect_status(0);
    if live {
        b.wait_for("!document.getElementById('detail').textContent.includes('drawn as')");
        assert_eq!(detail(b), ptov.stdout);
    } else {
        let shown = detail(b);
        assert_eq!(shown.lines().next(), ptov.stdout.lines().next(), "{shown}");
        assert!(shown.contains(&format!("drawn as: {owner}")), "{shown}");
    }
}

fn no_console_messages(b: &Browser) {
    assert!(b.console.is_empty(), "console: {:#?}", b.console);
}

/// One request to the server: its status line and body.
fn http(addr: &str, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to serve");
    s.set_read_timeout(Some(HANG)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("the server's answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
#[cfg_attr(not(chromium), ignore = "needs `make chromium` (Debian's chromium)")]
fn the_map_served_live_and_drawn_from_a_dump() {
    let sock = tmp("map-monitor.sock");
    let exit_core = tmp("map-exit.core");
    let now_core = tmp("map-now.core");
    // The guest churns (kmaps, vmallocs) for as long as the test may
    // take: the served page, left open, watches it at the end.
    let vm = MonitoredVm::start_with(
        "selftest=off linger=1200 plant=dmap",
        &sock,
        &exit_core,
        "1200",
        &[],
    );
    vm.wait_for("churning for");
    let live = ["--socket", sock.to_str().unwrap()];
    let dump = ["--dump", now_core.to_str().unwrap()];
    inspect(&live, &["stop"]).expect_status(0);

    // The live page, from the server.
    let server = Running::start(&[
        "inspect",
        "--socket",
        sock.to_str().unwrap(),
        "serve",
        "--http",
        "127.0.0.1:0",
    ]);
    let printed = server.wait_for("/ (Ctrl-C ends)");
    let url = printed
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {printed:?}"))
        .to_string();
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let page = dom(&url);
    assert!(page.contains(r#"data-live="true""#));
    assert!(page.contains("524288 frames"), "2 GiB of RAM");
    kernel_agrees(&page, &live);
    linger_state(&page);
    screenshot(&url, &tmp("map-2G.png"));

    // A user on the live page: the linger_keep area pointed at, the
    // cell of its frame zoomed into, the frame clicked.
    let mut user = Browser::open(&url, 1400, 1800);
    let pfn = point_at_linger_keep(&mut user, &live);
    let frame = zoom_to_frame(&mut user, pfn);
    click_frame(&mut user, &live, &frame, pfn, true, "vmalloc");
    // A closer look for the picture.
    let (x, y) = centre_of(&mut user, &format!("document.querySelector('{frame}')"));
    for _ in 0..4 {
        user.wheel_in(x, y);
    }
    let zoomed = tmp("map-2G-zoomed.png");
    user.screenshot(&zoomed);
    is_a_picture(&zoomed);

    // What the page refreshes from, and the snapshot behind it: the same
    // as `map --json`.
    let (status, views) = http(addr, "GET /views HTTP/1.0\r\n\r\n");
    assert!(
        status.contains(" 200 ") && views.contains("linger_keep"),
        "{status}"
    );
    let (status, served) = http(addr, "GET /map.json HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 200 "), "{status}");
    let served: Value = serde_json::from_str(&served).expect("/map.json");
    assert_eq!(served, json(&inspect(&live, &["map", "--json"])));
    // Read-only, and nothing but its own paths.
    assert!(http(addr, "POST / HTTP/1.0\r\n\r\n").0.contains(" 405 "));
    assert!(http(addr, "GET /etc/passwd HTTP/1.0\r\n\r\n")
        .0
        .contains(" 404 "));
    // A second server on the same port: one line, bad input.
    let busy = inspect(&live, &["serve", "--http", addr]);
    busy.expect_status(2).expect_stderr("cannot serve HTTP on");
    assert_eq!(busy.stderr.lines().count(), 1, "{busy}");

    // The same moment on a dump: the same snapshot, the same picture.
    inspect(&live, &["dump", now_core.to_str().unwrap()]).expect_status(0);
    assert_eq!(served, json(&inspect(&dump, &["map", "--json"])));
    let html = tmp("map-dump.html");
    let svg = tmp("map-dump.svg");
    inspect(
        &dump,
        &[
            "map",
            "--html",
            html.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ],
    )
    .expect_status(0);
    let file = dom(&format!("file://{}", html.display()));
    kernel_agrees(&file, &dump);
    linger_state(&file);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg ") && svg.contains("linger_keep"));
    let mut reader = Browser::open(&format!("file://{}", html.display()), 1400, 1800);
    let pfn = point_at_linger_keep(&mut reader, &dump);
    let dump_frame = zoom_to_frame(&mut reader, pfn);
    click_frame(&mut reader, &dump, &dump_frame, pfn, false, "vmalloc");
    no_console_messages(&reader);

    let unwritable = inspect(&dump, &["map", "--html", "/nonexistent/map.html"]);
    unwritable
        .expect_status(2)
        .expect_stderr("cannot write /nonexistent/map.html");
    assert_eq!(unwritable.stderr.lines().count(), 1, "{unwritable}");

    // The live page, left open while the guest runs: it refreshes itself
    // and shows the pkmap counts move and vmalloc areas come (the guest's
    // churn kmaps highmem pages and vmallocs) without a reload, keeping
    // the zoom and the frame picked.
    let maps = "Number(document.querySelector('g.pkmap').dataset.maps)";
    let areas = "[...document.querySelectorAll('rect.area')].map((a) => a.dataset.key).join()";
    let (maps_before, areas_before) = (user.eval(maps), user.eval(areas));
    user.eval("window.notReloaded = true");
    inspect(&live, &["cont"]).expect_status(0);
    user.wait_for(&format!(
        "{maps} > {maps_before} && {areas} !== {areas_before}"
    ));
    assert_eq!(user.eval("window.notReloaded === true"), true);
    let kept = format!("document.querySelector('{frame}').classList.contains('picked')");
    assert_eq!(user.eval(&kept), true);
    no_console_messages(&user);
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
#[cfg_attr(not(chromium), ignore = "needs `make chromium` (Debian's chromium)")]
fn a_running_process_at_8g() {
    let sock = tmp("map8-monitor.sock");
    let exit_core = tmp("map8-exit.core");
    let vm = MonitoredVm::start_sized(
        "8G",
        "selftest=off run=spin",
        &sock,
        &exit_core,
        &system_tests::guest_timeout(),
        &[],
        &[],
    );
    vm.wait_for("spin: spinning in ring 3");
    let live = ["--socket", sock.to_str().unwrap()];
    inspect(&live, &["stop"]).expect_status(0);
    let html = tmp("map-8G.html");
    inspect(&live, &["map", "--html", html.to_str().unwrap()])
        .expect_status(0)
        .expect_stdout("wrote ");
    let url = format!("file://{}", html.display());
    let page = dom(&url);
    kernel_agrees(&page, &live);

    // The spinning task, with the VMAs `vma` lists and the frames `ps`
    // counts in its RSS.
    let ps = json(&inspect(&live, &["ps", "--json"]));
    let task = &ps["tasks"][1];
    assert_eq!(task["comm"], "spin");
    let procs = tags(&page, "g", "process");
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_eq!(num(procs[0], "data-pid"), task["pid"].as_u64().unwrap());
    assert_eq!(attr(procs[0], "data-comm").as_deref(), Some("spin"));
    let maps = json(&inspect(&live, &["vma", "--pid", "1", "--json"]));
    let want: Vec<(u64, u64, String, String)> = maps["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["start"].as_u64().unwrap(),
                v["end"].as_u64().unwrap(),
                v["perms"].as_str().unwrap().to_string(),
                v["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let vmas = tags(&page, "rect", "vma");
    let drawn: Vec<(u64, u64, String, String)> = vmas
        .iter()
        .map(|t| {
            (
                num(t, "data-start"),
                num(t, "data-end"),
                attr(t, "data-perms").unwrap(),
                attr(t, "data-kind").unwrap(),
            )
        })
        .collect();
    assert_eq!(drawn, want);
    let frames: u64 = vmas.iter().map(|t| num(t, "data-frames")).sum();
    assert_eq!(frames, task["rss"].as_u64().unwrap());
    assert!(vmas
        .iter()
        .all(|t| num(t, "data-frames") == 0 || !attr(t, "data-links").unwrap().is_empty()));
    // Its frames come from highmem, coloured as its own.
    assert!(page.contains("user, PID 1"));
    let summary = tags(&page, "p", "summary");
    assert_eq!(num(summary[0], "data-ram-frames"), (8 << 30) / 4096);
    screenshot(&url, &tmp("map-8G.png"));

    // Pointed at, the VMA spin touched a MiB of shows what `vtop` says of
    // its start; its first frame, zoomed into and clicked, where it is.
    let mut reader = Browser::open(&url, 1400, 1800);
    let find = "[...document.querySelectorAll('rect.vma')]\
                .reduce((a, b) => Number(b.dataset.frames) > Number(a.dataset.frames) ? b : a)";
    let start = reader.eval(&format!("({find}).dataset.start"));
    let vtop = inspect(&live, &["vtop", start.as_str().unwrap(), "--pid", "1"]);
    point_at(&mut reader, find, &vtop);
    let links = reader.eval(&format!("({find}).dataset.links"));
    let pfn: u64 = links
        .as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let frame = zoom_to_frame(&mut reader, pfn);
    click_frame(&mut reader, &live, &frame, pfn, false, "user, PID 1");
    no_console_messages(&reader);
    inspect(&live, &["cont"]).expect_status(0);
}
