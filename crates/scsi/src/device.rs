//! Block storage behind a logical unit: the [`BlockDevice`] trait and its
//! implementations (file-backed, in-memory, null).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use bytes::{Bytes, BytesMut};

/// Logical block size used by every device in this crate.
pub const BLOCK_SIZE: u32 = 512;

/// Largest zero-filled chunk written at once by [`BlockDevice::write_zeroes`].
const ZERO_CHUNK: usize = 1 << 20;

/// Byte-addressed storage with positional I/O. Callers (the SCSI layer)
/// only issue block-aligned, in-range requests; implementations must be
/// safe to call from many threads at once.
pub trait BlockDevice: Send + Sync {
    /// Logical block size in bytes.
    fn block_size(&self) -> u32 {
        BLOCK_SIZE
    }
    /// Capacity in logical blocks.
    fn num_blocks(&self) -> u64;
    /// Fill `buf` from byte `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Append `len` bytes read from byte `offset` to `out` (READ data-in). The default
    /// zero-fills the new bytes, then reads over them with [`BlockDevice::read_at`].
    fn read_append(&self, offset: u64, len: usize, out: &mut BytesMut) -> io::Result<()> {
        let start = out.len();
        out.resize(start + len, 0);
        let dst = out.get_mut(start..).unwrap_or_default();
        let r = self.read_at(offset, dst);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }
    /// `len` bytes at byte `offset` as a view of the medium itself (no copy, no system call),
    /// for the transport to send; `None` when the device has no such view (the caller reads
    /// a copy with [`BlockDevice::read_append`]).
    fn view(&self, _offset: u64, _len: usize) -> Option<io::Result<Bytes>> {
        None
    }
    /// Write all of `buf` at byte `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Make every completed write durable (fdatasync): what SYNCHRONIZE CACHE asks for
    /// (SBC-3 §5.24).
    fn flush(&self) -> io::Result<()>;
    /// Write all of `buf` at byte `offset` and make it durable before returning (a WRITE
    /// with FUA, SBC-3 §5.35, or any write of a write-through unit). The default writes, then
    /// flushes the whole device.
    fn write_at_durable(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_at(offset, buf)?;
        self.flush()
    }
    /// Make `len` bytes at `offset` read back as zeros (UNMAP, WRITE SAME
    /// with zeros). The default writes zero-filled chunks.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        zero_fill(self, offset, len)
    }
    /// Release the storage of `len` bytes at `offset` (SANITIZE BLOCK ERASE): they read
    /// back as zeros and [`BlockDevice::mapping`] reports them deallocated where the store
    /// can. The default writes zeros.
    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }
    /// Whether the byte at `offset` has storage allocated (mapped), and the byte offset
    /// where that run ends (GET LBA STATUS). `None`: the store cannot tell (everything is
    /// reported mapped).
    fn mapping(&self, _offset: u64) -> io::Result<Option<(bool, u64)>> {
        Ok(None)
    }
}

/// Write `len` zero bytes at `offset` in chunks of at most [`ZERO_CHUNK`].
fn zero_fill<D: BlockDevice + ?Sized>(d: &D, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK.min(usize::try_from(len).unwrap_or(ZERO_CHUNK))];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        d.write_at(offset + done, &zeros[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// Errors opening a [`FileDevice`].
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open backing file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot size backing file {path} to {size} bytes: {source}")]
    SetLen {
        path: PathBuf,
        size: u64,
        source: io::Error,
    },
    #[error("backing file {path} is {size} bytes, not a multiple of the {block} byte block size")]
    Unaligned {
        path: PathBuf,
        size: u64,
        block: u32,
    },
    #[error("backing file {path} is {existing} bytes; refusing to shrink it to {size}")]
    WouldTruncate {
        path: PathBuf,
        existing: u64,
        size: u64,
    },
    #[error("backing file {path} is empty")]
    Empty { path: PathBuf },
    #[error("backing file {path} is already served by another process (locked)")]
    Locked { path: PathBuf },
    #[error("cannot lock backing file {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
}

/// A regular file used as a disk, accessed with pread/pwrite. It holds an exclusive `flock`
/// on the file for as long as it is open, so that two targets never serve the same file.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    num_blocks: u64,
    /// The whole file mapped read-only and shared (the page cache itself), for
    /// [`BlockDevice::view`]; `None` where the file cannot be mapped.
    /// Views are slices of it: a READ's view costs a reference count, no allocation.
    map: Option<Bytes>,
}

