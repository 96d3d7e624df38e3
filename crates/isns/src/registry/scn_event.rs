//! SCNEvent, RFC 4171 §5.6.5.7: a client asks the server to announce an
//! event about one of its Storage Nodes; the server answers (SCNEventRsp,
//! §5.7.5.7, no attributes) and sends the SCN (§5.6.5.8) to every node
//! registered for that event, as for a change it made itself.
//!
//! The Message Key names the node the event is about (iSCSI Name); the
//! operating attribute is the iSCSI SCN Bitmap with the event(s). Only the
//! node's own entity or a Control Node may announce events about it
//! (status 6/8 otherwise, see [`Registry::scn_node`]). A bitmap with no
//! object event (OBJECT_UPDATED, OBJECT_ADDED, OBJECT_REMOVED) or with any
//! other bit (DD membership and management bits are the server's to set,
//! the self-only bits are registration options) is refused with status 16
//! "SCN Event Rejected". Nothing is persisted.

use isns_proto::tag;
use isns_proto::{Message, Status};

use super::{Answer, Changes, Registry, ScnEvent};

/// The events a client may announce.
pub const CLIENT_EVENTS: u32 =
    tag::scn::OBJECT_UPDATED | tag::scn::OBJECT_ADDED | tag::scn::OBJECT_REMOVED;

