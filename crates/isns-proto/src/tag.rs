//! Attribute tags, RFC 4171 §6.1, and the object type each tag belongs to.

/// Delimiter between message key and operating attributes (§5.6.1).
pub const DELIMITER: u32 = 0;
// Network Entity (§6.2)
pub const ENTITY_IDENTIFIER: u32 = 1;
pub const ENTITY_PROTOCOL: u32 = 2;
pub const MGMT_IP_ADDRESS: u32 = 3;
pub const TIMESTAMP: u32 = 4;
pub const PROTOCOL_VERSION_RANGE: u32 = 5;
pub const REGISTRATION_PERIOD: u32 = 6;
pub const ENTITY_INDEX: u32 = 7;
pub const ENTITY_NEXT_INDEX: u32 = 8;
// Portal (§6.3)
pub const PORTAL_IP_ADDRESS: u32 = 16;
pub const PORTAL_PORT: u32 = 17;
pub const PORTAL_SYMBOLIC_NAME: u32 = 18;
pub const ESI_INTERVAL: u32 = 19;
pub const ESI_PORT: u32 = 20;
pub const PORTAL_INDEX: u32 = 22;
pub const SCN_PORT: u32 = 23;
pub const PORTAL_NEXT_INDEX: u32 = 24;
pub const PORTAL_SECURITY_BITMAP: u32 = 27;
// iSCSI Storage Node (§6.4)
pub const ISCSI_NAME: u32 = 32;
pub const ISCSI_NODE_TYPE: u32 = 33;
pub const ISCSI_ALIAS: u32 = 34;
pub const ISCSI_SCN_BITMAP: u32 = 35;
pub const ISCSI_NODE_INDEX: u32 = 36;
pub const WWNN_TOKEN: u32 = 37;
pub const ISCSI_NODE_NEXT_INDEX: u32 = 38;
pub const ISCSI_AUTH_METHOD: u32 = 42;
// Portal Group (§6.5)
pub const PG_ISCSI_NAME: u32 = 48;
pub const PG_PORTAL_IP_ADDR: u32 = 49;
pub const PG_PORTAL_PORT: u32 = 50;
pub const PG_TAG: u32 = 51;
pub const PG_INDEX: u32 = 52;
pub const PG_NEXT_INDEX: u32 = 53;
// Discovery Domain (§6.11); the rest of §6.11-12 in `isns::registry::dd`.
pub const DD_ID: u32 = 2065;
pub const DD_SYMBOLIC_NAME: u32 = 2066;

/// iSCSI Node Type bits (§6.4.2).
pub mod node_type {
    pub const TARGET: u32 = 1;
    pub const INITIATOR: u32 = 2;
    pub const CONTROL: u32 = 4;
}

/// iSCSI SCN bitmap bits (§6.4.4).
pub mod scn {
    pub const DD_MEMBER_ADDED: u32 = 1;
    pub const DD_MEMBER_REMOVED: u32 = 2;
    pub const OBJECT_UPDATED: u32 = 4;
    pub const OBJECT_ADDED: u32 = 8;
    pub const OBJECT_REMOVED: u32 = 16;
    pub const MANAGEMENT_REGISTRATION: u32 = 32;
    pub const TARGET_AND_SELF_ONLY: u32 = 64;
    pub const INITIATOR_AND_SELF_ONLY: u32 = 128;
}

/// The registry object types of RFC 4171 §4 that the server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    Entity,
    Portal,
    IscsiNode,
    PortalGroup,
}

impl ObjectType {
    /// Which object type an attribute tag describes (§6.1 tag ranges).
    pub fn of_tag(tag: u32) -> Option<ObjectType> {
        match tag {
            1..=15 => Some(ObjectType::Entity),
            16..=31 => Some(ObjectType::Portal),
            32..=47 => Some(ObjectType::IscsiNode),
            48..=63 => Some(ObjectType::PortalGroup),
            _ => None,
        }
    }

    /// Key attribute tags identifying one object of this type.
    pub fn key_tags(self) -> &'static [u32] {
        match self {
            ObjectType::Entity => &[ENTITY_IDENTIFIER],
            ObjectType::Portal => &[PORTAL_IP_ADDRESS, PORTAL_PORT],
            ObjectType::IscsiNode => &[ISCSI_NAME],
            ObjectType::PortalGroup => &[PG_ISCSI_NAME, PG_PORTAL_IP_ADDR, PG_PORTAL_PORT],
        }
    }

    /// The index attribute tag (§6.2.7, §6.3.7, §6.4.6, §6.5.5).
    pub fn index_tag(self) -> u32 {
        match self {
            ObjectType::Entity => ENTITY_INDEX,
            ObjectType::Portal => PORTAL_INDEX,
            ObjectType::IscsiNode => ISCSI_NODE_INDEX,
            ObjectType::PortalGroup => PG_INDEX,
        }
    }
}
