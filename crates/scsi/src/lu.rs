//! A logical unit: executes parsed commands against its [`BlockDevice`]
//! (SBC-3 §4, §5; SPC-4 §6).

use std::io;
use std::sync::Arc;

use bytes::BytesMut;

use crate::cdb::{self, Command, CompareAndWrite, Rw, Verify, WriteSame, WriteVerify};
use crate::data_in::{DataSink, LentView};
use crate::device::BlockDevice;
use crate::identity::Identity;
use crate::inquiry;
use crate::lun;
use crate::mode::{self, ModeState};
use crate::mode_select;
use crate::opcodes;
use crate::persistent_reservation::{self as pr, NexusPort, PersistentReservations, PrOutcome};
use crate::physical::{PhysicalBlockError, lbppb_exponent};
use crate::range_lock::RangeLocks;
use crate::reservation::{self, Reply, Reservations};
use crate::sense::{Asc, Sense, SenseKey};
use crate::task::{ScsiOutcome, ScsiTask};

/// Size limits advertised in the Block Limits VPD page and enforced here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// MAXIMUM TRANSFER LENGTH in blocks for READ/WRITE/VERIFY.
    pub max_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT (total over one UNMAP command).
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks.
    pub max_write_same_blocks: u32,
    /// MAXIMUM COMPARE AND WRITE LENGTH in blocks (0: not supported).
    pub max_compare_and_write_blocks: u8,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_transfer_blocks: 16384, // 8 MiB of 512-byte blocks
            max_unmap_blocks: 65536,
            max_unmap_descriptors: 64,
            // Not above the transfer limit: initiators (libiscsi's
            // WriteSame16.Unmap) WRITE the whole range they then unmap.
            max_write_same_blocks: 16384,
            max_compare_and_write_blocks: 255,
        }
    }
}

/// Bytes written per device call by WRITE SAME (pattern buffer size).
const WRITE_SAME_CHUNK_BLOCKS: u32 = 2048;

/// One logical unit of a target.
pub struct LogicalUnit {
    device: Arc<dyn BlockDevice>,
    identity: Identity,
    limits: Limits,
    block_size: u32,
    num_blocks: u64,
    reservations: Reservations,
    /// Persistent reservations (SPC-4 §5.9).
    persistent: PersistentReservations,
    /// Held exclusively by whatever writes the medium, shared by whatever copies it for a
    /// READ (crate::range_lock); shared with the transport through lent views.
    range_locks: Arc<RangeLocks>,
    /// WCE and SWP, as MODE SELECT left them.
    mode: ModeState,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (READ CAPACITY (16)).
    lbppbe: u8,
    /// Results of EXTENDED COPY lists held for RECEIVE COPY RESULTS.
    copy_results: crate::xcopy::HeldResults,
    /// Commands, bytes and errors, for monitoring.
    statistics: crate::statistics::LuStatistics,
}

impl std::fmt::Debug for LogicalUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalUnit")
            .field("identity", &self.identity)
            .field("num_blocks", &self.num_blocks)
            .field("block_size", &self.block_size)
            .finish()
    }
}

/// Append `buf`, truncated to the allocation length and the EDTL (SPC-4
/// §4.2.5.6), and report GOOD.
pub(crate) fn respond(
    data_in: &mut BytesMut,
    buf: &[u8],
    alloc_len: u32,
    edtl: u32,
) -> ScsiOutcome {
    let wanted = buf.len().min(alloc_len as usize);
    let sent = wanted.min(edtl as usize);
    data_in.extend_from_slice(&buf[..sent]);
    ScsiOutcome::good(sent as u32, wanted as u32)
}

/// REQUEST SENSE parameter data for `sense` (SPC-4 §6.39).
pub(crate) fn request_sense_data(sense: &Sense, desc: bool) -> Vec<u8> {
    if desc {
        sense.to_descriptor()
    } else {
        sense.to_fixed().to_vec()
    }
}

