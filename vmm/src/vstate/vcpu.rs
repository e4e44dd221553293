//! The vCPUs: one thread each, a state machine driven by events
//! (Firecracker's vstate/vcpu).
//!
//! | state   | event            | next state, and what is done                |
//! |---------|------------------|---------------------------------------------|
//! | Waiting | Start(startup)   | Running: registers set, made runnable       |
//! | Waiting | Pause(epoch)     | Paused(epoch), then Waiting again on Resume |
//! | Running | port I/O exit    | Running: the device answers                 |
//! | Running | exit port, crash | Exited: the outcome is reported             |
//! | Running | Pause(epoch)     | Paused(epoch): registers read and published |
//! | Paused  | Translate        | Paused: KVM_TRANSLATE of each address       |
//! | Paused  | Resume           | Running                                     |
//! | any     | Stop             | Exited: `Outcome::Stopped`, with registers  |
//!
//! Every vCPU but the first starts Waiting, outside KVM_RUN, until the
//! kernel starts it (hypercall START_CPU, through [`CpuStarter`]).
//! Events come on the vCPU's channel. A Running vCPU is kicked out of
//! KVM_RUN to take them by a signal whose handler sets its
//! `kvm_run.immediate_exit`: a kick that lands while the thread is outside
//! KVM_RUN makes the next KVM_RUN return at once, so no kick is lost and
//! none needs repeating, and KVM completes a pending port read first, so
//! the published registers are the guest's between two instructions.
//!
//! [`Vcpus`] drives them all: pauses are counted (each monitor command
//! holds one, and `stop` one more), the first pause stops every vCPU and
//! the last release resumes them; [`Vcpus::wait`] ends the run when the
//! first vCPU ends, or at the timeout.

use std::cell::Cell;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use abi::boot::CpuStartup;
use kvm_bindings::{kvm_mp_state, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{VcpuExit, VcpuFd};
use log::{debug, info};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use super::{Regs, VmError};
use crate::boot;
use crate::devices::{Bus, IoAction};

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The guest wrote its status to the exit port.
    Exited(u32),
    /// The VMM stopped the guest (`--timeout`).
    Stopped(Regs),
    /// The guest stopped in a way the VMM does not handle (triple fault,
    /// HLT with nothing to wake it, MMIO, an entry failure...).
    Crashed { reason: String, regs: Regs },
}

/// What a vCPU is doing, as its thread publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started yet: waits for its startup outside KVM_RUN.
    Waiting,
    Running,
    /// Parked for the pause of this epoch.
    Paused(u64),
    Exited,
}

/// What the VMM asks of a vCPU.
enum Event {
    Start(CpuStartup),
    Pause(u64),
    Resume,
    /// KVM_TRANSLATE each address (the vCPU is paused).
    Translate(Vec<u64>, Sender<Translated>),
    Stop,
}

/// Each address's physical address (None: not mapped), and how long the
/// ioctls took.
pub type Translated = (Vec<Option<u64>>, Duration);

#[derive(Debug, Error)]
pub enum PauseError {
    #[error("the vCPU did not stop within {0:?}")]
    NotStopped(Duration),
}

/// A vCPU's state and its registers (when paused or exited).
#[derive(Default)]
struct Published {
    state: Mutex<Snapshot>,
    changed: Condvar,
}

#[derive(Clone, Copy)]
struct Snapshot {
    state: State,
    regs: Option<Regs>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            state: State::Running,
            regs: None,
        }
    }
}

impl Published {
    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `state`, and `regs` if KVM gave them.
    fn set(&self, state: State, regs: Option<Regs>) {
        let mut s = self.lock();
        s.state = state;
        if regs.is_some() {
            s.regs = regs;
        }
        self.changed.notify_all();
    }
}

/// The VMM's side of one vCPU thread.
struct Handle {
    events: Sender<Event>,
    published: Arc<Published>,
    /// The thread, to kick. Valid while its state is not Exited: the
    /// thread publishes Exited before it ends, so it is never joined
    /// before that.
    thread: libc::pthread_t,
}

