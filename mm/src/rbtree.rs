//! An augmented red-black tree of `[start, end)` intervals in a fixed-capacity
//! index arena (no alloc, no unsafe), mirroring lib/rbtree.c plus the
//! augmented callbacks of include/linux/rbtree_augmented.h.
//!
//! Why hand-written: the vmap allocator needs Linux's `subtree_max_size`
//! (RB_DECLARE_CALLBACKS) to find the lowest-address fitting free block in
//! O(log n) (find_vmap_lowest_match), and the later VMA tree reuses the same
//! structure. intrusive-collections' RBTree has no augmentation hook, and
//! BTreeMap (or the `rbtree` crates) need an allocator, which mm/ does not have.
//!
//! Nodes are addressed by `NodeId` (u32 index). Ids stay valid until that node
//! is removed: removal relinks nodes instead of copying payloads, as Linux's
//! rb_erase does. Keys (`start`) are unique; the address queries (`find`,
//! `first_end_after`, `lowest_match`) assume the intervals do not overlap, which
//! holds for vmap areas and VMAs.

use core::fmt;

/// Index of a node in the arena.
pub type NodeId = u32;
/// "No node" (Linux's NULL `rb_node`).
pub const NIL: NodeId = u32::MAX;

/// Per-tree augmentation: the payload type and the summary every node caches
/// for its whole subtree (Linux's RB_DECLARE_CALLBACKS `compute` function).
pub trait Augment {
    /// Payload stored in every node.
    type Value: Copy;
    /// Summary of a subtree, e.g. the largest free block in it.
    type Aug: Copy + PartialEq + fmt::Debug;
    /// Filler for unused arena slots; const so trees can live in statics.
    const EMPTY_VALUE: Self::Value;
    const EMPTY_AUG: Self::Aug;
    /// The summary of a node from its own interval and value and its
    /// children's summaries (`None` for a missing child).
    fn compute(
        start: u64,
        end: u64,
        value: &Self::Value,
        left: Option<Self::Aug>,
        right: Option<Self::Aug>,
    ) -> Self::Aug;
}

/// `subtree_max_size`: the largest `end - start` in the subtree
/// (mirrors compute_subtree_max_size() in mm/vmalloc.c).
pub struct MaxSize;

impl Augment for MaxSize {
    type Value = ();
    type Aug = u64;
    const EMPTY_VALUE: () = ();
    const EMPTY_AUG: u64 = 0;
    #[inline]
    fn compute(start: u64, end: u64, _: &(), left: Option<u64>, right: Option<u64>) -> u64 {
        let own = end - start;
        own.max(left.unwrap_or(0)).max(right.unwrap_or(0))
    }
}

/// One arena slot.
#[repr(C)]
pub struct Node<A: Augment> {
    start: u64,
    end: u64,
    value: A::Value,
    aug: A::Aug,
    left: NodeId,
    right: NodeId,
    parent: NodeId,
    red: bool,
}

impl<A: Augment> Node<A> {
    const EMPTY: Self = Node {
        start: 0,
        end: 0,
        value: A::EMPTY_VALUE,
        aug: A::EMPTY_AUG,
        left: NIL,
        right: NIL,
        parent: NIL,
        red: false,
    };
    #[inline]
    pub fn start(&self) -> u64 {
        self.start
    }
    #[inline]
    pub fn end(&self) -> u64 {
        self.end
    }
    #[inline]
    pub fn value(&self) -> &A::Value {
        &self.value
    }
    /// The cached summary of this node's subtree.
    #[inline]
    pub fn aug(&self) -> A::Aug {
        self.aug
    }
    /// Child and parent links (NIL when absent), for callers that walk the
    /// tree by the summaries themselves (unmapped_area_topdown()).
    #[inline]
    pub fn left(&self) -> NodeId {
        self.left
    }
    #[inline]
    pub fn right(&self) -> NodeId {
        self.right
    }
    #[inline]
    pub fn parent(&self) -> NodeId {
        self.parent
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbError {
    /// Every arena slot is in use.
    Full,
    /// A node with this start already exists.
    Duplicate(NodeId),
}

impl fmt::Display for RbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RbError::Full => f.write_str("rb-tree arena full"),
            RbError::Duplicate(id) => write!(f, "rb-tree key already present (node {id})"),
        }
    }
}

