//! The VM: the KVM device, the VM file descriptor with guest RAM mapped
//! into it, and the boot vCPU.

use std::ffi::CString;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::errno;

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
fn ioctl(name: &'static str) -> impl Fn(errno::Error) -> VmError {
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
        Ok(Vm { kvm, fd, mem })
    }

    /// Creates the boot vCPU in long mode at the kernel's entry point.
    pub fn boot_vcpu(&self, kernel: &LoadedKernel) -> Result<VcpuFd, VmError> {
        let vcpu = self.fd.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
        let sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&boot::long_mode_sregs(sregs))
            .map_err(ioctl("KVM_SET_SREGS"))?;
        vcpu.set_regs(&boot::entry_regs(kernel))
            .map_err(ioctl("KVM_SET_REGS"))?;
        Ok(vcpu)
    }
}