/// The sense for an I/O error of the backing store at `lba`; the error is logged with the
/// target, LUN and LBA (the initiator only sees the sense).
fn medium_error(id: &Identity, asc: Asc, lba: u64, e: &io::Error) -> Sense {
    tracing::warn!(
        target_name = %id.target_name,
        lun = id.lun,
        lba,
        "{} at LBA {lba}: {e}",
        if asc == Asc::WRITE_ERROR { "write error" } else { "read error" },
    );
    let s = Sense::new(SenseKey::MediumError, asc);
    match u32::try_from(lba) {
        Ok(info) => s.with_information(info),
        Err(_) => s,
    }
}

type Exec = Result<ScsiOutcome, Sense>;

fn reply(r: Reply) -> ScsiOutcome {
    match r {
        Reply::Good => ScsiOutcome::good(0, 0),
        Reply::Conflict => ScsiOutcome::reservation_conflict(),
    }
}

/// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION with the byte offset of
/// the first difference in INFORMATION (SBC-3 §5.2, §5.29).
fn miscompare(offset: usize) -> Sense {
    let s = Sense::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY);
    match u32::try_from(offset) {
        Ok(info) => s.with_information(info),
        Err(_) => s,
    }
}

/// Offset of the first byte where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

impl LogicalUnit {
    /// A logical unit over `device` with the given identity and default limits.
    pub fn new(device: Arc<dyn BlockDevice>, identity: Identity) -> LogicalUnit {
        let block_size = device.block_size();
        let num_blocks = device.num_blocks();
        LogicalUnit {
            device,
            identity,
            limits: Limits::default(),
            block_size,
            num_blocks,
            reservations: Reservations::new(),
            persistent: PersistentReservations::new(),
            range_locks: Arc::new(RangeLocks::new()),
            mode: ModeState::new(false),
            lbppbe: 0,
            copy_results: Default::default(),
            statistics: Default::default(),
        }
    }

    /// The unit's command statistics.
    pub fn statistics(&self) -> &crate::statistics::LuStatistics {
        &self.statistics
    }

    /// Write-through: every write is durable before its status, and the Caching mode page
    /// says WCE = 0 (not changeable). Without it, writes may sit in the host page cache
    /// until SYNCHRONIZE CACHE, a FUA write, or MODE SELECT clearing WCE.
    pub fn with_write_through(mut self, write_through: bool) -> LogicalUnit {
        self.mode = ModeState::new(write_through);
        self
    }

    /// A physical block of `bytes` (a power-of-two multiple of the logical block size),
    /// reported in READ CAPACITY (16).
    pub fn with_physical_block_size(
        mut self,
        bytes: u32,
    ) -> Result<LogicalUnit, PhysicalBlockError> {
        self.lbppbe = lbppb_exponent(bytes, self.block_size)?;
        Ok(self)
    }

    /// The mode parameters (write cache, software write protect).
    pub fn mode(&self) -> &ModeState {
        &self.mode
    }

    /// Replace the limits.
    pub fn with_limits(mut self, limits: Limits) -> LogicalUnit {
        self.limits = limits;
        self
    }

    /// Replace the persistent reservations (e.g. with an APTPL store).
    pub fn with_persistent_reservations(mut self, pr: PersistentReservations) -> LogicalUnit {
        self.persistent = pr;
        self
    }

    /// The unit's persistent reservations.
    pub fn persistent_reservations(&self) -> &PersistentReservations {
        &self.persistent
    }

