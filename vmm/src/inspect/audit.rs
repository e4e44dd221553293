//! `audit`: the double-mapping invariants (research/double_mapping.md),
//! checked over every address space against the VMM's own record of slab
//! frames:
//!
//! - a slab frame is mapped only at its direct-map address;
//! - a page-table page is never mapped writable outside the direct map;
//! - a free frame is not mapped (a stale pkmap slot is a note, not an
//!   error: kunmap leaves it until the next flush_all_zero_pkmaps());
//! - no user-accessible mapping reaches a kernel frame;
//! - every process's kernel quarter is the shared kernel page directory;
//! - a user frame mapped more than once is shared legitimately: every
//!   mapping read-only (copy-on-write after fork) or every one in a
//!   VM_SHARED VMA; a private writable mapping of a frame mapped elsewhere
//!   too is a double mapping;
//! - a user frame has no more user mappings than struct page's map count
//!   (an uncounted mapping outlives the frame); fewer is a note, since a
//!   live guest counts a mapping before it writes the entry and clears an
//!   entry before it uncounts it.

use std::fmt::Write as _;
use std::ops::ControlFlow;

use pagetable::{Leaf, PteFlags};
use serde::Serialize;

use super::reader::{Anomalies, Kernel, PfnSet, PkmapState};
use super::sharing::{compare, describe, Count, Sharing, UserFrames, UserMapping};
use super::translate::size_name;
use super::{anomaly_lines, Render, PAGE, R};

/// Findings listed; the audit stops looking after this many.
pub const MAX_FINDINGS: usize = 1000;

/// One double-mapping finding.
#[derive(Serialize)]
pub struct Finding {
    pub error: bool,
    pub kind: &'static str,
    pub pfn: u64,
    pub va: u64,
    pub space: String,
    pub detail: String,
}

#[derive(Serialize)]
pub struct Audit {
    pub findings: Vec<Finding>,
    pub errors: usize,
    pub anomalies: Anomalies,
    pub spaces: usize,
    pub leaves_checked: u64,
    pub slab_blocks: usize,
    pub table_pages: u64,
    /// Frames user address spaces map, and those of them mapped more
    /// than once legitimately, by kind.
    pub user_frames: u64,
    pub shared_cow: u64,
    pub shared_vm_shared: u64,
}

/// The audit of one address space's leaves.
struct Auditor<'a, 'k> {
    k: &'a Kernel<'k>,
    tables: &'a PfnSet,
    pkmap: Option<&'a PkmapState>,
    findings: &'a mut Vec<Finding>,
}

impl Auditor<'_, '_> {
    fn add(&mut self, f: Finding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        }
    }

    fn full(&self) -> bool {
        self.findings.len() >= MAX_FINDINGS
    }

    /// The checks of one leaf. The pfn loops stop with the findings cap
    /// (a 1 GiB leaf is 256K frames).
    fn leaf(&mut self, l: &Leaf, space: &str) {
        let k = self.k;
        let (lo, hi) = (l.pa / PAGE, (l.pa + l.size) / PAGE);
        let va_of = |pfn: u64| l.va + (pfn * PAGE - l.pa);
        let finding = |error, kind, pfn, va, detail| Finding {
            error,
            kind,
            pfn,
            va,
            space: space.to_string(),
            detail,
        };
        if l.flags.contains(PteFlags::USER) {
            let why = if l.va >= k.virt.page_offset {
                Some("U set on a kernel address".to_string())
            } else {
                k.kernel_frame(lo, self.tables)
            };
            if let Some(why) = why {
                self.add(finding(
                    true,
                    "user-accessible mapping of a kernel frame",
                    lo,
                    l.va,
                    format!("{} leaf with U set: {why}", size_name(l.size)),
                ));
            }
        }
        if k.direct_va(l.pa) == Some(l.va) {
            return;
        }
        let first_slab = k.t.slab.range(..lo).next_back().map_or(lo, |(&p, _)| p);
        for (&head, &order) in k.t.slab.range(first_slab..hi) {
            let end = head + (1u64 << order.min(20));
            for pfn in head.max(lo)..end.min(hi) {
                if self.full() {
                    return;
                }
                self.add(finding(
                    true,
                    "slab frame mapped outside the direct map",
                    pfn,
                    va_of(pfn),
                    format!(
                        "order-{order} slab at pfn {head:#x}; its only legal mapping is {:#x}",
                        k.virt.page_offset.wrapping_add(pfn * PAGE)
                    ),
                ));
            }
        }
        if l.flags.contains(PteFlags::WRITABLE) {
            for pfn in self.tables.range(lo..hi).take(MAX_FINDINGS) {
                self.add(finding(
                    true,
                    "page-table page mapped writable outside the direct map",
                    pfn,
                    va_of(pfn),
                    String::new(),
                ));
            }
        }
        let Ok(free) = k.free_blocks() else { return };
        for (head, order) in free.overlapping(lo, hi) {
            let end = head + (1u64 << order);
            for pfn in head.max(lo)..end.min(hi) {
                if self.full() {
                    return;
                }
                let va = va_of(pfn);
                let stale_pkmap = self.pkmap.is_some_and(|p| {
                    va >= k.virt.pkmap_base
                        && p.slots
                            .get(((va - k.virt.pkmap_base) / PAGE) as usize)
                            .is_some_and(|&(c, _)| c == 1)
                });
                self.add(finding(
                    !stale_pkmap,
                    "free frame still mapped",
                    pfn,
                    va,
                    if stale_pkmap {
                        "stale pkmap slot (count 1): unmapped lazily at the next flush".into()
                    } else {
                        format!("in a free order-{order} buddy block at pfn {head:#x}")
                    },
                ));
            }
        }
    }
}