impl Handle {
    /// Sends `event`, and kicks a running vCPU out of KVM_RUN to take it
    /// (a paused one is waiting for it; one that publishes Running after
    /// this looks at its events once more before it enters KVM_RUN).
    fn send(&self, event: Event) {
        let s = self.published.lock();
        if s.state == State::Exited || self.events.send(event).is_err() {
            return;
        }
        if s.state == State::Running {
            // SAFETY: the thread has not published Exited (checked under
            // the lock it publishes with), so it has not been joined and
            // `thread` names it. SIGRTMIN's handler is `kick`.
            unsafe { libc::pthread_kill(self.thread, SIGRTMIN()) };
        }
    }

    /// Waits until the vCPU is paused for `epoch` or has exited, until
    /// `deadline`; its registers, if KVM gave them.
    fn wait_paused(&self, epoch: u64, deadline: Instant) -> Result<Option<Regs>, ()> {
        let mut s = self.published.lock();
        loop {
            match s.state {
                State::Paused(e) if e >= epoch => return Ok(s.regs),
                State::Exited => return Ok(s.regs),
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(());
            }
            s = self
                .published
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Pause holders, and the epoch of the current pause.
#[derive(Default)]
struct Pauses {
    holders: u32,
    epoch: u64,
}

/// The run's end: each vCPU's outcome as it exits, and the threads.
struct Ending {
    outcomes: Receiver<(usize, Outcome)>,
    threads: Vec<JoinHandle<()>>,
}

/// Every vCPU of the VM.
pub struct Vcpus {
    handles: Vec<Handle>,
    pauses: Mutex<Pauses>,
    ending: Mutex<Option<Ending>>,
    bus: Bus,
}

/// Holds every vCPU paused; dropping it lets them run again (when no
/// other pause is held).
pub struct Paused {
    vcpus: Arc<Vcpus>,
    /// The registers of each vCPU KVM gave them for.
    pub regs: Vec<Regs>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.vcpus.release();
    }
}

impl Paused {
    /// KVM_TRANSLATE of each address on vCPU `cpu`. None if it has exited.
    pub fn translate(&self, cpu: usize, vas: Vec<u64>) -> Option<Translated> {
        let (tx, rx) = mpsc::channel();
        let handle = self.vcpus.handles.get(cpu)?;
        handle.send(Event::Translate(vas, tx));
        rx.recv().ok()
    }
}

impl Vcpus {
    /// Starts a thread for each vCPU; the first runs, the others wait for
    /// the kernel to start them through `bus`'s [`CpuStarter`]. They run
    /// until [`Vcpus::wait`] ends the run. Port I/O goes to `bus`.
    pub fn start(fds: Vec<VcpuFd>, mem: &GuestMemoryMmap, bus: Bus) -> Result<Arc<Self>, VmError> {
        register_signal_handler(SIGRTMIN(), kick).map_err(VmError::KickHandler)?;
        let (done, outcomes) = mpsc::channel();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        let inboxes: Vec<_> = fds.iter().map(|_| mpsc::channel()).collect();
        let waiting = inboxes
            .iter()
            .skip(1)
            .map(|(events, _)| events.clone())
            .collect();
        bus.lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_cpu_starter(CpuStarter::new(waiting));
        for (index, (fd, (events, inbox))) in fds.into_iter().zip(inboxes).enumerate() {
            let published = Arc::new(Published::default());
            if index > 0 {
                published.set(State::Waiting, None);
            }
            let vcpu = VcpuThread {
                fd,
                mem: mem.clone(),
                bus: bus.clone(),
                inbox,
                published: published.clone(),
                started: index == 0,
            };
            let done = done.clone();
            let thread = thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    let outcome = vcpu.run();
                    let _ = done.send((index, outcome));
                })
                .map_err(VmError::Thread)?;
            handles.push(Handle {
                events,
                published,
                thread: std::os::unix::thread::JoinHandleExt::as_pthread_t(&thread),
            });
            threads.push(thread);
        }
        Ok(Arc::new(Vcpus {
            handles,
            pauses: Mutex::default(),
            ending: Mutex::new(Some(Ending { outcomes, threads })),
            bus,
        }))
    }

