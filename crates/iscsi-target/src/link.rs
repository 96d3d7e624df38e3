//! A portal's link and its capacity: `--portal IP:PORT[,speed=RATE]`, or, without `speed=`,
//! the speed the interface holding the portal's address reports
//! (`/sys/class/net/DEV/speed`, Mbit/s). Capacities are bytes per second in each direction
//! (links are full duplex).

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// One `--portal`: where to listen and, if given, the link's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PortalConfig {
    pub address: SocketAddr,
    /// Bytes per second each way; None: ask the interface ([`interface_capacity`]).
    pub link_capacity: Option<f64>,
}

impl From<SocketAddr> for PortalConfig {
    fn from(address: SocketAddr) -> Self {
        PortalConfig {
            address,
            link_capacity: None,
        }
    }
}

impl FromStr for PortalConfig {
    type Err = String;

    /// `IP:PORT` or `IP:PORT,speed=RATE` (see [`parse_rate`]).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let addr = parts.next().unwrap_or_default();
        let address: SocketAddr = addr
            .parse()
            .map_err(|e| format!("portal {addr:?}: expected IP:PORT ({e})"))?;
        let mut link_capacity = None;
        for opt in parts {
            match opt.split_once('=') {
                Some(("speed", rate)) => link_capacity = Some(parse_rate(rate)?),
                _ => {
                    return Err(format!(
                        "portal {s:?}: unknown option {opt:?} (expected speed=RATE, e.g. speed=10Gbit)"
                    ));
                }
            }
        }
        Ok(PortalConfig {
            address,
            link_capacity,
        })
    }
}

impl PortalConfig {
    /// The link's capacity: the one given, else the interface's ([`interface_capacity`]).
    pub fn capacity(&self) -> Option<f64> {
        self.link_capacity
            .or_else(|| interface_capacity(self.address.ip()))
    }
}

/// A link rate, in bytes per second: a number and a unit, bits (`bit`, `Kbit`, `Mbit`,
/// `Gbit`, `Tbit`; the prefix letter in either case) or bytes (`B`, `KB`, `MB`, `GB`, `TB`;
/// capital B), decimal (k = 1000), or binary with `i` (`Mibit`, `GiB`); `/s` may follow.
/// `400Mbit` is 50,000,000 bytes/s, `10Gbit` 1,250,000,000, `1.25GB` 1,250,000,000.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    const HINT: &str =
        "e.g. 400Mbit or 10Gbit (bits per second), 50MB or 1.25GB (bytes per second)";
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("speed {s:?}: no number; {HINT}"))?;
    if unit.is_empty() {
        return Err(format!("speed {s:?}: no unit, bits or bytes? {HINT}"));
    }
    let (prefix, rest) = match unit.chars().next() {
        Some(c @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T')) if unit.len() > 1 => {
            (Some(c.to_ascii_uppercase()), &unit[1..])
        }
        _ => (None, unit),
    };
    let (binary, base) = match rest.strip_prefix('i') {
        Some(b) if prefix.is_some() => (true, b),
        _ => (false, rest),
    };
    let bits_per_unit = match base {
        "bit" | "Bit" | "bits" => 1.0,
        "B" => 8.0,
        _ => {
            return Err(format!(
                "speed {s:?}: unknown unit {unit:?} (\"bit\" for bits, capital \"B\" for bytes); {HINT}"
            ));
        }
    };
    let step: f64 = if binary { 1024.0 } else { 1000.0 };
    let scale = match prefix {
        None => 1.0,
        Some('K') => step,
        Some('M') => step.powi(2),
        Some('G') => step.powi(3),
        Some('T') => step.powi(4),
        Some(_) => unreachable!("prefixes matched above"),
    };
    let bytes = n * scale * bits_per_unit / 8.0;
    if !(bytes.is_finite() && bytes > 0.0) {
        return Err(format!("speed {s:?}: must be more than 0; {HINT}"));
    }
    Ok(bytes)
}

/// The capacity of the interface holding `ip`, in bytes per second each way, from its
/// reported speed: None for the loopback, an unspecified address (every interface), an
/// address no interface holds, or an interface that reports no speed. (A veth reports
/// 10,000 Mbit/s whatever shapes it: give `speed=` there.)
pub fn interface_capacity(ip: IpAddr) -> Option<f64> {
    if ip.is_loopback() || ip.is_unspecified() {
        return None;
    }
    let dev = interface_of(ip)?;
    let speed = std::fs::read_to_string(format!("/sys/class/net/{dev}/speed")).ok()?;
    parse_speed_file(&speed)
}