/// A read-only shared mapping of a whole file (mmap(2) `PROT_READ`, `MAP_SHARED`): its pages
/// are the page cache's, so writes through the file (pwrite) show in it at once.
///
/// Why: a 4 KiB READ from the page cache cost a `pread` (a system call and a copy into a
/// buffer) before the response's `writev` copied it again. With the mapping the READ costs
/// neither; the socket copies straight from the page cache. Measured with `bench/profile.sh`
/// (BENCHMARKS.md, "mapped reads").
///
/// The file must keep its size while mapped: the device holds the file's exclusive `flock`,
/// so no other portshift opens it; a program that ignores the lock and shrinks the file
/// makes sends from the lost range fail (`EFAULT` from `writev`), and a copy of them in user
/// space (a data digest, a small PDU gathered into the header buffer) would be killed by
/// SIGBUS. docs/operations.md says so.
#[derive(Debug)]
struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value until it is dropped; reading it
// from any thread is as safe as reading the file (the kernel keeps it coherent with writes).
unsafe impl Send for Mapping {}
// SAFETY: as for Send: shared references only read.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map all `len` bytes of `file`; `None` when the system refuses (no mmap support).
    fn new(file: &File, len: u64) -> Option<Mapping> {
        let len = usize::try_from(len).ok().filter(|l| *l > 0)?;
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address), of an open
        // descriptor; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            tracing::debug!(
                "mmap of a file LUN failed ({}); reading with pread",
                io::Error::last_os_error()
            );
            return None;
        }
        Some(Mapping {
            ptr: std::ptr::NonNull::new(ptr.cast())?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no view outlives it (the mapping
        // is the owner of the `Bytes` every view is a slice of).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The whole mapping as bytes: the owner of the [`Bytes`] every view is a slice of, so the
/// mapping lives until the last view of it is dropped.
impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives (unmapped in
        // `drop`), and they are never written through this process (PROT_READ).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl FileDevice {
    /// Open `path`. With `create_with_size`, the file is created if missing
    /// and grown sparsely to that many bytes (never shrunk: a larger file is
    /// an error); without it the file must already exist and its length
    /// gives the capacity. The file is locked first (non-blocking exclusive `flock`):
    /// [`DeviceError::Locked`] if another open file description (another process, or another
    /// `FileDevice` of this one) holds it.
    pub fn open(path: &Path, create_with_size: Option<u64>) -> Result<FileDevice, DeviceError> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if create_with_size.is_some() {
            opts.create(true);
        }
        let file = opts.open(path).map_err(|source| DeviceError::Open {
            path: path.to_owned(),
            source,
        })?;
        // Before anything is changed (the size): the lock says whose file it is.
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => DeviceError::Locked {
                path: path.to_owned(),
            },
            std::fs::TryLockError::Error(source) => DeviceError::Lock {
                path: path.to_owned(),
                source,
            },
        })?;
        let existing = file
            .metadata()
            .map_err(|source| DeviceError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        let size = match create_with_size {
            Some(size) => {
                check_size(path, size)?;
                if existing > size {
                    // Shrinking would silently drop data.
                    return Err(DeviceError::WouldTruncate {
                        path: path.to_owned(),
                        existing,
                        size,
                    });
                }
                if existing < size {
                    file.set_len(size).map_err(|source| DeviceError::SetLen {
                        path: path.to_owned(),
                        size,
                        source,
                    })?;
                }
                size
            }
            None => {
                check_size(path, existing)?;
                existing
            }
        };
        let map = Mapping::new(&file, size).map(Bytes::from_owner);
        Ok(FileDevice {
            file,
            num_blocks: size / u64::from(BLOCK_SIZE),
            map,
        })
    }
}

fn check_size(path: &Path, size: u64) -> Result<(), DeviceError> {
    if size == 0 {
        return Err(DeviceError::Empty {
            path: path.to_owned(),
        });
    }
    if !size.is_multiple_of(u64::from(BLOCK_SIZE)) {
        return Err(DeviceError::Unaligned {
            path: path.to_owned(),
            size,
            block: BLOCK_SIZE,
        });
    }
    Ok(())
}

impl BlockDevice for FileDevice {
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    /// pread(2) straight into the spare capacity of `out`: no zero-fill first. For 1 MiB
    /// READs from the page cache the zero-fill was 7.8% of the portal thread's CPU time
    /// (perf, iscsi-perf -b 2048 -m 4); see BENCHMARKS.md.
    fn read_append(&self, offset: u64, len: usize, out: &mut BytesMut) -> io::Result<()> {
        out.reserve(len);
        let start = out.len();
        let dst = out
            .spare_capacity_mut()
            .get_mut(..len)
            .ok_or(io::ErrorKind::OutOfMemory)?;
        let mut done = 0usize;
        while let Some(rest) = dst.get_mut(done..).filter(|r| !r.is_empty()) {
            let at = offset
                .checked_add(done as u64)
                .and_then(|a| libc::off_t::try_from(a).ok())
                .ok_or(io::ErrorKind::InvalidInput)?;
            // SAFETY: `rest` is writable memory owned by `out` of `rest.len()` bytes (possibly
            // uninitialised, which pread does not read); pread writes at most that many bytes
            // and no `&[u8]` over uninitialised memory is ever made.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    at,
                )
            };
            match n {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                n => done += n as usize,
            }
        }
        // SAFETY: the loop ends only once pread has written all `len` bytes after `start`,
        // which `reserve` made room for.
        unsafe { out.set_len(start + len) };
        Ok(())
    }
    fn view(&self, offset: u64, len: usize) -> Option<io::Result<Bytes>> {
        let map = self.map.as_ref()?;
        let start = usize::try_from(offset).ok()?;
        match start.checked_add(len) {
            Some(end) if end <= map.len() => Some(Ok(map.slice(start..end))),
            _ => Some(Err(io::ErrorKind::UnexpectedEof.into())),
        }
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    /// fallocate(PUNCH_HOLE | KEEP_SIZE): the range becomes a hole (reads zeros, no
    /// storage); a file system without hole punching gets zeros written.
    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on an open descriptor owned by `self.file`; no memory is passed.
        if unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, n) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => zero_fill(self, offset, len),
            _ => Err(e),
        }
    }
    /// lseek(SEEK_DATA / SEEK_HOLE): data runs are mapped, holes are not.
    fn mapping(&self, offset: u64) -> io::Result<Option<(bool, u64)>> {
        let Ok(off) = libc::off_t::try_from(offset) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let fd = self.file.as_raw_fd();
        let size = self.num_blocks * u64::from(BLOCK_SIZE);
        // SAFETY: lseek on an open descriptor owned by `self.file`. The file offset it moves
        // is not used by this device (every I/O is positional).
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // No data at or after `offset`: a hole to the end.
                Some(libc::ENXIO) => Ok(Some((false, size))),
                Some(libc::EINVAL | libc::EOPNOTSUPP) => Ok(None),
                _ => Err(e),
            };
        }
        if data as u64 > offset {
            return Ok(Some((false, (data as u64).min(size))));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some((true, (hole as u64).min(size))))
    }
    /// `pwritev2(RWF_DSYNC)`: the data (and the metadata needed to read it back) is on
    /// stable storage when the call returns, without flushing the rest of the file. A kernel
    /// or file system without RWF_DSYNC (EOPNOTSUPP, ENOSYS) gets write + fdatasync.
    fn write_at_durable(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut done = 0usize;
        while let Some(rest) = buf.get(done..).filter(|r| !r.is_empty()) {
            let at = offset
                .checked_add(done as u64)
                .and_then(|a| libc::off_t::try_from(a).ok())
                .ok_or(io::ErrorKind::InvalidInput)?;
            let iov = libc::iovec {
                iov_base: rest.as_ptr().cast_mut().cast(),
                iov_len: rest.len(),
            };
            // SAFETY: one iovec over `rest`, which lives for the call; pwritev2 only reads it.
            let n = unsafe { libc::pwritev2(self.file.as_raw_fd(), &iov, 1, at, libc::RWF_DSYNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => {
                        self.file.write_all_at(rest, at as u64)?;
                        return self.file.sync_data();
                    }
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += n as usize;
        }
        Ok(())
    }
}

/// An in-memory disk (tests, benchmarks of the protocol path).
#[derive(Debug)]
pub struct MemDevice {
    data: RwLock<Vec<u8>>,
}

impl MemDevice {
    /// A zero-filled device of `num_blocks` blocks.
    pub fn new(num_blocks: u64) -> MemDevice {
        let len = usize::try_from(num_blocks * u64::from(BLOCK_SIZE))
            .expect("MemDevice size fits in memory");
        MemDevice {
            data: RwLock::new(vec![0; len]),
        }
    }
}

fn range(offset: u64, len: usize, total: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let end = start.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
    if end > total {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "access beyond end of device",
        ));
    }
    Ok(start..end)
}