#[repr(C)]
pub struct RbTree<A: Augment, const N: usize> {
    nodes: [Node<A>; N],
    root: NodeId,
    /// Recycled slots, linked through `right`.
    free_head: NodeId,
    /// Slots `fresh..N` have never been used.
    fresh: u32,
    len: u32,
}

impl<A: Augment, const N: usize> Default for RbTree<A, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Augment, const N: usize> RbTree<A, N> {
    pub const fn new() -> Self {
        assert!(N < NIL as usize, "arena too large for u32 ids");
        RbTree {
            nodes: [const { Node::EMPTY }; N],
            root: NIL,
            free_head: NIL,
            fresh: 0,
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[inline]
    pub const fn capacity(&self) -> usize {
        N
    }
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len as usize == N
    }
    #[inline]
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// The node `id` (must be live).
    #[inline]
    pub fn get(&self, id: NodeId) -> &Node<A> {
        &self.nodes[id as usize]
    }

    /// Drops every node in O(1).
    pub fn clear(&mut self) {
        self.root = NIL;
        self.free_head = NIL;
        self.fresh = 0;
        self.len = 0;
    }

    #[inline]
    fn n(&self, id: NodeId) -> &Node<A> {
        &self.nodes[id as usize]
    }
    #[inline]
    fn nm(&mut self, id: NodeId) -> &mut Node<A> {
        &mut self.nodes[id as usize]
    }
    #[inline]
    fn is_red(&self, id: NodeId) -> bool {
        id != NIL && self.n(id).red
    }
    #[inline]
    fn child_aug(&self, id: NodeId) -> Option<A::Aug> {
        if id == NIL {
            None
        } else {
            Some(self.n(id).aug)
        }
    }
    #[inline]
    fn recompute(&self, id: NodeId) -> A::Aug {
        let nd = self.n(id);
        A::compute(
            nd.start,
            nd.end,
            &nd.value,
            self.child_aug(nd.left),
            self.child_aug(nd.right),
        )
    }

    /// Recomputes summaries from `id` to the root; with `early` it stops at
    /// the first unchanged one (mirrors the generated `augment_propagate`).
    fn propagate(&mut self, mut id: NodeId, early: bool) {
        while id != NIL {
            let a = self.recompute(id);
            if early && a == self.n(id).aug {
                break;
            }
            self.nm(id).aug = a;
            id = self.n(id).parent;
        }
    }

    fn replace_child(&mut self, parent: NodeId, old: NodeId, new: NodeId) {
        if parent == NIL {
            self.root = new;
        } else if self.n(parent).left == old {
            self.nm(parent).left = new;
        } else {
            self.nm(parent).right = new;
        }
    }

    /// Rotations keep summaries right the way `augment_rotate` does: the new
    /// subtree top inherits the old top's summary (same node set), and only
    /// the old top is recomputed.
    fn rotate_left(&mut self, x: NodeId) {
        let y = self.n(x).right;
        let yl = self.n(y).left;
        self.nm(x).right = yl;
        if yl != NIL {
            self.nm(yl).parent = x;
        }
        let xp = self.n(x).parent;
        self.nm(y).parent = xp;
        self.replace_child(xp, x, y);
        self.nm(y).left = x;
        self.nm(x).parent = y;
        self.nm(y).aug = self.n(x).aug;
        let a = self.recompute(x);
        self.nm(x).aug = a;
    }

    fn rotate_right(&mut self, x: NodeId) {
        let y = self.n(x).left;
        let yr = self.n(y).right;
        self.nm(x).left = yr;
        if yr != NIL {
            self.nm(yr).parent = x;
        }
        let xp = self.n(x).parent;
        self.nm(y).parent = xp;
        self.replace_child(xp, x, y);
        self.nm(y).right = x;
        self.nm(x).parent = y;
        self.nm(y).aug = self.n(x).aug;
        let a = self.recompute(x);
        self.nm(x).aug = a;
    }

    fn alloc_slot(&mut self) -> Result<NodeId, RbError> {
        if self.free_head != NIL {
            let id = self.free_head;
            self.free_head = self.n(id).right;
            Ok(id)
        } else if (self.fresh as usize) < N {
            self.fresh += 1;
            Ok(self.fresh - 1)
        } else {
            Err(RbError::Full)
        }
    }

    /// Inserts `[start, end)`; returns the new node's id.
    pub fn insert(&mut self, start: u64, end: u64, value: A::Value) -> Result<NodeId, RbError> {
        // Find the link point (rb_link_node's walk).
        let mut parent = NIL;
        let mut cur = self.root;
        let mut go_left = false;
        while cur != NIL {
            parent = cur;
            let s = self.n(cur).start;
            if start < s {
                go_left = true;
                cur = self.n(cur).left;
            } else if start > s {
                go_left = false;
                cur = self.n(cur).right;
            } else {
                return Err(RbError::Duplicate(cur));
            }
        }
        let id = self.alloc_slot()?;
        let aug = A::compute(start, end, &value, None, None);
        *self.nm(id) = Node {
            start,
            end,
            value,
            aug,
            left: NIL,
            right: NIL,
            parent,
            red: true,
        };
        if parent == NIL {
            self.root = id;
        } else if go_left {
            self.nm(parent).left = id;
        } else {
            self.nm(parent).right = id;
        }
        self.len += 1;
        self.propagate(parent, true);
        self.insert_fixup(id);
        Ok(id)
    }

    fn insert_fixup(&mut self, mut z: NodeId) {
        while self.is_red(self.n(z).parent) {
            let p = self.n(z).parent;
            let g = self.n(p).parent; // exists: a red node is never the root
            if p == self.n(g).left {
                let u = self.n(g).right;
                if self.is_red(u) {
                    self.nm(p).red = false;
                    self.nm(u).red = false;
                    self.nm(g).red = true;
                    z = g;
                } else {
                    if z == self.n(p).right {
                        z = p;
                        self.rotate_left(z);
                    }
                    let p = self.n(z).parent;
                    let g = self.n(p).parent;
                    self.nm(p).red = false;
                    self.nm(g).red = true;
                    self.rotate_right(g);
                }
            } else {
                let u = self.n(g).left;
                if self.is_red(u) {
                    self.nm(p).red = false;
                    self.nm(u).red = false;
                    self.nm(g).red = true;
                    z = g;
                } else {
                    if z == self.n(p).left {
                        z = p;
                        self.rotate_right(z);
                    }
                    let p = self.n(z).parent;
                    let g = self.n(p).parent;
                    self.nm(p).red = false;
                    self.nm(g).red = true;
                    self.rotate_left(g);
                }
            }
        }
        let r = self.root;
        self.nm(r).red = false;
    }

    /// Puts `v` (possibly NIL) where `u` was.
    fn transplant(&mut self, u: NodeId, v: NodeId) {
        let up = self.n(u).parent;
        self.replace_child(up, u, v);
        if v != NIL {
            self.nm(v).parent = up;
        }
    }

    fn minimum(&self, mut id: NodeId) -> NodeId {
        while self.n(id).left != NIL {
            id = self.n(id).left;
        }
        id
    }

    fn maximum(&self, mut id: NodeId) -> NodeId {
        while self.n(id).right != NIL {
            id = self.n(id).right;
        }
        id
    }

    /// Removes live node `z`, returning its interval and value
    /// (mirrors rb_erase_augmented()).
    pub fn remove(&mut self, z: NodeId) -> (u64, u64, A::Value) {
        let (zs, ze, zv) = {
            let nd = self.n(z);
            (nd.start, nd.end, nd.value)
        };
        let zl = self.n(z).left;
        let zr = self.n(z).right;
        let x;
        let xp;
        let removed_black;
        if zl == NIL || zr == NIL {
            x = if zl == NIL { zr } else { zl };
            xp = self.n(z).parent;
            removed_black = !self.n(z).red;
            self.transplant(z, x);
            self.propagate(xp, false);
        } else {
            // Two children: the successor y takes z's place.
            let y = self.minimum(zr);
            removed_black = !self.n(y).red;
            x = self.n(y).right;
            if self.n(y).parent == z {
                xp = y;
            } else {
                xp = self.n(y).parent;
                self.transplant(y, x);
                self.nm(y).right = zr;
                self.nm(zr).parent = y;
            }
            self.transplant(z, y);
            self.nm(y).left = zl;
            self.nm(zl).parent = y;
            self.nm(y).red = self.n(z).red;
            // Every changed subtree lies on the path xp -> y -> root.
            self.propagate(xp, false);
        }
        if removed_black {
            self.remove_fixup(x, xp);
        }
        self.nm(z).right = self.free_head;
        self.free_head = z;
        self.len -= 1;
        (zs, ze, zv)
    }

    fn remove_fixup(&mut self, mut x: NodeId, mut xp: NodeId) {
        while x != self.root && !self.is_red(x) {
            if x == self.n(xp).left {
                let mut w = self.n(xp).right;
                if self.is_red(w) {
                    self.nm(w).red = false;
                    self.nm(xp).red = true;
                    self.rotate_left(xp);
                    w = self.n(xp).right;
                }
                if !self.is_red(self.n(w).left) && !self.is_red(self.n(w).right) {
                    self.nm(w).red = true;
                    x = xp;
                    xp = self.n(x).parent;
                } else {
                    if !self.is_red(self.n(w).right) {
                        let wl = self.n(w).left;
                        self.nm(wl).red = false;
                        self.nm(w).red = true;
                        self.rotate_right(w);
                        w = self.n(xp).right;
                    }
                    self.nm(w).red = self.n(xp).red;
                    self.nm(xp).red = false;
                    let wr = self.n(w).right;
                    self.nm(wr).red = false;
                    self.rotate_left(xp);
                    x = self.root;
                    break;
                }
            } else {
                let mut w = self.n(xp).left;
                if self.is_red(w) {
                    self.nm(w).red = false;
                    self.nm(xp).red = true;
                    self.rotate_right(xp);
                    w = self.n(xp).left;
                }
                if !self.is_red(self.n(w).right) && !self.is_red(self.n(w).left) {
                    self.nm(w).red = true;
                    x = xp;
                    xp = self.n(x).parent;
                } else {
                    if !self.is_red(self.n(w).left) {
                        let wr = self.n(w).right;
                        self.nm(wr).red = false;
                        self.nm(w).red = true;
                        self.rotate_left(w);
                        w = self.n(xp).left;
                    }
                    self.nm(w).red = self.n(xp).red;
                    self.nm(xp).red = false;
                    let wl = self.n(w).left;
                    self.nm(wl).red = false;
                    self.rotate_right(xp);
                    x = self.root;
                    break;
                }
            }
        }
        if x != NIL {
            self.nm(x).red = false;
        }
    }

    /// Removes the node whose start is exactly `start`.
    pub fn remove_key(&mut self, start: u64) -> Option<(u64, u64, A::Value)> {
        let id = self.find_start(start)?;
        Some(self.remove(id))
    }

    /// Changes a node's interval in place and re-propagates the summaries
    /// (how adjust_va_to_fit_type() shrinks a free block). The caller keeps
    /// the order: the new start must stay between the neighbours' starts.
    pub fn set_range(&mut self, id: NodeId, start: u64, end: u64) {
        debug_assert!({
            let p = self.prev(id);
            let nx = self.next(id);
            (p == NIL || self.n(p).start < start) && (nx == NIL || start < self.n(nx).start)
        });
        let nd = self.nm(id);
        nd.start = start;
        nd.end = end;
        self.propagate(id, true);
    }

    /// Updates a node's value in place and re-propagates the summaries.
    pub fn update_value(&mut self, id: NodeId, f: impl FnOnce(&mut A::Value)) {
        f(&mut self.nm(id).value);
        self.propagate(id, true);
    }

    /// The node whose start is exactly `start`.
    pub fn find_start(&self, start: u64) -> Option<NodeId> {
        let mut cur = self.root;
        while cur != NIL {
            let s = self.n(cur).start;
            if start < s {
                cur = self.n(cur).left;
            } else if start > s {
                cur = self.n(cur).right;
            } else {
                return Some(cur);
            }
        }
        None
    }

    /// The node with `start <= addr < end` (mirrors __find_vmap_area()).
    pub fn find(&self, addr: u64) -> Option<NodeId> {
        let id = self.floor(addr);
        if id != NIL && addr < self.n(id).end {
            Some(id)
        } else {
            None
        }
    }

    /// The last node with `start <= key`, or NIL.
    pub fn floor(&self, key: u64) -> NodeId {
        let mut cur = self.root;
        let mut best = NIL;
        while cur != NIL {
            if self.n(cur).start <= key {
                best = cur;
                cur = self.n(cur).right;
            } else {
                cur = self.n(cur).left;
            }
        }
        best
    }

    /// The first node with `start >= key`, or NIL.
    pub fn lower_bound(&self, key: u64) -> NodeId {
        let mut cur = self.root;
        let mut best = NIL;
        while cur != NIL {
            if self.n(cur).start >= key {
                best = cur;
                cur = self.n(cur).left;
            } else {
                cur = self.n(cur).right;
            }
        }
        best
    }

    /// The first node with `start > key`, or NIL.
    pub fn upper_bound(&self, key: u64) -> NodeId {
        let mut cur = self.root;
        let mut best = NIL;
        while cur != NIL {
            if self.n(cur).start > key {
                best = cur;
                cur = self.n(cur).left;
            } else {
                cur = self.n(cur).right;
            }
        }
        best
    }

    /// The first node with `end > addr`, or NIL: find_vma()'s query. Needs
    /// non-overlapping intervals (then ends are sorted like starts).
    pub fn first_end_after(&self, addr: u64) -> NodeId {
        let mut cur = self.root;
        let mut best = NIL;
        while cur != NIL {
            if self.n(cur).end > addr {
                best = cur;
                cur = self.n(cur).left;
            } else {
                cur = self.n(cur).right;
            }
        }
        best
    }

    pub fn first(&self) -> NodeId {
        if self.root == NIL {
            NIL
        } else {
            self.minimum(self.root)
        }
    }

    pub fn last(&self) -> NodeId {
        if self.root == NIL {
            NIL
        } else {
            self.maximum(self.root)
        }
    }

    /// In-order successor (rb_next()).
    pub fn next(&self, id: NodeId) -> NodeId {
        let r = self.n(id).right;
        if r != NIL {
            return self.minimum(r);
        }
        let mut c = id;
        let mut p = self.n(c).parent;
        while p != NIL && self.n(p).right == c {
            c = p;
            p = self.n(p).parent;
        }
        p
    }

    /// In-order predecessor (rb_prev()).
    pub fn prev(&self, id: NodeId) -> NodeId {
        let l = self.n(id).left;
        if l != NIL {
            return self.maximum(l);
        }
        let mut c = id;
        let mut p = self.n(c).parent;
        while p != NIL && self.n(p).left == c {
            c = p;
            p = self.n(p).parent;
        }
        p
    }

    /// In-order iteration.
    pub fn iter(&self) -> Iter<'_, A, N> {
        Iter {
            tree: self,
            cur: self.first(),
        }
    }

