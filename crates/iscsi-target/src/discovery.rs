//! SendTargets (RFC 7143 §13.3, Appendix C): the text a target returns to `SendTargets=All` or
//! `SendTargets=<name>`, and its delivery in Text Responses of at most MaxRecvDataSegmentLength
//! bytes with the C bit (§11.11.2).

use bytes::Bytes;
use iscsi_proto::sendtargets::{DiscoveredTarget, TargetAddress, build_send_targets_response};

use crate::control::PortalInfo;

/// Text of a SendTargets answer: for each listed target its `TargetName`, followed by one
/// `TargetAddress=IP:PORT,TPGT` per portal. `request` is the SendTargets value: `All`, a
/// target name, or empty (the target of the current session, given as `session_target`).
pub fn send_targets(
    request: &str,
    targets: &[String],
    portals: &[PortalInfo],
    session_target: Option<&str>,
) -> Bytes {
    let listed: Vec<DiscoveredTarget> = targets
        .iter()
        .filter(|t| match request {
            "All" => true,
            "" => Some(t.as_str()) == session_target,
            name => t.as_str() == name,
        })
        .map(|t| DiscoveredTarget {
            name: t.clone(),
            addresses: portals
                .iter()
                .map(|p| TargetAddress::from_socket(p.address, Some(p.tag)))
                .collect(),
        })
        .collect();
    // Names were validated at configuration time; an error leaves the answer empty.
    build_send_targets_response(&listed)
        .map(|t| t.to_bytes())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer::PortalId;
    use iscsi_proto::text::TextPairs;

    fn portals() -> Vec<PortalInfo> {
        ["127.0.0.1:3260", "127.0.0.2:3260"]
            .iter()
            .zip(0u16..)
            .map(|(a, i)| PortalInfo {
                id: PortalId(i),
                address: a.parse().unwrap(),
                tag: i + 1,
            })
            .collect()
    }

    #[test]
    fn lists_every_target_with_every_portal() {
        let targets = vec!["iqn.a".to_string(), "iqn.b".to_string()];
        let all = send_targets("All", &targets, &portals(), None);
        let pairs = TextPairs::parse(&all).unwrap();
        let names: Vec<_> = pairs.get_all("TargetName").collect();
        assert_eq!(names, ["iqn.a", "iqn.b"]);
        let addrs: Vec<_> = pairs.get_all("TargetAddress").collect();
        assert_eq!(
            addrs,
            [
                "127.0.0.1:3260,1",
                "127.0.0.2:3260,2",
                "127.0.0.1:3260,1",
                "127.0.0.2:3260,2"
            ]
        );
        let one = TextPairs::parse(&send_targets("iqn.b", &targets, &portals(), None)).unwrap();
        assert_eq!(one.get_all("TargetName").collect::<Vec<_>>(), ["iqn.b"]);
        let own = TextPairs::parse(&send_targets("", &targets, &portals(), Some("iqn.a"))).unwrap();
        assert_eq!(own.get_all("TargetName").collect::<Vec<_>>(), ["iqn.a"]);
        assert!(send_targets("iqn.zzz", &targets, &portals(), None).is_empty());
    }
}
