//! Where a command's data-in goes (the bytes a READ, an INQUIRY… return to the initiator,
//! SAM-5 §5.4.3): appended to a buffer, or — a READ from a device that can lend its medium —
//! a view of the medium's own pages, which the transport sends without copying them first.
//!
//! A lent view is read by the kernel when the socket takes the response (`writev` copies it
//! into the socket), which is before the command's status can reach the initiator: the data
//! are what the medium held at one moment between the command's arrival and its status, as
//! with a copy made at execution (BENCHMARKS.md, "mapped reads").

use bytes::{Bytes, BytesMut};

/// The data-in of one command.
pub trait DataSink {
    /// The buffer data-in is appended to.
    fn buf(&mut self) -> &mut BytesMut;
    /// Whether this sink takes a lent view of the medium ([`DataSink::lend`]).
    fn lends(&self) -> bool {
        false
    }
    /// Take `view` as the command's whole data-in instead of appending a copy. Only called
    /// when [`DataSink::lends`] and nothing was appended.
    fn lend(&mut self, view: Bytes) {
        self.buf().extend_from_slice(&view);
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
    pub view: Option<Bytes>,
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
    fn lend(&mut self, view: Bytes) {
        self.view = Some(view);
    }
}
