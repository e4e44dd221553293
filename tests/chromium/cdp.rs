//! A small client of the Chrome DevTools Protocol over chromium's
//! `--remote-debugging-pipe` (commands in on fd 3, answers and events out
//! on fd 4, each a JSON message ended by a NUL byte): enough to open a
//! page, move, click and turn the wheel as a user would, read the DOM
//! with script, and collect what the console said.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};

use serde_json::{json, Value};
use system_tests::{tmp, HANG};

/// The flags of every headless chromium the tests run.
pub const HEADLESS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--hide-scrollbars",
];

/// A headless chromium with one page, ended when dropped.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    messages: Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Console messages, uncaught exceptions and browser log entries
    /// (a refused request, a failed load), as they came.
    pub console: Vec<String>,
}

impl Browser {
    /// Starts chromium and opens `url` in a page of `width` x `height`
    /// CSS pixels; returns once the page has loaded.
    pub fn open(url: &str, width: u32, height: u32) -> Browser {
        static PROFILES: AtomicUsize = AtomicUsize::new(0);
        let n = PROFILES.fetch_add(1, Ordering::Relaxed);
        let profile = tmp(&format!("cdp-profile-{n}"));
        let log = std::fs::File::create(tmp(&format!("cdp-chromium-{n}.log"))).unwrap();
        // The shell hands our pipes to chromium as fds 3 and 4.
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#"exec "$@" 3<&0 4>&1 0</dev/null 1>&2"#,
                "sh",
                "chromium",
            ])
            .args(HEADLESS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot run chromium: `make chromium` installs it");
        let commands = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for message in out.split(0) {
                let Ok(bytes) = message else { break };
                let value = serde_json::from_slice(&bytes).expect("a DevTools message");
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut b = Browser {
            child,
            commands,
            messages,
            next_id: 0,
            session: None,
            console: Vec::new(),
        };
        let target =
            b.call("Target.createTarget", json!({ "url": "about:blank" }))["targetId"].clone();
        let attached = b.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        for domain in ["Runtime", "Log", "Page"] {
            b.call(&format!("{domain}.enable"), json!({}));
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        b.call("Page.navigate", json!({ "url": url }));
        b.wait_event("Page.loadEventFired");
        b
    }

    /// Sends a command to the page (or, before it is attached, the
    /// browser) and waits for its answer, keeping the events on the way.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium went away before {method}: {e}"));
        loop {
            let m = self.next_message(method);
            if m["id"] == id {
                if let Some(e) = m.get("error") {
                    panic!("{method}: {e}");
                }
                return m["result"].clone();
            }
            self.note(&m);
        }
    }

    fn next_message(&mut self, waiting_for: &str) -> Value {
        self.messages
            .recv_timeout(HANG)
            .unwrap_or_else(|e| panic!("chromium: no answer to {waiting_for} ({e})"))
    }

    fn wait_event(&mut self, method: &str) {
        loop {
            let m = self.next_message(method);
            self.note(&m);
            if m["method"] == method {
                return;
            }
        }
    }

    /// Keeps what the console and the browser's log said.
    fn note(&mut self, m: &Value) {
        let p = &m["params"];
        let line = match m["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                format!("console.{}: {}", p["type"], args.join(" "))
            }
            Some("Runtime.exceptionThrown") => format!("exception: {}", p["exceptionDetails"]),
            Some("Log.entryAdded") => {
                let e = &p["entry"];
                format!("{} {}: {} {}", e["source"], e["level"], e["text"], e["url"])
            }
            _ => return,
        };
        self.console.push(line);
    }

    /// The value of a script expression in the page; a promise is
    /// awaited.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until the script condition `condition` is true in the page:
    /// the page checks it every 50 ms, and the answer's deadline (HANG)
    /// only catches a hang.
    pub fn wait_for(&mut self, condition: &str) {
        self.eval(&format!(
            "new Promise((done) => {{ const check = () => ({condition}) ? done(true) : setTimeout(check, 50); check(); }})"
        ));
    }

    fn mouse(&mut self, kind: &str, x: f64, y: f64, button: &str) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": kind, "x": x, "y": y, "button": button, "clickCount": 1 }),
        );
    }

    /// Moves the pointer to (x, y): the page sees it hover there.
    pub fn hover(&mut self, x: f64, y: f64) {
        self.mouse("mouseMoved", x, y, "none");
    }

    /// A left click at (x, y).
    pub fn click(&mut self, x: f64, y: f64) {
        self.hover(x, y);
        self.mouse("mousePressed", x, y, "left");
        self.mouse("mouseReleased", x, y, "left");
    }

    /// A drag with the left button from `from` to `to`.
    pub fn drag(&mut self, from: (f64, f64), to: (f64, f64)) {
        self.hover(from.0, from.1);
        self.mouse("mousePressed", from.0, from.1, "left");
        for step in 1..=4 {
            let f = f64::from(step) / 4.0;
            let (x, y) = (from.0 + (to.0 - from.0) * f, from.1 + (to.1 - from.1) * f);
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": "mouseMoved", "x": x, "y": y, "button": "left", "buttons": 1 }),
            );
        }
        self.mouse("mouseReleased", to.0, to.1, "left");
    }

    /// One notch of the wheel at (x, y), away from the user (zoom in).
    pub fn wheel_in(&mut self, x: f64, y: f64) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": "mouseWheel", "x": x, "y": y, "deltaX": 0, "deltaY": -100 }),
        );
    }
}

impl Browser {
    /// Writes what the page shows now to `png`.
    pub fn screenshot(&mut self, png: &std::path::Path) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .expect("a screenshot in base64");
        std::fs::write(png, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let close = json!({ "id": 0, "method": "Browser.close" });
        let mut bytes = serde_json::to_vec(&close).unwrap();
        bytes.push(0);
        let _ = self.commands.write_all(&bytes);
        // It closes fd 4 as it exits, which ends the messages.
        while self.messages.recv_timeout(HANG).is_ok() {}
        // What is left of its process group (not yet reaped, so the
        // group is still its own).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
