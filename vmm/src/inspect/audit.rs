//! `audit`: the double-mapping invariants (research/double_mapping.md),
//! checked over every address space against the VMM's own record of slab
//! frames:
//!
//! - a slab frame is mapped only at its direct-map address;
//! - a page-table page is never mapped writable outside the direct map;
//! - a free frame is not mapped (a stale pkmap slot is a note, not an
//!   error: kunmap leaves it until the next flush_all_zero_pkmaps());
//! - no user-accessible mapping reaches a kernel frame;
//! - every process's kernel quarter is the shared kernel page directory.

use std::fmt::Write as _;
use std::ops::ControlFlow;

use pagetable::{Leaf, PteFlags};
use serde::Serialize;

use super::reader::{Anomalies, Kernel, PfnSet, PkmapState};
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
    let kernel_quarter = k.kernel_quarter(k.swapper);
    for s in &spaces {
        if k.budget_left() == 0 {
            anomalies.push(format!(
                "the inspection budget of {} guest reads ran out; {} and the spaces after it not audited",
                super::READ_BUDGET,
                s.name
            ));
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
        k.each_leaf(
            s.root,
            range,
            |l| {
                if auditor.full() {
                    return ControlFlow::Break(());
                }
                leaves_checked += 1;
                auditor.leaf(l, &s.name);
                ControlFlow::Continue(())
            },
            &mut anomalies,
        );
    }
    findings.truncate(MAX_FINDINGS);
    Ok(Audit {
        errors: findings.iter().filter(|f| f.error).count(),
        findings,
        anomalies,
        spaces: spaces.len(),
        leaves_checked,
        slab_blocks: k.t.slab.len(),
        table_pages: tables.len(),
    })
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
