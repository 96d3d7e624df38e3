//! Load metrics and thresholds: what "a portal's load" means and when it is too high.

use serde::{Deserialize, Serialize};

use crate::table::PortalRow;

/// How a portal's load is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Number of normal sessions logged in through the portal.
    Sessions,
    /// SCSI commands per second completed through the portal.
    Iops,
}

impl Metric {
    /// The portal's load under this metric.
    pub fn load(self, row: &PortalRow) -> f64 {
        match self {
            Metric::Sessions => row.sessions.len() as f64,
            Metric::Iops => row.iops(),
        }
    }

    /// What moving one session adds to its destination's load, estimated from the session.
    pub fn session_load(self, s: &crate::table::SessionEntry) -> f64 {
        match self {
            Metric::Sessions => 1.0,
            Metric::Iops => s.iops,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Sessions => "sessions",
            Metric::Iops => "iops",
        }
    }
}

/// High threshold (a portal at or above it is overloaded) and low threshold (a portal at or below
/// it has recovered, and its deleted registrations are restored).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub high: f64,
    pub low: f64,
}

/// A parsed `--balance METRIC:HIGH[:LOW]` argument.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BalanceSpec {
    pub metric: Metric,
    pub thresholds: Thresholds,
}

/// Why a `--balance` argument was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseSpecError {
    #[error("expected METRIC:HIGH[:LOW], e.g. sessions:2 or iops:20000:10000")]
    Shape,
    #[error("unknown metric {0:?} (known: sessions, iops)")]
    Metric(String),
    #[error("threshold {0:?} is not a non-negative number")]
    Number(String),
    #[error("low threshold {low} must be below high threshold {high}")]
    Order { low: f64, high: f64 },
}

impl std::str::FromStr for BalanceSpec {
    type Err = ParseSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(ParseSpecError::Shape);
        }
        let metric = match parts[0] {
            "sessions" => Metric::Sessions,
            "iops" => Metric::Iops,
            other => return Err(ParseSpecError::Metric(other.to_string())),
        };
        let num = |t: &str| -> Result<f64, ParseSpecError> {
            t.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| ParseSpecError::Number(t.to_string()))
        };
        let high = num(parts[1])?;
        let low = match parts.get(2) {
            Some(t) => num(t)?,
            // Sessions are whole numbers: one below the high mark. Rates: half of it.
            None => match metric {
                Metric::Sessions => (high - 1.0).max(0.0),
                Metric::Iops => high / 2.0,
            },
        };
        if low >= high {
            return Err(ParseSpecError::Order { low, high });
        }
        Ok(BalanceSpec {
            metric,
            thresholds: Thresholds { high, low },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: BalanceSpec = "sessions:2".parse().unwrap();
        assert_eq!(s.metric, Metric::Sessions);
        assert_eq!(
            s.thresholds,
            Thresholds {
                high: 2.0,
                low: 1.0
            }
        );
        let s: BalanceSpec = "iops:20000:5000".parse().unwrap();
        assert_eq!(s.metric, Metric::Iops);
        assert_eq!(s.thresholds.low, 5000.0);
        assert_eq!(
            "cpu:2".parse::<BalanceSpec>(),
            Err(ParseSpecError::Metric("cpu".into()))
        );
        assert_eq!(
            "sessions".parse::<BalanceSpec>(),
            Err(ParseSpecError::Shape)
        );
        assert!(matches!(
            "sessions:x".parse::<BalanceSpec>(),
            Err(ParseSpecError::Number(_))
        ));
        assert!(matches!(
            "sessions:2:3".parse::<BalanceSpec>(),
            Err(ParseSpecError::Order { .. })
        ));
    }
}