    /// Lowest-address node satisfying `is_match`, pruned by the summaries:
    /// a subtree is entered only if `aug_ok(its summary)`, and nothing ending
    /// at or below `floor` is visited (a node's left subtree is skipped when
    /// the node starts at or below `floor`: with disjoint intervals that
    /// subtree ends there). The generic form of find_vmap_lowest_match(): O(log n)
    /// when `aug_ok` never rejects a subtree holding a match and a failed
    /// `is_match` above `floor` implies the node itself is too small.
    /// Instead of Linux's moving `vstart`, the climb remembers whether it came
    /// from a left child, so no subtree is searched twice.
    pub fn lowest_match(
        &self,
        floor: u64,
        aug_ok: impl Fn(A::Aug) -> bool,
        mut is_match: impl FnMut(&Node<A>) -> bool,
    ) -> Option<NodeId> {
        let mut cur = self.root;
        if cur == NIL || !aug_ok(self.n(cur).aug) {
            return None;
        }
        loop {
            // Descend: leftmost candidate first.
            let nd = self.n(cur);
            if nd.left != NIL && floor < nd.start && aug_ok(self.n(nd.left).aug) {
                cur = nd.left;
                continue;
            }
            if is_match(nd) {
                return Some(cur);
            }
            if nd.right != NIL && aug_ok(self.n(nd.right).aug) {
                cur = nd.right;
                continue;
            }
            // Climb until an ancestor reached from its left child: that
            // ancestor and its right subtree are the next in address order.
            loop {
                let p = self.n(cur).parent;
                if p == NIL {
                    return None;
                }
                let from_left = self.n(p).left == cur;
                cur = p;
                if from_left {
                    let pn = self.n(p);
                    if is_match(pn) {
                        return Some(p);
                    }
                    if pn.right != NIL && aug_ok(self.n(pn.right).aug) {
                        cur = pn.right;
                        break;
                    }
                }
            }
        }
    }