impl Registry {
    pub(super) fn scn_event(&mut self, req: &Message, ch: &mut Changes) -> Answer {
        let (name, _, _) = self.scn_node(req)?;
        let bitmap = super::scn_bitmap(req)?;
        if bitmap & CLIENT_EVENTS == 0 || bitmap & !CLIENT_EVENTS != 0 {
            return Err(Status::SCN_EVENT_REJECTED);
        }
        for bit in [
            tag::scn::OBJECT_UPDATED,
            tag::scn::OBJECT_ADDED,
            tag::scn::OBJECT_REMOVED,
        ] {
            if bitmap & bit != 0 {
                ch.scn.push(ScnEvent {
                    event: bit,
                    object_key: vec![name.clone()],
                });
            }
        }
        Ok((Vec::new(), Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{node, ok, req_from, s, storage};
    use super::*;
    use isns_proto::Attribute;
    use isns_proto::FunctionId;
    use isns_proto::tag::scn::{MANAGEMENT_REGISTRATION, OBJECT_ADDED, OBJECT_UPDATED};

    fn status(reg: &mut Registry, m: &Message) -> Status {
        reg.handle(m, 1000).response.unwrap().status.unwrap()
    }

    fn scn_reg(source: &str, name: &str, bitmap: u32) -> Message {
        req_from(
            source,
            FunctionId::SCN_REG,
            vec![s(tag::ISCSI_NAME, name)],
            vec![Attribute::u32(tag::ISCSI_SCN_BITMAP, bitmap)],
        )
    }

    fn scn_event(source: &str, name: &str, bitmap: u32) -> Message {
        req_from(
            source,
            FunctionId::SCN_EVENT,
            vec![s(tag::ISCSI_NAME, name)],
            vec![Attribute::u32(tag::ISCSI_SCN_BITMAP, bitmap)],
        )
    }

    /// `storage()` (nodes iqn.t1, iqn.t2 of stor1), an initiator iqn.i
    /// registered for updates, and a control node iqn.ctl.
    fn registry() -> Registry {
        let mut reg = storage();
        reg.set_control_nodes(["iqn.ctl".to_string()]);
        for (eid, name, ty) in [("ei", "iqn.i", 2), ("ectl", "iqn.ctl", 4)] {
            let m = req_from(
                name,
                FunctionId::DEV_ATTR_REG,
                vec![s(tag::ENTITY_IDENTIFIER, eid)],
                node(name, ty),
            );
            ok(&mut reg, &m);
        }
        ok(&mut reg, &scn_reg("iqn.i", "iqn.i", OBJECT_UPDATED));
        reg
    }

    #[test]
    fn an_scn_event_notifies_the_registrants_of_that_event() {
        let mut reg = registry();
        let out = reg.handle(&scn_event("iqn.t1", "iqn.t1", OBJECT_UPDATED), 1000);
        let resp = out.response.unwrap();
        assert_eq!(resp.function, FunctionId::SCN_EVENT.response());
        assert_eq!(resp.status, Some(Status::SUCCESS));
        assert!(resp.attrs.iter().all(|a| a.tag == tag::DELIMITER));
        assert!(out.changes.is_empty(), "nothing to persist");
        assert_eq!(out.notifications.len(), 1);
        let key = out.notifications[0].message.key().to_vec();
        assert_eq!(key[0], s(tag::ISCSI_NAME, "iqn.i"));
        assert_eq!(
            key[2..],
            [
                Attribute::u32(tag::ISCSI_SCN_BITMAP, OBJECT_UPDATED),
                s(tag::ISCSI_NAME, "iqn.t1")
            ]
        );
        // An event nobody registered for: answered, nobody told.
        let out = reg.handle(&scn_event("iqn.t1", "iqn.t1", OBJECT_ADDED), 1000);
        assert_eq!(out.response.unwrap().status, Some(Status::SUCCESS));
        assert!(out.notifications.is_empty());
    }

    #[test]
    fn scn_events_are_checked() {
        let mut reg = registry();
        // About another entity's node: refused unless from a control node.
        assert_eq!(
            status(&mut reg, &scn_event("iqn.i", "iqn.t1", OBJECT_UPDATED)),
            Status::SOURCE_UNAUTHORIZED
        );
        assert_eq!(
            status(&mut reg, &scn_event("iqn.ctl", "iqn.t1", OBJECT_UPDATED)),
            Status::SUCCESS
        );
        assert_eq!(
            status(&mut reg, &scn_event("iqn.t1", "iqn.nobody", OBJECT_UPDATED)),
            Status::NO_SUCH_ENTRY
        );
        for bad in [
            0,
            tag::scn::DD_MEMBER_ADDED,
            OBJECT_UPDATED | MANAGEMENT_REGISTRATION,
        ] {
            assert_eq!(
                status(&mut reg, &scn_event("iqn.t1", "iqn.t1", bad)),
                Status::SCN_EVENT_REJECTED,
                "bitmap {bad:#x}"
            );
        }
        let no_bitmap = req_from(
            "iqn.t1",
            FunctionId::SCN_EVENT,
            vec![s(tag::ISCSI_NAME, "iqn.t1")],
            vec![],
        );
        assert_eq!(status(&mut reg, &no_bitmap), Status::MESSAGE_FORMAT_ERROR);
    }

    #[test]
    fn scn_registrations_are_the_nodes_own_and_management_ones_control_nodes_only() {
        let mut reg = registry();
        assert_eq!(
            status(&mut reg, &scn_reg("iqn.i", "iqn.t1", OBJECT_ADDED)),
            Status::SOURCE_UNAUTHORIZED
        );
        assert_eq!(
            status(&mut reg, &scn_reg("iqn.nobody", "iqn.t1", OBJECT_ADDED)),
            Status::SOURCE_UNKNOWN
        );
        assert_eq!(
            status(
                &mut reg,
                &scn_reg("iqn.t1", "iqn.t1", OBJECT_ADDED | MANAGEMENT_REGISTRATION)
            ),
            Status::SCN_REGISTRATION_REJECTED
        );
        ok(
            &mut reg,
            &scn_reg("iqn.ctl", "iqn.ctl", OBJECT_ADDED | MANAGEMENT_REGISTRATION),
        );
        // The management registrant's SCN carries the management bit.
        let out = reg.handle(&scn_event("iqn.t2", "iqn.t2", OBJECT_ADDED), 1000);
        let to_ctl = &out.notifications[0].message;
        assert_eq!(to_ctl.key()[0], s(tag::ISCSI_NAME, "iqn.ctl"));
        assert_eq!(
            to_ctl.key()[2],
            Attribute::u32(
                tag::ISCSI_SCN_BITMAP,
                OBJECT_ADDED | MANAGEMENT_REGISTRATION
            )
        );
    }
}
