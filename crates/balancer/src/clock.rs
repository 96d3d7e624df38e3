//! The one wall-clock reading of the project: event times are milliseconds since the Unix epoch.
//! Policy and protocol cores never call it; the I/O shells read it and pass the time in.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
