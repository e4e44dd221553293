use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};

use super::*;
use crate::inspect::map::{FrameRuns, MapFixmap, MapPkmap};

/// A guest for the server alone: each snapshot says which it is (in
/// `ram_frames`, from 1), the first waits for the test's word, and each
/// records when it ran and how many ran at once.
struct Counted {
    begun: AtomicUsize,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    hold_first: Mutex<Option<Receiver<()>>>,
    ran: Mutex<Vec<(Instant, Instant)>>,
}

impl Counted {
    /// The guest, and the sender that lets its first snapshot end.
    fn new() -> (&'static Counted, Sender<()>) {
        let (go, hold) = mpsc::channel();
        let guest = Box::leak(Box::new(Counted {
            begun: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
            hold_first: Mutex::new(Some(hold)),
            ran: Mutex::new(Vec::new()),
        }));
        (guest, go)
    }
}

impl Guest for Counted {
    fn snapshot(&self) -> Result<MemoryMap, String> {
        let start = Instant::now();
        let n = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let at_once = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(at_once, Ordering::SeqCst);
        if let Some(hold) = lock(&self.hold_first).take() {
            let _ = hold.recv();
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        lock(&self.ran).push((start, Instant::now()));
        Ok(MemoryMap {
            ram_frames: n as u64,
            end_pfn: 0,
            max_low_pfn: 0,
            frames_per_cell: 1,
            zones: Vec::new(),
            cells: Vec::new(),
            frames: FrameRuns::default(),
            slab_caches: Vec::new(),
            page_offset: 0xc000_0000,
            regions: Vec::new(),
            vmalloc: Vec::new(),
            vmalloc_more: 0,
            pkmap: MapPkmap::default(),
            fixmap: MapFixmap::default(),
            processes: Vec::new(),
            anomalies: Vec::new(),
        })
    }

    fn ptov(&self, pa: u64) -> String {
        format!("PHYSICAL {pa:#x}\n")
    }
}

/// A server for `guest` on a free loopback port.
fn start(guest: &'static Counted) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || serve(&listener, guest));
    addr
}

/// Sends `request`, and reads the answer to its end: the status and the
/// body.
fn ask(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    answer_of(s)
}

fn answer_of(mut s: TcpStream) -> (u16, String) {
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok());
    (status.unwrap_or(0), body.to_string())
}

/// Which snapshot an answer of /map.json came from.
fn snapshot_number(body: &str) -> u64 {
    let m: MemoryMap = serde_json::from_str(body).unwrap();
    m.ram_frames
}

/// Whether the server still holds `s` open, having sent nothing.
fn still_waiting(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8];
    let waiting = matches!((&*s).read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    waiting
}

#[test]
fn a_slow_client_blocks_no_other() {
    let (guest, go) = Counted::new();
    drop(go);
    let addr = start(guest);
    // One client sends half a request, another nothing at all.
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /map.json HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let silent = TcpStream::connect(addr).unwrap();
    // A third is answered while the server still waits for both.
    let (status, body) = ask(addr, "GET /map.json HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    assert!(still_waiting(&half) && still_waiting(&silent));
    // The half request, finished, is answered too.
    half.write_all(b"\r\n").unwrap();
    assert_eq!(answer_of(half).0, 200);
}

#[test]
fn clients_past_the_bound_wait_for_a_place() {
    let (guest, go) = Counted::new();
    drop(go);
    let addr = start(guest);
    let mut silent: Vec<TcpStream> = (0..MAX_CLIENTS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Every place taken: the next client is queued, and served as soon
    // as one goes.
    let mut queued = TcpStream::connect(addr).unwrap();
    queued.write_all(b"GET /map.json HTTP/1.0\r\n\r\n").unwrap();
    silent.pop();
    assert_eq!(answer_of(queued).0, 200);
}

/// However many clients ask, one snapshot at a time; each client gets
/// one begun after it asked, and the guest runs between two at least as
/// long as the first paused it.
#[test]
fn snapshots_are_taken_one_at_a_time_and_fresh() {
    let (guest, go) = Counted::new();
    let addr = start(guest);
    let first = std::thread::spawn(move || ask(addr, "GET /map.json HTTP/1.0\r\n\r\n"));
    // The first snapshot is under way; the next clients ask meanwhile.
    while guest.begun.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let later: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || ask(addr, "GET /views HTTP/1.0\r\n\r\n")))
        .collect();
    let mut last = TcpStream::connect(addr).unwrap();
    last.write_all(b"GET /map.json HTTP/1.0\r\n\r\n").unwrap();
    go.send(()).unwrap();
    let (status, body) = answer_of(last);
    assert_eq!((status, snapshot_number(&body) > 1), (200, true), "{body}");
    assert_eq!(snapshot_number(&first.join().unwrap().1), 1);
    for client in later {
        assert_eq!(client.join().unwrap().0, 200);
    }
    assert_eq!(guest.most_at_once.load(Ordering::SeqCst), 1);
    let ran = lock(&guest.ran);
    for pair in ran.windows(2) {
        let ((a_start, a_end), (b_start, _)) = (pair[0], pair[1]);
        assert!(b_start - a_end >= a_end - a_start, "{ran:?}");
    }
}

#[test]
fn only_reads_and_a_few_paths() {
    let (guest, go) = Counted::new();
    drop(go);
    let addr = start(guest);
    let cases = [
        ("POST /map.json HTTP/1.0\r\n\r\n", 405, "GET only"),
        ("GET /etc/passwd HTTP/1.0\r\n\r\n", 404, "not found"),
        (
            "GET /ptov?pa=0x1000 HTTP/1.0\r\n\r\n",
            200,
            "PHYSICAL 0x1000\n",
        ),
        ("GET /ptov?pa=zz HTTP/1.0\r\n\r\n", 400, "ptov needs"),
        ("GET /ptov HTTP/1.0\r\n\r\n", 400, "ptov needs"),
        ("\x16\x03\x01 hello\r\n\r\n", 400, "not an HTTP request"),
        ("GET /views HTTP/1.0\r\n\r\n", 200, "class=\"summary\""),
    ];
    for (request, status, text) in cases {
        let (got, body) = ask(addr, request);
        assert_eq!(got, status, "{request:?}: {body}");
        assert!(body.contains(text), "{request:?}: {body}");
    }
    let huge = format!("GET / HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let (got, body) = ask(addr, &huge);
    assert_eq!(got, 400, "{body}");
}
