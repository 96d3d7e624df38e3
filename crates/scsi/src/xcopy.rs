//! Third-party copy within one target (SPC-4 §5.17, §6.4 EXTENDED COPY (LID1), §6.23
//! RECEIVE COPY RESULTS, §7.8.17 Third-party Copy VPD page): the copy manager of a logical
//! unit copies blocks between logical units of the same target, named in the parameter list
//! by their designators (Identification descriptor CSCD descriptors, E4h), with block device
//! to block device segment descriptors (02h). VMware's clone offload uses it.
//!
//! The parameter list is parsed and checked in full ([`parse_lid1`]) before any block is
//! moved; the copy itself runs synchronously in the command, through the units' normal
//! write path (so write-through and software write protection apply).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::BytesMut;

use crate::cdb::{be16, be32, be64};
use crate::lu::{LogicalUnit, respond};
use crate::reservation::Access;
use crate::sense::{Asc, Sense, SenseKey};
use crate::task::{ScsiOutcome, ScsiTask};

/// Length of the LID1 parameter list header (SPC-4 table 111).
pub const HEADER_LEN: usize = 16;
/// An Identification descriptor CSCD descriptor is 32 bytes (SPC-4 §6.4.5.2).
pub const CSCD_LEN: usize = 32;
/// A block device to block device segment descriptor is 28 bytes (SPC-4 §6.4.6.5).
pub const B2B_LEN: usize = 28;

/// CSCD descriptor type code: Identification descriptor (SPC-4 table 121).
pub const CSCD_IDENTIFICATION: u8 = 0xE4;
/// Segment descriptor type code: block device to block device (SPC-4 table 116).
pub const SEG_BLOCK_TO_BLOCK: u8 = 0x02;

/// Limits advertised in RECEIVE COPY RESULTS OPERATING PARAMETERS and the Third-party Copy
/// VPD page, and enforced by [`parse_lid1`].
pub const MAX_CSCD_DESCRIPTORS: u16 = 4;
pub const MAX_SEGMENT_DESCRIPTORS: u16 = 64;
pub const MAX_DESCRIPTOR_LIST_LENGTH: u32 = 4096;
/// Blocks copied per read/write pair.
const CHUNK_BLOCKS: u32 = 2048;
/// Copy results held for RECEIVE COPY RESULTS, per target, at most.
const HELD_RESULTS: usize = 64;

/// EXTENDED COPY service action LID1 (SPC-4 table 109).
pub const SA_EXTENDED_COPY_LID1: u8 = 0x00;
/// RECEIVE COPY RESULTS service actions (SPC-4 table 246): COPY STATUS and OPERATING
/// PARAMETERS are supported.
pub const SA_COPY_STATUS: u8 = 0x00;
pub const SA_OPERATING_PARAMETERS: u8 = 0x03;

/// TOO MANY TARGET (CSCD) DESCRIPTORS and friends (SPC-4 table 49).
const TOO_MANY_CSCD: Asc = Asc::new(0x26, 0x06);
const UNSUPPORTED_CSCD_TYPE: Asc = Asc::new(0x26, 0x07);
const TOO_MANY_SEGMENTS: Asc = Asc::new(0x26, 0x08);
const UNSUPPORTED_SEGMENT_TYPE: Asc = Asc::new(0x26, 0x09);
/// UNREACHABLE COPY TARGET: no logical unit of this target has the designator.
const UNREACHABLE_COPY_TARGET: Asc = Asc::new(0x08, 0x04);

/// One CSCD: a logical unit named by a designation descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cscd {
    /// CODE SET (byte 0 low nibble), DESIGNATOR TYPE (byte 1 low nibble), DESIGNATOR.
    pub code_set: u8,
    pub designator_type: u8,
    pub designator: Vec<u8>,
    /// DISK BLOCK LENGTH (0: not given).
    pub block_length: u32,
}

/// One block device to block device segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Indexes into the CSCD list.
    pub source: u16,
    pub destination: u16,
    pub blocks: u16,
    pub source_lba: u64,
    pub destination_lba: u64,
}

