//! REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35): the table of commands
//! this device server implements, with their CDB usage data.

use crate::cdb::{opcode as op, service_action as sa};
use crate::sense::Sense;

/// One supported command: opcode, service action (if the opcode has
/// service actions) and the CDB usage bitmap (its length is the CDB length).
struct Supported {
    opcode: u8,
    service_action: Option<u8>,
    usage: &'static [u8],
}

const fn s(opcode: u8, usage: &'static [u8]) -> Supported {
    Supported {
        opcode,
        service_action: None,
        usage,
    }
}

const fn s_sa(opcode: u8, service_action: u8, usage: &'static [u8]) -> Supported {
    Supported {
        opcode,
        service_action: Some(service_action),
        usage,
    }
}

const F: u8 = 0xFF;

#[rustfmt::skip]
static TABLE: &[Supported] = &[
    s(op::TEST_UNIT_READY, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0]),
    s(op::REQUEST_SENSE, &[op::REQUEST_SENSE, 0x01, 0, 0, F, 0]),
    s(op::READ_6, &[op::READ_6, 0x1F, F, F, F, 0]),
    s(op::WRITE_6, &[op::WRITE_6, 0x1F, F, F, F, 0]),
    s(op::INQUIRY, &[op::INQUIRY, 0x01, F, F, F, 0]),
    s(op::RESERVE_6, &[op::RESERVE_6, 0, 0, 0, 0, 0]),
    s(op::RELEASE_6, &[op::RELEASE_6, 0, 0, 0, 0, 0]),
    s(op::MODE_SENSE_6, &[op::MODE_SENSE_6, 0x08, F, F, F, 0]),
    s(op::START_STOP_UNIT, &[op::START_STOP_UNIT, 0, 0, 0, 0, 0]),
    s(op::PREVENT_ALLOW_MEDIUM_REMOVAL, &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0x03, 0]),
    s(op::READ_CAPACITY_10, &[op::READ_CAPACITY_10, 0, F, F, F, F, 0, 0, 0x01, 0]),
    s(op::READ_10, &[op::READ_10, 0xF8, F, F, F, F, 0, F, F, 0]),
    s(op::WRITE_10, &[op::WRITE_10, 0xF8, F, F, F, F, 0, F, F, 0]),
    s(op::WRITE_AND_VERIFY_10, &[op::WRITE_AND_VERIFY_10, 0xF2, F, F, F, F, 0, F, F, 0]),
    s(op::VERIFY_10, &[op::VERIFY_10, 0xF6, F, F, F, F, 0, F, F, 0]),
    s(op::PRE_FETCH_10, &[op::PRE_FETCH_10, 0x02, F, F, F, F, 0, F, F, 0]),
    s(op::SYNCHRONIZE_CACHE_10, &[op::SYNCHRONIZE_CACHE_10, 0x02, F, F, F, F, 0, F, F, 0]),
    s(op::WRITE_SAME_10, &[op::WRITE_SAME_10, 0xF8, F, F, F, F, 0, F, F, 0]),
    s(op::UNMAP, &[op::UNMAP, 0x01, 0, 0, 0, 0, 0, F, F, 0]),
    s(op::MODE_SENSE_10, &[op::MODE_SENSE_10, 0x18, F, F, 0, 0, 0, F, F, 0]),
    s(op::READ_16, &[op::READ_16, 0xF8, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::COMPARE_AND_WRITE, &[op::COMPARE_AND_WRITE, 0xF8, F, F, F, F, F, F, F, F, 0, 0, 0, F, 0, 0]),
    s(op::WRITE_16, &[op::WRITE_16, 0xF8, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::ORWRITE_16, &[op::ORWRITE_16, 0xF8, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::WRITE_AND_VERIFY_16, &[op::WRITE_AND_VERIFY_16, 0xF2, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::VERIFY_16, &[op::VERIFY_16, 0xF6, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::PRE_FETCH_16, &[op::PRE_FETCH_16, 0x02, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::SYNCHRONIZE_CACHE_16, &[op::SYNCHRONIZE_CACHE_16, 0x02, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::WRITE_SAME_16, &[op::WRITE_SAME_16, 0xF9, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s_sa(op::SERVICE_ACTION_IN_16, sa::READ_CAPACITY_16,
        &[op::SERVICE_ACTION_IN_16, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0]),
    s_sa(op::SERVICE_ACTION_IN_16, sa::GET_LBA_STATUS,
        &[op::SERVICE_ACTION_IN_16, 0x1F, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::REPORT_LUNS, &[op::REPORT_LUNS, 0, F, 0, 0, 0, F, F, F, F, 0, 0]),
    s_sa(op::MAINTENANCE_IN, sa::REPORT_SUPPORTED_OPERATION_CODES,
        &[op::MAINTENANCE_IN, 0x1F, 0x87, F, F, F, F, F, F, F, 0, 0]),
    s(op::READ_12, &[op::READ_12, 0xF8, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::WRITE_12, &[op::WRITE_12, 0xF8, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::WRITE_AND_VERIFY_12, &[op::WRITE_AND_VERIFY_12, 0xF2, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::VERIFY_12, &[op::VERIFY_12, 0xF6, F, F, F, F, F, F, F, F, 0, 0]),
    s(op::MODE_SELECT_6, &[op::MODE_SELECT_6, 0x11, 0, 0, F, 0]),
    s(op::MODE_SELECT_10, &[op::MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, F, F, 0]),
    s(op::READ_DEFECT_DATA_10, &[op::READ_DEFECT_DATA_10, 0, 0x1F, 0, 0, 0, 0, F, F, 0]),
    s(op::READ_DEFECT_DATA_12, &[op::READ_DEFECT_DATA_12, 0x1F, F, F, F, F, F, F, F, F, 0, 0]),
    s_sa(op::EXTENDED_COPY, crate::xcopy::SA_EXTENDED_COPY_LID1,
        &[op::EXTENDED_COPY, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0]),
    s_sa(op::RECEIVE_COPY_RESULTS, crate::xcopy::SA_COPY_STATUS,
        &[op::RECEIVE_COPY_RESULTS, 0x1F, F, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0]),
    s_sa(op::RECEIVE_COPY_RESULTS, crate::xcopy::SA_OPERATING_PARAMETERS,
        &[op::RECEIVE_COPY_RESULTS, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0]),
    s_sa(op::SANITIZE, crate::sanitize::SA_BLOCK_ERASE,
        &[op::SANITIZE, 0xBF, 0, 0, 0, 0, 0, F, F, 0]),
    s(op::WRITE_ATOMIC_16, &[op::WRITE_ATOMIC_16, 0xF8, F, F, F, F, F, F, F, F, 0, 0, F, F, 0, 0]),
];

/// Command timeouts descriptor with no timeouts reported (SPC-4 §6.35.4).
const TIMEOUTS: [u8; 12] = [0x00, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Build the response for the given REPORTING OPTIONS (SPC-4 table 331).
pub fn report(rctd: bool, options: u8, opcode: u8, service_action: u16) -> Result<Vec<u8>, Sense> {
    match options {
        0 => Ok(all_commands(rctd)),
        1..=3 => {
            let has_sa = TABLE
                .iter()
                .any(|e| e.opcode == opcode && e.service_action.is_some());
            let found = match (options, has_sa) {
                // Opcode only, but this opcode has service actions.
                (1, true) => return Err(Sense::invalid_field_in_cdb(3, None)),
                // Opcode and service action, but none exist for this opcode.
                (2, false) => return Err(Sense::invalid_field_in_cdb(4, None)),
                (_, true) => TABLE.iter().find(|e| {
                    e.opcode == opcode && e.service_action.map(u16::from) == Some(service_action)
                }),
                (_, false) => TABLE.iter().find(|e| e.opcode == opcode),
            };
            Ok(one_command(rctd, found))
        }
        _ => Err(Sense::invalid_field_in_cdb(2, Some(2))),
    }
}

fn all_commands(rctd: bool) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    for e in TABLE {
        out.push(e.opcode);
        out.push(0);
        out.extend_from_slice(&u16::from(e.service_action.unwrap_or(0)).to_be_bytes());
        out.push(0);
        out.push(if rctd { 0x02 } else { 0 } | u8::from(e.service_action.is_some()));
        out.extend_from_slice(&(e.usage.len() as u16).to_be_bytes());
        if rctd {
            out.extend_from_slice(&TIMEOUTS);
        }
    }
    let len = (out.len() - 4) as u32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out
}

fn one_command(rctd: bool, found: Option<&Supported>) -> Vec<u8> {
    let Some(e) = found else {
        // SUPPORT 001b: not supported; no usage data.
        return vec![0, 0x01, 0, 0];
    };
    let mut out = vec![0, if rctd { 0x80 } else { 0 } | 0x03];
    out.extend_from_slice(&(e.usage.len() as u16).to_be_bytes());
    out.extend_from_slice(e.usage);
    if rctd {
        out.extend_from_slice(&TIMEOUTS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdb::cdb_len;

    #[test]
    fn usage_lengths_match_groups() {
        for e in TABLE {
            assert_eq!(Some(e.usage.len()), cdb_len(e.opcode), "{:#x}", e.opcode);
            assert_eq!(e.usage[0], e.opcode);
        }
    }

    #[test]
    fn one_read10_has_dpofua() {
        let r = report(false, 1, op::READ_10, 0).unwrap();
        assert_eq!(r[1] & 0x07, 3);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 10);
        assert_eq!(r[5] & 0x18, 0x18);
        let r = report(true, 1, op::WRITE_10, 0).unwrap();
        assert_eq!(r[1], 0x83);
        assert_eq!(r.len(), 4 + 10 + 12);
    }

    #[test]
    fn service_action_rules() {
        assert!(report(false, 1, op::SERVICE_ACTION_IN_16, 0).is_err());
        assert!(report(false, 2, op::READ_10, 0).is_err());
        let r = report(false, 2, op::SERVICE_ACTION_IN_16, 0x10).unwrap();
        assert_eq!(r[1] & 0x07, 3);
        let r = report(false, 2, op::SERVICE_ACTION_IN_16, 0x11).unwrap();
        assert_eq!(r[1] & 0x07, 1);
        assert_eq!(report(false, 1, 0xC5, 0).unwrap(), vec![0, 1, 0, 0]);
        assert!(report(false, 7, 0, 0).is_err());
    }

    #[test]
    fn all_commands_walks() {
        for rctd in [false, true] {
            let r = report(rctd, 0, 0, 0).unwrap();
            let len = u32::from_be_bytes([r[0], r[1], r[2], r[3]]) as usize;
            assert_eq!(len, r.len() - 4);
            let step = if rctd { 20 } else { 8 };
            assert_eq!(len, TABLE.len() * step);
        }
    }
}
