//! Registration of the target's (target, portal) Portal Groups: deleting and restoring them is how
//! the balancer steers initiators that ask iSNS where to log in (patent steps 108 and 112).
//!
//! [`Registrar::Local`] keeps the registration table in the target only (no iSNS server
//! configured: only login redirects steer initiators). The iSNS-backed registrar lives beside it.

use balancer::PortalId;

/// Carries out registration changes. Cheap to share: the iSNS variant holds its own connection.
#[derive(Debug)]
pub enum Registrar {
    /// No iSNS server: changes are recorded in the target's table only.
    Local,
}

/// Why a registration change failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("iSNS: {0}")]
    Isns(String),
}

impl Registrar {
    /// Deregisters (target, portal) so that queries for `target` no longer return `portal`.
    pub async fn delete(&self, target: &str, portal: PortalId) -> Result<(), RegistrationError> {
        match self {
            Registrar::Local => {
                tracing::debug!(target, %portal, "registration deleted locally");
                Ok(())
            }
        }
    }

    /// Registers (target, portal) again.
    pub async fn restore(&self, target: &str, portal: PortalId) -> Result<(), RegistrationError> {
        match self {
            Registrar::Local => {
                tracing::debug!(target, %portal, "registration restored locally");
                Ok(())
            }
        }
    }
}
