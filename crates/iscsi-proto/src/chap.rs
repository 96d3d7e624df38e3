//! CHAP authentication during login (RFC 7143 §12.1.3, RFC 1994).

use std::fmt;

/// CHAP credentials: the name one side gives (`CHAP_N`) and the secret both sides share.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
}

impl fmt::Debug for Credentials {
    /// The secret is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}