    /// Session `nexus` is the I_T nexus `port` (initiator port and target
    /// port), for persistent reservations.
    pub fn nexus_port(&self, nexus: u64, port: NexusPort) {
        self.persistent.nexus_port(nexus, port);
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// True when session `nexus` holds the RESERVE(6) reservation or a persistent
    /// reservation registration of this unit.
    pub fn holds_reservation(&self, nexus: u64) -> bool {
        self.reservations.held_by(nexus) || self.persistent.is_registered(nexus, 0)
    }

    /// The I_T nexus `nexus` is gone (logout, connection loss, session
    /// reinstatement): release what it held (SPC-2 §5.5.1).
    pub fn nexus_lost(&self, nexus: u64) {
        self.reservations.nexus_lost(nexus);
        self.persistent.nexus_lost(nexus);
    }

    /// LOGICAL UNIT RESET (or a target reset) reached this unit: SPC-2
    /// reservations are released (SAM-5 §6.3.2).
    pub fn reset(&self) {
        self.reservations.reset();
    }

    /// Bytes of data-out the command in `cdb` transfers.
    pub fn data_out_length(&self, cdb: &[u8]) -> Result<u32, Sense> {
        cdb::data_out_length(cdb, self.block_size)
    }

    /// Execute one command. Data-in is appended to `data_in` (at most the
    /// EDTL); `data_out` holds what the initiator sent.
    pub fn execute(
        &self,
        task: &ScsiTask<'_>,
        data_out: &[u8],
        data_in: &mut dyn DataSink,
    ) -> ScsiOutcome {
        self.execute_parsed(cdb::parse(task.cdb), task, data_out, data_in)
    }

    /// [`LogicalUnit::execute`] with `task.cdb` already parsed into `cmd`.
    pub(crate) fn execute_parsed(
        &self,
        cmd: Result<Command, Sense>,
        task: &ScsiTask<'_>,
        data_out: &[u8],
        data_in: &mut dyn DataSink,
    ) -> ScsiOutcome {
        let start = data_in.buf().len();
        let result = cmd.and_then(|cmd| self.dispatch(cmd, task, data_out, data_in));
        match result {
            Ok(outcome) => outcome,
            Err(sense) => {
                data_in.buf().truncate(start);
                ScsiOutcome::check_condition(sense)
            }
        }
    }

    fn dispatch(
        &self,
        cmd: Command,
        task: &ScsiTask<'_>,
        data_out: &[u8],
        data_in: &mut dyn DataSink,
    ) -> Exec {
        let edtl = task.expected_data_transfer_length;
        let bs = self.block_size;
        let op = task.cdb.first().copied().unwrap_or(0);
        if let Some(ua) = self.persistent.unit_attention(task.nexus, task.tpgt, op) {
            return Err(ua);
        }
        let access = reservation::access(&cmd);
        if self.reservations.conflicts(task.nexus, access)
            || self.persistent.conflicts(task.nexus, task.tpgt, access)
        {
            return Ok(ScsiOutcome::reservation_conflict());
        }
        if self.mode.software_write_protect()
            && access == reservation::Access::Write
            && !matches!(cmd, Command::SynchronizeCache { .. })
        {
            // SBC-3 §4.12: a write to a software write-protected medium.
            return Err(Sense::new(
                SenseKey::DataProtect,
                Asc::SOFTWARE_WRITE_PROTECTED,
            ));
        }
        match cmd {
            Command::TestUnitReady | Command::StartStopUnit => Ok(ScsiOutcome::good(0, 0)),
            // RESERVE(6) conflicts while persistent registrations exist
            // (SPC-4 §5.9.1); RELEASE(6) then does nothing.
            Command::Reserve6 if self.persistent.any_registration() => {
                Ok(ScsiOutcome::reservation_conflict())
            }
            Command::Reserve6 => Ok(reply(self.reservations.reserve6(task.nexus))),
            Command::Release6 => Ok(reply(self.reservations.release6(task.nexus))),
            Command::PreventAllowMediumRemoval { .. } => Ok(ScsiOutcome::good(0, 0)),
            Command::RequestSense { desc, alloc_len } => {
                // Status is returned with each command (autosense), so no
                // sense is ever pending: report NO SENSE.
                let none = Sense::new(SenseKey::NoSense, Asc::NO_ADDITIONAL_SENSE);
                let buf = request_sense_data(&none, desc);
                Ok(respond(data_in.buf(), &buf, u32::from(alloc_len), edtl))
            }
            Command::Inquiry {
                evpd,
                page,
                alloc_len,
            } => {
                let alloc = u32::from(alloc_len);
                if evpd {
                    let buf = inquiry::vpd(page, &self.identity, &self.limits, task.tpgt)?;
                    Ok(respond(data_in.buf(), &buf, alloc, edtl))
                } else {
                    Ok(respond(data_in.buf(), &inquiry::standard(0), alloc, edtl))
                }
            }
            Command::ModeSense(ms) => {
                let buf = mode::mode_sense(&ms, self.num_blocks, bs, &self.mode)?;
                Ok(respond(data_in.buf(), &buf, u32::from(ms.alloc_len), edtl))
            }
            Command::ReadCapacity10 => {
                let last = self.num_blocks.saturating_sub(1);
                let last = u32::try_from(last).unwrap_or(u32::MAX);
                let mut buf = [0u8; 8];
                buf[0..4].copy_from_slice(&last.to_be_bytes());
                buf[4..8].copy_from_slice(&bs.to_be_bytes());
                Ok(respond(data_in.buf(), &buf, 8, edtl))
            }
            Command::ReadCapacity16 { alloc_len } => {
                // SBC-3 §5.16.2 table 64.
                let mut buf = [0u8; 32];
                buf[0..8].copy_from_slice(&self.num_blocks.saturating_sub(1).to_be_bytes());
                buf[8..12].copy_from_slice(&bs.to_be_bytes());
                buf[13] = self.lbppbe;
                buf[14] = 0x80 | 0x40; // LBPME, LBPRZ; LOWEST ALIGNED LBA 0
                Ok(respond(data_in.buf(), &buf, alloc_len, edtl))
            }
            Command::GetLbaStatus { lba, alloc_len } => {
                // SBC-3 §5.6: one descriptor, the run of blocks from `lba` that are all
                // mapped or all deallocated, as the store tells (everything mapped when it
                // cannot).
                if lba >= self.num_blocks {
                    return Err(Sense::lba_out_of_range());
                }
                let (mapped, end) = match self.device.mapping(self.offset(lba)) {
                    Ok(Some((mapped, end_byte))) => (mapped, end_byte / u64::from(bs)),
                    Ok(None) => (true, self.num_blocks),
                    Err(e) => {
                        return Err(medium_error(
                            &self.identity,
                            Asc::UNRECOVERED_READ_ERROR,
                            lba,
                            &e,
                        ));
                    }
                };
                let end = end.clamp(lba + 1, self.num_blocks);
                let count = u32::try_from(end - lba).unwrap_or(u32::MAX);
                let mut buf = [0u8; 24];
                buf[0..4].copy_from_slice(&20u32.to_be_bytes());
                buf[8..16].copy_from_slice(&lba.to_be_bytes());
                buf[16..20].copy_from_slice(&count.to_be_bytes());
                // PROVISIONING STATUS: 0 mapped, 1 deallocated.
                buf[20] = u8::from(!mapped);
                Ok(respond(data_in.buf(), &buf, alloc_len, edtl))
            }
            Command::ReportLuns {
                select_report,
                alloc_len,
            } => {
                let buf = lun::report_luns(select_report, &[self.identity.lun])?;
                Ok(respond(data_in.buf(), &buf, alloc_len, edtl))
            }
            Command::ReportSupportedOperationCodes {
                rctd,
                options,
                opcode,
                service_action,
                alloc_len,
            } => {
                let buf = opcodes::report(rctd, options, opcode, service_action)?;
                Ok(respond(data_in.buf(), &buf, alloc_len, edtl))
            }
            Command::Read(rw) => self.read(op, rw, edtl, data_in),
            Command::Write(rw) => self.write(op, rw, data_out),
            Command::Verify(v) => self.verify(op, v, data_out),
            Command::WriteVerify(wv) => self.write_and_verify(op, wv, data_out),
            Command::CompareAndWrite(caw) => self.compare_and_write(caw, edtl, data_out),
            Command::OrWrite(rw) => self.orwrite(op, rw, data_out),
            Command::WriteSame(ws) => self.write_same(op, ws, edtl, data_out),
            Command::Unmap { param_len } => self.unmap(param_len, data_out),
            Command::SynchronizeCache { lba, blocks } => {
                self.check_range(lba, blocks)?;
                self.device
                    .flush()
                    .map_err(|e| medium_error(&self.identity, Asc::WRITE_ERROR, lba, &e))?;
                Ok(ScsiOutcome::good(0, 0))
            }
            Command::PersistentReserveIn {
                service_action,
                alloc_len,
            } => {
                let buf = self.persistent.reserve_in(service_action)?;
                Ok(respond(data_in.buf(), &buf, u32::from(alloc_len), edtl))
            }
            Command::PersistentReserveOut {
                service_action,
                scope,
                pr_type,
                param_len,
            } => {
                if param_len > pr::MAX_PARAMETER_LIST {
                    return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
                }
                let data = Self::take(data_out, param_len as usize)?;
                match self.persistent.reserve_out(
                    task.nexus,
                    task.tpgt,
                    service_action,
                    scope,
                    pr_type,
                    data,
                )? {
                    PrOutcome::Good(_) => Ok(ScsiOutcome::good(0, 0)),
                    PrOutcome::Conflict => Ok(ScsiOutcome::reservation_conflict()),
                }
            }
            Command::PreFetch { lba, blocks } => {
                self.check_range(lba, blocks)?;
                Ok(ScsiOutcome::good(0, 0))
            }
            Command::ModeSelect(ms) => {
                let data = Self::take(data_out, usize::from(ms.param_len))?;
                let changes = mode_select::parse(&ms, data, self.num_blocks, bs, &self.mode)?;
                let flush_first = changes.wce == Some(false) && self.mode.write_cache_enabled();
                if flush_first {
                    // Turning the cache off: what it held becomes durable now.
                    self.device
                        .flush()
                        .map_err(|e| medium_error(&self.identity, Asc::WRITE_ERROR, 0, &e))?;
                }
                mode_select::apply(changes, &self.mode);
                Ok(ScsiOutcome::good(0, 0))
            }
            Command::ReadDefectData(r) => Ok(respond(
                data_in.buf(),
                &crate::defect::data(&r),
                r.alloc_len,
                edtl,
            )),
            Command::WriteAtomic(rw) => self.write_atomic(rw, data_out),
            Command::Sanitize(_) => {
                // BLOCK ERASE: release every block, durably.
                let werr = |e: io::Error| medium_error(&self.identity, Asc::WRITE_ERROR, 0, &e);
                let len = self.num_blocks * u64::from(bs);
                let _held = self.range_locks.exclusive(0, u32::MAX);
                self.device.deallocate(0, len).map_err(werr)?;
                self.device.flush().map_err(werr)?;
                Ok(ScsiOutcome::good(0, 0))
            }
            // Addressed to this unit alone (LunTable copies among all its units).
            Command::ExtendedCopy { param_len } => {
                Ok(self.extended_copy(&[self], param_len, task, data_out))
            }
            Command::ReceiveCopyResults {
                service_action,
                list_id,
                alloc_len,
            } => crate::xcopy::receive_copy_results(
                &self.copy_results,
                task,
                service_action,
                list_id,
                alloc_len,
                data_in.buf(),
            ),
        }
    }

    /// EXTENDED COPY addressed to this unit, copying among `units` (the target's units,
    /// this one included). Unit attentions were checked by the caller.
    pub(crate) fn extended_copy(
        &self,
        units: &[&LogicalUnit],
        param_len: u32,
        task: &ScsiTask<'_>,
        data_out: &[u8],
    ) -> ScsiOutcome {
        let run = || {
            let data = Self::take(data_out, param_len as usize)?;
            crate::xcopy::extended_copy(units, &self.copy_results, task, data)
        };
        run().unwrap_or_else(ScsiOutcome::check_condition)
    }

    /// Would a command of class `access` from `nexus` conflict with a reservation?
    pub(crate) fn conflicts(&self, nexus: u64, access: reservation::Access) -> bool {
        self.reservations.conflicts(nexus, access)
    }

    /// Writes are durable before their status: FUA, or the write cache is off.
    fn durable(&self, fua: bool) -> bool {
        fua || !self.mode.write_cache_enabled()
    }

    /// After a write that went through the page cache (WRITE SAME, UNMAP): flush when the
    /// write cache is off.
    fn settle(&self, lba: u64) -> Result<(), Sense> {
        if self.durable(false) {
            self.device
                .flush()
                .map_err(|e| medium_error(&self.identity, Asc::WRITE_ERROR, lba, &e))?;
        }
        Ok(())
    }

    /// WRITE ATOMIC (16) (SBC-4 §5.48): at most MAXIMUM ATOMIC TRANSFER LENGTH blocks,
    /// written in one call under the range lock.
    fn write_atomic(&self, rw: Rw, data_out: &[u8]) -> Exec {
        self.check_range(rw.lba, rw.blocks)?;
        let max = crate::atomic::MAX_ATOMIC_TRANSFER_BLOCKS.min(self.limits.max_transfer_blocks);
        if rw.blocks > max {
            return Err(Sense::invalid_field_in_cdb(12, None));
        }
        let data = Self::take(data_out, self.bytes(rw.blocks))?;
        if data.is_empty() {
            return Ok(ScsiOutcome::good(0, 0));
        }
        self.write_medium(rw.lba, data, rw.fua)?;
        Ok(ScsiOutcome::good(0, 0))
    }

    /// LBA range check (SBC-3 §4.5): LBA + count must not pass the capacity.
    pub(crate) fn check_range(&self, lba: u64, blocks: u32) -> Result<(), Sense> {
        match lba.checked_add(u64::from(blocks)) {
            Some(end) if end <= self.num_blocks => Ok(()),
            _ => Err(Sense::lba_out_of_range()),
        }
    }

    /// Range and MAXIMUM TRANSFER LENGTH checks for a data transfer.
    fn check_transfer(&self, op: u8, lba: u64, blocks: u32) -> Result<(), Sense> {
        self.check_range(lba, blocks)?;
        if blocks > self.limits.max_transfer_blocks {
            return Err(Sense::invalid_field_in_cdb(
                cdb::transfer_length_byte(op),
                None,
            ));
        }
        Ok(())
    }

    fn offset(&self, lba: u64) -> u64 {
        lba * u64::from(self.block_size)
    }

    fn bytes(&self, blocks: u32) -> usize {
        blocks as usize * self.block_size as usize
    }

    /// Data-out of `need` bytes, or INVALID FIELD IN COMMAND INFORMATION
    /// UNIT when the initiator sent less (EDTL < transfer length; FCP-4
    /// option b: nothing is written).
    fn take(data_out: &[u8], need: usize) -> Result<&[u8], Sense> {
        data_out.get(..need).ok_or(Sense::illegal_request(
            Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
        ))
    }

    fn read(&self, op: u8, rw: Rw, edtl: u32, data_in: &mut dyn DataSink) -> Exec {
        self.check_transfer(op, rw.lba, rw.blocks)?;
        let wanted = self.bytes(rw.blocks);
        let len = wanted.min(edtl as usize);
        let failed =
            |e: io::Error| medium_error(&self.identity, Asc::UNRECOVERED_READ_ERROR, rw.lba, &e);
        let offset = self.offset(rw.lba);
        if len > 0 {
            // A device that maps its medium lends the pages: no system call, no copy here.
            match data_in
                .lends()
                .then(|| self.device.view(offset, len))
                .flatten()
            {
                // The transport holds the range while it copies the view (crate::data_in).
                Some(view) => data_in.lend(LentView {
                    data: view.map_err(failed)?,
                    locks: self.range_locks.clone(),
                    lba: rw.lba,
                    block_size: self.block_size,
                }),
                None => {
                    let _held = self.range_locks.shared(rw.lba, rw.blocks);
                    self.device
                        .read_append(offset, len, data_in.buf())
                        .map_err(failed)?
                }
            }
        }
        Ok(ScsiOutcome::good(len as u32, wanted as u32))
    }

    fn write(&self, op: u8, rw: Rw, data_out: &[u8]) -> Exec {
        self.check_transfer(op, rw.lba, rw.blocks)?;
        let data = Self::take(data_out, self.bytes(rw.blocks))?;
        self.write_medium(rw.lba, data, rw.fua)?;
        Ok(ScsiOutcome::good(0, 0))
    }

    fn verify(&self, op: u8, v: Verify, data_out: &[u8]) -> Exec {
        self.check_transfer(op, v.lba, v.blocks)?;
        let bs = self.block_size as usize;
        let medium = self.read_medium(v.lba, v.blocks)?;
        let expected: Option<Box<dyn Fn(usize) -> u8 + '_>> = match v.bytchk {
            0 => None,
            3 => {
                let block = Self::take(data_out, bs)?;
                Some(Box::new(move |i| block[i % bs]))
            }
            _ => {
                let all = Self::take(data_out, medium.len())?;
                Some(Box::new(move |i| all[i]))
            }
        };
        if let Some(expected) = expected
            && let Some(at) = (0..medium.len()).find(|&i| medium[i] != expected(i))
        {
            return Err(miscompare(at));
        }
        Ok(ScsiOutcome::good(0, 0))
    }

