//! What a connection core knows of the target it serves, fixed at construction: the targets
//! (names and LUNs) and the portals (for SendTargets and the Portal Group Tag).

use std::net::SocketAddr;

use balancer::PortalId;

/// A portal of the target: its address and Portal Group Tag (RFC 7143 §4.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPortal {
    pub id: PortalId,
    pub address: SocketAddr,
    pub tag: u16,
}

/// A target served through every portal, and its logical unit numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTarget {
    pub name: String,
    pub luns: Vec<u16>,
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
            }],
            portals: vec![CatalogPortal {
                id: PortalId(0),
                address,
                tag: 1,
            }],
        }
    }

    /// The portal with this id.
    pub fn portal(&self, id: PortalId) -> Option<&CatalogPortal> {
        self.portals.iter().find(|p| p.id == id)
    }
}
