//! A generational slab for objects JS refers to by `u32` handle.
//!
//! Handles are `index | generation << 20`: a stale handle (freed, or from before its slot was
//! reused) never reaches the slot's next occupant. Each JS thread owns its slabs (they live in
//! `thread_local!`s), since every worker has its own addon state.

const INDEX_BITS: u32 = 20;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const GENERATION_MASK: u32 = u32::MAX >> INDEX_BITS;

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Objects addressed by generational handles.
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value` and returns its handle, or `None` when 2^20 objects are alive.
    pub fn insert(&mut self, value: T) -> Option<u32> {
        let index = if let Some(i) = self.free.pop() {
            i
        } else {
            let i = u32::try_from(self.slots.len())
                .ok()
                .filter(|&i| i <= INDEX_MASK)?;
            self.slots.push(Slot {
                generation: 0,
                value: None,
            });
            i
        };
        let slot = self.slots.get_mut(index as usize)?;
        slot.value = Some(value);
        Some(index | (slot.generation << INDEX_BITS))
    }

    /// The object behind `handle`, unless it was removed.
    pub fn get_mut(&mut self, handle: u32) -> Option<&mut T> {
        self.slots
            .get_mut((handle & INDEX_MASK) as usize)
            .filter(|s| s.generation == handle >> INDEX_BITS)
            .and_then(|s| s.value.as_mut())
    }

    /// Removes the object behind `handle`. Removing twice, or a stale handle, does nothing.
    pub fn remove(&mut self, handle: u32) -> Option<T> {
        let index = handle & INDEX_MASK;
        let slot = self
            .slots
            .get_mut(index as usize)
            .filter(|s| s.generation == handle >> INDEX_BITS)?;
        let value = slot.value.take()?;
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        self.free.push(index);
        Some(value)
    }

    /// Objects alive.
    pub fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Drops every object (environment teardown).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.free.clear();
    }
}