    /// Read `blocks` blocks at `lba` into a fresh buffer, holding them shared.
    pub(crate) fn read_medium(&self, lba: u64, blocks: u32) -> Result<Vec<u8>, Sense> {
        let _held = self.range_locks.shared(lba, blocks);
        self.read_medium_held(lba, blocks)
    }

    /// [`LogicalUnit::read_medium`] for a caller that holds the range already.
    fn read_medium_held(&self, lba: u64, blocks: u32) -> Result<Vec<u8>, Sense> {
        let mut medium = vec![0u8; self.bytes(blocks)];
        self.device
            .read_at(self.offset(lba), &mut medium)
            .map_err(|e| medium_error(&self.identity, Asc::UNRECOVERED_READ_ERROR, lba, &e))?;
        Ok(medium)
    }

    /// Write `data` at `lba`, holding its blocks exclusively; durable before returning when
    /// `fua` or write-through.
    pub(crate) fn write_medium(&self, lba: u64, data: &[u8], fua: bool) -> Result<(), Sense> {
        let blocks = data.len().div_ceil(self.block_size as usize);
        let _held = self
            .range_locks
            .exclusive(lba, u32::try_from(blocks).unwrap_or(u32::MAX));
        self.write_medium_held(lba, data, fua)
    }

    /// [`LogicalUnit::write_medium`] for a caller that holds the range exclusively already.
    fn write_medium_held(&self, lba: u64, data: &[u8], fua: bool) -> Result<(), Sense> {
        let werr = |e: io::Error| medium_error(&self.identity, Asc::WRITE_ERROR, lba, &e);
        if data.is_empty() {
            return Ok(());
        }
        if self.durable(fua) {
            self.device.write_at_durable(self.offset(lba), data)
        } else {
            self.device.write_at(self.offset(lba), data)
        }
        .map_err(werr)
    }

