//! The target's configuration file (`portshift target --config FILE.toml`): a versioned TOML
//! format read into a [`TargetConfig`]. See `docs/configuration.md` for every key.
//!
//! Versions: the top-level `version` key picks the loader. Each format version has its own
//! module describing that version's file (`v1`) and mapping it onto today's [`TargetConfig`],
//! so a newer binary keeps reading older files; a version newer than this binary knows is
//! refused with the newest one it reads. Errors name the file, line and column (from the
//! TOML parser's byte spans, also kept for the values checked after parsing); the error
//! types, the version check and the size and file-mode helpers are the `config-file` crate's,
//! shared with the iSNS server's file.

mod v1;

use std::path::Path;

pub use config_file::{ConfigError, Problem, Problems, check_private, line_col, parse_size};

use crate::TargetConfig;

/// The newest format version this binary reads.
pub const CURRENT_VERSION: i64 = 1;

/// A configuration file read and checked.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub config: TargetConfig,
    /// The file holds CHAP secrets (so it must not be readable by group or other).
    pub has_secrets: bool,
}

/// Parses `text` (the contents of `file`, named in the messages).
pub fn parse(file: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    let mut problems = Problems::default();
    // `version` refuses every version but 1..=CURRENT_VERSION, and version 1 is the only one
    // so far: a version 2 adds its module and a match on the version here.
    config_file::version(file, text, CURRENT_VERSION)?;
    let config = config_file::from_toml::<v1::File>(file, text)?.into_config(&mut problems);
    match config {
        Some(c) => problems.finish(c, file, text),
        None => Err(problems.into_error(file, text)),
    }
}

/// Reads and parses `path`. A file holding CHAP secrets that its group or others may read
/// is refused.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let fail = |message: String| ConfigError::file(path, message);
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let parsed = parse(path, &text)?;
    if parsed.has_secrets {
        check_private(path).map_err(|e| fail(format!("holds CHAP secrets, but {e}")))?;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests;
