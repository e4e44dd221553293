//! `bench`: the software page-table walker against KVM_TRANSLATE on the
//! same addresses, and a full `tlb` listing, while the vCPUs are paused.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use pagetable::walk;
use serde::Serialize;

use crate::inspect::{self, Anomalies, Answer, InspectError, Kernel, Query, Render, Target};
use crate::vstate::Paused;

/// Most leaves `bench` samples, and most work it does per measurement.
const BENCH_LEAVES: usize = 2048;
const BENCH_WORK: u64 = 1 << 20;

#[derive(Serialize)]
pub struct Bench {
    pub addresses: usize,
    pub iters: u32,
    pub soft_ns: f64,
    pub kvm_ns: f64,
    pub mismatches: usize,
    pub tlb_ms: f64,
    pub tlb_leaves: usize,
}

impl Render for Bench {
    fn text(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "vtop: {} addresses x {}: software walker {:.0} ns/translation, KVM_TRANSLATE {:.0} ns/translation ({:.1}x); {} disagreement(s)",
            self.addresses,
            self.iters,
            self.soft_ns,
            self.kvm_ns,
            self.kvm_ns / self.soft_ns.max(0.001),
            self.mismatches
        );
        let _ = writeln!(
            s,
            "tlb: full listing ({} leaves) {:.2} ms",
            self.tlb_leaves, self.tlb_ms
        );
    }

    fn status(&self) -> i32 {
        i32::from(self.mismatches != 0)
    }
}

/// Measures on `t`, the paused guest; KVM_TRANSLATE runs on vCPU 0.
pub fn run(paused: &Paused, t: &Target, iters: u32) -> Result<Answer, InspectError> {
    let k = Kernel::new(t)?;
    let root = k.current_root();
    let mut vas = Vec::new();
    k.each_leaf(
        root,
        pagetable::ALL,
        |l| {
            vas.extend([l.va + 0x10, l.va + l.size / 2]);
            if vas.len() >= 2 * BENCH_LEAVES {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
        &mut Anomalies::default(),
    );
    if vas.is_empty() {
        return Err(InspectError::new("bench: nothing is mapped"));
    }
    // iterations x addresses is bounded, whatever --iters says.
    let iters = iters
        .clamp(1, 10_000)
        .min((BENCH_WORK / vas.len() as u64).max(1) as u32);
    let per_translation =
        |total: Duration| total.as_nanos() as f64 / (f64::from(iters) * vas.len() as f64);
    let started = Instant::now();
    let mut soft = Vec::new();
    for _ in 0..iters {
        soft = vas
            .iter()
            .map(|&va| walk(&*t.mem, root, va, &k.cfg).pa())
            .collect();
    }
    let soft_ns = per_translation(started.elapsed());
    let mut kvm_total = Duration::ZERO;
    let mut hw = Vec::new();
    for _ in 0..iters {
        let (r, d) = paused.translate(0, vas.clone()).ok_or_else(|| {
            InspectError::new("bench: the vCPU has exited; KVM_TRANSLATE needs a live vCPU")
        })?;
        kvm_total += d;
        hw = r;
    }
    let kvm_ns = per_translation(kvm_total);
    let mismatches = soft.iter().zip(&hw).filter(|(a, b)| a != b).count();
    let started = Instant::now();
    let tlb = inspect::run(
        t,
        &Query::Tlb {
            pid: None,
            cpu: None,
        },
    )?;
    let Answer::Tlb(listing) = &tlb else {
        return Err(InspectError::new("bench: tlb gave no listing"));
    };
    let leaves = listing.leaves.len();
    // The listing is capped at MAX_LINES; repeat it only while cheap.
    let tlb_iters = iters.min((BENCH_WORK / leaves.max(1) as u64).max(1) as u32);
    for _ in 1..tlb_iters {
        inspect::run(
            t,
            &Query::Tlb {
                pid: None,
                cpu: None,
            },
        )?;
    }
    let tlb_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(tlb_iters);
    Ok(Bench {
        addresses: vas.len(),
        iters,
        soft_ns,
        kvm_ns,
        mismatches,
        tlb_ms,
        tlb_leaves: leaves,
    }
    .into())
}
