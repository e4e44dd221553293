//! The VM: the KVM device, the VM file descriptor with guest RAM mapped
//! into it and an in-kernel irqchip, and its vCPUs.

use std::ffi::CString;

use kvm_bindings::{kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::errno;

use abi::layout::phys::BOOT_PML4;

use crate::boot;
use crate::loader::LoadedKernel;

#[derive(Debug, Error)]
pub enum VmError {
    #[error("the KVM device path {0:?} has a NUL byte")]
    DevicePath(String),
    #[error("{0} does not exist: this machine has no KVM (load the kvm module, or enable virtualization in the firmware or for this VM)")]
    NoKvm(String),
    #[error("{0} is not accessible to this user: add the user to the device's group (e.g. `sudo usermod -aG kvm $USER`, then log in again) or run as root")]
    KvmDenied(String),
    #[error("cannot open {path}: {source}")]
    KvmOpen {
        path: String,
        #[source]
        source: errno::Error,
    },
    #[error("KVM: {ioctl}: {source}")]
    Ioctl {
        ioctl: &'static str,
        #[source]
        source: errno::Error,
    },
    #[error("KVM: guest memory: {0}")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    KickHandler(#[source] errno::Error),
    #[error("cannot start a vCPU thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("a vCPU thread died")]
    ThreadDied,
}

impl VmError {
    /// Whether KVM is missing or closed to this user (not a failure of a
    /// KVM that works).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            VmError::DevicePath(_)
                | VmError::NoKvm(_)
                | VmError::KvmDenied(_)
                | VmError::KvmOpen { .. }
        )
    }
}

/// An ioctl's error, named.
pub(super) fn ioctl(name: &'static str) -> impl Fn(errno::Error) -> VmError {
    move |source| VmError::Ioctl {
        ioctl: name,
        source,
    }
}

/// Opens the KVM device, explaining the usual reasons it cannot be opened.
pub fn open_kvm(path: &str) -> Result<Kvm, VmError> {
    let cpath = CString::new(path).map_err(|_| VmError::DevicePath(path.into()))?;
    Kvm::new_with_path(&cpath).map_err(|e| match e.errno() {
        libc::ENOENT => VmError::NoKvm(path.into()),
        libc::EACCES | libc::EPERM => VmError::KvmDenied(path.into()),
        _ => VmError::KvmOpen {
            path: path.into(),
            source: e,
        },
    })
}

pub struct Vm {
    pub kvm: Kvm,
    pub fd: VmFd,
    pub mem: GuestMemoryMmap,
}

impl Vm {
    pub fn new(kvm: Kvm, mem: GuestMemoryMmap) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(VmError::GuestMemory)?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                flags: 0,
            };
            // SAFETY: `host..host + len` is a live mapping owned by `mem`,
            // which this Vm keeps alive as long as the VM fd exists.
            unsafe { fd.set_user_memory_region(desc) }
                .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        }
        // Before any vCPU: each then gets a local APIC in the kernel (and
        // HLT no longer exits to the VMM, KVM-NOTES.md).
        fd.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        Ok(Vm { kvm, fd, mem })
    }

    /// Creates `count` vCPUs, vCPU `i` with local APIC ID `i`: the boot
    /// CPU in long mode at the kernel's entry point; the others wait until
    /// the kernel starts them (hypercall START_CPU), as an in-kernel
    /// irqchip leaves every CPU but the first waiting for a SIPI.
    pub fn create_vcpus(&self, kernel: &LoadedKernel, count: u32) -> Result<Vec<VcpuFd>, VmError> {
        let supported = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::new();
        for id in 0..count {
            let vcpu = self
                .fd
                .create_vcpu(u64::from(id))
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            vcpu.set_cpuid2(&cpuid_of(&supported, id))
                .map_err(ioctl("KVM_SET_CPUID2"))?;
            if id == 0 {
                let sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
                vcpu.set_sregs(&boot::long_mode_sregs(sregs, BOOT_PML4))
                    .map_err(ioctl("KVM_SET_SREGS"))?;
                vcpu.set_regs(&boot::entry_regs(kernel))
                    .map_err(ioctl("KVM_SET_REGS"))?;
            }
            vcpus.push(vcpu);
        }
        Ok(vcpus)
    }
}

/// KVM's CPUID with vCPU `apic_id`'s own initial APIC ID (leaf 1) and
/// x2APIC ID (leaves 0xB and 0x1F), as a BIOS-built MADT would list it.
fn cpuid_of(supported: &CpuId, apic_id: u32) -> CpuId {
    let mut cpuid = supported.clone();
    for leaf in cpuid.as_mut_slice() {
        match leaf.function {
            0x1 => leaf.ebx = (leaf.ebx & 0x00ff_ffff) | (apic_id << 24),
            0xb | 0x1f => leaf.edx = apic_id,
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use kvm_bindings::kvm_cpuid_entry2;

    use super::*;

    #[test]
    fn each_vcpu_has_its_own_apic_id() {
        let leaf = |function, index| kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0102_0304,
            edx: 7,
            ..Default::default()
        };
        let supported =
            CpuId::from_entries(&[leaf(0, 0), leaf(1, 0), leaf(0xb, 0), leaf(0xb, 1)]).unwrap();
        let third = cpuid_of(&supported, 2);
        let entries = third.as_slice();
        assert_eq!((entries[0].ebx, entries[0].edx), (0x0102_0304, 7));
        assert_eq!(entries[1].ebx, 0x0202_0304);
        assert_eq!((entries[2].edx, entries[3].edx), (2, 2));
    }
}