/// A parsed EXTENDED COPY (LID1) parameter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyList {
    pub list_id: u8,
    /// LIST ID USAGE 00b: the results are held for RECEIVE COPY RESULTS.
    pub hold_results: bool,
    pub cscds: Vec<Cscd>,
    pub segments: Vec<Segment>,
}

fn length_error() -> Sense {
    Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR)
}

/// Parse and check an EXTENDED COPY (LID1) parameter list (SPC-4 §6.4.3): the header, the
/// CSCD descriptors, the segment descriptors. `None` for an empty list (nothing to copy).
/// Errors: PARAMETER LIST LENGTH ERROR when the list is shorter than its header says or
/// its descriptors pass MAXIMUM DESCRIPTOR LIST LENGTH; TOO MANY TARGET/SEGMENT
/// DESCRIPTORS; UNSUPPORTED TARGET/SEGMENT DESCRIPTOR TYPE CODE; INVALID FIELD IN
/// PARAMETER LIST pointing at anything else it cannot do (inline data, a reserved LIST ID
/// USAGE, a non-block device, a malformed descriptor). Never panics.
pub fn parse_lid1(data: &[u8]) -> Result<Option<CopyList>, Sense> {
    if data.is_empty() {
        return Ok(None);
    }
    let h = data.get(..HEADER_LEN).ok_or_else(length_error)?;
    let list_id = h[0];
    let usage = (h[1] >> 3) & 0x03;
    let cscd_len = usize::from(be16(h, 2));
    let seg_len = be32(h, 8) as usize;
    let inline_len = be32(h, 12) as usize;
    let total = HEADER_LEN
        .checked_add(cscd_len)
        .and_then(|t| t.checked_add(seg_len))
        .and_then(|t| t.checked_add(inline_len))
        .ok_or_else(length_error)?;
    if total > data.len() {
        return Err(length_error());
    }
    if (cscd_len as u64) + (seg_len as u64) > u64::from(MAX_DESCRIPTOR_LIST_LENGTH) {
        return Err(length_error());
    }
    if inline_len != 0 {
        // MAXIMUM INLINE DATA LENGTH is 0.
        return Err(Sense::invalid_field_in_parameter_list(12));
    }
    match usage {
        // 00b: hold the results; 10b: do not; 11b: no list identifier (it must be 0).
        0b00 | 0b10 => {}
        0b11 if list_id == 0 => {}
        0b11 => return Err(Sense::invalid_field_in_parameter_list(0)),
        _ => return Err(Sense::invalid_field_in_parameter_list(1)),
    }
    let cscds = parse_cscds(&data[HEADER_LEN..HEADER_LEN + cscd_len])?;
    let seg_at = HEADER_LEN + cscd_len;
    let segments = parse_segments(&data[seg_at..seg_at + seg_len], seg_at)?;
    Ok(Some(CopyList {
        list_id,
        hold_results: usage == 0b00,
        cscds,
        segments,
    }))
}

fn parse_cscds(list: &[u8]) -> Result<Vec<Cscd>, Sense> {
    if list.len().div_ceil(CSCD_LEN) > usize::from(MAX_CSCD_DESCRIPTORS) {
        return Err(Sense::illegal_request(TOO_MANY_CSCD));
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < list.len() {
        let field = (HEADER_LEN + at) as u16;
        let d = &list[at..];
        // Every CSCD descriptor type this copy manager could meet is 32 bytes or more
        // (E0h-E9h: 32, others 64): only the Identification descriptor is supported.
        if d[0] != CSCD_IDENTIFICATION {
            return Err(Sense::illegal_request(UNSUPPORTED_CSCD_TYPE));
        }
        let d = d.get(..CSCD_LEN).ok_or_else(length_error)?;
        // Byte 1: LU ID TYPE (ignored, SPC-4), NUL (obsolete), PERIPHERAL DEVICE TYPE.
        if d[1] & 0x1F != 0 {
            return Err(Sense::invalid_field_in_parameter_list(field + 1));
        }
        // Bytes 4-27: a designation descriptor of at most 20 bytes of designator.
        let len = usize::from(d[7]);
        if len == 0 || len > 20 {
            return Err(Sense::invalid_field_in_parameter_list(field + 7));
        }
        out.push(Cscd {
            code_set: d[4] & 0x0F,
            designator_type: d[5] & 0x0F,
            designator: d[8..8 + len].to_vec(),
            block_length: u32::from_be_bytes([0, d[29], d[30], d[31]]),
        });
        at += CSCD_LEN;
    }
    Ok(out)
}

fn parse_segments(list: &[u8], base: usize) -> Result<Vec<Segment>, Sense> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < list.len() {
        if out.len() == usize::from(MAX_SEGMENT_DESCRIPTORS) {
            return Err(Sense::illegal_request(TOO_MANY_SEGMENTS));
        }
        let field = (base + at) as u16;
        let d = &list[at..];
        if d[0] != SEG_BLOCK_TO_BLOCK {
            return Err(Sense::illegal_request(UNSUPPORTED_SEGMENT_TYPE));
        }
        let d = d.get(..B2B_LEN).ok_or_else(length_error)?;
        if usize::from(be16(d, 2)) != B2B_LEN - 4 {
            return Err(Sense::invalid_field_in_parameter_list(field + 2));
        }
        // Byte 1: DC (the count is in destination blocks) and CAT; with one block size
        // for every unit DC changes nothing, and no residue can remain, so CAT neither.
        out.push(Segment {
            source: be16(d, 4),
            destination: be16(d, 6),
            blocks: be16(d, 10),
            source_lba: be64(d, 12),
            destination_lba: be64(d, 20),
        });
        at += B2B_LEN;
    }
    Ok(out)
}

