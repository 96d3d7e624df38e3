//! SANITIZE (SBC-4 §5.30): BLOCK ERASE only. The unit's storage is released (a file's
//! blocks become holes), so every block reads zeros (LBPRZ = 1), GET LBA STATUS reports
//! them deallocated, and the Block Device Characteristics VPD page says WABEREQ = 01b (a
//! read after a block erase completes with GOOD). OVERWRITE and CRYPTOGRAPHIC ERASE are not
//! offered: an overwrite of a large unit would hold its command for minutes, and a file
//! has no encryption key to change. The erase runs within the command (IMMED is honoured
//! by finishing before the status anyway).

use crate::sense::Sense;

/// SANITIZE service actions (SBC-4 table 50).
pub const SA_OVERWRITE: u8 = 0x01;
pub const SA_BLOCK_ERASE: u8 = 0x02;
pub const SA_CRYPTOGRAPHIC_ERASE: u8 = 0x03;
pub const SA_EXIT_FAILURE_MODE: u8 = 0x1F;

/// Block Device Characteristics VPD byte 7 (body byte 3): WABEREQ = 01b.
pub const BDC_WABEREQ_READS_GOOD: u8 = 0x40;

/// A SANITIZE CDB that this unit performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sanitize {
    pub service_action: u8,
    pub immed: bool,
}

/// Parse SANITIZE (10 bytes): byte 1 IMMED (7), reserved (6), AUSE (5), SERVICE ACTION
/// (4-0); bytes 2-6 reserved; bytes 7-8 PARAMETER LIST LENGTH. Only BLOCK ERASE, which
/// takes no parameter list, is accepted; anything else is INVALID FIELD IN CDB pointing at
/// the field.
pub fn parse_cdb(c: &[u8]) -> Result<Sanitize, Sense> {
    if c[1] & 0x40 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(6)));
    }
    if let Some(i) = (2..=6).find(|&i| c[i] != 0) {
        return Err(Sense::invalid_field_in_cdb(i as u16, None));
    }
    let service_action = c[1] & 0x1F;
    if service_action != SA_BLOCK_ERASE {
        return Err(Sense::invalid_field_in_cdb(1, Some(4)));
    }
    if c[7] != 0 || c[8] != 0 {
        // BLOCK ERASE has no parameter list (SBC-4 §5.30.3).
        return Err(Sense::invalid_field_in_cdb(7, None));
    }
    Ok(Sanitize {
        service_action,
        immed: c[1] & 0x80 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_erase_only_and_reserved_fields_refused() {
        let ok = [0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_cdb(&ok),
            Ok(Sanitize {
                service_action: SA_BLOCK_ERASE,
                immed: false
            })
        );
        for sa in [
            0u8,
            SA_OVERWRITE,
            SA_CRYPTOGRAPHIC_ERASE,
            4,
            0x1E,
            SA_EXIT_FAILURE_MODE,
        ] {
            let mut c = ok;
            c[1] = sa;
            assert!(parse_cdb(&c).is_err(), "{sa:#x}");
        }
        for i in 2..=8 {
            let mut c = ok;
            c[i] = 1;
            let e = parse_cdb(&c).unwrap_err();
            assert_eq!(
                e.field_pointer.map(|f| f.byte),
                Some(if i >= 7 { 7 } else { i as u16 })
            );
        }
        let mut c = ok;
        c[1] |= 0x40;
        assert!(parse_cdb(&c).is_err());
    }
}
