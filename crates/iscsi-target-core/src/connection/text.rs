//! Text negotiation in full feature phase (RFC 7143 §11.10, §11.11): SendTargets (§13.3,
//! Appendix C) answered from the catalog, less the portals the control plane withholds
//! ([`LoginPolicy::withheld_portals`]) and the targets whose allow list leaves the session's
//! initiator out ([`crate::catalog::Access::allows`]), long answers delivered in pieces with the C bit
//! (§11.11.2); any other key is answered NotUnderstood.

use balancer::PortalId;
use bytes::{Bytes, BytesMut};
use iscsi_proto::sendtargets::{DiscoveredTarget, TargetAddress, build_send_targets_response};
use iscsi_proto::text::TextPairs;
use iscsi_proto::{Pdu, RESERVED_TAG, TextRequest, TextResponse, reject_reason};

use super::{Connection, Session};
use crate::catalog::Catalog;
use crate::policy::LoginPolicy;

/// Largest text (SendTargets answer) kept for continuation.
const MAX_TEXT_RESPONSE: usize = 1 << 20;

/// A text response being delivered in pieces (C bit, §11.11.2).
#[derive(Debug)]
pub(super) struct TextContinuation {
    ttt: u32,
    rest: Bytes,
}

/// Text of a SendTargets answer: for each listed target its `TargetName`, followed by one
/// `TargetAddress=IP:PORT,TPGT` per portal, except the portals `withheld(target)` names (the
/// ones whose registration the balancer holds deleted in iSNS). A target keeps all its
/// portals if every one of them would be withheld: it is never listed without an address.
/// `request` is the SendTargets value: `All`, a target name, or empty (the target of the
/// current session, given as `session_target`). Asked by `initiator`, a target whose allow
/// list does not name it is left out as if it did not exist.
pub fn send_targets(
    request: &str,
    catalog: &Catalog,
    session_target: Option<&str>,
    initiator: Option<&str>,
    mut withheld: impl FnMut(&str) -> Vec<PortalId>,
) -> Bytes {
    let listed: Vec<DiscoveredTarget> = catalog
        .targets
        .iter()
        .filter(|t| initiator.is_none_or(|i| t.access.allows(i)))
        .filter(|t| match request {
            "All" => true,
            "" => Some(t.name.as_str()) == session_target,
            name => t.name == name,
        })
        .map(|t| {
            let hidden = withheld(&t.name);
            let shown = |p: &&crate::catalog::CatalogPortal| !hidden.contains(&p.id);
            let all_hidden = !catalog.portals.iter().any(|p| shown(&p));
            DiscoveredTarget {
                name: t.name.clone(),
                addresses: catalog
                    .portals
                    .iter()
                    .filter(|p| all_hidden || shown(p))
                    .map(|p| TargetAddress::from_socket(p.address, Some(p.tag)))
                    .collect(),
            }
        })
        .collect();
    // Names were validated at configuration time; an error leaves the answer empty.
    build_send_targets_response(&listed)
        .map(|t| t.to_bytes())
        .unwrap_or_default()
}

impl Session {
    /// A Text Response to `t` (§11.11); C clear.
    fn text_response(
        &mut self,
        t: &TextRequest,
        ttt: u32,
        final_: bool,
        data: Bytes,
    ) -> TextResponse {
        TextResponse {
            final_,
            continue_: false,
            lun: t.lun,
            itt: t.itt,
            ttt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            data,
        }
    }
}

