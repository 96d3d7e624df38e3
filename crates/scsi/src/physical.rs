//! The physical block of a logical unit (SBC-3 §4.6.2): how many logical blocks make one
//! physical block, reported as LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT in READ
//! CAPACITY (16). Logical blocks stay [`crate::BLOCK_SIZE`] bytes; a 4096-byte physical
//! block tells initiators to align and size their writes to 4 KiB (e.g. a file on a 4 KiB
//! file system block or an Advanced Format disk).

/// Errors choosing a physical block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "physical block size {physical} is not a power-of-two multiple (at most 32768 times) of the {logical}-byte logical block"
)]
pub struct PhysicalBlockError {
    pub physical: u32,
    pub logical: u32,
}

/// The exponent n with `physical` = 2^n × `logical` (0..=15: the field has four bits).
pub fn lbppb_exponent(physical: u32, logical: u32) -> Result<u8, PhysicalBlockError> {
    let err = PhysicalBlockError { physical, logical };
    if logical == 0 || physical < logical || !physical.is_multiple_of(logical) {
        return Err(err);
    }
    let ratio = physical / logical;
    if !ratio.is_power_of_two() || ratio.trailing_zeros() > 15 {
        return Err(err);
    }
    Ok(ratio.trailing_zeros() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents() {
        assert_eq!(lbppb_exponent(512, 512), Ok(0));
        assert_eq!(lbppb_exponent(4096, 512), Ok(3));
        assert_eq!(lbppb_exponent(512 << 15, 512), Ok(15));
        for bad in [0, 256, 1000, 3 * 512, 512 << 16] {
            assert!(lbppb_exponent(bad, 512).is_err(), "{bad}");
        }
        assert!(lbppb_exponent(512, 0).is_err());
    }
}