pub fn audit(k: &Kernel) -> R<Audit> {
    let mut anomalies = Anomalies::default();
    anomalies.extend(&k.free_blocks()?.anomalies);
    let pkmap = k.pkmap().ok();
    let (spaces, task_bad) = k.spaces();
    anomalies.extend(&task_bad);
    // The table scan and the leaf walks share the command's one budget:
    // many address spaces sharing huge aliased tables cannot multiply it.
    let mut tables = PfnSet::new(k.ram_end_pfn);
    for s in &spaces {
        k.table_pages(s.root, s.range(k), &mut tables);
    }
    let mut findings = Vec::new();
    let mut leaves_checked = 0u64;
    let mut users = UserFrames::new(k);
    let mut complete = true;
    let kernel_quarter = k.kernel_quarter(k.swapper);
    for s in &spaces {
        if k.budget_left() == 0 {
            anomalies.push(format!(
                "the inspection budget of {} guest reads ran out; {} and the spaces after it not audited",
                super::READ_BUDGET,
                s.name
            ));
            complete = false;
            break;
        }
        // A process's kernel quarter must be swapper's kernel page
        // directory; its own part is the user range.
        let quarter = k.kernel_quarter(s.root);
        if s.user && quarter != kernel_quarter {
            findings.push(Finding {
                error: true,
                kind: "kernel quarter is not the shared kernel page directory",
                pfn: s.root / PAGE,
                va: k.virt.page_offset,
                space: s.name.clone(),
                detail: format!(
                    "PDPT entry for {:#x} maps {quarter:?}, swapper_pg_dir's maps {kernel_quarter:?}",
                    k.virt.page_offset
                ),
            });
        }
        let range = s.range(k);
        let mut auditor = Auditor {
            k,
            tables: &tables,
            pkmap: pkmap.as_ref(),
            findings: &mut findings,
        };
        let user_space = s.user.then(|| users.add_space(k, s, &mut anomalies));
        let sum = k.each_leaf(
            s.root,
            range,
            |l| {
                if auditor.full() {
                    return ControlFlow::Break(());
                }
                leaves_checked += 1;
                auditor.leaf(l, &s.name);
                if let Some(i) = user_space {
                    users.leaf(i, l);
                }
                ControlFlow::Continue(())
            },
            &mut anomalies,
        );
        complete &= !(sum.stopped || sum.truncated);
    }
    if let Some(why) = &users.cut {
        anomalies.push(format!(
            "{why}: the rest of the user mappings not checked for sharing"
        ));
        complete = false;
    }
    let user_frames = users.len() as u64;
    let (shared_cow, shared_vm_shared) = check_sharing(k, users, &tables, complete, &mut findings);
    findings.truncate(MAX_FINDINGS);
    Ok(Audit {
        errors: findings.iter().filter(|f| f.error).count(),
        findings,
        anomalies,
        spaces: spaces.len(),
        leaves_checked,
        slab_blocks: k.t.slab.len(),
        table_pages: tables.len(),
        user_frames,
        shared_cow,
        shared_vm_shared,
    })
}