impl Connection {
    pub(super) fn on_text(&mut self, t: TextRequest, policy: &mut dyn LoginPolicy) {
        let catalog = self.catalog.clone();
        let Some(s) = self.session() else { return };
        let limit = (s.params.initiator_max_recv_data_segment_length as usize).max(512);
        let body = if t.ttt != RESERVED_TAG {
            // Continuation of a long answer (§11.11.2): an empty request with our TTT.
            match s.text_out.take() {
                Some(c) if c.ttt == t.ttt => c.rest,
                _ => {
                    return self.reject(reject_reason::PROTOCOL_ERROR, &Pdu::TextRequest(t));
                }
            }
        } else {
            s.text_out = None;
            let pairs = match s.text_in.push(&t.data, t.continue_) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    // Acknowledge partial request text with an empty response (§11.10.2).
                    let ttt = s.ttt();
                    let r = s.text_response(&t, ttt, false, Bytes::new());
                    return self.push(r);
                }
                Err(_) => return self.reject(reject_reason::PROTOCOL_ERROR, &Pdu::TextRequest(t)),
            };
            let mut answer = BytesMut::new();
            let mut others = TextPairs::new();
            for (k, v) in pairs.iter() {
                if k == "SendTargets" {
                    let own = s.params.target_name.as_deref();
                    let initiator = Some(s.params.initiator_name.as_str());
                    answer.extend_from_slice(&send_targets(
                        v,
                        &catalog,
                        own,
                        initiator,
                        |target| policy.withheld_portals(target),
                    ));
                } else {
                    let _ = others.push(k, iscsi_proto::params::answer::NOT_UNDERSTOOD);
                }
            }
            others.serialize_into(&mut answer);
            answer.truncate(MAX_TEXT_RESPONSE);
            answer.freeze()
        };
        let (now, rest) = if body.len() > limit {
            (body.slice(..limit), Some(body.slice(limit..)))
        } else {
            (body, None)
        };
        let more = rest.is_some();
        let ttt = if more { s.ttt() } else { RESERVED_TAG };
        if let Some(rest) = rest {
            s.text_out = Some(TextContinuation { ttt, rest });
        }
        let mut r = s.text_response(&t, ttt, !more, now);
        r.continue_ = more;
        self.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogPortal, CatalogTarget};
    use balancer::PortalId;

    fn catalog() -> Catalog {
        Catalog {
            targets: ["iqn.a", "iqn.b"]
                .iter()
                .map(|n| CatalogTarget {
                    name: n.to_string(),
                    luns: vec![0],
                    ..Default::default()
                })
                .collect(),
            portals: ["127.0.0.1:3260", "127.0.0.2:3260"]
                .iter()
                .zip(0u16..)
                .map(|(a, i)| CatalogPortal {
                    id: PortalId(i),
                    address: a.parse().unwrap(),
                    tag: i + 1,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn none(_: &str) -> Vec<PortalId> {
        Vec::new()
    }

    fn addresses(text: &Bytes) -> Vec<String> {
        TextPairs::parse(text)
            .unwrap()
            .get_all("TargetAddress")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn lists_every_target_with_every_portal() {
        let c = catalog();
        let all = send_targets("All", &c, None, None, none);
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
        let one = TextPairs::parse(&send_targets("iqn.b", &c, None, None, none)).unwrap();
        assert_eq!(one.get_all("TargetName").collect::<Vec<_>>(), ["iqn.b"]);
        let own = TextPairs::parse(&send_targets("", &c, Some("iqn.a"), None, none)).unwrap();
        assert_eq!(own.get_all("TargetName").collect::<Vec<_>>(), ["iqn.a"]);
        assert!(send_targets("iqn.zzz", &c, None, None, none).is_empty());
    }

    #[test]
    fn leaves_out_the_withheld_portals_of_each_target() {
        let c = catalog();
        // (iqn.a, P0) is held deleted: iqn.a is listed through P1 only, iqn.b through both.
        let withheld = |t: &str| {
            if t == "iqn.a" {
                vec![PortalId(0)]
            } else {
                vec![]
            }
        };
        let all = send_targets("All", &c, None, None, withheld);
        let pairs = TextPairs::parse(&all).unwrap();
        assert_eq!(
            pairs.iter().collect::<Vec<_>>(),
            [
                ("TargetName", "iqn.a"),
                ("TargetAddress", "127.0.0.2:3260,2"),
                ("TargetName", "iqn.b"),
                ("TargetAddress", "127.0.0.1:3260,1"),
                ("TargetAddress", "127.0.0.2:3260,2"),
            ]
        );
        assert_eq!(
            addresses(&send_targets("iqn.a", &c, None, None, withheld)),
            ["127.0.0.2:3260,2"]
        );
        assert_eq!(
            addresses(&send_targets("", &c, Some("iqn.a"), None, withheld)),
            ["127.0.0.2:3260,2"]
        );
        // Only the targets listed are asked about.
        let mut asked = Vec::new();
        send_targets("iqn.b", &c, None, None, |t: &str| {
            asked.push(t.to_owned());
            vec![]
        });
        assert_eq!(asked, ["iqn.b"]);
    }

    #[test]
    fn leaves_out_the_targets_the_initiator_may_not_log_in_to() {
        let mut c = catalog();
        c.targets[0].access.allow = Some(vec!["iqn.friend".into()]);
        let names = |initiator| {
            let text = send_targets("All", &c, None, Some(initiator), none);
            TextPairs::parse(&text)
                .unwrap()
                .get_all("TargetName")
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("iqn.friend"), ["iqn.a", "iqn.b"]);
        assert_eq!(names("iqn.stranger"), ["iqn.b"]);
        assert!(send_targets("iqn.a", &c, None, Some("iqn.stranger"), none).is_empty());
    }

    #[test]
    fn never_lists_a_target_without_an_address() {
        let c = catalog();
        let everything = |_: &str| vec![PortalId(0), PortalId(1)];
        assert_eq!(
            addresses(&send_targets("iqn.a", &c, None, None, everything)),
            ["127.0.0.1:3260,1", "127.0.0.2:3260,2"]
        );
    }
}