    /// Waits for the guest to end: the first vCPU to end decides, the
    /// others are stopped. At `timeout` every vCPU is stopped.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Outcome, VmError> {
        let Some(Ending { outcomes, threads }) = self.lock_ending().take() else {
            return Err(VmError::ThreadDied);
        };
        let first = match timeout {
            None => outcomes.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(limit) => outcomes.recv_timeout(limit),
        };
        self.stop_all();
        let first = match first {
            Ok((_, outcome)) => Some(outcome),
            Err(RecvTimeoutError::Timeout) => outcomes.recv().ok().map(|(_, o)| o),
            Err(RecvTimeoutError::Disconnected) => None,
        };
        for t in threads {
            let _ = t.join();
        }
        // A thread that panicked did not say it ended: nothing may kick
        // it now that it is joined.
        for h in &self.handles {
            let regs = h.published.lock().regs;
            h.published.set(State::Exited, regs);
        }
        self.bus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush_serial();
        debug!("outcome: {first:?}");
        first.ok_or(VmError::ThreadDied)
    }

    fn lock_ending(&self) -> MutexGuard<'_, Option<Ending>> {
        self.ending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pauses(&self) -> MutexGuard<'_, Pauses> {
        self.pauses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pauses every vCPU (or finds them paused or exited) and returns
    /// their registers. Gives up after `limit` (a vCPU stuck in the host).
    pub fn pause(self: &Arc<Self>, limit: Duration) -> Result<Paused, PauseError> {
        let deadline = Instant::now() + limit;
        let epoch = {
            let mut p = self.lock_pauses();
            p.holders += 1;
            if p.holders == 1 {
                p.epoch += 1;
                for h in &self.handles {
                    h.send(Event::Pause(p.epoch));
                }
            }
            p.epoch
        };
        let mut regs = Vec::new();
        for h in &self.handles {
            match h.wait_paused(epoch, deadline) {
                Ok(r) => regs.extend(r),
                Err(()) => {
                    self.release();
                    return Err(PauseError::NotStopped(limit));
                }
            }
        }
        Ok(Paused {
            vcpus: self.clone(),
            regs,
        })
    }

    /// Drops one pause; the last lets the vCPUs run.
    fn release(&self) {
        let mut p = self.lock_pauses();
        p.holders = p.holders.saturating_sub(1);
        if p.holders == 0 {
            for h in &self.handles {
                h.send(Event::Resume);
            }
        }
    }

    /// Ends every vCPU's run, paused or not.
    fn stop_all(&self) {
        for h in &self.handles {
            h.send(Event::Stop);
        }
    }

    /// Each vCPU's last published registers (after the run, its final ones).
    pub fn last_regs(&self) -> Vec<Regs> {
        self.handles
            .iter()
            .filter_map(|h| h.published.lock().regs)
            .collect()
    }
}

/// Why a CPU could not be started.
#[derive(Debug, PartialEq, Eq, Error)]
pub enum StartError {
    #[error("there is no CPU {0} waiting to start")]
    NoSuchCpu(u64),
    #[error("CPU {0} has started already")]
    AlreadyStarted(u64),
}

/// Starts the vCPUs that wait (hypercall START_CPU), each once.
pub struct CpuStarter {
    /// The inbox of each vCPU but the boot CPU, None once started.
    waiting: Vec<Option<Sender<Event>>>,
}

impl CpuStarter {
    fn new(waiting: Vec<Sender<Event>>) -> Self {
        CpuStarter {
            waiting: waiting.into_iter().map(Some).collect(),
        }
    }

