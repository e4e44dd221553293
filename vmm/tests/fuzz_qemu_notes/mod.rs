//! The `qemu_notes` fuzz target's checks, shared with the corpus replay in
//! vmm/tests/fuzz_corpus.rs: the register notes of a QEMU dump (QEMU's CPU
//! note and gdb's NT_PRSTATUS, i386 or x86-64) and the paging mode the
//! registers select. Nothing may panic; a mode is chosen exactly when
//! CR0.PG is set and CR4.LA57 clear, and it is the one CR4.PAE and
//! EFER.LMA name.
//!
//! Input: one byte (bit 0: long mode, bit 1: EFER known), a little-endian
//! u16 length `n`, `n` bytes of QEMU note, then the NT_PRSTATUS note.

use pagetable::{LEGACY_2LEVEL, PAE_3LEVEL, X86_64_4LEVEL};
use vmm::coredump::{merge_cpus, regs_from_prstatus, regs_from_qemu_state};
use vmm::inspect::paging;

pub fn check(data: &[u8]) {
    let [flags, lo, hi, rest @ ..] = data else {
        return;
    };
    let (long_mode, efer_known) = (flags & 1 != 0, flags & 2 != 0);
    let n = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
    let (qemu, prstatus) = rest.split_at(n);
    let qemu: Vec<_> = regs_from_qemu_state(qemu).into_iter().collect();
    let prstatus: Vec<_> = regs_from_prstatus(prstatus, long_mode)
        .into_iter()
        .collect();
    let cpus = merge_cpus(&prstatus, &qemu, long_mode);
    assert_eq!(cpus.len(), qemu.len());
    for r in &cpus {
        assert_eq!(
            r.cr3, qemu[0].cr3,
            "control registers come from QEMU's note"
        );
        let mode = paging(r, efer_known);
        let paged = r.cr0 & (1 << 31) != 0 && r.cr4 & (1 << 12) == 0;
        assert_eq!(mode.is_ok(), paged, "{r:?}");
        if let Ok(cfg) = mode {
            let expected = match (r.cr4 & (1 << 5) != 0, long_mode) {
                (true, true) => X86_64_4LEVEL.name,
                (true, false) => PAE_3LEVEL.name,
                (false, _) => LEGACY_2LEVEL.name,
            };
            assert_eq!(cfg.mode.name, expected);
            assert_eq!(cfg.pse, r.cr4 & (1 << 4) != 0);
            // Without EFER, bit 63 is shown as entries hold it.
            assert!(efer_known || cfg.nxe);
        }
    }
}
