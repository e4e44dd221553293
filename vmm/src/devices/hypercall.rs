//! The hypercalls (abi::io::hc): a buffered console write, the guest's
//! descriptor, and the slab-frame record. A call's block and arguments come
//! from the guest: a bad one fails the call with an error code, never the
//! VMM.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use abi::boot::CpuStartup;
use abi::io::{hc, hc_ret, Hypercall};
use abi::layout::PAGE_SIZE;
use abi::vmcoreinfo::{Vmcoreinfo, MAX_TEXT};
use log::{info, warn};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

use super::Devices;
use crate::vstate::StartError;

/// The largest console write the VMM accepts in one hypercall.
const CONSOLE_WRITE_MAX: u64 = 1 << 20;
/// Highest order DMAP_PROT accepts (the buddy allocator's MAX_ORDER).
pub const DMAP_MAX_ORDER: u64 = 10;

/// What the VMM keeps about the guest for inspection, owned by the host so
/// the guest cannot rewrite it afterwards: the descriptor (copied when
/// published) and the slab-frame record (Samsung RKP's dmap_prot()).
#[derive(Debug, Default, Clone)]
pub struct HostRecord {
    pub vmcoreinfo: Option<Vec<u8>>,
    /// Head pfn -> order of every frame block the guest tagged as slab.
    pub slab: BTreeMap<u64, u32>,
}

pub type SharedRecord = Arc<Mutex<HostRecord>>;

impl<W: Write> Devices<W> {
    /// Carries out the hypercall whose block is at guest-physical `addr`.
    pub(super) fn hypercall(&mut self, mem: &GuestMemoryMmap, addr: u64) {
        let mut raw = [0u8; core::mem::size_of::<Hypercall>()];
        if mem.read_slice(&mut raw, GuestAddress(addr)).is_err() {
            warn!("hypercall block at {addr:#x} is outside guest RAM");
            return;
        }
        let Ok(mut call) = Hypercall::read_from_bytes(&raw) else {
            return;
        };
        call.ret = match call.nr {
            hc::CONSOLE_WRITE => self.console_write(mem, call.args[0], call.args[1]),
            hc::SET_VMCOREINFO => self.set_vmcoreinfo(mem, call.args[0], call.args[1]),
            hc::DMAP_PROT => self.dmap_prot(mem, call.args[0], call.args[1], call.args[2]),
            hc::START_CPU => self.start_cpu(mem, call.args[0], call.args[1]),
            nr => {
                warn!("unknown hypercall {nr}");
                hc_ret::ENOSYS
            }
        };
        if mem
            .write_slice(call.as_bytes(), GuestAddress(addr))
            .is_err()
        {
            warn!("cannot write the hypercall result at {addr:#x}");
        }
    }

    fn console_write(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u64) -> u64 {
        if len > CONSOLE_WRITE_MAX {
            return hc_ret::EINVAL;
        }
        let mut text = vec![0u8; len as usize];
        if mem.read_slice(&mut text, GuestAddress(addr)).is_err() {
            return hc_ret::EINVAL;
        }
        self.flush_serial();
        // A closed stdout must not kill the guest; the text is dropped.
        let _ = self
            .console
            .write_all(&text)
            .and_then(|_| self.console.flush());
        hc_ret::OK
    }

    /// hc::SET_VMCOREINFO: copies and validates the descriptor.
    fn set_vmcoreinfo(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u64) -> u64 {
        if len == 0 || len > MAX_TEXT as u64 {
            return hc_ret::EINVAL;
        }
        let mut text = vec![0u8; len as usize];
        if mem.read_slice(&mut text, GuestAddress(addr)).is_err() {
            return hc_ret::EINVAL;
        }
        if let Err(e) = Vmcoreinfo::parse(&text) {
            warn!("refused the guest's vmcoreinfo: {e}");
            return hc_ret::EINVAL;
        }
        info!("guest published vmcoreinfo: {len} bytes at {addr:#x}");
        if let Ok(mut r) = self.record.lock() {
            r.vmcoreinfo = Some(text);
        }
        hc_ret::OK
    }

    /// hc::DMAP_PROT(pa, order, 1 = tag / 0 = untag): keeps the host-owned
    /// record of slab frames. The block must be RAM, naturally aligned and
    /// of order <= MAX_ORDER; untagging must match a tagged block.
    fn dmap_prot(&mut self, mem: &GuestMemoryMmap, pa: u64, order: u64, val: u64) -> u64 {
        if order > DMAP_MAX_ORDER || val > 1 {
            return hc_ret::EINVAL;
        }
        let size = PAGE_SIZE << order;
        if !pa.is_multiple_of(size) || !mem.check_range(GuestAddress(pa), size as usize) {
            return hc_ret::EINVAL;
        }
        let pfn = pa / PAGE_SIZE;
        let Ok(mut r) = self.record.lock() else {
            return hc_ret::EINVAL;
        };
        if val == 1 {
            r.slab.insert(pfn, order as u32);
        } else if r.slab.get(&pfn) == Some(&(order as u32)) {
            r.slab.remove(&pfn);
        } else {
            return hc_ret::EINVAL;
        }
        hc_ret::OK
    }

    /// hc::START_CPU(cpu, startup block): starts a waiting vCPU. Its page
    /// tables must be a page of RAM and its addresses canonical, or KVM
    /// would refuse them after the call has succeeded.
    fn start_cpu(&mut self, mem: &GuestMemoryMmap, cpu: u64, block: u64) -> u64 {
        let mut raw = [0u8; core::mem::size_of::<CpuStartup>()];
        if mem.read_slice(&mut raw, GuestAddress(block)).is_err() {
            return hc_ret::EINVAL;
        }
        let Ok(startup) = CpuStartup::read_from_bytes(&raw) else {
            return hc_ret::EINVAL;
        };
        let canonical = |va: u64| ((va as i64) << 16 >> 16) as u64 == va;
        if !startup.cr3.is_multiple_of(PAGE_SIZE)
            || !mem.check_range(GuestAddress(startup.cr3), PAGE_SIZE as usize)
            || !canonical(startup.rip)
            || !canonical(startup.rsp)
        {
            return hc_ret::EINVAL;
        }
        let Some(starter) = self.cpus.as_mut() else {
            return hc_ret::EINVAL;
        };
        match starter.start(cpu, startup) {
            Ok(()) => {
                info!("starting CPU {cpu} at {:#x}", startup.rip);
                hc_ret::OK
            }
            Err(StartError::NoSuchCpu(_)) => hc_ret::EINVAL,
            Err(StartError::AlreadyStarted(_)) => hc_ret::EBUSY,
        }
    }
}
