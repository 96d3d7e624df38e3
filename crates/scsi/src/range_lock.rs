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
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::Duration;

    /// Long enough for an unblocked thread to take a free lock.
    const SETTLE: Duration = Duration::from_millis(150);
    /// Upper bound for anything that should happen; a test fails, never hangs.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// Reference for `stripe_mask`: walk the range block by block (it is
    /// clamped at `u64::MAX` like the lock's) and set the stripe of each
    /// block's chunk, stopping once every stripe is set.
    fn reference_mask(lba: u64, blocks: u32) -> u64 {
        let last = lba.saturating_add(u64::from(blocks.max(1)) - 1);
        let mut mask = 0u64;
        let mut block = lba;
        loop {
            mask |= 1 << ((block / 256) % 64);
            if block == last || mask == u64::MAX {
                return mask;
            }
            block += 1;
        }
    }

    /// Stripe bits from a list of stripe numbers.
    fn stripes(list: &[u32]) -> u64 {
        list.iter().fold(0, |m, s| m | 1 << s)
    }

    #[test]
    fn a_range_covers_the_stripes_of_its_chunks() {
        // Chunks are 256 blocks; chunk c is stripe c % 64.
        assert_eq!(stripe_mask(0, 1), stripes(&[0]));
        assert_eq!(stripe_mask(0, 256), stripes(&[0]));
        assert_eq!(stripe_mask(0, 257), stripes(&[0, 1]));
        assert_eq!(stripe_mask(255, 2), stripes(&[0, 1]));
        assert_eq!(stripe_mask(256, 256), stripes(&[1]));
        assert_eq!(stripe_mask(256 * 5 + 100, 256 * 3), stripes(&[5, 6, 7, 8]));
    }

    #[test]
    fn a_zero_length_range_still_takes_the_stripe_of_its_lba() {
        assert_eq!(stripe_mask(0, 0), stripes(&[0]));
        assert_eq!(stripe_mask(256 * 9 + 3, 0), stripes(&[9]));
    }

    #[test]
    fn stripes_wrap_around_after_the_last() {
        assert_eq!(stripe_mask(256 * 64, 1), stripes(&[0]));
        assert_eq!(stripe_mask(256 * 65, 1), stripes(&[1]));
        assert_eq!(stripe_mask(256 * 63 + 10, 300), stripes(&[63, 0]));
        assert_eq!(stripe_mask(256 * 62, 256 * 4), stripes(&[62, 63, 0, 1]));
    }

    #[test]
    fn a_range_of_64_chunks_or_more_takes_every_stripe() {
        assert_eq!(stripe_mask(0, 256 * 64), u64::MAX);
        assert_eq!(stripe_mask(0, 256 * 64 - 1), u64::MAX);
        assert_eq!(stripe_mask(100, 256 * 63 + 1), u64::MAX);
        assert_eq!(stripe_mask(12345, u32::MAX), u64::MAX);
        // 63 whole chunks from a chunk boundary miss exactly one stripe.
        assert_eq!(stripe_mask(256 * 3, 256 * 63), !stripes(&[2]));
    }

    #[test]
    fn a_range_past_the_last_lba_is_clamped() {
        assert_eq!(stripe_mask(u64::MAX, u32::MAX), stripes(&[63]));
        assert_eq!(stripe_mask(u64::MAX - 256, 1000), stripes(&[62, 63]));
    }

    proptest! {
        #[test]
        fn stripe_mask_matches_a_block_by_block_walk(
            lba in prop_oneof![0u64..100_000, u64::MAX - 100_000..=u64::MAX, any::<u64>()],
            blocks in prop_oneof![0u32..600, 0u32..20_000, any::<u32>()],
        ) {
            prop_assert_eq!(stripe_mask(lba, blocks), reference_mask(lba, blocks));
        }
    }

    /// Take `first` on this thread, then `second` on another: the second
    /// locker must still be waiting after `SETTLE` and get the lock only
    /// after the first is dropped.
    fn assert_second_waits(first: (u64, u32), second: (u64, u32)) {
        let locks = Arc::new(RangeLocks::new());
        let order = Arc::new(Mutex::new(Vec::new()));
        let guard = locks.lock(first.0, first.1);
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (locks, order) = (locks.clone(), order.clone());
            thread::spawn(move || {
                let _g = locks.lock(second.0, second.1);
                order.lock().unwrap().push("second locked");
                tx.send(()).unwrap();
            })
        };
        assert_eq!(
            rx.recv_timeout(SETTLE),
            Err(mpsc::RecvTimeoutError::Timeout),
            "{second:?} was locked while {first:?} was held"
        );
        order.lock().unwrap().push("first unlocked");
        drop(guard);
        rx.recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("{second:?} not locked after {first:?} was released"));
        waiter.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first unlocked", "second locked"]);
    }

    #[test]
    fn an_overlapping_locker_waits_for_the_holder() {
        assert_second_waits((0, 10), (5, 10));
        assert_second_waits((1000, 1), (1000, 1));
        assert_second_waits((0, 0), (0, 1));
        // Overlap in the second chunk only.
        assert_second_waits((255, 2), (256, 1));
        // A range over every stripe blocks any other.
        assert_second_waits((0, u32::MAX), (256 * 17 + 5, 1));
    }

    #[test]
    fn non_overlapping_ranges_do_not_block() {
        let locks = Arc::new(RangeLocks::new());
        let _a = locks.lock(0, 256);
        let (tx, rx) = mpsc::channel();
        for (lba, blocks) in [(256, 256), (256 * 2, 256 * 60)] {
            let (locks, tx) = (locks.clone(), tx.clone());
            thread::spawn(move || {
                let _b = locks.lock(lba, blocks);
                tx.send((lba, blocks)).unwrap();
            });
            let got = rx.recv_timeout(DEADLINE);
            assert_eq!(got, Ok((lba, blocks)), "blocked by [0, 256)");
        }
    }

    #[test]
    fn overlapping_ranges_exclude_each_other() {
        let locks = Arc::new(RangeLocks::new());
        let inside = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel();
        for t in 0..4u64 {
            let (locks, inside, tx) = (locks.clone(), inside.clone(), tx.clone());
            thread::spawn(move || {
                let mut overlaps = 0;
                for i in 0..2000u64 {
                    // Ranges [t*10 + i%50, +200) all overlap each other.
                    let _g = locks.lock(t * 10 + i % 50, 200);
                    overlaps += inside.fetch_add(1, Ordering::SeqCst);
                    thread::yield_now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
                tx.send(overlaps).unwrap();
            });
        }
        for _ in 0..4 {
            let overlaps = rx.recv_timeout(DEADLINE).expect("a locker finished");
            assert_eq!(
                overlaps, 0,
                "another holder was inside an overlapping range"
            );
        }
    }
}