    /// Starts CPU `cpu` (1 or more) with `startup`, which the caller has
    /// checked against guest RAM.
    pub fn start(&mut self, cpu: u64, startup: CpuStartup) -> Result<(), StartError> {
        let slot = usize::try_from(cpu)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.waiting.get_mut(i))
            .ok_or(StartError::NoSuchCpu(cpu))?;
        let inbox = slot.take().ok_or(StartError::AlreadyStarted(cpu))?;
        // A vCPU that has ended no longer listens: nothing to start.
        let _ = inbox.send(Event::Start(startup));
        Ok(())
    }
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit` byte; null outside vCPU threads.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal's handler: the next KVM_RUN, or the current one,
/// returns EINTR.
extern "C" fn kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let flag = IMMEDIATE_EXIT.with(Cell::get);
    if !flag.is_null() {
        // SAFETY: the vCPU thread set the pointer to its own kvm_run
        // mapping, which lives as long as its VcpuFd, and clears it before
        // the VcpuFd goes; a signal runs on that same thread. A volatile
        // byte store is async-signal-safe.
        unsafe { flag.write_volatile(1) };
    }
}

/// A vCPU thread's own state.
struct VcpuThread {
    fd: VcpuFd,
    mem: GuestMemoryMmap,
    bus: Bus,
    inbox: Receiver<Event>,
    published: Arc<Published>,
    /// Whether the kernel has started it (the boot CPU always has).
    started: bool,
}

impl VcpuThread {
    fn run(mut self) -> Outcome {
        IMMEDIATE_EXIT.with(|p| p.set(&mut self.fd.get_kvm_run().immediate_exit));
        // Events sent before the pointer was set were not kicked for.
        let mut outcome = self.take_events();
        let mut exits: u64 = 0;
        let outcome = loop {
            if let Some(outcome) = outcome {
                break outcome;
            }
            exits += 1;
            outcome = self.step();
        };
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
        self.published.set(State::Exited, Regs::read(&self.fd));
        info!("vCPU stopped after {exits} exits");
        outcome
    }

    /// One KVM_RUN and what follows it; the outcome once the vCPU ends.
    fn step(&mut self) -> Option<Outcome> {
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                IMMEDIATE_EXIT.with(|p| {
                    // SAFETY: the pointer set in `run`, to this thread's
                    // live kvm_run; the kick handler only ever stores 1.
                    unsafe { p.get().write_volatile(0) }
                });
                return self.take_events();
            }
            Err(e) => {
                return Some(Outcome::Crashed {
                    reason: format!("KVM_RUN failed: {e}"),
                    regs: Regs::read(&self.fd).unwrap_or_default(),
                })
            }
        };
        let triple_fault = matches!(exit, VcpuExit::Shutdown);
        let mut bus = self.bus.lock().unwrap_or_else(|e| e.into_inner());
        let mut reason = match exit {
            VcpuExit::IoOut(port, data) => match bus.port_out(&self.mem, port, data) {
                IoAction::Continue => return None,
                IoAction::Exit(status) => return Some(Outcome::Exited(status)),
            },
            VcpuExit::IoIn(port, data) => {
                bus.port_in(port, data);
                return None;
            }
            VcpuExit::Shutdown => "the guest shut down (triple fault)".to_string(),
            VcpuExit::Hlt => "the guest halted without reporting an exit status".to_string(),
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
        drop(bus);
        let regs = Regs::read(&self.fd).unwrap_or_default();
        if triple_fault && regs.is_reset_state() {
            reason.push_str("; registers not available: KVM reset the vCPU before reporting the triple fault (as on AMD)");
        }
        Some(Outcome::Crashed { reason, regs })
    }

    /// Takes the events that came; while paused, waits for more. The
    /// outcome if one was Stop.
    fn take_events(&mut self) -> Option<Outcome> {
        let mut paused = false;
        loop {
            let event = if paused || !self.started {
                self.inbox.recv().unwrap_or(Event::Stop)
            } else {
                match self.inbox.try_recv() {
                    Ok(event) => event,
                    Err(TryRecvError::Empty) => return None,
                    Err(TryRecvError::Disconnected) => Event::Stop,
                }
            };
            match event {
                Event::Pause(epoch) => {
                    paused = true;
                    self.published
                        .set(State::Paused(epoch), Regs::read(&self.fd));
                }
                Event::Resume if paused => {
                    paused = false;
                    let state = if self.started {
                        State::Running
                    } else {
                        State::Waiting
                    };
                    self.published.set(state, None);
                }
                Event::Start(startup) => {
                    if let Err(e) = self.enter(&startup) {
                        return Some(Outcome::Crashed {
                            reason: format!("cannot start the vCPU: {e}"),
                            regs: Regs::read(&self.fd).unwrap_or_default(),
                        });
                    }
                    self.started = true;
                    if !paused {
                        self.published.set(State::Running, None);
                    }
                }
                Event::Resume => {}
                Event::Translate(vas, answer) => {
                    let _ = answer.send(self.translate(&vas));
                }
                Event::Stop => {
                    return Some(Outcome::Stopped(Regs::read(&self.fd).unwrap_or_default()))
                }
            }
        }
    }

    /// Enters long mode with the kernel's startup registers, and lets KVM
    /// run the vCPU (an in-kernel irqchip keeps it waiting for a SIPI).
    fn enter(&self, startup: &CpuStartup) -> Result<(), VmError> {
        let sregs = self
            .fd
            .get_sregs()
            .map_err(super::vm::ioctl("KVM_GET_SREGS"))?;
        self.fd
            .set_sregs(&boot::long_mode_sregs(sregs, startup.cr3))
            .map_err(super::vm::ioctl("KVM_SET_SREGS"))?;
        self.fd
            .set_regs(&boot::startup_regs(startup))
            .map_err(super::vm::ioctl("KVM_SET_REGS"))?;
        let runnable = kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        };
        self.fd
            .set_mp_state(runnable)
            .map_err(super::vm::ioctl("KVM_SET_MP_STATE"))
    }

    fn translate(&self, vas: &[u64]) -> Translated {
        let started = Instant::now();
        let pas = vas
            .iter()
            .map(|&va| {
                self.fd
                    .translate_gva(va)
                    .ok()
                    .filter(|t| t.valid != 0)
                    .map(|t| t.physical_address)
            })
            .collect();
        (pas, started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::{Devices, SharedRecord};
    use crate::loader::LoadedKernel;
    use crate::vstate::{open_kvm, Vm};
    use crate::{boot, memory};

    const ENTRY: u64 = 0xC010_0000;
    const LOOP: u64 = 0x10_0000;

    /// A VM whose vCPUs spin on `jmp .` at the kernel's entry, in long
    /// mode, once started (the first at once).
    fn spinning(cpus: u32) -> (Vm, Arc<Vcpus>, Bus) {
        let kvm = open_kvm("/dev/kvm").unwrap();
        let ram = 64 << 20;
        let mem = memory::allocate(ram).unwrap();
        let kernel = LoadedKernel {
            entry: ENTRY,
            phys: LOOP..LOOP + 0x1000,
        };
        let map = memory::e820_map(ram);
        let machine = boot::Machine {
            ram,
            map: &map,
            cpus: 1,
        };
        boot::write_boot_data(&mem, &machine, &kernel, 0..0, "").unwrap();
        mem.write_slice(&[0xeb, 0xfe], GuestAddress(LOOP)).unwrap();
        let vm = Vm::new(kvm, mem).unwrap();
        let fds = vm.create_vcpus(&kernel, cpus).unwrap();
        let bus = Arc::new(Mutex::new(Devices::new(
            std::io::stdout(),
            SharedRecord::default(),
        )));
        let vcpus = Vcpus::start(fds, &vm.mem, bus.clone()).unwrap();
        (vm, vcpus, bus)
    }

    /// Every pause stops the vCPU at once (no kick is lost), publishes
    /// its registers and serves KVM_TRANSLATE; pauses nest; the run's end
    /// stops a paused vCPU; after it, pauses return the last registers.
    #[test]
    #[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
    fn pause_resume_translate_and_stop() {
        let (_vm, vcpus, _) = spinning(1);
        let limit = Duration::from_secs(30);
        for _ in 0..200 {
            let paused = vcpus.pause(limit).unwrap();
            assert_eq!(paused.regs.len(), 1);
            assert_eq!(paused.regs[0].rip, ENTRY);
            let (pas, _) = paused.translate(0, vec![ENTRY, 0x7fff_0000]).unwrap();
            assert_eq!(pas, vec![Some(LOOP), None]);
        }
        let held = vcpus.pause(limit).unwrap();
        let other = vcpus.pause(limit).unwrap();
        drop(other);
        let state = vcpus.handles[0].published.lock().state;
        assert!(matches!(state, State::Paused(_)), "{state:?}");

        let outcome = vcpus.wait(Some(Duration::from_millis(100))).unwrap();
        let Outcome::Stopped(regs) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(regs.rip, ENTRY);
        assert!(
            held.translate(0, vec![ENTRY]).is_none(),
            "the vCPU has exited"
        );
        drop(held);
        let after = vcpus.pause(limit).unwrap();
        assert_eq!(after.regs, vec![regs]);
        assert_eq!(vcpus.last_regs(), vec![regs]);
    }

    /// The second vCPU waits, reset, until hypercall START_CPU; then it
    /// runs from its startup block in long mode on the given tables. A
    /// CPU starts once; bad numbers and bad blocks are refused.
    #[test]
    #[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
    fn a_waiting_cpu_starts_once_from_its_startup_block() {
        use abi::io::{hc, hc_ret, Hypercall, HYPERCALL_PORT};
        use abi::layout::phys::BOOT_PML4;
        use zerocopy::{FromBytes, IntoBytes};

        let (vm, vcpus, bus) = spinning(2);
        let limit = Duration::from_secs(30);
        let paused = vcpus.pause(limit).unwrap();
        assert!(paused.regs[1].is_reset_state(), "{:x?}", paused.regs[1]);
        drop(paused);

        const BLOCK: u64 = 0x3000;
        const CALL: u64 = 0x4000;
        let call = |cpu: u64, startup: CpuStartup| {
            vm.mem
                .write_slice(startup.as_bytes(), GuestAddress(BLOCK))
                .unwrap();
            let call = Hypercall {
                nr: hc::START_CPU,
                args: [cpu, BLOCK, 0, 0],
                ret: 0,
            };
            vm.mem
                .write_slice(call.as_bytes(), GuestAddress(CALL))
                .unwrap();
            let mut bus = bus.lock().unwrap();
            bus.port_out(&vm.mem, HYPERCALL_PORT, &(CALL as u32).to_le_bytes());
            let mut raw = [0u8; size_of::<Hypercall>()];
            vm.mem.read_slice(&mut raw, GuestAddress(CALL)).unwrap();
            Hypercall::read_from_bytes(&raw).unwrap().ret
        };
        let good = CpuStartup {
            rip: ENTRY,
            rsp: 0xC000_8000,
            cr3: BOOT_PML4,
            arg: 1,
        };
        assert_eq!(
            call(
                1,
                CpuStartup {
                    cr3: BOOT_PML4 + 8,
                    ..good
                }
            ),
            hc_ret::EINVAL
        );
        assert_eq!(
            call(
                1,
                CpuStartup {
                    rip: 1 << 47,
                    ..good
                }
            ),
            hc_ret::EINVAL
        );
        assert_eq!(call(2, good), hc_ret::EINVAL);
        assert_eq!(call(0, good), hc_ret::EINVAL);
        assert_eq!(call(1, good), hc_ret::OK);
        assert_eq!(call(1, good), hc_ret::EBUSY);

        let started = poll(|| {
            let paused = vcpus.pause(limit).unwrap();
            let ap = paused.regs[1];
            (ap.rip == ENTRY).then_some(ap)
        });
        assert_eq!(
            (started.gpr("rsp"), started.gpr("rdi"), started.cr3),
            (0xC000_8000, 1, BOOT_PML4)
        );
        let (pas, _) = vcpus
            .pause(limit)
            .unwrap()
            .translate(1, vec![ENTRY])
            .unwrap();
        assert_eq!(pas, vec![Some(LOOP)]);
        let outcome = vcpus.wait(Some(Duration::from_millis(100))).unwrap();
        assert!(matches!(outcome, Outcome::Stopped(_)), "{outcome:?}");
    }

    /// Polls `f` until it gives a value; only a hang ends it otherwise.
    fn poll<T>(mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "the started vCPU never ran");
            thread::yield_now();
        }
    }
}
