//! Striped reader-writer locks keyed by LBA range. Every command that changes the medium
//! (WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE…) holds its range exclusively
//! while it writes; whatever copies the medium for a READ holds it shared while it copies —
//! the device's `pread`, or the portal's `writev` that copies a lent view of the page cache
//! into its socket (see [`crate::data_in::LentView`]). The page cache gives no atomicity of
//! a copy against a concurrent `pwrite` of the same page, so without this a READ running
//! beside an overlapping WRITE could return a block half old, half new; with it each block a
//! READ returns is what the medium held at one moment (SAM-5 §5.4, the rule for lent
//! views). COMPARE AND WRITE (SBC-3 §5.2) and ORWRITE (SBC-3 §5.9) hold the range
//! exclusively across their read and write.
//!
//! Holders never wait for anything else while they hold a range (a `pwrite`, a `pread`, a
//! non-blocking `writev`), so a waiter waits a bounded time.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use smallvec::SmallVec;

/// Number of stripes (one bit each in a `u64` mask).
pub const STRIPES: usize = 64;
/// log2 of the blocks covered by one chunk; chunk `c` maps to stripe
/// `c % STRIPES`.
const CHUNK_SHIFT: u32 = 8;

/// A fixed table of reader-writer locks; a range locks every stripe its chunks map to, in
/// ascending stripe order, so two ranges can never deadlock (holders of several tables lock
/// them in one order too, see [`lock_shared_all`]).
#[derive(Debug)]
pub struct RangeLocks {
    stripes: [RwLock<()>; STRIPES],
}

/// One held stripe.
#[derive(Debug)]
enum Held<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

/// Held while the range is read or written; unlocks on drop. Up to sixteen stripes are held
/// without an allocation: a 4 KiB command takes one, a portal's `writev` of 15 random 4 KiB
/// READs (QD32) about 13 of the 64.
#[derive(Debug, Default)]
pub struct RangeGuard<'a> {
    _held: SmallVec<[Held<'a>; 16]>,
}

impl Default for RangeLocks {
    fn default() -> RangeLocks {
        RangeLocks {
            stripes: std::array::from_fn(|_| RwLock::new(())),
        }
    }
}

/// Bit mask of the stripes covering `blocks` blocks from `lba` (at least
/// the stripe of `lba`, so a zero-length range still serialises).
pub fn stripe_mask(lba: u64, blocks: u32) -> u64 {
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

    /// Hold the blocks `[lba, lba + blocks)` exclusively: no other holder of an overlapping
    /// range, shared or exclusive. A poisoned stripe is taken over (it guards no data).
    pub fn exclusive(&self, lba: u64, blocks: u32) -> RangeGuard<'_> {
        let mut g = RangeGuard::default();
        self.lock_mask(stripe_mask(lba, blocks), true, &mut g);
        g
    }

    /// Hold the blocks `[lba, lba + blocks)` shared: other shared holders may overlap, no
    /// exclusive one.
    pub fn shared(&self, lba: u64, blocks: u32) -> RangeGuard<'_> {
        let mut g = RangeGuard::default();
        self.lock_mask(stripe_mask(lba, blocks), false, &mut g);
        g
    }

    /// Adds the stripes of `mask` to `guard`, in ascending order.
    fn lock_mask<'a>(&'a self, mask: u64, exclusive: bool, guard: &mut RangeGuard<'a>) {
        for (i, s) in self.stripes.iter().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            guard._held.push(if exclusive {
                Held::Exclusive(s.write().unwrap_or_else(|e| e.into_inner()))
            } else {
                Held::Shared(s.read().unwrap_or_else(|e| e.into_inner()))
            });
        }
    }
}

/// Hold, shared, the stripes `mask` of each table in `ranges` (a table may appear several
/// times; its masks are merged): the tables in the order of their addresses, each table's
/// stripes ascending — the one global order every holder follows. For a transport about to
/// copy several lent views of possibly several units at once.
pub fn lock_shared_all<'a>(ranges: &mut [(&'a RangeLocks, u64)]) -> RangeGuard<'a> {
    ranges.sort_unstable_by_key(|(l, _)| std::ptr::from_ref(*l) as usize);
    let mut g = RangeGuard::default();
    let mut i = 0;
    while let Some(&(locks, _)) = ranges.get(i) {
        let mut mask = 0;
        while let Some(&(_, m)) = ranges.get(i).filter(|(l, _)| std::ptr::eq(*l, locks)) {
            mask |= m;
            i += 1;
        }
        locks.lock_mask(mask, false, &mut g);
    }
    g
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
        let guard = locks.exclusive(first.0, first.1);
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (locks, order) = (locks.clone(), order.clone());
            thread::spawn(move || {
                let _g = locks.exclusive(second.0, second.1);
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
        let _a = locks.exclusive(0, 256);
        let (tx, rx) = mpsc::channel();
        for (lba, blocks) in [(256, 256), (256 * 2, 256 * 60)] {
            let (locks, tx) = (locks.clone(), tx.clone());
            thread::spawn(move || {
                let _b = locks.exclusive(lba, blocks);
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
                    let _g = locks.exclusive(t * 10 + i % 50, 200);
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

    #[test]
    fn shared_holders_overlap_but_keep_an_exclusive_one_out() {
        let locks = Arc::new(RangeLocks::new());
        let a = locks.shared(0, 100);
        // Another shared holder of an overlapping range goes ahead at once.
        let (tx, rx) = mpsc::channel();
        {
            let (locks, tx) = (locks.clone(), tx.clone());
            thread::spawn(move || {
                let _b = locks.shared(50, 100);
                tx.send("shared").unwrap();
            });
        }
        assert_eq!(rx.recv_timeout(DEADLINE), Ok("shared"));
        // An exclusive one waits for the shared holder.
        {
            let locks = locks.clone();
            thread::spawn(move || {
                let _c = locks.exclusive(99, 1);
                tx.send("exclusive").unwrap();
            });
        }
        assert!(
            rx.recv_timeout(SETTLE).is_err(),
            "a writer ran beside a reader"
        );
        drop(a);
        assert_eq!(rx.recv_timeout(DEADLINE), Ok("exclusive"));
    }

    #[test]
    fn holding_several_tables_merges_each_tables_stripes() {
        let (x, y) = (RangeLocks::new(), RangeLocks::new());
        let mut ranges = [
            (&y, stripe_mask(0, 1)),
            (&x, stripe_mask(256, 1)),
            (&y, stripe_mask(512, 1)),
        ];
        let g = lock_shared_all(&mut ranges);
        // One guard per stripe: x's stripe 1, y's stripes 0 and 2.
        assert_eq!(g._held.len(), 3);
        // Shared: the same stripes can still be held shared again.
        let again = x.shared(256, 1);
        drop(again);
        // Not exclusively, while held.
        assert!(y.stripes[2].try_write().is_err());
        assert!(y.stripes[1].try_write().is_ok());
        drop(g);
        assert!(y.stripes[2].try_write().is_ok());
    }
}