    /// WRITE AND VERIFY (SBC-3 §5.37): write, then read the blocks back;
    /// with BYTCHK 1 they must equal the data-out, else MISCOMPARE.
    fn write_and_verify(&self, op: u8, wv: WriteVerify, data_out: &[u8]) -> Exec {
        self.check_transfer(op, wv.lba, wv.blocks)?;
        let data = Self::take(data_out, self.bytes(wv.blocks))?;
        // The verification reads the medium, so the data must be there.
        self.write_medium(wv.lba, data, true)?;
        let medium = self.read_medium(wv.lba, wv.blocks)?;
        if wv.bytchk == 1
            && let Some(at) = first_difference(&medium, data)
        {
            return Err(miscompare(at));
        }
        Ok(ScsiOutcome::good(0, 0))
    }

    /// COMPARE AND WRITE (SBC-3 §5.2): under the range lock, compare the
    /// first half of the data-out with the medium and, only when equal,
    /// write the second half. The data-out must be exactly twice NUMBER OF
    /// LOGICAL BLOCKS: a different EDTL means the initiator and the CDB
    /// disagree on the halves (e.g. a block count that wrapped to 0 in the
    /// one-byte field), so it is refused rather than split wrongly.
    fn compare_and_write(&self, caw: CompareAndWrite, edtl: u32, data_out: &[u8]) -> Exec {
        let blocks = u32::from(caw.blocks);
        let len = self.bytes(blocks);
        if caw.blocks > self.limits.max_compare_and_write_blocks || edtl as usize != 2 * len {
            return Err(Sense::invalid_field_in_cdb(13, None));
        }
        self.check_range(caw.lba, blocks)?;
        let data = Self::take(data_out, 2 * len)?;
        if blocks == 0 {
            return Ok(ScsiOutcome::good(0, 0));
        }
        let (verify, write) = data.split_at(len);
        let _held = self.range_locks.exclusive(caw.lba, blocks);
        let medium = self.read_medium_held(caw.lba, blocks)?;
        if let Some(at) = first_difference(&medium, verify) {
            return Err(miscompare(at));
        }
        self.write_medium_held(caw.lba, write, caw.fua)?;
        Ok(ScsiOutcome::good(0, 0))
    }

