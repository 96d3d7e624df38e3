//! Where a command's data-in goes (the bytes a READ, an INQUIRY… return to the initiator,
//! SAM-5 §5.4.3): appended to a buffer, or — a READ from a device that can lend its medium —
//! a view of the medium's own pages, which the transport sends without copying them first.
//!
//! A lent view is read by the kernel when the socket takes the response (`writev` copies it
//! into the socket), which is before the command's status can reach the initiator. The
//! transport holds the view's range shared ([`LentView::hold`]) while it copies, as the
//! device's `pread` does for a copy, and writes hold it exclusively: each block of the data
//! is what the medium held at one moment between the command's arrival and its status
//! ([`crate::range_lock`]; BENCHMARKS.md, "mapped reads").

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::range_lock::{RangeGuard, RangeLocks, stripe_mask};

/// A READ's data lent from the medium: the bytes (the page cache's own pages) and the range
/// lock of the unit they belong to, which whoever copies them must hold shared.
#[derive(Debug, Clone)]
pub struct LentView {
    /// The data, starting at a block boundary of the medium.
    pub data: Bytes,
    /// The unit's range locks.
    pub locks: Arc<RangeLocks>,
    /// The first block.
    pub lba: u64,
    /// The unit's logical block size in bytes.
    pub block_size: u32,
}

impl LentView {
    /// The blocks the data cover (the last one possibly in part, when the EDTL cut it).
    fn blocks(&self) -> u32 {
        let blocks = self.data.len().div_ceil(self.block_size.max(1) as usize);
        u32::try_from(blocks).unwrap_or(u32::MAX)
    }

    /// The stripes of [`LentView::locks`] covering the data.
    pub fn stripes(&self) -> u64 {
        stripe_mask(self.lba, self.blocks())
    }

    /// Hold the data's blocks shared: no write to them while the guard lives.
    pub fn hold(&self) -> RangeGuard<'_> {
        self.locks.shared(self.lba, self.blocks())
    }

    /// If `part` starts inside this view's data (it is, e.g., what is left of one PDU's data
    /// after a short `writev`): how many of its bytes lie before the next block boundary of
    /// the medium (0 when it starts on one). `None` when `part` is not within the view.
    pub fn to_block_end(&self, part: &[u8]) -> Option<usize> {
        let base = self.data.as_ptr() as usize;
        let at = (part.as_ptr() as usize).checked_sub(base)?;
        let bs = self.block_size.max(1) as usize;
        (at < self.data.len()).then(|| (bs - at % bs) % bs)
    }
}

/// Hold the ranges of all `views` shared (see [`LentView::hold`]), in the one order every
/// holder follows ([`crate::range_lock::lock_shared_all`]); nothing when there are none. No
/// allocation for views of up to four units.
pub fn hold_all(views: &[LentView]) -> RangeGuard<'_> {
    let mut ranges: SmallVec<[(&RangeLocks, u64); 4]> = SmallVec::new();
    for v in views {
        let mask = v.stripes();
        match ranges.iter_mut().find(|(l, _)| std::ptr::eq(*l, &*v.locks)) {
            Some((_, m)) => *m |= mask,
            None => ranges.push((&v.locks, mask)),
        }
    }
    if ranges.is_empty() {
        return RangeGuard::default();
    }
    crate::range_lock::lock_shared_all(&mut ranges)
}

/// The data-in of one command.
pub trait DataSink {
    /// The buffer data-in is appended to.
    fn buf(&mut self) -> &mut BytesMut;
    /// Whether this sink takes a lent view of the medium ([`DataSink::lend`]).
    fn lends(&self) -> bool {
        false
    }
    /// Take `view` as the command's whole data-in instead of appending a copy. Only called
    /// when [`DataSink::lends`] and nothing was appended. A sink that does not keep views
    /// copies the data, holding its range.
    fn lend(&mut self, view: LentView) {
        let _held = view.hold();
        self.buf().extend_from_slice(&view.data);
    }
}

/// A plain buffer copies: every data-in is appended to it.
impl DataSink for BytesMut {
    fn buf(&mut self) -> &mut BytesMut {
        self
    }
}

/// A buffer that also takes lent views (the target's data path).
#[derive(Debug, Default)]
pub struct LendingDataIn {
    /// Data-in appended by the command.
    pub buf: BytesMut,
    /// The medium's pages lent by a READ instead (then `buf` is empty).
    pub view: Option<LentView>,
    /// Whether views are taken (e.g. not when a data digest must be computed over the data in
    /// user space).
    pub lending: bool,
}

impl LendingDataIn {
    /// Data-in into `buf`, with views taken when `lending`.
    pub fn new(buf: BytesMut, lending: bool) -> LendingDataIn {
        LendingDataIn {
            buf,
            view: None,
            lending,
        }
    }
}

impl DataSink for LendingDataIn {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
    fn lends(&self) -> bool {
        self.lending && self.view.is_none()
    }
    fn lend(&mut self, view: LentView) {
        self.view = Some(view);
    }
}
