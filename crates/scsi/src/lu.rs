//! A logical unit: executes parsed commands against its [`BlockDevice`]
//! (SBC-3 §4, §5; SPC-4 §6).

use std::io;
use std::sync::Arc;

use bytes::BytesMut;

use crate::cdb::{self, Command, Rw, Verify, WriteSame};
use crate::device::BlockDevice;
use crate::identity::Identity;
use crate::inquiry;
use crate::lun;
use crate::mode;
use crate::opcodes;
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
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_transfer_blocks: 16384, // 8 MiB of 512-byte blocks
            max_unmap_blocks: 65536,
            max_unmap_descriptors: 64,
            max_write_same_blocks: 65536,
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

fn medium_error(asc: Asc, lba: u64) -> Sense {
    let s = Sense::new(SenseKey::MediumError, asc);
    match u32::try_from(lba) {
        Ok(info) => s.with_information(info),
        Err(_) => s,
    }
}

type Exec = Result<ScsiOutcome, Sense>;

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
        }
    }

    /// Replace the limits.
    pub fn with_limits(mut self, limits: Limits) -> LogicalUnit {
        self.limits = limits;
        self
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
        data_in: &mut BytesMut,
    ) -> ScsiOutcome {
        let start = data_in.len();
        let result =
            cdb::parse(task.cdb).and_then(|cmd| self.dispatch(cmd, task, data_out, data_in));
        match result {
            Ok(outcome) => outcome,
            Err(sense) => {
                data_in.truncate(start);
                ScsiOutcome::check_condition(sense)
            }
        }
    }

    fn dispatch(
        &self,
        cmd: Command,
        task: &ScsiTask<'_>,
        data_out: &[u8],
        data_in: &mut BytesMut,
    ) -> Exec {
        let edtl = task.expected_data_transfer_length;
        let bs = self.block_size;
        let op = task.cdb.first().copied().unwrap_or(0);
        match cmd {
            Command::TestUnitReady
            | Command::StartStopUnit
            | Command::Reserve6
            | Command::Release6 => Ok(ScsiOutcome::good(0, 0)),
            Command::PreventAllowMediumRemoval { .. } => Ok(ScsiOutcome::good(0, 0)),
            Command::RequestSense { desc, alloc_len } => {
                // Status is returned with each command (autosense), so no
                // sense is ever pending: report NO SENSE.
                let none = Sense::new(SenseKey::NoSense, Asc::NO_ADDITIONAL_SENSE);
                let buf = request_sense_data(&none, desc);
                Ok(respond(data_in, &buf, u32::from(alloc_len), edtl))
            }
            Command::Inquiry {
                evpd,
                page,
                alloc_len,
            } => {
                let alloc = u32::from(alloc_len);
                if evpd {
                    let buf = inquiry::vpd(page, &self.identity, &self.limits, task.tpgt)?;
                    Ok(respond(data_in, &buf, alloc, edtl))
                } else {
                    Ok(respond(data_in, &inquiry::standard(0), alloc, edtl))
                }
            }
            Command::ModeSense(ms) => {
                let buf = mode::mode_sense(&ms, self.num_blocks, bs)?;
                Ok(respond(data_in, &buf, u32::from(ms.alloc_len), edtl))
            }
            Command::ReadCapacity10 => {
                let last = self.num_blocks.saturating_sub(1);
                let last = u32::try_from(last).unwrap_or(u32::MAX);
                let mut buf = [0u8; 8];
                buf[0..4].copy_from_slice(&last.to_be_bytes());
                buf[4..8].copy_from_slice(&bs.to_be_bytes());
                Ok(respond(data_in, &buf, 8, edtl))
            }
            Command::ReadCapacity16 { alloc_len } => {
                // SBC-3 §5.16.2 table 64.
                let mut buf = [0u8; 32];
                buf[0..8].copy_from_slice(&self.num_blocks.saturating_sub(1).to_be_bytes());
                buf[8..12].copy_from_slice(&bs.to_be_bytes());
                buf[14] = 0x80 | 0x40; // LBPME, LBPRZ
                Ok(respond(data_in, &buf, alloc_len, edtl))
            }
            Command::GetLbaStatus { lba, alloc_len } => {
                // SBC-3 §5.6: every block is reported mapped.
                if lba >= self.num_blocks {
                    return Err(Sense::lba_out_of_range());
                }
                let count = u32::try_from(self.num_blocks - lba).unwrap_or(u32::MAX);
                let mut buf = [0u8; 24];
                buf[0..4].copy_from_slice(&20u32.to_be_bytes());
                buf[8..16].copy_from_slice(&lba.to_be_bytes());
                buf[16..20].copy_from_slice(&count.to_be_bytes());
                Ok(respond(data_in, &buf, alloc_len, edtl))
            }
            Command::ReportLuns {
                select_report,
                alloc_len,
            } => {
                let buf = lun::report_luns(select_report, &[self.identity.lun])?;
                Ok(respond(data_in, &buf, alloc_len, edtl))
            }
            Command::ReportSupportedOperationCodes {
                rctd,
                options,
                opcode,
                service_action,
                alloc_len,
            } => {
                let buf = opcodes::report(rctd, options, opcode, service_action)?;
                Ok(respond(data_in, &buf, alloc_len, edtl))
            }
            Command::Read(rw) => self.read(op, rw, edtl, data_in),
            Command::Write(rw) => self.write(op, rw, data_out),
            Command::Verify(v) => self.verify(op, v, data_out),
            Command::WriteSame(ws) => self.write_same(op, ws, data_out),
            Command::Unmap { param_len } => self.unmap(param_len, data_out),
            Command::SynchronizeCache { lba, blocks } => {
                self.check_range(lba, blocks)?;
                self.device
                    .flush()
                    .map_err(|_| medium_error(Asc::WRITE_ERROR, lba))?;
                Ok(ScsiOutcome::good(0, 0))
            }
            Command::PreFetch { lba, blocks } => {
                self.check_range(lba, blocks)?;
                Ok(ScsiOutcome::good(0, 0))
            }
        }
    }

    /// LBA range check (SBC-3 §4.5): LBA + count must not pass the capacity.
    fn check_range(&self, lba: u64, blocks: u32) -> Result<(), Sense> {
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

    fn read(&self, op: u8, rw: Rw, edtl: u32, data_in: &mut BytesMut) -> Exec {
        self.check_transfer(op, rw.lba, rw.blocks)?;
        let wanted = self.bytes(rw.blocks);
        let len = wanted.min(edtl as usize);
        if len > 0 {
            let start = data_in.len();
            data_in.resize(start + len, 0);
            self.device
                .read_at(self.offset(rw.lba), &mut data_in[start..])
                .map_err(|_| medium_error(Asc::UNRECOVERED_READ_ERROR, rw.lba))?;
        }
        Ok(ScsiOutcome::good(len as u32, wanted as u32))
    }

    fn write(&self, op: u8, rw: Rw, data_out: &[u8]) -> Exec {
        self.check_transfer(op, rw.lba, rw.blocks)?;
        let data = Self::take(data_out, self.bytes(rw.blocks))?;
        let werr = |_: io::Error| medium_error(Asc::WRITE_ERROR, rw.lba);
        if !data.is_empty() {
            self.device
                .write_at(self.offset(rw.lba), data)
                .map_err(werr)?;
            if rw.fua {
                self.device.flush().map_err(werr)?;
            }
        }
        Ok(ScsiOutcome::good(0, 0))
    }

    fn verify(&self, op: u8, v: Verify, data_out: &[u8]) -> Exec {
        self.check_transfer(op, v.lba, v.blocks)?;
        let bs = self.block_size as usize;
        let mut medium = vec![0u8; self.bytes(v.blocks)];
        self.device
            .read_at(self.offset(v.lba), &mut medium)
            .map_err(|_| medium_error(Asc::UNRECOVERED_READ_ERROR, v.lba))?;
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
            let s = Sense::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY);
            return Err(s.with_information(at as u32));
        }
        Ok(ScsiOutcome::good(0, 0))
    }

    fn write_same(&self, op: u8, ws: WriteSame, data_out: &[u8]) -> Exec {
        self.check_range(ws.lba, ws.blocks)?;
        if ws.blocks > self.limits.max_write_same_blocks {
            return Err(Sense::invalid_field_in_cdb(
                cdb::transfer_length_byte(op),
                None,
            ));
        }
        let bs = self.block_size as usize;
        let werr = |_: io::Error| medium_error(Asc::WRITE_ERROR, ws.lba);
        let block = if ws.ndob {
            &[][..]
        } else {
            Self::take(data_out, bs)?
        };
        if block.iter().all(|&b| b == 0) {
            let len = self.bytes(ws.blocks) as u64;
            self.device
                .write_zeroes(self.offset(ws.lba), len)
                .map_err(werr)?;
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
            self.device
                .write_zeroes(self.offset(lba), self.bytes(count) as u64)
                .map_err(|_| medium_error(Asc::WRITE_ERROR, lba))?;
        }
        Ok(ScsiOutcome::good(0, 0))
    }
}
