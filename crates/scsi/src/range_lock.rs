//! Striped locks keyed by LBA range, for commands that must be atomic with
//! respect to each other on the same blocks (COMPARE AND WRITE, SBC-3
//! §5.2; ORWRITE, SBC-3 §5.9) while several portals execute commands on
//! their own threads. READ and WRITE never take these locks.

use std::sync::{Mutex, MutexGuard};

/// Number of stripes (one bit each in a `u64` mask).
const STRIPES: usize = 64;
/// log2 of the blocks covered by one chunk; chunk `c` maps to stripe
/// `c % STRIPES`.
const CHUNK_SHIFT: u32 = 8;

/// A fixed table of mutexes; a range locks every stripe its chunks map to,
/// in ascending stripe order, so two ranges can never deadlock.
#[derive(Debug)]
pub struct RangeLocks {
    stripes: [Mutex<()>; STRIPES],
}

/// Held for the duration of one command; unlocks on drop.
#[derive(Debug)]
pub struct RangeGuard<'a> {
    _held: Vec<MutexGuard<'a, ()>>,
}

impl Default for RangeLocks {
    fn default() -> RangeLocks {
        RangeLocks {
            stripes: std::array::from_fn(|_| Mutex::new(())),
        }
    }
}

/// Bit mask of the stripes covering `blocks` blocks from `lba` (at least
/// the stripe of `lba`, so a zero-length range still serialises).
fn stripe_mask(lba: u64, blocks: u32) -> u64 {
    let first = lba >> CHUNK_SHIFT;
    let last = lba.saturating_add(u64::from(blocks.max(1)) - 1) >> CHUNK_SHIFT;
    if last - first >= STRIPES as u64 {
        return u64::MAX;
    }
    (first..=last).fold(0u64, |m, c| m | 1 << (c % STRIPES as u64))
}

impl RangeLocks {
    pub fn new() -> RangeLocks {
        RangeLocks::default()
    }

    /// Lock the blocks `[lba, lba + blocks)` against other holders of an
    /// overlapping range. A poisoned stripe is taken over (it guards no data).
    pub fn lock(&self, lba: u64, blocks: u32) -> RangeGuard<'_> {
        let mask = stripe_mask(lba, blocks);
        let held = self
            .stripes
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, m)| m.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        RangeGuard { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn masks() {
        assert_eq!(stripe_mask(0, 1), 1);
        assert_eq!(stripe_mask(0, 0), 1);
        assert_eq!(stripe_mask(255, 2), 0b11);
        assert_eq!(stripe_mask(256 * 64, 1), 1);
        assert_eq!(stripe_mask(256 * 63 + 10, 300), 1 << 63 | 1);
        assert_eq!(stripe_mask(0, 256 * 64), u64::MAX);
        assert_eq!(stripe_mask(u64::MAX, u32::MAX), 1 << 63);
    }

    #[test]
    fn overlapping_ranges_exclude_each_other() {
        let locks = Arc::new(RangeLocks::new());
        let inside = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (locks, inside) = (locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        // Ranges [t*10 + i%50, +200) all overlap each other.
                        let _g = locks.lock(t * 10 + i % 50, 200);
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::hint::spin_loop();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn disjoint_ranges_do_not_block() {
        let locks = RangeLocks::new();
        let _a = locks.lock(0, 256);
        // Different stripe: must not deadlock on the same thread.
        let _b = locks.lock(256, 256);
    }
}