/// The sharing checks, frame by frame in pfn order, once every user leaf
/// is recorded (`complete`: none was left out). Returns how many frames
/// are shared legitimately by copy-on-write and by VM_SHARED.
fn check_sharing(
    k: &Kernel,
    users: UserFrames,
    tables: &PfnSet,
    complete: bool,
    findings: &mut Vec<Finding>,
) -> (u64, u64) {
    let (mut cow, mut vm_shared) = (0, 0);
    let (frames, owners) = users.into_sorted();
    for fu in &frames {
        let pfn = fu.pfn;
        let page = k.page(pfn).ok();
        let counts = page.map_or_else(
            || "struct page unreadable".to_string(),
            |p| match p.mapcount {
                Some(m) => format!("refcount {}, map count {m}", p.refcount),
                None => format!("refcount {}", p.refcount),
            },
        );
        let listing = || {
            let listed = fu.listed();
            let mut s = listed
                .iter()
                .map(|m| describe(&owners, m))
                .collect::<Vec<_>>()
                .join("; ");
            if listed.len() < fu.mappings as usize {
                s += &format!("; and {} more", fu.mappings as usize - listed.len());
            }
            s
        };
        let space_of = |i: u32| owners.get(i as usize).map_or("?", |o| &o.name).to_string();
        let mut add = |error, kind, m: &UserMapping, detail: String| {
            if findings.len() < MAX_FINDINGS {
                findings.push(Finding {
                    error,
                    kind,
                    pfn,
                    va: m.va,
                    space: space_of(m.space),
                    detail,
                });
            }
        };
        let Some(first) = fu.listed().first() else {
            continue;
        };
        let count = compare(fu.mappings, page.and_then(|p| p.mapcount), complete);
        match count {
            // A frame the allocator counts as free or slab, or the kernel's,
            // has its finding already.
            Count::Uncounted if !already_reported(k, pfn, tables) => add(
                true,
                "user mappings the map count does not count",
                first,
                format!(
                    "{} user mapping(s) found, {counts}: once the counted ones go, the frame is freed while still mapped: {}",
                    fu.mappings,
                    listing()
                ),
            ),
            Count::Missing => add(
                false,
                "map count above the user mappings found",
                first,
                format!(
                    "{} user mapping(s) found, {counts} (a leak, or a live guest between counting a mapping and writing its entry): {}",
                    fu.mappings,
                    listing()
                ),
            ),
            _ => {}
        }
        let legitimate = matches!(count, Count::Agrees | Count::Unknown);
        match fu.sharing() {
            Sharing::DoubleMapping => {
                let writer = fu
                    .listed()
                    .iter()
                    .find(|m| m.writable && !m.vm_shared)
                    .unwrap_or(first);
                add(
                    true,
                    "private writable user frame mapped more than once",
                    writer,
                    format!("mapped {} times, {counts}: {}", fu.mappings, listing()),
                );
            }
            Sharing::Mixed => add(
                false,
                "user frame mapped both VM_SHARED and private",
                first,
                format!("{counts}: {}", listing()),
            ),
            Sharing::Cow if legitimate => cow += 1,
            Sharing::VmShared if legitimate => vm_shared += 1,
            _ => {}
        }
    }
    (cow, vm_shared)
}

/// Whether a frame's user mappings already gave a finding of their own:
/// the allocator counts it free or slab, or it is the kernel's.
fn already_reported(k: &Kernel, pfn: u64, tables: &PfnSet) -> bool {
    k.slab_block(pfn).is_some()
        || k.free_blocks().is_ok_and(|f| f.containing(pfn).is_some())
        || k.kernel_frame(pfn, tables).is_some()
}

impl Render for Audit {
    fn text(&self, s: &mut String) {
        for f in &self.findings {
            let _ = writeln!(
                s,
                "{}: {}: pfn {:#x} at {:#x} in {}{}{}",
                if f.error { "FINDING" } else { "note" },
                f.kind,
                f.pfn,
                f.va,
                f.space,
                if f.detail.is_empty() { "" } else { ": " },
                f.detail
            );
        }
        anomaly_lines(s, &self.anomalies);
        let _ = writeln!(
            s,
            "sharing: {} user frame(s) mapped; shared legitimately: {} by copy-on-write (read-only), {} by VM_SHARED",
            self.user_frames, self.shared_cow, self.shared_vm_shared
        );
        let _ = writeln!(
            s,
            "audit: {} address space(s), {} leaves, {} slab block(s) recorded, {} table pages: {} finding(s), {} note(s)",
            self.spaces,
            self.leaves_checked,
            self.slab_blocks,
            self.table_pages,
            self.errors,
            self.findings.len() - self.errors
        );
    }

    fn status(&self) -> i32 {
        i32::from(self.errors > 0)
    }
}