/// `/sys/class/net/DEV/speed` (Mbit/s) in bytes per second; None for -1 (unknown) or junk.
pub fn parse_speed_file(s: &str) -> Option<f64> {
    let mbit: i64 = s.trim().parse().ok()?;
    (mbit > 0).then(|| mbit as f64 * 1e6 / 8.0)
}

/// The name of the interface holding `ip` (`getifaddrs`), without an alias label.
pub fn interface_of(ip: IpAddr) -> Option<String> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says which one it is.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            }
        };
        if addr == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
            found = Some(name.split(':').next().unwrap_or_default().to_string());
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_bits_and_bytes() {
        assert_eq!(parse_rate("400Mbit"), Ok(50e6));
        assert_eq!(parse_rate("400mbit"), Ok(50e6));
        assert_eq!(parse_rate("10Gbit"), Ok(1.25e9));
        assert_eq!(parse_rate("10Gbit/s"), Ok(1.25e9));
        assert_eq!(parse_rate("1.25GB"), Ok(1.25e9));
        assert_eq!(parse_rate("50MB"), Ok(50e6));
        assert_eq!(parse_rate("800bit"), Ok(100.0));
        assert_eq!(parse_rate("100B"), Ok(100.0));
        assert_eq!(parse_rate("1KB"), Ok(1000.0));
        assert_eq!(parse_rate("1KiB"), Ok(1024.0));
        assert_eq!(parse_rate("8Mibit"), Ok(1024.0 * 1024.0));
        for bad in [
            "", "400", "Mbit", "400Mb", "400mb", "400Mbps", "400 Mbit", "0Gbit", "1.2.3GB", "-1GB",
            "1XB", "1e3Mbit",
        ] {
            let e = parse_rate(bad).expect_err(bad);
            assert!(e.contains("speed") && e.contains("e.g."), "{bad}: {e}");
        }
        assert!(parse_rate("400").unwrap_err().contains("no unit"));
        assert!(parse_rate("400mb").unwrap_err().contains("capital \"B\""));
    }

    #[test]
    fn portals_with_and_without_a_speed() {
        let p: PortalConfig = "127.0.0.1:3260".parse().unwrap();
        assert_eq!(
            p,
            PortalConfig::from("127.0.0.1:3260".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(p.link_capacity, None);
        let p: PortalConfig = "10.0.0.1:3260,speed=400Mbit".parse().unwrap();
        assert_eq!(p.address, "10.0.0.1:3260".parse().unwrap());
        assert_eq!(p.link_capacity, Some(50e6));
        assert_eq!(p.capacity(), Some(50e6));
        let p: PortalConfig = "[::1]:3260,speed=1.25GB".parse().unwrap();
        assert_eq!(p.link_capacity, Some(1.25e9));
        let e = "127.0.0.1:3260,rate=1Gbit"
            .parse::<PortalConfig>()
            .unwrap_err();
        assert!(e.contains("unknown option \"rate=1Gbit\""), "{e}");
        let e = "127.0.0.1:3260,speed=1G"
            .parse::<PortalConfig>()
            .unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        let e = "127.0.0.1,speed=1Gbit".parse::<PortalConfig>().unwrap_err();
        assert!(e.contains("IP:PORT"), "{e}");
    }

    #[test]
    fn interface_speeds() {
        assert_eq!(parse_speed_file("1000\n"), Some(125e6));
        assert_eq!(parse_speed_file("10000"), Some(1.25e9));
        assert_eq!(parse_speed_file("-1\n"), None);
        assert_eq!(parse_speed_file(""), None);
        // The loopback has an interface but no speed; an unspecified address no interface.
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(interface_of(lo).as_deref(), Some("lo"));
        assert_eq!(interface_capacity(lo), None);
        assert_eq!(interface_capacity(IpAddr::from([0, 0, 0, 0])), None);
        // TEST-NET-3: held by no interface here.
        assert_eq!(interface_of(IpAddr::from([203, 0, 113, 77])), None);
        let p: PortalConfig = "127.0.0.1:3260".parse().unwrap();
        assert_eq!(p.capacity(), None);
    }
}
