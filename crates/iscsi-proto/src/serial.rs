//! RFC 1982 serial number arithmetic with SERIAL_BITS = 32, as required by
//! RFC 7143 §4.2.2.1 for CmdSN, ExpCmdSN, MaxCmdSN, StatSN, DataSN and R2TSN.

use std::fmt;

/// A 32-bit sequence number compared with RFC 1982 serial arithmetic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SerialNumber(pub u32);

/// Half the serial number space (2^(SERIAL_BITS - 1)), RFC 1982 §3.
const HALF: u32 = 1 << 31;

impl SerialNumber {
    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// RFC 1982 §3.1 addition; `n` must be ≤ 2^31 - 1 to be meaningful.
    #[must_use]
    pub const fn add(self, n: u32) -> Self {
        SerialNumber(self.0.wrapping_add(n))
    }

    /// The next serial number (add 1).
    #[must_use]
    pub const fn next(self) -> Self {
        self.add(1)
    }

    /// RFC 1982 §3.2 "less than". Undefined pairs (exactly 2^31 apart) compare false.
    pub const fn lt(self, other: Self) -> bool {
        let (a, b) = (self.0, other.0);
        (a < b && b - a < HALF) || (a > b && a - b > HALF)
    }

    /// RFC 1982 §3.2 "greater than".
    pub const fn gt(self, other: Self) -> bool {
        other.lt(self)
    }

    /// Less than or equal.
    pub const fn le(self, other: Self) -> bool {
        self.0 == other.0 || self.lt(other)
    }

    /// Greater than or equal.
    pub const fn ge(self, other: Self) -> bool {
        self.0 == other.0 || self.gt(other)
    }

    /// Forward distance from `self` to `other` (wrapping), i.e. `other - self`.
    pub const fn distance_to(self, other: Self) -> u32 {
        other.0.wrapping_sub(self.0)
    }

    /// True when `self` lies in the window `[low, high]` (inclusive, serial order).
    /// Used for the RFC 7143 §4.2.2.1 check ExpCmdSN <= CmdSN <= MaxCmdSN.
    pub const fn in_window(self, low: Self, high: Self) -> bool {
        low.le(self) && self.le(high)
    }
}

impl fmt::Debug for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SN({})", self.0)
    }
}

impl fmt::Display for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u32> for SerialNumber {
    fn from(v: u32) -> Self {
        SerialNumber(v)
    }
}

impl From<SerialNumber> for u32 {
    fn from(v: SerialNumber) -> Self {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_simple_and_wrapping() {
        let a = SerialNumber(5);
        assert!(a.lt(SerialNumber(6)));
        assert!(!a.lt(a));
        assert!(a.le(a));
        assert!(SerialNumber(u32::MAX).lt(SerialNumber(0)));
        assert!(SerialNumber(0).gt(SerialNumber(u32::MAX)));
        assert!(SerialNumber(u32::MAX - 10).lt(SerialNumber(10)));
        assert_eq!(SerialNumber(u32::MAX).next(), SerialNumber(0));
        assert_eq!(SerialNumber(u32::MAX - 1).distance_to(SerialNumber(2)), 4);
    }

    #[test]
    fn undefined_pair_is_neither_lt_nor_gt() {
        let a = SerialNumber(0);
        let b = SerialNumber(HALF);
        assert!(!a.lt(b) && !a.gt(b) && !b.lt(a) && !b.gt(a));
    }

    #[test]
    fn window() {
        let low = SerialNumber(u32::MAX - 1);
        let high = low.add(4);
        assert!(SerialNumber(0).in_window(low, high));
        assert!(low.in_window(low, high));
        assert!(high.in_window(low, high));
        assert!(!high.next().in_window(low, high));
        assert!(!SerialNumber(u32::MAX - 2).in_window(low, high));
    }

    proptest::proptest! {
        #[test]
        fn add_small_is_greater(a in proptest::num::u32::ANY, n in 1u32..HALF) {
            let s = SerialNumber(a);
            proptest::prop_assert!(s.lt(s.add(n)));
            proptest::prop_assert!(s.add(n).gt(s));
            proptest::prop_assert_eq!(s.distance_to(s.add(n)), n);
        }
    }
}
