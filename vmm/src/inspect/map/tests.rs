use super::*;

/// A snapshot as large as the caps let one be, with hostile strings.
fn full_map(caller: &str, comm: &str) -> MemoryMap {
    let end_pfn = (8u64 << 30) / PAGE;
    let fpc = frames_per_cell(end_pfn);
    let cells = (0..end_pfn / fpc)
        .map(|i| Cell {
            index: i as u32,
            cells: 1,
            start_pfn: i * fpc,
            end_pfn: (i + 1) * fpc,
            owner: Owner::Free { order: 3 },
            counts: vec![
                (Owner::Free { order: 3 }, fpc - 3),
                (Owner::PageTable, 1),
                (Owner::User { pid: 7 }, 1),
                (Owner::Slab { cache: 2 }, 1),
            ],
            ptov: format!("owner: pfn {i}"),
        })
        .collect();
    let links: Vec<(u64, u64)> = (0..MAX_LINKS as u64).map(|i| (2 * i, 2 * i)).collect();
    // The most fragmented memory the finest level lists: MAX_RUNS runs
    // of single frames, owners alternating.
    let owners = vec![
        Owner::Free { order: 0 },
        Owner::Slab { cache: 1 },
        Owner::User { pid: 7 },
    ];
    let runs = (0..MAX_RUNS as u64).map(|i| (i, (i % 3) as u32)).collect();
    let slot = |slot| MapSlot {
        slot,
        va: 0xffa0_0000 + slot * PAGE,
        count: 2,
        pfn: 0x40000 + slot,
        what: "pkmap slot".into(),
        links: links.clone(),
    };
    MemoryMap {
        ram_frames: end_pfn,
        end_pfn,
        max_low_pfn: 0x38000,
        frames_per_cell: fpc,
        frames: FrameRuns {
            frames_per_piece: 1,
            owners,
            runs,
        },
        slab_caches: vec![MapCache {
            id: 1,
            name: comm.into(),
        }],
        zones: ["DMA", "Normal", "HighMem"]
            .iter()
            .zip([(0, 0x1000), (0x1000, 0x38000), (0x38000, end_pfn)])
            .map(|(name, (start_pfn, end_pfn))| MapZone {
                name: name.to_string(),
                start_pfn,
                end_pfn,
                managed: end_pfn - start_pfn,
                free: 0,
                nr_free: vec![1; 11],
            })
            .collect(),
        cells,
        page_offset: 0xc000_0000,
        regions: vec![MapRegion {
            name: "vmalloc".into(),
            start: 0xf880_0000,
            end: 0xff9f_e000,
            mapped: 0,
            vtop: "walk".into(),
            links: links.clone(),
        }],
        vmalloc: (0..MAX_AREAS as u64)
            .map(|i| MapArea {
                start: 0xf880_0000 + 2 * i * PAGE,
                end: 0xf880_0000 + (2 * i + 2) * PAGE,
                caller: caller.into(),
                nr_pages: 1,
                lazy: false,
                guard: true,
                frames: 1,
                links: links.clone(),
                vtop: "walk".into(),
            })
            .collect(),
        vmalloc_more: 5,
        pkmap: MapPkmap {
            base: 0xffa0_0000,
            nr_slots: 1024,
            last_pkmap_nr: 0,
            maps: 0,
            wraps: 0,
            flushes: 0,
            in_use: 1024,
            unused_mapped: 0,
            slots: (0..1024).map(slot).collect(),
        },
        fixmap: MapFixmap {
            start: 0xfff7_e000,
            top: 0xffff_f000,
            cpus: (0..8)
                .map(|cpu| MapLocalCpu {
                    cpu,
                    slots: (0..MAX_LOCAL_SLOTS).map(slot).collect(),
                })
                .collect(),
        },
        processes: (0..MAX_PROCESSES as u32)
            .map(|pid| MapProcess {
                pid,
                comm: comm.into(),
                state: "running".into(),
                cpu: Some(0),
                pgd: 0x1000,
                rss: 1,
                map_count: MAX_VMAS as u32,
                vmas: (0..MAX_VMAS as u64)
                    .map(|i| MapVma {
                        start: i << 24,
                        end: (i << 24) + PAGE,
                        perms: "rw-p".into(),
                        kind: comm.into(),
                        frames: 1,
                        links: links.clone(),
                        vtop: "walk".into(),
                    })
                    .collect(),
            })
            .collect(),
        anomalies: vec![caller.into()],
    }
}

/// From 512 MiB to 64 GiB the physical view has at most MAX_CELLS cells
/// of a power-of-two number of frames.
#[test]
fn cells_stay_under_the_cap() {
    assert_eq!(frames_per_cell((512 << 20) / PAGE), 32);
    assert_eq!(frames_per_cell((8 << 30) / PAGE), 512);
    for gib in [1u64, 2, 3, 5, 8, 17, 64] {
        let end = (gib << 30) / PAGE;
        let fpc = frames_per_cell(end);
        assert!(fpc.is_power_of_two());
        assert!(end.div_ceil(fpc) <= MAX_CELLS, "{gib} GiB");
    }
    assert_eq!(frames_per_cell(0), 1);
}

