//! Frames that user address spaces share. Every user mapping of a frame
//! (its address space, address, permissions and VMA) is gathered in one
//! pass over the leaves, keyed by pfn, and the sharing is named as Linux's
//! rules allow it: copy-on-write after fork (every mapping read-only, as
//! copy_present_pte() leaves a private page), MAP_SHARED memory (every
//! mapping in a VM_SHARED VMA), or neither: a double mapping when a
//! private mapping is writable while the frame is mapped elsewhere too.
//! struct page's `_mapcount` says how many user entries the kernel counts
//! for the frame; the mappings found are compared with it.
//!
//! Guest memory is untrusted: the frames tracked and the frame mappings
//! recorded are capped (a huge leaf is many frames, and aliased tables
//! repeat leaves), and each frame keeps [`LISTED`] of its mappings, the
//! first and a private writable one if there is one; the rest are
//! counted.

use std::cmp::Ordering;
use std::collections::HashMap;

use pagetable::{Leaf, PteFlags};
use serde::Serialize;

use super::procs::{Space, TaskInfo, VmaInfo};
use super::reader::{Anomalies, Kernel};
use super::PAGE;

/// User frames tracked per command (2 GiB of user memory): 40 bytes each
/// with the index.
pub const MAX_TRACKED_FRAMES: usize = 1 << 19;
/// Frame mappings recorded per command.
pub const MAX_RECORDED: u64 = 1 << 22;
/// Mappings of one frame kept for listing; the rest are counted.
pub const LISTED: usize = 2;

/// What the mappings of one frame amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// One mapping: nothing shared.
    Single,
    /// Several, every one read-only: copy-on-write after fork.
    Cow,
    /// Several, every one in a VM_SHARED VMA (MAP_SHARED memory).
    VmShared,
    /// Several, and a private one (not VM_SHARED) writable: whoever
    /// writes through it changes what the others see.
    DoubleMapping,
    /// Several, none private and writable, but neither all read-only
    /// nor all VM_SHARED (a shared area and a private one on one frame).
    Mixed,
}

impl Sharing {
    pub fn describe(self) -> &'static str {
        match self {
            Sharing::Single => "not shared",
            Sharing::Cow => "copy-on-write (every mapping read-only)",
            Sharing::VmShared => "VM_SHARED (every mapping in a shared VMA)",
            Sharing::DoubleMapping => {
                "DOUBLE MAPPING (a private mapping is writable while the frame is mapped elsewhere)"
            }
            Sharing::Mixed => "mixed (VM_SHARED and private read-only mappings of one frame)",
        }
    }
}

/// How the mappings found compare with struct page's map count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Agrees,
    /// More mappings than the kernel counts: when the counted ones go,
    /// the frame is freed while still mapped.
    Uncounted,
    /// Fewer than it counts: a leak, or a live guest between the count
    /// and the entry (map_counted() counts first, zap clears first).
    Missing,
    /// The guest does not publish the count, or the search was cut.
    Unknown,
}

/// `found` (at least the real number when `complete` is false) against
/// the map count.
pub fn compare(found: u32, mapcount: Option<u32>, complete: bool) -> Count {
    match mapcount.map(|m| found.cmp(&m)) {
        Some(Ordering::Equal) if complete => Count::Agrees,
        Some(Ordering::Greater) => Count::Uncounted,
        Some(Ordering::Less) if complete => Count::Missing,
        _ => Count::Unknown,
    }
}

/// An address space's owner and VMAs, for naming its mappings.
pub struct SpaceOwner {
    pub name: String,
    pub task: Option<TaskInfo>,
    /// Sorted by start.
    vmas: Vec<VmaInfo>,
}

impl SpaceOwner {
    /// The task whose pgd is `s.root` (the first, when threads share it)
    /// and its VMAs; a space no task owns has none.
    pub fn of(k: &Kernel, s: &Space, bad: &mut Anomalies) -> SpaceOwner {
        let task = k.tasks().ok().and_then(|(tasks, _)| {
            tasks
                .iter()
                .find(|t| t.pgd != 0 && t.pgd == s.root & pagetable::ADDR_MASK)
        });
        let mut vmas = Vec::new();
        if let Some(t) = task {
            match k.vmas(t) {
                Ok((v, b)) => {
                    bad.extend(&b);
                    vmas = v;
                }
                Err(e) => bad.push(format!("PID {}: VMAs: {}", t.pid, e.msg)),
            }
        }
        vmas.sort_unstable_by_key(|v| v.start);
        SpaceOwner {
            name: s.name.clone(),
            task: task.cloned(),
            vmas,
        }
    }

    /// The VMA that covers `va`.
    pub fn vma_at(&self, va: u64) -> Option<&VmaInfo> {
        let i = self.vmas.partition_point(|v| v.start <= va);
        let v = self.vmas.get(i.checked_sub(1)?)?;
        (va < v.end).then_some(v)
    }
}

/// One user mapping of a frame, in 16 bytes: a command may keep
/// [`LISTED`] of them for each of [`MAX_TRACKED_FRAMES`] frames.
#[derive(Clone, Copy, Debug, Default)]
pub struct UserMapping {
    pub va: u64,
    /// The index of its space's [`SpaceOwner`].
    pub space: u32,
    pub writable: bool,
    pub in_vma: bool,
    /// In a VM_SHARED VMA.
    pub vm_shared: bool,
}

