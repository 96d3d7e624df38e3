//! Sense data returned with CHECK CONDITION (SPC-5 §4.4): fixed and descriptor formats.

use std::fmt;

/// The parts of sense data an initiator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sense {
    /// SENSE KEY (4 bits).
    pub key: u8,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
}

impl Sense {
    /// Parse sense data (response code 0x70/0x71 fixed, 0x72/0x73 descriptor);
    /// `None` for anything else or truncated data.
    pub fn parse(d: &[u8]) -> Option<Sense> {
        match d.first()? & 0x7f {
            0x70 | 0x71 => Some(Sense {
                key: d.get(2)? & 0x0f,
                asc: d.get(12).copied().unwrap_or(0),
                ascq: d.get(13).copied().unwrap_or(0),
            }),
            0x72 | 0x73 => Some(Sense {
                key: d.get(1)? & 0x0f,
                asc: d.get(2).copied().unwrap_or(0),
                ascq: d.get(3).copied().unwrap_or(0),
            }),
            _ => None,
        }
    }

    /// UNIT ATTENTION (key 6): the command may simply be retried.
    pub fn is_unit_attention(&self) -> bool {
        self.key == 0x6
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sense key 0x{:x} asc 0x{:02x} ascq 0x{:02x}",
            self.key, self.asc, self.ascq
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_descriptor() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x05;
        fixed[12] = 0x21;
        assert_eq!(
            Sense::parse(&fixed),
            Some(Sense {
                key: 5,
                asc: 0x21,
                ascq: 0
            })
        );
        assert_eq!(
            Sense::parse(&[0x72, 0x06, 0x29, 0x01]),
            Some(Sense {
                key: 6,
                asc: 0x29,
                ascq: 1
            })
        );
        assert!(
            Sense::parse(&[0x72, 0x06, 0x29, 0x01])
                .unwrap()
                .is_unit_attention()
        );
        assert_eq!(Sense::parse(&[0x70]), None);
        assert_eq!(Sense::parse(&[0x12, 0, 0]), None);
        assert_eq!(Sense::parse(&[]), None);
    }
}