impl BlockDevice for MemDevice {
    fn num_blocks(&self) -> u64 {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        data.len() as u64 / u64::from(BLOCK_SIZE)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let r = range(offset, buf.len(), data.len())?;
        buf.copy_from_slice(&data[r]);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        let r = range(offset, buf.len(), data.len())?;
        data[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A device that reads zeros and discards writes, like tgtd's null
/// backing store: measures the protocol path without storage cost. Nothing is stored, so
/// there is nothing to make durable: flushes and durable writes succeed at once.
#[derive(Debug, Clone, Copy)]
pub struct NullDevice {
    num_blocks: u64,
}

impl NullDevice {
    pub fn new(num_blocks: u64) -> NullDevice {
        NullDevice { num_blocks }
    }
}

impl BlockDevice for NullDevice {
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn read_at(&self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn read_append(&self, _offset: u64, len: usize, out: &mut BytesMut) -> io::Result<()> {
        out.resize(out.len() + len, 0);
        Ok(())
    }
    fn write_at(&self, _offset: u64, _buf: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn write_at_durable(&self, _offset: u64, _buf: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn deallocate(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_create_then_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        let d = FileDevice::open(&p, Some(1 << 20)).unwrap();
        assert_eq!(d.num_blocks(), 2048);
        d.write_at(512, b"hello").unwrap();
        d.flush().unwrap();
        drop(d);
        let d = FileDevice::open(&p, None).unwrap();
        assert_eq!(d.num_blocks(), 2048);
        let mut buf = [0u8; 5];
        d.read_at(512, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn durable_write_reads_back_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dsync.img");
        let d = FileDevice::open(&p, Some(1 << 20)).unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        d.write_at_durable(4096, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        d.read_at(4096, &mut back).unwrap();
        assert_eq!(back, data);
        drop(d);
        let d = FileDevice::open(&p, None).unwrap();
        d.read_at(4096, &mut back).unwrap();
        assert_eq!(back, data);
        // An offset off_t cannot hold: an error, not a panic.
        assert!(d.write_at_durable(u64::MAX - 1, b"xx").is_err());
    }

    #[test]
    fn deallocated_ranges_read_zero_and_are_reported_unmapped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("holes.img");
        let d = FileDevice::open(&p, Some(1 << 20)).unwrap();
        d.write_at(0, &vec![0xEE; 1 << 20]).unwrap();
        assert_eq!(d.mapping(0).unwrap(), Some((true, 1 << 20)));
        d.deallocate(64 << 10, 128 << 10).unwrap();
        let mut back = vec![0xFFu8; 128 << 10];
        d.read_at(64 << 10, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        let mut edge = [0u8; 1];
        d.read_at((64 << 10) - 1, &mut edge).unwrap();
        assert_eq!(edge[0], 0xEE, "bytes before the range are kept");
        assert_eq!(d.mapping(0).unwrap(), Some((true, 64 << 10)));
        assert_eq!(d.mapping(64 << 10).unwrap(), Some((false, 192 << 10)));
        assert_eq!(d.mapping(192 << 10).unwrap(), Some((true, 1 << 20)));
        d.deallocate(0, 1 << 20).unwrap();
        assert_eq!(d.mapping(0).unwrap(), Some((false, 1 << 20)));
    }

    #[test]
    fn a_file_is_served_by_one_device_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locked.img");
        let d = FileDevice::open(&p, Some(1 << 20)).unwrap();
        // A second open file description of the same file, even in this process, is refused,
        // and the file is left as it was (not grown).
        for size in [None, Some(2 << 20)] {
            let e = FileDevice::open(&p, size).unwrap_err();
            assert!(
                matches!(&e, DeviceError::Locked { path } if path == &p),
                "{e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "backing file {} is already served by another process (locked)",
                    p.display()
                )
            );
        }
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
        // Another process would be refused the same way (flock from a plain open()).
        let other = File::open(&p).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(other);
        // Closed, the file is free again.
        drop(d);
        FileDevice::open(&p, None).unwrap();
    }

    #[test]
    fn read_append_reads_after_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ra.img");
        let d = FileDevice::open(&p, Some(1 << 20)).unwrap();
        let pattern: Vec<u8> = (0..3 * 65536u32).map(|i| (i % 251) as u8).collect();
        d.write_at(4096, &pattern).unwrap();
        let mut out = BytesMut::from(&b"head"[..]);
        d.read_append(4096, pattern.len(), &mut out).unwrap();
        assert_eq!(&out[..4], b"head");
        assert_eq!(&out[4..], &pattern[..]);
        // Past the end: an error, and nothing is appended.
        let before = out.len();
        let e = d.read_append((1 << 20) - 512, 1024, &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out.len(), before);
        // The default (zero-fill, then read_at) and the null device agree on lengths.
        let m = MemDevice::new(8);
        m.write_at(0, b"abc").unwrap();
        let mut out = BytesMut::new();
        m.read_append(0, 512, &mut out).unwrap();
        assert_eq!((&out[..3], out.len()), (&b"abc"[..], 512));
        NullDevice::new(8).read_append(0, 512, &mut out).unwrap();
        assert_eq!(out.len(), 1024);
        assert!(out[512..].iter().all(|&b| b == 0));
    }

    #[test]
    fn file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.img");
        let e = FileDevice::open(&missing, None).unwrap_err();
        assert!(matches!(e, DeviceError::Open { .. }), "{e}");
        let odd = dir.path().join("odd.img");
        std::fs::write(&odd, [0u8; 700]).unwrap();
        let e = FileDevice::open(&odd, None).unwrap_err();
        assert!(e.to_string().contains("not a multiple"), "{e}");
        let e = FileDevice::open(&odd, Some(1000)).unwrap_err();
        assert!(matches!(e, DeviceError::Unaligned { .. }));
        let e = FileDevice::open(&dir.path().join("z.img"), Some(0)).unwrap_err();
        assert!(matches!(e, DeviceError::Empty { .. }));
    }

    #[test]
    fn file_grows_but_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.img");
        let d = FileDevice::open(&p, Some(4096)).unwrap();
        d.write_at(4095, &[1]).unwrap();
        drop(d);
        let d = FileDevice::open(&p, Some(8192)).unwrap();
        assert_eq!(d.num_blocks(), 16);
        let mut b = [0u8; 1];
        d.read_at(4095, &mut b).unwrap();
        assert_eq!(b, [1]);
        drop(d);
        let e = FileDevice::open(&p, Some(4096)).unwrap_err();
        assert!(matches!(e, DeviceError::WouldTruncate { .. }), "{e}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 8192);
    }

    #[test]
    fn file_read_past_end_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDevice::open(&dir.path().join("d.img"), Some(4096)).unwrap();
        let mut buf = [0u8; 512];
        assert!(d.read_at(4096, &mut buf).is_err());
    }

    #[test]
    fn mem_bounds_and_zeroes() {
        let d = MemDevice::new(4);
        d.write_at(0, &[7u8; 2048]).unwrap();
        d.write_zeroes(512, 1024).unwrap();
        let mut buf = [1u8; 2048];
        d.read_at(0, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 7));
        assert!(buf[512..1536].iter().all(|&b| b == 0));
        assert!(buf[1536..].iter().all(|&b| b == 7));
        assert!(d.write_at(2047, &[0, 0]).is_err());
        assert!(d.read_at(u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn null_reads_zero() {
        let d = NullDevice::new(8);
        d.write_at(0, &[9u8; 512]).unwrap();
        let mut buf = [9u8; 512];
        d.read_at(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_view_shows_the_file_as_written_before_and_after_it_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDevice::open(&dir.path().join("lun"), Some(64 * 1024)).unwrap();
        d.write_at(4096, &[7u8; 4096]).unwrap();
        let v = d.view(4096, 4096).expect("a file LUN is mapped").unwrap();
        assert_eq!(&v[..], &[7u8; 4096][..]);
        // The view is the page cache: a write after it was taken shows in it (so it must be
        // sent before the command's status, which the portal's writev does).
        d.write_at(4096, &[9u8; 512]).unwrap();
        assert_eq!(&v[..512], &[9u8; 512][..]);
        assert_eq!(&v[512..], &[7u8; 3584][..]);
        // A view outlives nothing it needs: the device may go first.
        drop(d);
        assert_eq!(v.len(), 4096);
        assert_eq!(v[0], 9);
    }

    #[test]
    fn a_view_past_the_end_is_an_error_and_memory_devices_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDevice::open(&dir.path().join("lun"), Some(8192)).unwrap();
        assert!(d.view(4096, 4097).expect("mapped").is_err());
        assert!(d.view(u64::MAX - 10, 4096).is_none_or(|r| r.is_err()));
        assert!(MemDevice::new(16).view(0, 512).is_none());
    }
}
