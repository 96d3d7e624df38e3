//! Load metrics and thresholds: what "a portal's load" means and when it is too high.
//!
//! One `--balance METRIC:HIGH[:LOW]` argument is a [`BalanceSpec`]. The metrics are
//!
//! | metric      | a portal's load                                              | HIGH, LOW        | LOW when omitted |
//! |-------------|--------------------------------------------------------------|------------------|------------------|
//! | `sessions`  | normal sessions logged in through it                         | a count          | HIGH − 1         |
//! | `iops`      | SCSI commands per second completed through it                | commands/s       | HIGH / 2         |
//! | `bandwidth` | link utilisation, max(sent, received) / link capacity        | percent (`80%`)  | HIGH / 2         |
//! | `cpu`       | its processor's demand, busy + waiting for a CPU, of one CPU | percent (`90%`)  | HIGH / 2         |
//!
//! Bandwidth and processor thresholds must be written with `%` (`bandwidth:80%:50%`); they are
//! held as fractions (0.8). Several specs combine into a
//! [`BalancePolicy`](crate::BalancePolicy): a portal is overloaded when any metric is at or
//! above its HIGH and recovered when every metric is at or below its LOW.

use serde::{Deserialize, Serialize};

use crate::table::PortalRow;

/// How a portal's load is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Number of normal sessions logged in through the portal.
    Sessions,
    /// SCSI commands per second completed through the portal.
    Iops,
    /// The portal link's utilisation: the larger of sent and received bytes per second over
    /// the link capacity (links are full duplex). Unknown when the capacity is unknown.
    Bandwidth,
    /// The portal processor's demand: the fraction of one CPU it ran plus the fraction it
    /// waited for a CPU ([`crate::PortalLoad::cpu_demand`]).
    Cpu,
}

impl Metric {
    /// Every metric, in the order the policy reports them.
    pub const ALL: [Metric; 4] = [
        Metric::Sessions,
        Metric::Iops,
        Metric::Bandwidth,
        Metric::Cpu,
    ];

    /// The portal's measured load under this metric; `None` when it is not measured (the
    /// bandwidth of a link whose capacity is unknown).
    pub fn load(self, row: &PortalRow) -> Option<f64> {
        match self {
            Metric::Sessions => Some(row.sessions.len() as f64),
            Metric::Iops => Some(row.iops()),
            Metric::Bandwidth => row.load.link_utilisation(),
            Metric::Cpu => Some(row.load.cpu_demand()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Sessions => "sessions",
            Metric::Iops => "iops",
            Metric::Bandwidth => "bandwidth",
            Metric::Cpu => "cpu",
        }
    }

    /// Whether thresholds are fractions written as percentages (bandwidth, cpu).
    pub fn is_fraction(self) -> bool {
        matches!(self, Metric::Bandwidth | Metric::Cpu)
    }

    /// `v` in this metric's units for reasons and status: `3`, `1250`, `93.4%`.
    pub fn format(self, v: f64) -> String {
        // An empty sum is -0.0: print it as 0.
        let v = v + 0.0;
        if self.is_fraction() {
            format!("{:.1}%", v * 100.0)
        } else {
            let r = (v * 10.0).round() / 10.0;
            if r.fract() == 0.0 {
                format!("{r:.0}")
            } else {
                format!("{r:.1}")
            }
        }
    }

    /// The low threshold used when a spec gives only the high one: one below it for session
    /// counts (whole numbers), half of it for rates and fractions.
    pub fn default_low(self, high: f64) -> f64 {
        match self {
            Metric::Sessions => (high - 1.0).max(0.0),
            Metric::Iops | Metric::Bandwidth | Metric::Cpu => high / 2.0,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = ParseSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| ParseSpecError::Metric(s.to_string()))
    }
}

/// High threshold (a portal at or above it is overloaded) and low threshold (a portal at or below
/// it has recovered, and its deleted registrations may be restored), in the metric's raw units:
/// a count, commands per second, or a fraction (0.8 for `80%`).
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

impl BalanceSpec {
    /// A spec with both thresholds in raw units (fractions for bandwidth and cpu).
    pub fn new(metric: Metric, high: f64, low: f64) -> Self {
        BalanceSpec {
            metric,
            thresholds: Thresholds { high, low },
        }
    }
}

/// Why a `--balance` argument was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseSpecError {
    #[error(
        "expected METRIC:HIGH[:LOW], e.g. sessions:2, iops:20000:10000, bandwidth:80%:50% or cpu:90%"
    )]
    Shape,
    #[error("unknown metric {0:?} (known: sessions, iops, bandwidth, cpu)")]
    Metric(String),
    #[error("threshold {0:?} is not a non-negative number")]
    Number(String),
    #[error("{metric} thresholds are percentages: write {given:?} as e.g. \"{given}%\"")]
    PercentRequired { metric: Metric, given: String },
    #[error("{metric} thresholds are plain numbers, not percentages: {given:?}")]
    PercentRefused { metric: Metric, given: String },
    #[error("high threshold of {metric} must be above zero")]
    ZeroHigh { metric: Metric },
    #[error("low threshold {low} must be below high threshold {high}")]
    Order { low: String, high: String },
}

