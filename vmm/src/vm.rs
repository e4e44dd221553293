//! The virtual machine: KVM setup, the vCPU run loop and its watchdog.

use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use log::{debug, info};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::errno;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::boot;
use crate::coredump::Regs;
use crate::devices::{Devices, IoAction, SharedRecord};
use crate::error::VmmError;
use crate::loader::LoadedKernel;

/// Opens the KVM device, explaining the usual reasons it cannot be opened.
pub fn open_kvm(path: &str) -> Result<Kvm, VmmError> {
    let cpath =
        CString::new(path).map_err(|_| VmmError::Kvm(format!("bad device path {path:?}")))?;
    Kvm::new_with_path(&cpath).map_err(|e| match e.errno() {
        libc::ENOENT => VmmError::KvmUnavailable(format!(
            "{path} does not exist: this machine has no KVM (load the kvm module, or enable virtualization in the firmware or for this VM)"
        )),
        libc::EACCES | libc::EPERM => VmmError::KvmUnavailable(format!(
            "{path} is not accessible to this user: add the user to the device's group (e.g. `sudo usermod -aG kvm $USER`, then log in again) or run as root"
        )),
        _ => VmmError::KvmUnavailable(format!("cannot open {path}: {e}")),
    })
}

pub struct Vm {
    pub kvm: Kvm,
    pub fd: VmFd,
    pub mem: GuestMemoryMmap,
}

impl Vm {
    pub fn new(kvm: Kvm, mem: GuestMemoryMmap) -> Result<Self, VmmError> {
        let fd = kvm
            .create_vm()
            .map_err(|e| VmmError::Kvm(format!("KVM_CREATE_VM: {e}")))?;
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| VmmError::Kvm(format!("guest memory: {e}")))?;
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
                .map_err(|e| VmmError::Kvm(format!("KVM_SET_USER_MEMORY_REGION: {e}")))?;
        }
        Ok(Vm { kvm, fd, mem })
    }

    /// Creates the boot vCPU in long mode at the kernel's entry point.
    pub fn boot_vcpu(&self, kernel: &LoadedKernel) -> Result<VcpuFd, VmmError> {
        let kvm_err = |what: &str| {
            let what = what.to_string();
            move |e: errno::Error| VmmError::Kvm(format!("{what}: {e}"))
        };
        let vcpu = self.fd.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&boot::long_mode_sregs(sregs))
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&boot::entry_regs(kernel))
            .map_err(kvm_err("KVM_SET_REGS"))?;
        Ok(vcpu)
    }
}