/// The user mappings of one frame: how many, of which kinds, and the
/// first one and one more, a private writable one when there is one.
#[derive(Default)]
pub struct FrameUse {
    pub pfn: u64,
    pub mappings: u32,
    writable_private: u32,
    writable: u32,
    in_shared: u32,
    listed: [UserMapping; LISTED],
}

impl FrameUse {
    pub fn add(&mut self, m: UserMapping) {
        let private_writable = |m: &UserMapping| m.writable && !m.vm_shared;
        match self.mappings {
            0 => self.listed[0] = m,
            1 => self.listed[1] = m,
            _ if private_writable(&m) && !self.listed.iter().any(private_writable) => {
                self.listed[1] = m
            }
            _ => {}
        }
        self.mappings = self.mappings.saturating_add(1);
        self.writable += u32::from(m.writable);
        self.writable_private += u32::from(private_writable(&m));
        self.in_shared += u32::from(m.vm_shared);
    }

    /// The mappings kept, the first one first.
    pub fn listed(&self) -> &[UserMapping] {
        &self.listed[..(self.mappings as usize).min(LISTED)]
    }

    pub fn sharing(&self) -> Sharing {
        match self.mappings {
            0 | 1 => Sharing::Single,
            _ if self.writable_private > 0 => Sharing::DoubleMapping,
            _ if self.writable == 0 => Sharing::Cow,
            n if self.in_shared == n => Sharing::VmShared,
            _ => Sharing::Mixed,
        }
    }
}

/// Every user mapping of every frame, from the leaves of the user
/// address spaces.
pub struct UserFrames {
    pub owners: Vec<SpaceOwner>,
    /// pfn -> its entry in `frames`.
    index: HashMap<u64, u32>,
    frames: Vec<FrameUse>,
    recorded: u64,
    /// Why some user mappings were not recorded, if some were not.
    pub cut: Option<String>,
    vm_shared: u64,
}

impl UserFrames {
    pub fn new(k: &Kernel) -> Self {
        UserFrames {
            owners: Vec::new(),
            index: HashMap::new(),
            frames: Vec::new(),
            recorded: 0,
            cut: None,
            vm_shared: k.tasks_layout().map_or(0, |l| l.vm_shared),
        }
    }

    /// Registers user space `s`: the index its leaves go under.
    pub fn add_space(&mut self, k: &Kernel, s: &Space, bad: &mut Anomalies) -> u32 {
        self.owners.push(SpaceOwner::of(k, s, bad));
        self.owners.len() as u32 - 1
    }

    /// The mapping at `va` in space `space`, writable or not.
    pub fn mapping(&self, space: u32, va: u64, writable: bool) -> UserMapping {
        let vma = self.owners.get(space as usize).and_then(|o| o.vma_at(va));
        UserMapping {
            va,
            space,
            writable,
            in_vma: vma.is_some(),
            vm_shared: vma.is_some_and(|v| v.flags & self.vm_shared != 0),
        }
    }

    /// Records each frame of a user leaf of space `space` (leaves without
    /// U are the kernel's business). False once the caps are reached.
    pub fn leaf(&mut self, space: u32, l: &Leaf) -> bool {
        if !l.flags.contains(PteFlags::USER) {
            return true;
        }
        let writable = l.flags.contains(PteFlags::WRITABLE);
        for i in 0..l.size / PAGE {
            if self.recorded >= MAX_RECORDED {
                self.cut = Some(format!("{MAX_RECORDED} user frame mappings recorded"));
                return false;
            }
            let pfn = l.pa / PAGE + i;
            let at = match self.index.get(&pfn) {
                Some(&at) => at as usize,
                None if self.frames.len() >= MAX_TRACKED_FRAMES => {
                    self.cut = Some(format!("{MAX_TRACKED_FRAMES} user frames tracked"));
                    return false;
                }
                None => {
                    self.index.insert(pfn, self.frames.len() as u32);
                    self.frames.push(FrameUse {
                        pfn,
                        ..FrameUse::default()
                    });
                    self.frames.len() - 1
                }
            };
            self.recorded += 1;
            let m = self.mapping(space, l.va + i * PAGE, writable);
            self.frames[at].add(m);
        }
        true
    }

    /// How many frames user space maps.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// The frames, by pfn (the record is done with).
    pub fn into_sorted(mut self) -> (Vec<FrameUse>, Vec<SpaceOwner>) {
        self.frames.sort_unstable_by_key(|f| f.pfn);
        (self.frames, self.owners)
    }
}

/// "0x8049000 (rw, private) in PID 1 (demo)", for finding details.
pub fn describe(owners: &[SpaceOwner], m: &UserMapping) -> String {
    format!(
        "{:#x} ({}, {}) in {}",
        m.va,
        if m.writable { "rw" } else { "ro" },
        match (m.in_vma, m.vm_shared) {
            (false, _) => "in no VMA",
            (true, true) => "VM_SHARED",
            (true, false) => "private",
        },
        owners
            .get(m.space as usize)
            .map_or("?", |o| o.name.as_str())
    )
}

#[cfg(test)]
mod tests;