    /// Verifies every invariant: links, key order, root black, no red-red,
    /// equal black heights, cached summaries, length. For tests and guest
    /// self-checks; O(n).
    pub fn check(&self) -> Result<(), &'static str> {
        if self.root == NIL {
            return if self.len == 0 {
                Ok(())
            } else {
                Err("empty tree with nonzero len")
            };
        }
        if self.n(self.root).parent != NIL {
            return Err("root has a parent");
        }
        if self.n(self.root).red {
            return Err("root is red");
        }
        let mut count = 0u32;
        self.check_sub(self.root, &mut count)?;
        if count != self.len {
            return Err("len does not match node count");
        }
        let mut prev: Option<u64> = None;
        for nd in self.iter() {
            if let Some(p) = prev {
                if p >= nd.start {
                    return Err("keys out of order");
                }
            }
            prev = Some(nd.start);
        }
        Ok(())
    }

    /// Returns the black height of `id`'s subtree.
    fn check_sub(&self, id: NodeId, count: &mut u32) -> Result<u32, &'static str> {
        if id == NIL {
            return Ok(1);
        }
        if *count > self.len {
            return Err("cycle in tree");
        }
        *count += 1;
        let nd = self.n(id);
        for c in [nd.left, nd.right] {
            if c != NIL {
                if self.n(c).parent != id {
                    return Err("bad parent link");
                }
                if nd.red && self.n(c).red {
                    return Err("red node with red child");
                }
            }
        }
        if nd.left != NIL && self.n(nd.left).start >= nd.start {
            return Err("left child key not smaller");
        }
        if nd.right != NIL && self.n(nd.right).start <= nd.start {
            return Err("right child key not larger");
        }
        let lh = self.check_sub(nd.left, count)?;
        let rh = self.check_sub(nd.right, count)?;
        if lh != rh {
            return Err("black heights differ");
        }
        if self.recompute(id) != nd.aug {
            return Err("stale augmented value");
        }
        Ok(lh + if nd.red { 0 } else { 1 })
    }
}

