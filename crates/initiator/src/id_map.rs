//! Maps keyed by the initiator's own small integers (ITTs, request ids): SipHash, the
//! standard map's default, cost more than the rest of a lookup, and these keys are ours,
//! not an attacker's, so a multiplicative hash is enough.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` hashing integer keys by one multiplication (Fibonacci hashing).
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Hashes the integers written to it by multiplying with 2^64 / φ.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_and_round_trip() {
        let mut m: IdMap<u32, u32> = IdMap::default();
        for k in 0x1000..0x1000 + 4096 {
            m.insert(k, k * 2);
        }
        assert_eq!(m.len(), 4096);
        assert!((0x1000..0x1000 + 4096).all(|k| m.get(&k) == Some(&(k * 2))));
        assert_eq!(m.remove(&0x1001), Some(0x2002));
        assert!(!m.contains_key(&0x1001));
        // The high bits (hashbrown's control byte) differ between neighbouring keys.
        let h = |k: u64| {
            let mut x = IdHasher::default();
            x.write_u64(k);
            x.finish() >> 57
        };
        let tops: std::collections::HashSet<u64> = (0..64).map(h).collect();
        assert!(tops.len() > 32, "{} distinct top bits", tops.len());
    }
}