/// The registers a crash report shows.
#[derive(Debug, Clone, Default)]
pub struct CpuState {
    pub rip: u64,
    pub cs_base: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub gprs: [(&'static str, u64); 6],
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl CpuState {
    fn read(vcpu: &VcpuFd) -> Self {
        let (Ok(r), Ok(s)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
            return CpuState::default();
        };
        CpuState {
            rip: r.rip,
            cs_base: s.cs.base,
            rsp: r.rsp,
            rflags: r.rflags,
            gprs: [
                ("rax", r.rax),
                ("rbx", r.rbx),
                ("rcx", r.rcx),
                ("rdx", r.rdx),
                ("rsi", r.rsi),
                ("rdi", r.rdi),
            ],
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        }
    }

    /// Whether these are the registers of a vCPU just reset, not the
    /// guest's: real mode (CR0.PE clear) at the reset vector, CS base
    /// 0xffff0000 and RIP 0xfff0. The guest never runs in real mode (it
    /// enters in long mode), but on AMD, KVM INITs the vCPU when it intercepts the shutdown, before it
    /// reports KVM_EXIT_SHUTDOWN (shutdown_interception() in
    /// arch/x86/kvm/svm/svm.c: the VMCB is undefined after a shutdown).
    pub fn is_reset_state(&self) -> bool {
        self.cr0 & CR0_PE == 0 && self.cs_base == RESET_CS_BASE && self.rip == RESET_RIP
    }
}

const CR0_PE: u64 = 1 << 0;
const RESET_CS_BASE: u64 = 0xffff_0000;
const RESET_RIP: u64 = 0xfff0;

impl fmt::Display for CpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_reset_state() {
            writeln!(f, "  the vCPU's reset state, not the guest's:")?;
        }
        writeln!(
            f,
            "  RIP={:#018x} RSP={:#018x} RFLAGS={:#x}",
            self.rip, self.rsp, self.rflags
        )?;
        write!(f, " ")?;
        for (name, value) in self.gprs {
            write!(f, " {}={:#x}", name.to_uppercase(), value)?;
        }
        writeln!(f)?;
        write!(
            f,
            "  CR0={:#x} CR2={:#x} CR3={:#x} CR4={:#x} EFER={:#x}",
            self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        )
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The guest wrote its status to the exit port.
    Exited(u32),
    /// The watchdog stopped the guest.
    TimedOut(CpuState),
    /// The guest stopped in a way the VMM does not handle (triple fault,
    /// HLT with nothing to wake it, MMIO, an entry failure...).
    Crashed { reason: String, state: CpuState },
}

/// Pausing the vCPU for inspection (QEMU's vm_stop/vm_start for monitor
/// commands). The monitor asks for a pause and kicks the vCPU thread out of
/// KVM_RUN with the same signal the watchdog uses; the vCPU thread parks at
/// the top of its loop, publishes its registers and, while parked, serves
/// KVM_TRANSLATE requests (they need its VcpuFd). When the guest has ended
/// the last registers stay published and pauses return at once.
#[derive(Default)]
pub struct VcpuControl {
    state: Mutex<Ctl>,
    cv: Condvar,
}

#[derive(Default)]
struct Ctl {
    /// Pause holders; the vCPU stays parked while > 0.
    want: u32,
    parked: bool,
    finished: bool,
    /// The run is ending (timeout): the vCPU leaves the parked state even
    /// while pauses are held (a `stop`, a long monitor command).
    abort: bool,
    regs: Option<Regs>,
    /// The vCPU thread, to kick (set while it runs).
    thread: Option<libc::pthread_t>,
    job: Option<Vec<u64>>,
    result: Option<(Vec<Option<u64>>, Duration)>,
}

/// Holds the vCPU parked; dropping it lets the guest run again.
pub struct Paused<'a> {
    ctl: &'a VcpuControl,
    pub regs: Option<Regs>,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let mut s = self.ctl.lock();
        s.want = s.want.saturating_sub(1);
        self.ctl.cv.notify_all();
    }
}