impl std::str::FromStr for BalanceSpec {
    type Err = ParseSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(ParseSpecError::Shape);
        }
        let metric: Metric = parts[0].trim().parse()?;
        let num = |t: &str| -> Result<f64, ParseSpecError> {
            let t = t.trim();
            let (digits, percent) = match t.strip_suffix('%') {
                Some(d) => (d.trim(), true),
                None => (t, false),
            };
            if metric.is_fraction() && !percent {
                return Err(ParseSpecError::PercentRequired {
                    metric,
                    given: t.to_string(),
                });
            }
            if !metric.is_fraction() && percent {
                return Err(ParseSpecError::PercentRefused {
                    metric,
                    given: t.to_string(),
                });
            }
            let v = digits
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| ParseSpecError::Number(t.to_string()))?;
            Ok(if percent { v / 100.0 } else { v })
        };
        let high = num(parts[1])?;
        if high <= 0.0 {
            return Err(ParseSpecError::ZeroHigh { metric });
        }
        let low = match parts.get(2) {
            Some(t) => num(t)?,
            None => metric.default_low(high),
        };
        if low >= high {
            return Err(ParseSpecError::Order {
                low: metric.format(low),
                high: metric.format(high),
            });
        }
        Ok(BalanceSpec::new(metric, high, low))
    }
}

impl std::fmt::Display for BalanceSpec {
    /// The `--balance` form: `sessions:2:1`, `bandwidth:80%:40%`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.metric;
        let t = |v: f64| {
            if m.is_fraction() {
                let p = (v * 1000.0).round() / 10.0;
                format!("{p}%")
            } else {
                format!("{v}")
            }
        };
        write!(
            f,
            "{}:{}:{}",
            m.name(),
            t(self.thresholds.high),
            t(self.thresholds.low)
        )
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
            "iops:20000".parse::<BalanceSpec>().unwrap().thresholds.low,
            10000.0
        );
        assert_eq!(
            "disk:2".parse::<BalanceSpec>(),
            Err(ParseSpecError::Metric("disk".into()))
        );
        assert_eq!(
            "sessions".parse::<BalanceSpec>(),
            Err(ParseSpecError::Shape)
        );
        assert_eq!(
            "sessions:1:2:3".parse::<BalanceSpec>(),
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
        assert_eq!(
            "sessions:0".parse::<BalanceSpec>(),
            Err(ParseSpecError::ZeroHigh {
                metric: Metric::Sessions
            })
        );
    }

    #[test]
    fn bandwidth_and_cpu_take_percentages() {
        let s: BalanceSpec = "bandwidth:80%:50%".parse().unwrap();
        assert_eq!(s, BalanceSpec::new(Metric::Bandwidth, 0.8, 0.5));
        let s: BalanceSpec = "cpu:90%".parse().unwrap();
        assert_eq!(s, BalanceSpec::new(Metric::Cpu, 0.9, 0.45));
        let s: BalanceSpec = "bandwidth:80%".parse().unwrap();
        assert_eq!(s.thresholds.low, 0.4);
        assert_eq!(
            "bandwidth:80".parse::<BalanceSpec>(),
            Err(ParseSpecError::PercentRequired {
                metric: Metric::Bandwidth,
                given: "80".into()
            })
        );
        assert_eq!(
            "cpu:90%:40".parse::<BalanceSpec>(),
            Err(ParseSpecError::PercentRequired {
                metric: Metric::Cpu,
                given: "40".into()
            })
        );
        assert_eq!(
            "iops:50%".parse::<BalanceSpec>(),
            Err(ParseSpecError::PercentRefused {
                metric: Metric::Iops,
                given: "50%".into()
            })
        );
        assert!(matches!(
            "bandwidth:x%".parse::<BalanceSpec>(),
            Err(ParseSpecError::Number(_))
        ));
        let e = "bandwidth:50%:60%".parse::<BalanceSpec>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "low threshold 60.0% must be below high threshold 50.0%"
        );
        let e = "bandwidth:80".parse::<BalanceSpec>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "bandwidth thresholds are percentages: write \"80\" as e.g. \"80%\""
        );
    }

    #[test]
    fn specs_print_as_they_are_written() {
        for s in [
            "sessions:2:1",
            "iops:20000:5000",
            "bandwidth:80%:50%",
            "cpu:90%:45%",
        ] {
            assert_eq!(s.parse::<BalanceSpec>().unwrap().to_string(), s);
        }
        assert_eq!(Metric::Bandwidth.format(0.934), "93.4%");
        assert_eq!(Metric::Iops.format(1250.0), "1250");
        assert_eq!(Metric::Iops.format(12.34), "12.3");
        assert_eq!(Metric::Sessions.format(3.0), "3");
        assert_eq!(Metric::Iops.format(-0.0), "0");
        assert_eq!(Metric::Cpu.format(-0.0), "0.0%");
    }
}
