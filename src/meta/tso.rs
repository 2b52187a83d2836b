//! Hybrid timestamp oracle: `physical milliseconds << 18 | logical`, as Milvus allocates
//! them. Timestamps never go backwards, across restarts too: the allocator only hands out
//! timestamps below a persisted upper bound ("save point"), and after a restart it starts
//! at that bound. The bound is moved forward in windows so that it is persisted rarely.

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 18;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// How far ahead of the physical clock the persisted bound is moved, in milliseconds.
pub const SAVE_WINDOW_MS: u64 = 3_000;

/// A hybrid timestamp.
pub type Timestamp = u64;

/// Combines a physical time in milliseconds and a logical counter.
pub fn compose(physical_ms: u64, logical: u64) -> Timestamp {
    (physical_ms << LOGICAL_BITS) | (logical & LOGICAL_MASK)
}

/// The physical part (Unix milliseconds) of a hybrid timestamp.
pub fn physical_ms(ts: Timestamp) -> u64 {
    ts >> LOGICAL_BITS
}

/// Unix time in milliseconds from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// The allocator state. Pure: the caller passes the clock and persists
/// [`Allocation::persist_bound_ms`] before it hands any of the timestamps out.
#[derive(Debug, Clone)]
pub struct Tso {
    physical_ms: u64,
    logical: u64,
    persisted_bound_ms: u64,
}

/// The result of [`Tso::allocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The first of the allocated timestamps; they are consecutive.
    pub first: Timestamp,
    /// The last of the allocated timestamps.
    pub last: Timestamp,
    /// A new bound to persist before the timestamps may be used.
    pub persist_bound_ms: Option<u64>,
}

impl Tso {
    /// Resumes above everything a previous process may have handed out.
    pub fn recover(persisted_bound_ms: u64) -> Self {
        Self {
            physical_ms: persisted_bound_ms,
            logical: 0,
            persisted_bound_ms,
        }
    }

    /// The bound currently assumed to be persisted.
    pub fn persisted_bound_ms(&self) -> u64 {
        self.persisted_bound_ms
    }

    /// Forgets a bound whose persistence failed, so that the next allocation persists again.
    pub fn persist_failed(&mut self, previous_bound_ms: u64) {
        self.persisted_bound_ms = previous_bound_ms;
    }

    /// Allocates `count` (≥ 1) consecutive timestamps, each greater than every earlier one.
    pub fn allocate(&mut self, now_ms: u64, count: u32) -> Allocation {
        let count = u64::from(count.max(1));
        if now_ms > self.physical_ms {
            self.physical_ms = now_ms;
            self.logical = 0;
        }
        if self.logical + count > LOGICAL_MASK {
            // The logical counter is exhausted for this millisecond: borrow the next one.
            self.physical_ms += 1;
            self.logical = 0;
        }
        let first = compose(self.physical_ms, self.logical + 1);
        self.logical += count;
        let last = compose(self.physical_ms, self.logical);
        let persist_bound_ms = if self.physical_ms + 1 >= self.persisted_bound_ms {
            self.persisted_bound_ms = self.physical_ms + SAVE_WINDOW_MS;
            Some(self.persisted_bound_ms)
        } else {
            None
        };
        Allocation {
            first,
            last,
            persist_bound_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_even_when_the_clock_goes_back() {
        let mut tso = Tso::recover(0);
        let a = tso.allocate(1_000, 1);
        let b = tso.allocate(900, 1);
        let c = tso.allocate(1_000, 3);
        assert!(a.last < b.first && b.last < c.first);
        assert_eq!(c.last - c.first, 2);
    }

    #[test]
    fn persists_the_bound_once_per_window() {
        let mut tso = Tso::recover(0);
        let first = tso.allocate(10_000, 1);
        assert_eq!(first.persist_bound_ms, Some(10_000 + SAVE_WINDOW_MS));
        assert_eq!(tso.allocate(10_500, 1).persist_bound_ms, None);
        assert!(
            tso.allocate(10_000 + SAVE_WINDOW_MS, 1)
                .persist_bound_ms
                .is_some()
        );
    }

    #[test]
    fn restart_resumes_above_the_bound() {
        let mut tso = Tso::recover(0);
        let before = tso.allocate(50_000, 1);
        let bound = before.persist_bound_ms.expect("first allocation persists");
        // The wall clock after the restart is behind what was handed out.
        let mut restarted = Tso::recover(bound);
        let after = restarted.allocate(40_000, 1);
        assert!(after.first > before.last);
        assert!(physical_ms(after.first) >= bound);
    }

    #[test]
    fn logical_overflow_borrows_the_next_millisecond() {
        let mut tso = Tso::recover(0);
        let a = tso.allocate(5, (1 << LOGICAL_BITS) - 2);
        let b = tso.allocate(5, 10);
        assert!(b.first > a.last);
        assert_eq!(physical_ms(b.first), 6);
    }
}