/// COPY ABORTED with `asc`, for a copy that cannot reach or fit a copy target.
fn copy_aborted(asc: Asc) -> Sense {
    Sense::new(SenseKey::CopyAborted, asc)
}

/// The results of completed copies a unit's copy manager holds for RECEIVE COPY RESULTS
/// COPY STATUS, by (I_T nexus, list identifier); the oldest are dropped past
/// `HELD_RESULTS`.
#[derive(Debug, Default)]
pub struct HeldResults {
    held: Mutex<VecDeque<((u64, u8), CopyStatus)>>,
}

/// What one copy did (SPC-4 §6.23.3 COPY STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStatus {
    pub segments_processed: u16,
    pub bytes: u64,
}

impl HeldResults {
    fn hold(&self, key: (u64, u8), status: CopyStatus) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(k, _)| *k != key);
        if held.len() == HELD_RESULTS {
            held.pop_front();
        }
        held.push_back((key, status));
    }

    /// The held result, removed (it is retrieved once).
    fn take(&self, key: (u64, u8)) -> Option<CopyStatus> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let i = held.iter().position(|(k, _)| *k == key)?;
        held.remove(i).map(|(_, s)| s)
    }
}

/// Does `unit` answer to the designator of `cscd`? NAA (type 3) and T10 vendor ID (type 1)
/// designators of its Device Identification VPD page are matched.
fn names(unit: &LogicalUnit, cscd: &Cscd) -> bool {
    let id = unit.identity();
    match (cscd.designator_type, cscd.code_set) {
        (0x3, 0x1) => cscd.designator == id.naa,
        (0x1, 0x2) => {
            let mut t10 = crate::identity::VENDOR.to_vec();
            t10.extend_from_slice(id.serial.as_bytes());
            cscd.designator == t10
        }
        _ => false,
    }
}

