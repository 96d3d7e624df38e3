//! SendTargets discovery text (RFC 7143 §12.3, Appendix C) and the
//! TargetAddress value format (§13.8): `domainname[:port][,portal-group-tag]`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::error::TextError;
use crate::text::TextPairs;

/// The well-known iSCSI TCP port (§13.8).
pub const DEFAULT_PORT: u16 = 3260;

/// A parsed TargetAddress value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetAddress {
    /// Host: DNS name, IPv4 literal, or IPv6 literal without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Portal group tag, when given.
    pub tpgt: Option<u16>,
}

impl TargetAddress {
    /// From a socket address and an optional tag.
    pub fn from_socket(addr: SocketAddr, tpgt: Option<u16>) -> Self {
        TargetAddress {
            host: addr.ip().to_string(),
            port: addr.port(),
            tpgt,
        }
    }

    /// Parse `host[:port][,tpgt]`, IPv6 in brackets (§13.8).
    pub fn parse(v: &str) -> Result<Self, TextError> {
        let bad = || TextError::BadValue(format!("TargetAddress={v}"));
        let (hostport, tpgt) = match v.rsplit_once(',') {
            Some((hp, t)) => (hp, Some(t.parse::<u16>().map_err(|_| bad())?)),
            None => (v, None),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => DEFAULT_PORT,
                None => return Err(bad()),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p.parse().map_err(|_| bad())?),
                Some(_) => return Err(bad()),
                None => (hostport, DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(TargetAddress {
            host: host.to_string(),
            port,
            tpgt,
        })
    }

    /// The socket address when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// `host:port` only (as used in a login redirect).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for TargetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host_port())?;
        if let Some(t) = self.tpgt {
            write!(f, ",{t}")?;
        }
        Ok(())
    }
}

/// One target in a SendTargets response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    /// TargetName.
    pub name: String,
    /// Its TargetAddress values, in order.
    pub addresses: Vec<TargetAddress>,
}

/// The Text Request key for discovery: `SendTargets=All` in a Discovery session,
/// or a target name / empty value in a Normal session (§12.3).
pub fn send_targets_request(which: &str) -> TextPairs {
    [("SendTargets", which)].into_iter().collect()
}

/// Build the response text: `TargetName=` followed by its `TargetAddress=` keys (Appendix C).
pub fn build_send_targets_response(targets: &[DiscoveredTarget]) -> Result<TextPairs, TextError> {
    let mut t = TextPairs::new();
    for target in targets {
        t.push("TargetName", target.name.clone())?;
        for a in &target.addresses {
            t.push("TargetAddress", a.to_string())?;
        }
    }
    Ok(t)
}

/// Parse a SendTargets response (possibly reassembled from several Text Responses).
pub fn parse_send_targets_response(pairs: &TextPairs) -> Result<Vec<DiscoveredTarget>, TextError> {
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for (k, v) in pairs.iter() {
        match k {
            "TargetName" => out.push(DiscoveredTarget {
                name: v.to_string(),
                addresses: Vec::new(),
            }),
            "TargetAddress" => out
                .last_mut()
                .ok_or(TextError::Sequence("TargetAddress before TargetName"))?
                .addresses
                .push(TargetAddress::parse(v)?),
            // TargetAlias and unknown keys carry nothing we use.
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = TargetAddress::parse("127.0.0.2:3261,2").unwrap();
        assert_eq!(a.socket_addr(), Some("127.0.0.2:3261".parse().unwrap()));
        assert_eq!(a.tpgt, Some(2));
        assert_eq!(a.to_string(), "127.0.0.2:3261,2");
        let b = TargetAddress::parse("[::1]:3262,1").unwrap();
        assert_eq!(b.host, "::1");
        assert_eq!(b.to_string(), "[::1]:3262,1");
        let c = TargetAddress::parse("array.example").unwrap();
        assert_eq!((c.port, c.tpgt), (3260, None));
        assert_eq!(c.socket_addr(), None);
        for bad in [
            "",
            ":3260",
            "1.2.3.4:x",
            "1.2.3.4:3260,x",
            "[::1",
            "::1:3260",
            "[::1]x",
        ] {
            assert!(TargetAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn response_roundtrip() {
        let targets = vec![
            DiscoveredTarget {
                name: "iqn.2024-01.test:a".into(),
                addresses: vec![
                    TargetAddress::parse("127.0.0.1:3260,1").unwrap(),
                    TargetAddress::parse("127.0.0.2:3260,1").unwrap(),
                ],
            },
            DiscoveredTarget {
                name: "iqn.2024-01.test:b".into(),
                addresses: vec![TargetAddress::parse("127.0.0.3:3260,2").unwrap()],
            },
        ];
        let text = build_send_targets_response(&targets).unwrap();
        assert_eq!(
            &text.to_bytes()[..],
            &b"TargetName=iqn.2024-01.test:a\0TargetAddress=127.0.0.1:3260,1\0\
               TargetAddress=127.0.0.2:3260,1\0TargetName=iqn.2024-01.test:b\0\
               TargetAddress=127.0.0.3:3260,2\0"[..]
        );
        assert_eq!(parse_send_targets_response(&text).unwrap(), targets);
        let bad: TextPairs = [("TargetAddress", "127.0.0.1:3260,1")]
            .into_iter()
            .collect();
        assert!(parse_send_targets_response(&bad).is_err());
        assert_eq!(send_targets_request("All").get("SendTargets"), Some("All"));
    }
}
