//! What a connection core knows of the target it serves, fixed at construction: the targets
//! (names, LUNs, who may log in and with what CHAP credentials), the portals (for SendTargets
//! and the Portal Group Tag) and the CHAP credentials of discovery sessions.

use std::net::SocketAddr;

use balancer::PortalId;
use iscsi_proto::chap::Credentials;

/// A portal of the target: its address and Portal Group Tag (RFC 7143 §4.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPortal {
    pub id: PortalId,
    pub address: SocketAddr,
    pub tag: u16,
}

/// A target served through every portal, and its logical unit numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogTarget {
    pub name: String,
    pub luns: Vec<u16>,
    /// Who may log in, and the CHAP they must pass.
    pub access: Access,
}

/// Authentication (RFC 7143 §12.1.3) and authorization of logins to one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// CHAP the initiator must pass; None: no authentication.
    pub chap: Option<Credentials>,
    /// Credentials the target answers an initiator's mutual CHAP challenge with.
    pub mutual_chap: Option<Credentials>,
    /// Initiator names allowed to log in (and to see the target in SendTargets); None: all.
    pub allow: Option<Vec<String>>,
}

impl Access {
    /// True when `initiator` may log in.
    pub fn allows(&self, initiator: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|a| a.iter().any(|i| i == initiator))
    }
}

impl CatalogTarget {
    /// True when the transport LUN field addresses one of this target's logical units.
    pub fn has_lun(&self, lun_field: u64) -> bool {
        scsi::decode_lun(lun_field).is_some_and(|l| self.luns.contains(&l))
    }
}

/// The targets and portals of this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub targets: Vec<CatalogTarget>,
    pub portals: Vec<CatalogPortal>,
    /// CHAP a discovery session must pass, and the mutual answer (`chap`, `mutual_chap`;
    /// `allow` is not used: every authenticated initiator may discover).
    pub discovery: Access,
}

impl Catalog {
    /// The index of the target named `name`.
    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.name == name)
    }

    /// One target with `luns`, served through one portal (id 0, tag 1) at `address`.
    pub fn single(target: &str, luns: Vec<u16>, address: SocketAddr) -> Catalog {
        Catalog {
            targets: vec![CatalogTarget {
                name: target.into(),
                luns,
                ..Default::default()
            }],
            portals: vec![CatalogPortal {
                id: PortalId(0),
                address,
                tag: 1,
            }],
            discovery: Access::default(),
        }
    }

    /// The portal with this id.
    pub fn portal(&self, id: PortalId) -> Option<&CatalogPortal> {
        self.portals.iter().find(|p| p.id == id)
    }
}