/// EXTENDED COPY (LID1) to a unit whose copy manager holds results in `held`, copying
/// among `units` (the target's logical units): the list is checked, every segment's copy
/// targets are resolved and range-checked, then the blocks are copied segment by segment.
pub fn extended_copy(
    units: &[&LogicalUnit],
    held: &HeldResults,
    task: &ScsiTask<'_>,
    data: &[u8],
) -> Result<ScsiOutcome, Sense> {
    let Some(list) = parse_lid1(data)? else {
        return Ok(ScsiOutcome::good(0, 0));
    };
    let mut resolved: Vec<&LogicalUnit> = Vec::with_capacity(list.cscds.len());
    for (i, c) in list.cscds.iter().enumerate() {
        let unit = units
            .iter()
            .find(|u| names(u, c))
            .ok_or_else(|| copy_aborted(UNREACHABLE_COPY_TARGET))?;
        if c.block_length != 0 && c.block_length != unit.block_size() {
            let at = HEADER_LEN + i * CSCD_LEN + 29;
            return Err(Sense::invalid_field_in_parameter_list(at as u16));
        }
        resolved.push(unit);
    }
    let mut plan = Vec::with_capacity(list.segments.len());
    for s in &list.segments {
        let pick = |i: u16| resolved.get(usize::from(i)).copied();
        let (Some(src), Some(dst)) = (pick(s.source), pick(s.destination)) else {
            return Err(copy_aborted(UNREACHABLE_COPY_TARGET));
        };
        let n = u32::from(s.blocks);
        if src.check_range(s.source_lba, n).is_err()
            || dst.check_range(s.destination_lba, n).is_err()
        {
            return Err(copy_aborted(Asc::NO_ADDITIONAL_SENSE));
        }
        if src.conflicts(task.nexus, Access::Read) || dst.conflicts(task.nexus, Access::Write) {
            return Ok(ScsiOutcome::reservation_conflict());
        }
        if dst.mode().software_write_protect() {
            return Err(Sense::new(
                SenseKey::DataProtect,
                Asc::SOFTWARE_WRITE_PROTECTED,
            ));
        }
        plan.push((src, dst, *s));
    }
    let mut bytes = 0u64;
    for (done, (src, dst, s)) in plan.iter().enumerate() {
        let mut copied = 0u32;
        let total = u32::from(s.blocks);
        while copied < total {
            let n = (total - copied).min(CHUNK_BLOCKS);
            let buf = src.read_medium(s.source_lba + u64::from(copied), n)?;
            dst.write_medium(s.destination_lba + u64::from(copied), &buf, false)?;
            copied += n;
            bytes += buf.len() as u64;
        }
        if list.hold_results {
            held.hold(
                (task.nexus, list.list_id),
                CopyStatus {
                    segments_processed: (done + 1) as u16,
                    bytes,
                },
            );
        }
    }
    if list.hold_results && plan.is_empty() {
        held.hold(
            (task.nexus, list.list_id),
            CopyStatus {
                segments_processed: 0,
                bytes: 0,
            },
        );
    }
    Ok(ScsiOutcome::good(0, 0))
}

/// RECEIVE COPY RESULTS (SPC-4 §6.23): COPY STATUS of a held list, or the OPERATING
/// PARAMETERS.
pub fn receive_copy_results(
    held: &HeldResults,
    task: &ScsiTask<'_>,
    service_action: u8,
    list_id: u8,
    alloc_len: u32,
    data_in: &mut BytesMut,
) -> Result<ScsiOutcome, Sense> {
    let edtl = task.expected_data_transfer_length;
    let buf = match service_action {
        SA_COPY_STATUS => {
            let s = held
                .take((task.nexus, list_id))
                .ok_or_else(|| Sense::invalid_field_in_cdb(2, None))?;
            copy_status(&s)
        }
        SA_OPERATING_PARAMETERS => operating_parameters(),
        _ => return Err(Sense::invalid_field_in_cdb(1, Some(4))),
    };
    Ok(respond(data_in, &buf, alloc_len, edtl))
}

/// COPY STATUS parameter data (SPC-4 table 247): completed without errors.
fn copy_status(s: &CopyStatus) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    b[0..4].copy_from_slice(&8u32.to_be_bytes());
    b[4] = 0x00; // HDD 0, COPY MANAGER STATUS: completed without errors
    b[5..7].copy_from_slice(&s.segments_processed.to_be_bytes());
    // TRANSFER COUNT UNITS: bytes while they fit, else kibibytes.
    let (units, count) = match u32::try_from(s.bytes) {
        Ok(n) => (0x00, n),
        Err(_) => (0x01, u32::try_from(s.bytes >> 10).unwrap_or(u32::MAX)),
    };
    b[7] = units;
    b[8..12].copy_from_slice(&count.to_be_bytes());
    b
}

