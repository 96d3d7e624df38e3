//! The target's configuration file (`portshift target --config FILE.toml`): a versioned TOML
//! format read into a [`TargetConfig`]. See `docs/configuration.md` for every key.
//!
//! Versions: the top-level `version` key picks the loader. Each format version has its own
//! module describing that version's file (`v1`) and mapping it onto today's [`TargetConfig`],
//! so a newer binary keeps reading older files; a version newer than this binary knows is
//! refused with the newest one it reads. Errors name the file, line and column (from the
//! TOML parser's byte spans, also kept for the values checked after parsing).

mod v1;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::TargetConfig;

/// The newest format version this binary reads.
pub const CURRENT_VERSION: i64 = 1;

/// One problem in a configuration file, at a line and column when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

/// Everything wrong with one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.at {
                Some((line, col)) => {
                    write!(f, "{}:{line}:{col}: {}", self.file.display(), p.message)?
                }
                None => write!(f, "{}: {}", self.file.display(), p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A configuration file read and checked.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub config: TargetConfig,
    /// The file holds CHAP secrets (so it must not be readable by group or other).
    pub has_secrets: bool,
}

/// Collects problems with their byte spans while a file is checked.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<(Option<Range<usize>>, String)>,
}

impl Problems {
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.list.push((Some(span), message.into()));
    }

    pub(crate) fn file(&mut self, message: impl Into<String>) {
        self.list.push((None, message.into()));
    }

    fn into_error(self, file: &Path, text: &str) -> ConfigError {
        let mut problems: Vec<Problem> = self
            .list
            .into_iter()
            .map(|(span, message)| Problem {
                at: span.map(|s| line_col(text, s.start)),
                message,
            })
            .collect();
        problems.sort_by_key(|p| p.at);
        ConfigError {
            file: file.to_owned(),
            problems,
        }
    }
}

/// The 1-based line and column of byte `offset` of `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, col)
}

/// Only the version key, read first to pick the loader.
#[derive(serde::Deserialize)]
struct VersionOnly {
    version: Option<toml::Spanned<toml::Value>>,
}

/// Parses `text` (the contents of `file`, named in the messages).
pub fn parse(file: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    let mut problems = Problems::default();
    let syntax = |e: toml::de::Error| {
        let mut p = Problems::default();
        let msg = e.message().trim().to_string();
        match e.span() {
            Some(s) => p.at(s, msg),
            None => p.file(msg),
        }
        p.into_error(file, text)
    };
    let v: VersionOnly = toml::from_str(text).map_err(syntax)?;
    let Some(version) = v.version else {
        problems.file(format!(
            "no format version: begin the file with `version = {CURRENT_VERSION}`"
        ));
        return Err(problems.into_error(file, text));
    };
    let span = version.span();
    let result = match version.get_ref().as_integer() {
        Some(1) => {
            let f: v1::File = toml::from_str(text).map_err(syntax)?;
            f.into_config(&mut problems)
        }
        Some(n) if n > CURRENT_VERSION => {
            problems.at(
                span,
                format!(
                    "format version {n} is newer than this portshift reads (versions 1 to \
                     {CURRENT_VERSION}); upgrade portshift or write a version {CURRENT_VERSION} file"
                ),
            );
            None
        }
        _ => {
            problems.at(
                span,
                format!("unknown format version (this portshift reads 1 to {CURRENT_VERSION})"),
            );
            None
        }
    };
    match result {
        Some(c) if problems.list.is_empty() => Ok(c),
        _ => Err(problems.into_error(file, text)),
    }
}

/// Reads and parses `path`. A file holding CHAP secrets that its group or others may read
/// is refused.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let fail = |message: String| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem { at: None, message }],
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let parsed = parse(path, &text)?;
    if parsed.has_secrets {
        check_private(path).map_err(|e| fail(format!("holds CHAP secrets, but {e}")))?;
    }
    Ok(parsed)
}

/// A file that holds secrets must be private: refused when its group or others may access
/// it (mode & 0o077), with the `chmod` that fixes it. Shared by the configuration file and
/// the CHAP secrets files.
pub fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "its group or others may access it (mode {:03o}): refused; make it private with \
             `chmod 600 {}`",
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

/// A byte count: a number of bytes, or a string with a K/M/G/T suffix (powers of 1024):
/// `"64M"`, `"1G"`, `"4096"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid size {s:?}"))
}

#[cfg(test)]
mod tests;