    /// ORWRITE (16) (SBC-3 §5.9), as a read-modify-write under the range
    /// lock: each medium byte becomes itself OR the data-out byte.
    fn orwrite(&self, op: u8, rw: Rw, data_out: &[u8]) -> Exec {
        self.check_transfer(op, rw.lba, rw.blocks)?;
        let data = Self::take(data_out, self.bytes(rw.blocks))?;
        if data.is_empty() {
            return Ok(ScsiOutcome::good(0, 0));
        }
        let _held = self.range_locks.exclusive(rw.lba, rw.blocks);
        let mut medium = self.read_medium_held(rw.lba, rw.blocks)?;
        medium.iter_mut().zip(data).for_each(|(m, d)| *m |= d);
        self.write_medium_held(rw.lba, &medium, rw.fua)?;
        Ok(ScsiOutcome::good(0, 0))
    }

    /// WRITE SAME (10/16) (SBC-3 §5.41, §5.42). The data-out is exactly one logical block
    /// (none with NDOB): an EDTL of any other size means initiator and target disagree on
    /// the block, so nothing is written.
    fn write_same(&self, op: u8, ws: WriteSame, edtl: u32, data_out: &[u8]) -> Exec {
        let expected = if ws.ndob { 0 } else { self.block_size };
        if edtl != expected {
            return Err(Sense::illegal_request(
                Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
            ));
        }
        self.check_range(ws.lba, ws.blocks)?;
        if ws.blocks > self.limits.max_write_same_blocks {
            return Err(Sense::invalid_field_in_cdb(
                cdb::transfer_length_byte(op),
                None,
            ));
        }
        let bs = self.block_size as usize;
        let werr = |e: io::Error| medium_error(&self.identity, Asc::WRITE_ERROR, ws.lba, &e);
        let block = if ws.ndob {
            &[][..]
        } else {
            Self::take(data_out, bs)?
        };
        let _held = self.range_locks.exclusive(ws.lba, ws.blocks);
        if block.iter().all(|&b| b == 0) {
            let len = self.bytes(ws.blocks) as u64;
            self.device
                .write_zeroes(self.offset(ws.lba), len)
                .map_err(werr)?;
            self.settle(ws.lba)?;
            return Ok(ScsiOutcome::good(0, 0));
        }
        let chunk_blocks = ws.blocks.min(WRITE_SAME_CHUNK_BLOCKS);
        let pattern = block.repeat(chunk_blocks as usize);
        let mut done = 0u32;
        while done < ws.blocks {
            let n = (ws.blocks - done).min(chunk_blocks);
            self.device
                .write_at(
                    self.offset(ws.lba + u64::from(done)),
                    &pattern[..self.bytes(n)],
                )
                .map_err(werr)?;
            done += n;
        }
        self.settle(ws.lba)?;
        Ok(ScsiOutcome::good(0, 0))
    }