/// OPERATING PARAMETERS parameter data (SPC-4 table 249).
fn operating_parameters() -> Vec<u8> {
    let implemented = [SEG_BLOCK_TO_BLOCK, CSCD_IDENTIFICATION];
    let mut b = vec![0u8; 44];
    b[8..10].copy_from_slice(&MAX_CSCD_DESCRIPTORS.to_be_bytes());
    b[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
    b[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
    // MAXIMUM SEGMENT LENGTH: 65535 blocks of 512 bytes.
    b[16..20].copy_from_slice(&(u32::from(u16::MAX) * crate::BLOCK_SIZE).to_be_bytes());
    // MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, MAXIMUM STREAM DEVICE TRANSFER SIZE: 0.
    b[34..36].copy_from_slice(&1u16.to_be_bytes()); // TOTAL CONCURRENT COPIES
    b[36] = 1; // MAXIMUM CONCURRENT COPIES
    b[37] = crate::BLOCK_SIZE.trailing_zeros() as u8; // DATA SEGMENT GRANULARITY (log2)
    b[43] = implemented.len() as u8;
    b.extend_from_slice(&implemented);
    let available = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&available.to_be_bytes());
    b
}

/// Third-party Copy VPD page body (SPC-4 §7.8.17): Supported Commands, Parameter Data,
/// Supported Descriptors and Supported CSCD Descriptor IDs descriptors.
pub fn third_party_copy_vpd() -> Vec<u8> {
    let mut out = Vec::new();
    let mut descriptor = |kind: u16, body: &[u8]| {
        let mut body = body.to_vec();
        while !(4 + body.len()).is_multiple_of(4) {
            body.push(0);
        }
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
    };
    // Supported Commands (0001h): EXTENDED COPY (LID1), RECEIVE COPY RESULTS.
    let commands = [
        crate::cdb::opcode::EXTENDED_COPY,
        1,
        SA_EXTENDED_COPY_LID1,
        crate::cdb::opcode::RECEIVE_COPY_RESULTS,
        2,
        SA_COPY_STATUS,
        SA_OPERATING_PARAMETERS,
    ];
    let mut body = vec![commands.len() as u8];
    body.extend_from_slice(&commands);
    descriptor(0x0001, &body);
    // Parameter Data (0008h).
    let mut body = vec![0u8; 28];
    body[4..6].copy_from_slice(&MAX_CSCD_DESCRIPTORS.to_be_bytes());
    body[6..8].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
    body[8..12].copy_from_slice(&MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
    descriptor(0x0008, &body);
    // Supported Descriptors (0004h).
    descriptor(0x0004, &[2, SEG_BLOCK_TO_BLOCK, CSCD_IDENTIFICATION]);
    // Supported CSCD Descriptor IDs (000Ch): none.
    descriptor(0x000C, &[0, 0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list with one Identification CSCD naming `naa` and one 02h segment.
    pub(crate) fn list(naa: &[u8; 8], blocks: u16, src: u64, dst: u64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = 1;
        b[2..4].copy_from_slice(&(CSCD_LEN as u16).to_be_bytes());
        b[8..12].copy_from_slice(&(B2B_LEN as u32).to_be_bytes());
        let mut c = [0u8; CSCD_LEN];
        c[0] = CSCD_IDENTIFICATION;
        c[4] = 0x01;
        c[5] = 0x03;
        c[7] = 8;
        c[8..16].copy_from_slice(naa);
        c[29..32].copy_from_slice(&[0, 2, 0]);
        b.extend_from_slice(&c);
        let mut s = [0u8; B2B_LEN];
        s[0] = SEG_BLOCK_TO_BLOCK;
        s[2..4].copy_from_slice(&24u16.to_be_bytes());
        s[10..12].copy_from_slice(&blocks.to_be_bytes());
        s[12..20].copy_from_slice(&src.to_be_bytes());
        s[20..28].copy_from_slice(&dst.to_be_bytes());
        b.extend_from_slice(&s);
        b
    }

    #[test]
    fn parses_a_list() {
        let l = parse_lid1(&list(&[0x30; 8], 16, 0, 100)).unwrap().unwrap();
        assert_eq!(l.list_id, 1);
        assert!(l.hold_results);
        assert_eq!(l.cscds[0].designator, vec![0x30; 8]);
        assert_eq!(l.cscds[0].block_length, 512);
        assert_eq!(
            l.segments,
            vec![Segment {
                source: 0,
                destination: 0,
                blocks: 16,
                source_lba: 0,
                destination_lba: 100
            }]
        );
        assert_eq!(parse_lid1(&[]), Ok(None));
    }

    #[test]
    fn bad_lists() {
        let good = list(&[0x30; 8], 16, 0, 100);
        // Shorter than the header says.
        for cut in [1, 15, HEADER_LEN + CSCD_LEN - 1, good.len() - 1] {
            let e = parse_lid1(&good[..cut]).unwrap_err();
            assert_eq!(e.asc, Asc::PARAMETER_LIST_LENGTH_ERROR, "cut {cut}");
        }
        // Unsupported descriptor types.
        let mut l = good.clone();
        l[HEADER_LEN] = 0xE0;
        assert_eq!(parse_lid1(&l).unwrap_err().asc, UNSUPPORTED_CSCD_TYPE);
        let mut l = good.clone();
        l[HEADER_LEN + CSCD_LEN] = 0x03;
        assert_eq!(parse_lid1(&l).unwrap_err().asc, UNSUPPORTED_SEGMENT_TYPE);
        // Inline data is not supported.
        let mut l = good.clone();
        l[15] = 4;
        l.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse_lid1(&l).unwrap_err().asc,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST
        );
    }

    #[test]
    fn descriptor_limits() {
        let one = list(&[0x30; 8], 16, 0, 100);
        let cscd = &one[HEADER_LEN..HEADER_LEN + CSCD_LEN];
        let seg = &one[HEADER_LEN + CSCD_LEN..];
        let build = |cscds: usize, segs: usize| {
            let mut b = vec![0u8; HEADER_LEN];
            b[2..4].copy_from_slice(&((cscds * CSCD_LEN) as u16).to_be_bytes());
            b[8..12].copy_from_slice(&((segs * B2B_LEN) as u32).to_be_bytes());
            for _ in 0..cscds {
                b.extend_from_slice(cscd);
            }
            for _ in 0..segs {
                b.extend_from_slice(seg);
            }
            b
        };
        let max_c = usize::from(MAX_CSCD_DESCRIPTORS);
        let max_s = usize::from(MAX_SEGMENT_DESCRIPTORS);
        assert!(parse_lid1(&build(max_c, max_s)).is_ok());
        assert_eq!(
            parse_lid1(&build(max_c + 1, 1)).unwrap_err().asc,
            TOO_MANY_CSCD
        );
        assert_eq!(
            parse_lid1(&build(1, max_s + 1)).unwrap_err().asc,
            TOO_MANY_SEGMENTS
        );
        // Past MAXIMUM DESCRIPTOR LIST LENGTH: a length error, whatever the counts.
        assert_eq!(
            parse_lid1(&build(max_c + 1, 200)).unwrap_err().asc,
            Asc::PARAMETER_LIST_LENGTH_ERROR
        );
    }

    #[test]
    fn vpd_and_operating_parameters_walk() {
        let v = third_party_copy_vpd();
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < v.len() {
            kinds.push(be16(&v, at));
            let len = usize::from(be16(&v, at + 2));
            assert_eq!((4 + len) % 4, 0);
            at += 4 + len;
        }
        assert_eq!(at, v.len());
        assert_eq!(kinds, [1, 8, 4, 12]);
        let op = operating_parameters();
        assert_eq!(be32(&op, 0) as usize, op.len() - 4);
        assert_eq!(op[43], 2);
        assert_eq!(&op[44..], &[SEG_BLOCK_TO_BLOCK, CSCD_IDENTIFICATION]);
    }

    proptest::proptest! {
        /// Any bytes get a parse or a sense, never a panic.
        #[test]
        fn any_list_is_answered(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse_lid1(&data);
        }

        /// A valid list with its header's lengths changed is still answered.
        #[test]
        fn mangled_headers_are_answered(cscd in proptest::prelude::any::<u16>(), seg in proptest::prelude::any::<u32>(), inline in proptest::prelude::any::<u32>()) {
            let mut l = list(&[0x30; 8], 16, 0, 100);
            l[2..4].copy_from_slice(&cscd.to_be_bytes());
            l[8..12].copy_from_slice(&seg.to_be_bytes());
            l[12..16].copy_from_slice(&inline.to_be_bytes());
            let _ = parse_lid1(&l);
        }
    }
}