/// In-order iterator over live nodes.
pub struct Iter<'a, A: Augment, const N: usize> {
    tree: &'a RbTree<A, N>,
    cur: NodeId,
}

impl<'a, A: Augment, const N: usize> Iterator for Iter<'a, A, N> {
    type Item = &'a Node<A>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.cur == NIL {
            return None;
        }
        let nd = self.tree.get(self.cur);
        self.cur = self.tree.next(self.cur);
        Some(nd)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    type T<const N: usize> = RbTree<MaxSize, N>;

    #[test]
    fn insert_remove_sequential() {
        let mut t: T<256> = RbTree::new();
        for i in 0..200u64 {
            t.insert(i * 10, i * 10 + 1 + i % 7, ()).unwrap();
            t.check().unwrap();
        }
        assert_eq!(t.get(t.root()).aug(), 7);
        assert_eq!(t.insert(50, 51, ()), Err(RbError::Duplicate(5)));
        for i in (0..200u64).step_by(3) {
            assert!(t.remove_key(i * 10).is_some());
            t.check().unwrap();
        }
        for i in 0..200u64 {
            let hit = t.find(i * 10);
            assert_eq!(hit.is_some(), i % 3 != 0);
        }
        let keys: Vec<u64> = t.iter().map(|n| n.start()).collect();
        assert_eq!(keys.len(), t.len());
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn full_arena_is_an_error_and_slots_recycle() {
        let mut t: T<4> = RbTree::new();
        for i in 0..4 {
            t.insert(i, i + 1, ()).unwrap();
        }
        assert_eq!(t.insert(9, 10, ()), Err(RbError::Full));
        t.remove_key(2).unwrap();
        t.insert(9, 10, ()).unwrap();
        t.check().unwrap();
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.first(), NIL);
    }

    #[test]
    fn lowest_match_examples() {
        let mut t: T<16> = RbTree::new();
        // Blocks: [0,4) [10,30) [40,41) [50,60)
        for (s, e) in [(0, 4), (10, 30), (40, 41), (50, 60)] {
            t.insert(s, e, ()).unwrap();
        }
        let fit = |t: &T<16>, len: u64, floor: u64| {
            t.lowest_match(
                floor,
                |m| m >= len,
                |n| n.start().max(floor) + len <= n.end(),
            )
            .map(|id| t.get(id).start())
        };
        assert_eq!(fit(&t, 4, 0), Some(0));
        assert_eq!(fit(&t, 5, 0), Some(10));
        assert_eq!(fit(&t, 10, 25), Some(50));
        assert_eq!(fit(&t, 5, 25), Some(10));
        assert_eq!(fit(&t, 11, 0), Some(10));
        assert_eq!(fit(&t, 21, 0), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u64),
        Remove(u64),
        Query(u64),
        Fit(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..80, 1u64..16).prop_map(|(k, l)| Op::Insert(k, l)),
            2 => (0u64..80).prop_map(Op::Remove),
            1 => (0u64..1300).prop_map(Op::Query),
            1 => (1u64..16, 0u64..1300).prop_map(|(l, f)| Op::Fit(l, f)),
        ]
    }

    fn start_of(t: &T<48>, id: NodeId) -> Option<u64> {
        (id != NIL).then(|| t.get(id).start())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random operations against BTreeMap; intervals are `[16k, 16k+len)`
        /// so they never overlap. Invariants checked after every step.
        #[test]
        fn matches_btreemap(ops in proptest::collection::vec(op(), 1..300)) {
            let mut t: T<48> = RbTree::new();
            let mut m: BTreeMap<u64, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, l) => {
                        let (s, e) = (k * 16, k * 16 + l);
                        let r = t.insert(s, e, ());
                        if m.contains_key(&s) {
                            prop_assert!(matches!(r, Err(RbError::Duplicate(_))));
                        } else if m.len() == 48 {
                            prop_assert_eq!(r, Err(RbError::Full));
                        } else {
                            prop_assert!(r.is_ok());
                            m.insert(s, e);
                        }
                    }
                    Op::Remove(k) => {
                        let got = t.remove_key(k * 16).map(|(s, e, _)| (s, e));
                        let want = m.remove(&(k * 16)).map(|e| (k * 16, e));
                        prop_assert_eq!(got, want);
                    }
                    Op::Query(a) => {
                        let want = m.range(..=a).next_back().filter(|(_, &e)| a < e).map(|(&s, _)| s);
                        prop_assert_eq!(t.find(a).map(|id| t.get(id).start()), want);
                        prop_assert_eq!(start_of(&t, t.floor(a)), m.range(..=a).next_back().map(|(&s, _)| s));
                        prop_assert_eq!(start_of(&t, t.lower_bound(a)), m.range(a..).next().map(|(&s, _)| s));
                        prop_assert_eq!(start_of(&t, t.upper_bound(a)), m.range(a + 1..).next().map(|(&s, _)| s));
                        let want_vma = m.iter().find(|(_, &e)| e > a).map(|(&s, _)| s);
                        prop_assert_eq!(start_of(&t, t.first_end_after(a)), want_vma);
                    }
                    Op::Fit(len, floor) => {
                        let got = t
                            .lowest_match(floor, |mx| mx >= len, |n| n.start().max(floor) + len <= n.end())
                            .map(|id| t.get(id).start());
                        let want = m.iter().find(|(&s, &e)| s.max(floor) + len <= e).map(|(&s, _)| s);
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(t.check(), Ok(()));
                prop_assert_eq!(t.len(), m.len());
                let want_max = m.iter().map(|(s, e)| e - s).max();
                prop_assert_eq!((t.root() != NIL).then(|| t.get(t.root()).aug()), want_max);
            }
            let got: Vec<(u64, u64)> = t.iter().map(|n| (n.start(), n.end())).collect();
            let want: Vec<(u64, u64)> = m.into_iter().collect();
            prop_assert_eq!(got, want);
        }
    }
}