impl VcpuControl {
    fn lock(&self) -> MutexGuard<'_, Ctl> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the vCPU (or finds it stopped) and returns its registers.
    /// Gives up after `limit` (a vCPU stuck in the host).
    pub fn pause(&self, limit: Duration) -> Result<Paused<'_>, String> {
        let deadline = Instant::now() + limit;
        let mut s = self.lock();
        s.want += 1;
        loop {
            if s.parked || s.finished {
                let regs = s.regs;
                drop(s);
                return Ok(Paused { ctl: self, regs });
            }
            if let Some(t) = s.thread {
                // SAFETY: `t` is the vCPU thread, which is alive: it clears
                // `thread` under this lock before it exits. SIGRTMIN has a
                // do-nothing handler installed by `run`.
                unsafe { libc::pthread_kill(t, SIGRTMIN()) };
            }
            if Instant::now() > deadline {
                s.want -= 1;
                return Err("the vCPU did not stop".into());
            }
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(10))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// KVM_TRANSLATE of each address on the parked vCPU, and how long the
    /// ioctls took. None once the guest has ended.
    pub fn translate(
        &self,
        _paused: &Paused,
        vas: Vec<u64>,
    ) -> Option<(Vec<Option<u64>>, Duration)> {
        let mut s = self.lock();
        if s.finished || !s.parked || s.abort {
            return None;
        }
        s.job = Some(vas);
        self.cv.notify_all();
        loop {
            if let Some(r) = s.result.take() {
                return Some(r);
            }
            if s.finished {
                return None;
            }
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Drops a pause whose guard was forgotten (the monitor's `stop`).
    pub fn release(&self) {
        let mut s = self.lock();
        s.want = s.want.saturating_sub(1);
        self.cv.notify_all();
    }

    /// Makes a parked vCPU leave `checkpoint` whatever pauses are held.
    pub fn abort(&self) {
        self.lock().abort = true;
        self.cv.notify_all();
    }

    /// The last published registers (after the guest ended, its final ones).
    pub fn last_regs(&self) -> Option<Regs> {
        self.lock().regs
    }

    /// Called by the vCPU thread between KVM_RUNs.
    fn checkpoint(&self, vcpu: &VcpuFd) {
        let mut s = self.lock();
        if s.want == 0 || s.abort {
            return;
        }
        s.regs = read_regs(vcpu);
        s.parked = true;
        self.cv.notify_all();
        while s.want > 0 && !s.abort {
            if let Some(vas) = s.job.take() {
                let t = Instant::now();
                let out = vas
                    .iter()
                    .map(|&va| {
                        vcpu.translate_gva(va)
                            .ok()
                            .filter(|t| t.valid != 0)
                            .map(|t| t.physical_address)
                    })
                    .collect();
                s.result = Some((out, t.elapsed()));
                self.cv.notify_all();
            }
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.parked = false;
    }

    fn start(&self) {
        // SAFETY: pthread_self has no preconditions.
        self.lock().thread = Some(unsafe { libc::pthread_self() });
    }

    fn finish(&self, vcpu: &VcpuFd) {
        let mut s = self.lock();
        s.regs = read_regs(vcpu);
        s.thread = None;
        s.finished = true;
        self.cv.notify_all();
    }
}

fn read_regs(vcpu: &VcpuFd) -> Option<Regs> {
    Some(Regs::from_kvm(
        &vcpu.get_regs().ok()?,
        &vcpu.get_sregs().ok()?,
    ))
}

/// Runs the vCPU until the guest exits, crashes or the timeout expires.
pub fn run(
    vm: &Vm,
    vcpu: VcpuFd,
    timeout: Option<Duration>,
    ctl: Arc<VcpuControl>,
    record: SharedRecord,
) -> Result<Outcome, VmmError> {
    extern "C" fn kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    // The kick signal only has to interrupt KVM_RUN; its handler does nothing.
    register_signal_handler(SIGRTMIN(), kick)
        .map_err(|e| VmmError::Kvm(format!("signal handler: {e}")))?;

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let mem = vm.mem.clone();
    let vcpu_stop = stop.clone();
    let vcpu_ctl = ctl.clone();
    let handle = thread::Builder::new()
        .name("vcpu0".into())
        .spawn(move || {
            let mut vcpu = vcpu;
            let out = std::io::stdout();
            let devices = Devices::with_record(out.lock(), record);
            vcpu_ctl.start();
            let result = vcpu_loop(&mut vcpu, &mem, &vcpu_stop, devices, &vcpu_ctl);
            vcpu_ctl.finish(&vcpu);
            let _ = tx.send(result);
        })
        .map_err(|e| VmmError::Kvm(format!("cannot start the vCPU thread: {e}")))?;

    let result = match timeout {
        None => rx.recv().ok(),
        Some(limit) => match rx.recv_timeout(limit) {
            Ok(result) => Some(result),
            Err(_) => {
                // Stop the vCPU: the flag ends the loop, the signal pulls it
                // out of KVM_RUN. A signal that lands outside KVM_RUN is lost,
                // so keep kicking until the loop answers.
                stop.store(true, Ordering::SeqCst);
                ctl.abort();
                loop {
                    let _ = handle.kill(SIGRTMIN());
                    match rx.recv_timeout(Duration::from_millis(20)) {
                        Ok(result) => break Some(result),
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                    }
                }
            }
        },
    };
    let _ = handle.join();
    result.unwrap_or_else(|| Err(VmmError::Kvm("the vCPU thread died".into())))
}

fn vcpu_loop<W: Write>(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    stop: &AtomicBool,
    mut devices: Devices<W>,
    ctl: &VcpuControl,
) -> Result<Outcome, VmmError> {
    let mut exits: u64 = 0;
    let outcome = loop {
        ctl.checkpoint(vcpu);
        if stop.load(Ordering::SeqCst) {
            break Outcome::TimedOut(CpuState::read(vcpu));
        }
        exits += 1;
        let action = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => devices.port_out(mem, port, data),
            Ok(VcpuExit::IoIn(port, data)) => {
                devices.port_in(port, data);
                IoAction::Continue
            }
            Ok(exit) => {
                let triple_fault = matches!(exit, VcpuExit::Shutdown);
                let mut reason = match exit {
                    VcpuExit::Shutdown => "the guest shut down (triple fault)".to_string(),
                    VcpuExit::Hlt => {
                        "the guest halted without reporting an exit status".to_string()
                    }
                    VcpuExit::FailEntry(reason, _) => {
                        format!("KVM could not enter the guest (hardware reason {reason:#x})")
                    }
                    VcpuExit::InternalError => {
                        "KVM internal error (an instruction KVM could not emulate)".to_string()
                    }
                    VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _) => {
                        format!("access to unassigned guest-physical address {addr:#x} (no RAM or device there)")
                    }
                    other => format!("unhandled VM exit {other:?}"),
                };
                let state = CpuState::read(vcpu);
                if triple_fault && state.is_reset_state() {
                    reason.push_str("; registers not available: KVM reset the vCPU before reporting the triple fault (as on AMD)");
                }
                devices.flush_serial();
                break Outcome::Crashed { reason, state };
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => {
                devices.flush_serial();
                break Outcome::Crashed {
                    reason: format!("KVM_RUN failed: {e}"),
                    state: CpuState::read(vcpu),
                };
            }
        };
        if let IoAction::Exit(status) = action {
            break Outcome::Exited(status);
        }
    };
    devices.flush_serial();
    info!("vCPU stopped after {exits} exits");
    debug!("outcome: {outcome:?}");
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long-mode guest's registers at a triple fault.
    fn faulting() -> CpuState {
        CpuState {
            rip: 0xC010_2345,
            rsp: 0xC07F_FF00,
            rflags: 0x46,
            cr0: 0x8001_0033,
            cr2: 0xDEAD_B000,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0xD01,
            ..Default::default()
        }
    }

    /// What KVM's INIT leaves (kvm_vcpu_reset(vcpu, true)): real mode at
    /// the reset vector; CR0 keeps CD and NW, so either value is seen.
    fn reset(cr0: u64) -> CpuState {
        CpuState {
            rip: 0xfff0,
            cs_base: 0xffff_0000,
            rflags: 0x2,
            cr0,
            ..Default::default()
        }
    }

    #[test]
    fn reset_state_is_told_from_a_faulting_one() {
        assert!(reset(0x6000_0010).is_reset_state());
        assert!(reset(0x10).is_reset_state());
        assert!(!faulting().is_reset_state());
        assert!(
            !CpuState::default().is_reset_state(),
            "registers that could not be read"
        );
        let protected = CpuState {
            cr0: 0x11,
            ..reset(0x10)
        };
        assert!(!protected.is_reset_state());
        let elsewhere = CpuState {
            rip: 0xfff1,
            ..reset(0x10)
        };
        assert!(!elsewhere.is_reset_state());

        let shown = reset(0x6000_0010).to_string();
        assert!(
            shown.starts_with("  the vCPU's reset state, not the guest's:\n"),
            "{shown}"
        );
        assert!(shown.contains("RIP=0x000000000000fff0"), "{shown}");
        assert!(!faulting().to_string().contains("reset state"));
    }
}