    /// UNMAP (SBC-3 §5.28): validate every descriptor, then zero them.
    fn unmap(&self, param_len: u16, data_out: &[u8]) -> Exec {
        if param_len == 0 {
            return Ok(ScsiOutcome::good(0, 0));
        }
        if param_len < 8 {
            return Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        let data = Self::take(data_out, usize::from(param_len))?;
        let bdl = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let descs = data[8..].chunks_exact(16).take(bdl / 16);
        if descs.len() > self.limits.max_unmap_descriptors as usize {
            return Err(Sense::invalid_field_in_parameter_list(2));
        }
        let mut ranges = Vec::with_capacity(descs.len());
        let mut total = 0u64;
        for d in descs {
            let mut lba = [0u8; 8];
            lba.copy_from_slice(&d[0..8]);
            let lba = u64::from_be_bytes(lba);
            let count = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
            self.check_range(lba, count)?;
            total += u64::from(count);
            ranges.push((lba, count));
        }
        if total > u64::from(self.limits.max_unmap_blocks) {
            return Err(Sense::invalid_field_in_parameter_list(8));
        }
        for (lba, count) in ranges {
            let _held = self.range_locks.exclusive(lba, count);
            self.device
                .write_zeroes(self.offset(lba), self.bytes(count) as u64)
                .map_err(|e| medium_error(&self.identity, Asc::WRITE_ERROR, lba, &e))?;
        }
        self.settle(0)?;
        Ok(ScsiOutcome::good(0, 0))
    }
}
