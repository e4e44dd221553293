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
//! repeat leaves), and each frame keeps at most [`MAX_LISTED`] of its
//! mappings; the rest are counted.

use std::cmp::Ordering;
use std::collections::HashMap;

use pagetable::{Leaf, PteFlags};
use serde::Serialize;

use super::procs::{Space, TaskInfo, VmaInfo};
use super::reader::{Anomalies, Kernel};
use super::PAGE;

/// User frames tracked per command.
pub const MAX_TRACKED_FRAMES: usize = 1 << 20;
/// Frame mappings recorded per command.
pub const MAX_RECORDED: u64 = 1 << 22;
/// Mappings of one frame kept for listing; the rest are counted.
pub const MAX_LISTED: usize = 8;

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

/// The VMA a user mapping lies in: (start, end, vm_flags).
pub type VmaSpan = (u64, u64, u64);

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

/// One user mapping of a frame.
#[derive(Clone, Copy, Debug)]
pub struct UserMapping {
    /// The index of its space's [`SpaceOwner`].
    pub space: usize,
    pub va: u64,
    /// Effective permissions.
    pub flags: PteFlags,
    pub vma: Option<VmaSpan>,
    pub vm_shared: bool,
}

impl UserMapping {
    pub fn writable(&self) -> bool {
        self.flags.contains(PteFlags::WRITABLE)
    }
}

/// The user mappings of one frame.
#[derive(Default)]
pub struct FrameUse {
    pub mappings: u32,
    pub listed: Vec<UserMapping>,
    writable_private: u32,
    writable: u32,
    in_shared: u32,
}

impl FrameUse {
    pub fn add(&mut self, m: UserMapping) {
        self.mappings = self.mappings.saturating_add(1);
        self.writable += u32::from(m.writable());
        self.writable_private += u32::from(m.writable() && !m.vm_shared);
        self.in_shared += u32::from(m.vm_shared);
        if self.listed.len() < MAX_LISTED {
            self.listed.push(m);
        }
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
    pub frames: HashMap<u64, FrameUse>,
    recorded: u64,
    /// Why some user mappings were not recorded, if some were not.
    pub cut: Option<String>,
    vm_shared: u64,
}

impl UserFrames {
    pub fn new(k: &Kernel) -> Self {
        UserFrames {
            owners: Vec::new(),
            frames: HashMap::new(),
            recorded: 0,
            cut: None,
            vm_shared: k.tasks_layout().map_or(0, |l| l.vm_shared),
        }
    }

    /// Registers user space `s`: the index its leaves go under.
    pub fn add_space(&mut self, k: &Kernel, s: &Space, bad: &mut Anomalies) -> usize {
        self.owners.push(SpaceOwner::of(k, s, bad));
        self.owners.len() - 1
    }

    /// The mapping at `va` in space `space` with `flags`, as it would be
    /// recorded.
    pub fn mapping(&self, space: usize, va: u64, flags: PteFlags) -> UserMapping {
        let vma = self
            .owners
            .get(space)
            .and_then(|o| o.vma_at(va))
            .map(|v| (v.start, v.end, v.flags));
        UserMapping {
            space,
            va,
            flags,
            vma,
            vm_shared: vma.is_some_and(|(_, _, f)| f & self.vm_shared != 0),
        }
    }

    /// Records each frame of a user leaf of space `space` (leaves without
    /// U are the kernel's business). False once the caps are reached.
    pub fn leaf(&mut self, space: usize, l: &Leaf) -> bool {
        if !l.flags.contains(PteFlags::USER) {
            return true;
        }
        let frames = l.size / PAGE;
        for i in 0..frames {
            if self.recorded >= MAX_RECORDED {
                self.cut = Some(format!("{MAX_RECORDED} user frame mappings recorded"));
                return false;
            }
            let pfn = l.pa / PAGE + i;
            if self.frames.len() >= MAX_TRACKED_FRAMES && !self.frames.contains_key(&pfn) {
                self.cut = Some(format!("{MAX_TRACKED_FRAMES} user frames tracked"));
                return false;
            }
            self.recorded += 1;
            let m = self.mapping(space, l.va + i * PAGE, l.flags);
            self.frames.entry(pfn).or_default().add(m);
        }
        true
    }

    /// The tracked frames, ascending.
    pub fn pfns(&self) -> Vec<u64> {
        let mut pfns: Vec<u64> = self.frames.keys().copied().collect();
        pfns.sort_unstable();
        pfns
    }

    /// "0x8049000 rw private in PID 1 (demo)", for finding details.
    pub fn describe(&self, m: &UserMapping) -> String {
        format!(
            "{:#x} {} {} in {}",
            m.va,
            if m.writable() { "rw" } else { "ro" },
            match (m.vma, m.vm_shared) {
                (None, _) => "in no VMA",
                (Some(_), true) => "VM_SHARED",
                (Some(_), false) => "private",
            },
            self.owners.get(m.space).map_or("?", |o| o.name.as_str())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(space: usize, writable: bool, vm_shared: bool) -> UserMapping {
        let mut flags = PteFlags::PRESENT | PteFlags::USER;
        if writable {
            flags |= PteFlags::WRITABLE;
        }
        UserMapping {
            space,
            va: 0x0804_8000,
            flags,
            vma: Some((0x0804_8000, 0x0804_9000, 0)),
            vm_shared,
        }
    }

    fn sharing(maps: &[(bool, bool)]) -> Sharing {
        let mut f = FrameUse::default();
        for (i, &(w, s)) in maps.iter().enumerate() {
            f.add(mapping(i, w, s));
        }
        f.sharing()
    }

    #[test]
    fn sharing_is_named_by_the_mappings_permissions_and_vmas() {
        assert_eq!(sharing(&[(true, false)]), Sharing::Single);
        assert_eq!(sharing(&[(false, false), (false, false)]), Sharing::Cow);
        assert_eq!(sharing(&[(true, true), (false, true)]), Sharing::VmShared);
        assert_eq!(sharing(&[(true, true), (true, true)]), Sharing::VmShared);
        // A private writable mapping and any other: a double mapping.
        assert_eq!(
            sharing(&[(true, false), (false, false)]),
            Sharing::DoubleMapping
        );
        assert_eq!(
            sharing(&[(true, false), (true, true)]),
            Sharing::DoubleMapping
        );
        assert_eq!(sharing(&[(true, true), (false, false)]), Sharing::Mixed);
    }

    #[test]
    fn counts_compare_only_what_a_complete_search_can_tell() {
        assert_eq!(compare(2, Some(2), true), Count::Agrees);
        assert_eq!(compare(2, Some(2), false), Count::Unknown);
        // Found is a lower bound: more than counted is wrong even when
        // the search was cut; fewer says nothing then.
        assert_eq!(compare(3, Some(2), false), Count::Uncounted);
        assert_eq!(compare(1, Some(2), true), Count::Missing);
        assert_eq!(compare(1, Some(2), false), Count::Unknown);
        assert_eq!(compare(2, None, true), Count::Unknown);
    }

    #[test]
    fn a_frame_lists_a_bounded_number_of_mappings() {
        let mut f = FrameUse::default();
        for i in 0..10 * MAX_LISTED {
            f.add(mapping(i, false, false));
        }
        assert_eq!(f.mappings as usize, 10 * MAX_LISTED);
        assert_eq!(f.listed.len(), MAX_LISTED);
        assert_eq!(f.sharing(), Sharing::Cow);
    }
}
