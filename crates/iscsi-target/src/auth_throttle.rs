//! The delay before a failed authentication (status 0x0201) is answered, per source address:
//! it doubles with each recent failure from that address, up to a cap, and is forgotten
//! after a quiet period. Only the failing connection waits (its own task sleeps); the
//! portal's other connections go on. Against online guessing of CHAP secrets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delay after the first failure from an address.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Failures older than this are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Addresses tracked at most; beyond it the oldest entries are dropped.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Recent authentication failures by source address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl AuthThrottle {
    /// Records a failure from `addr` at `now`; returns how long to wait before answering it
    /// and how many recent failures the address has.
    pub fn failed(&self, addr: IpAddr, now: Instant) -> (Duration, u32) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES {
            map.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_ADDRESSES
                && let Some(oldest) = map.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a)
            {
                map.remove(&oldest);
            }
        }
        let f = map.entry(addr).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        (delay(f.count), f.count)
    }
}

impl AuthThrottle {
    /// The recent failures recorded for `addr` (0 when none).
    pub fn recent(&self, addr: IpAddr) -> u32 {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&addr).map_or(0, |f| f.count)
    }
}

/// The delay after `count` recent failures: [`FIRST_DELAY`] doubled per failure, capped.
pub fn delay(count: u32) -> Duration {
    let doublings = count.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1u32 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_per_address_is_capped_and_forgets() {
        let t = AuthThrottle::default();
        let a: IpAddr = "127.0.0.5".parse().unwrap();
        let b: IpAddr = "127.0.0.6".parse().unwrap();
        let t0 = Instant::now();
        let ds: Vec<_> = (0..10)
            .map(|i| t.failed(a, t0 + Duration::from_secs(i)).0)
            .collect();
        assert_eq!(ds[0], FIRST_DELAY);
        assert_eq!(ds[1], FIRST_DELAY * 2);
        assert_eq!(ds[2], FIRST_DELAY * 4);
        assert_eq!(ds[9], MAX_DELAY);
        // Another address starts from the beginning.
        assert_eq!(t.failed(b, t0).0, FIRST_DELAY);
        // After a quiet period the address starts over.
        let later = t0 + Duration::from_secs(10) + FORGET_AFTER;
        assert_eq!(t.failed(a, later), (FIRST_DELAY, 1));
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn tracks_a_bounded_number_of_addresses() {
        let t = AuthThrottle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            t.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(t.failures.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