#[test]
fn links_merge_into_ranges_and_stop_at_the_cap() {
    let mut links = Vec::new();
    for pfn in [5, 6, 7, 9, 8, 1] {
        link(&mut links, pfn, pfn);
    }
    assert_eq!(links, vec![(1, 1), (5, 9)]);
    // A 2 MiB page over both, and one that touches the last.
    link(&mut links, 0, 511);
    link(&mut links, 512, 1023);
    assert_eq!(links, vec![(0, 1023)]);
    for pfn in (2000..10_000).step_by(2) {
        link(&mut links, pfn, pfn);
    }
    assert_eq!(links.len(), MAX_LINKS);
    // Past the cap, a range that joins one still widens it.
    link(&mut links, 1024, 1500);
    assert_eq!(links[0], (0, 1500));
    assert_eq!(links.len(), MAX_LINKS);
}

/// Zoomed in, the physical view shows single frames; memory too
/// fragmented to list so falls back to pieces of 2, 4, ... frames, each
/// owned as most of its frames are, and the list stays under MAX_RUNS.
#[test]
fn the_finest_runs_are_single_frames_up_to_the_cap() {
    let (free, slab) = (Owner::Free { order: 2 }, Owner::Slab { cache: 3 });
    let mut owner = vec![free; 1 << 12];
    owner[7] = slab;
    owner[8] = slab;
    let runs = frame_runs(&owner);
    assert_eq!(runs.frames_per_piece, 1);
    assert_eq!(runs.owners, vec![free, slab]);
    assert_eq!(runs.runs, vec![(0, 0), (7, 1), (9, 0)]);

    // 16 GiB of frames, owners alternating every frame, then every 3.
    let end = (16u64 << 30) / PAGE;
    let mut owner: Vec<Owner> = (0..end)
        .map(|pfn| if pfn % 2 == 0 { free } else { slab })
        .collect();
    for (pfn, o) in owner.iter_mut().enumerate().skip(1 << 20) {
        *o = if pfn % 6 < 4 { free } else { slab };
    }
    let runs = frame_runs(&owner);
    assert!(runs.runs.len() <= MAX_RUNS, "{}", runs.runs.len());
    assert!(runs.frames_per_piece.is_power_of_two() && runs.frames_per_piece > 1);
    assert!(runs
        .runs
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
    assert!(runs.frames_per_piece <= frames_per_cell(end));
    assert!(frame_runs(&[]).runs.is_empty());
}

/// Slab frames are named by their cache, as slabinfo names it.
#[test]
fn slab_frames_are_labelled_by_cache_name() {
    let m = full_map("vmalloc_test", "kmalloc-64");
    assert_eq!(m.label(Owner::Slab { cache: 1 }), "slab kmalloc-64");
    assert_eq!(
        m.label(Owner::Slab { cache: 9 }),
        "slab, cache id 9 (no live cache)"
    );
    assert_eq!(
        m.label(Owner::Slab {
            cache: mm::slub::LARGE_KMALLOC
        }),
        "large kmalloc"
    );
    assert!(draw::html(&m, false).contains("slab kmalloc-64"));
}

/// A caller or command name from the guest is text, never markup.
#[test]
fn guest_strings_cannot_inject_markup() {
    let m = full_map(
        "<script>alert(1)</script>\"'&",
        "</text><img src=x onerror=alert(1)>",
    );
    for page in [draw::html(&m, true), draw::svg(&m), draw::fragment(&m)] {
        assert!(!page.contains("<script>alert"), "unescaped caller");
        assert!(!page.contains("<img"), "unescaped comm");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
    }
    let page = draw::html(&m, false);
    assert_eq!(
        page.matches("<script>").count(),
        1,
        "only the page's own script"
    );
    // The frames' data: a cache name cannot end its element.
    let m = full_map("a", "</script><script>alert(1)</script>");
    let page = draw::html(&m, false);
    assert!(!page.contains("alert(1)</script>"));
    assert_eq!(page.matches("</script>").count(), 2);
}

/// The page names no other server: no CDN, no external resource.
#[test]
fn the_page_is_self_contained() {
    let page = draw::html(&full_map("vmalloc_test", "demo"), true);
    let outside: Vec<&str> = page
        .split("http")
        .skip(1)
        .filter(|rest| !rest.starts_with("://www.w3.org/2000/svg\"") && !rest.starts_with("-equiv"))
        .collect();
    assert!(outside.is_empty(), "{:?}", &outside[..outside.len().min(3)]);
    assert!(!page.contains(" src="));
    assert!(page.contains("default-src 'none'"));
}

/// The largest snapshot the caps allow still makes a page of a few MiB.
#[test]
fn the_page_stays_bounded() {
    let m = full_map("vmalloc_test", "demo");
    let page = draw::html(&m, false);
    assert!(page.len() < 16 << 20, "{} bytes", page.len());
    let rects = page.matches("<rect").count();
    assert!(rects < 40_000, "{rects} shapes");
}

/// `map --json` is how a snapshot leaves the monitor: it comes back the
/// same.
#[test]
fn snapshots_round_trip_through_json() {
    let m = full_map("a", "b");
    let text = serde_json::to_string(&m).unwrap();
    let back: MemoryMap = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
}
