//! What portshift's configuration files share (the target's, `docs/configuration.md`, and the
//! iSNS server's, `docs/isns.md`): both are TOML files that begin with a format `version`, are
//! checked after parsing, and report every problem with the file, line and column it is at.
//!
//! [`Problems`] collects problems with the byte spans the TOML parser keeps
//! ([`toml::Spanned`]); [`Problems::into_error`] turns them into a [`ConfigError`] of
//! lines and columns. [`version`] reads the `version` key first, so each format version can
//! have its own loader and a file newer than the binary is refused with a clear message.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file, at a line and column when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "{line}:{col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Everything wrong with one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// One problem with the whole file (it cannot be read, for instance).
    pub fn file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                at: None,
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:", self.file.display())?;
            if p.at.is_none() {
                f.write_str(" ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems with their byte spans while a file is checked.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<(Option<Range<usize>>, String)>,
}

impl Problems {
    /// A problem with the value at `span`.
    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.list.push((Some(span), message.into()));
    }

    /// A problem with the file as a whole.
    pub fn file(&mut self, message: impl Into<String>) {
        self.list.push((None, message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `v` when it is at least 1; otherwise a problem naming the key `what`.
    pub fn positive<T>(&mut self, v: &Option<toml::Spanned<T>>, what: &str) -> Option<T>
    where
        T: Copy + PartialOrd + Default,
    {
        let v = v.as_ref()?;
        if *v.get_ref() <= T::default() {
            self.at(v.span(), format!("{what} must be at least 1"));
            return None;
        }
        Some(*v.get_ref())
    }

    /// The problems as lines and columns of `text` (the contents of `file`), in file order.
    pub fn into_error(self, file: &Path, text: &str) -> ConfigError {
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

    /// `Ok(value)` when nothing was found wrong, else every problem.
    pub fn finish<T>(self, value: T, file: &Path, text: &str) -> Result<T, ConfigError> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self.into_error(file, text))
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

/// A TOML syntax or type error as a [`ConfigError`] at its position.
pub fn syntax_error(file: &Path, text: &str, e: toml::de::Error) -> ConfigError {
    let mut p = Problems::default();
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(s) => p.at(s, msg),
        None => p.file(msg),
    }
    p.into_error(file, text)
}

/// Deserialize `text` into `T`, a syntax or type error at its position.
pub fn from_toml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| syntax_error(file, text, e))
}

/// Only the version key, read first to pick the loader.
#[derive(serde::Deserialize)]
struct VersionOnly {
    version: Option<toml::Spanned<toml::Value>>,
}

/// The file's format `version` (1 to `current`). A missing version, one newer than `current`
/// and anything else are refused, each with what to do about it.
pub fn version(file: &Path, text: &str, current: i64) -> Result<i64, ConfigError> {
    let v: VersionOnly = from_toml(file, text)?;
    let mut problems = Problems::default();
    let Some(version) = v.version else {
        problems.file(format!(
            "no format version: begin the file with `version = {current}`"
        ));
        return Err(problems.into_error(file, text));
    };
    match version.get_ref().as_integer() {
        Some(n) if (1..=current).contains(&n) => return Ok(n),
        Some(n) if n > current => problems.at(
            version.span(),
            format!(
                "format version {n} is newer than this portshift reads (versions 1 to \
                 {current}); upgrade portshift or write a version {current} file"
            ),
        ),
        _ => problems.at(
            version.span(),
            format!("unknown format version (this portshift reads 1 to {current})"),
        ),
    }
    Err(problems.into_error(file, text))
}

/// A file that holds secrets must be private: refused when its group or others may access
/// it (mode & 0o077), with the `chmod` that fixes it.
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
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_not_bytes() {
        let text = "a = 1\nnamé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        let eq = text.find('=').map(|_| text.rfind('=').unwrap()).unwrap();
        assert_eq!(line_col(text, eq), (2, 6));
        assert_eq!(line_col(text, 10_000), (3, 1));
        assert_eq!(line_col("ab\ncd\n", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn versions_missing_newer_and_wrong_are_refused_with_their_place() {
        let f = Path::new("x.toml");
        assert_eq!(version(f, "version = 1\n", 1), Ok(1));
        let e = version(f, "a = 1\n", 1).unwrap_err();
        assert_eq!(e.problems[0].at, None);
        assert!(e.problems[0].message.contains("`version = 1`"), "{e}");
        let e = version(f, "\nversion = 3\n", 2).unwrap_err();
        assert_eq!(e.problems[0].at, Some((2, 11)));
        assert!(
            e.to_string()
                .starts_with("x.toml:2:11: format version 3 is newer"),
            "{e}"
        );
        let e = version(f, "version = \"one\"\n", 1).unwrap_err();
        assert!(
            e.problems[0].message.starts_with("unknown format version"),
            "{e}"
        );
        let e = version(f, "version = [\n", 1).unwrap_err();
        assert!(
            e.problems[0].at.is_some(),
            "a syntax error has a place: {e}"
        );
    }

    #[test]
    fn problems_are_sorted_by_place_and_positive_refuses_zero() {
        let text = "a = 0\nb = 5\n";
        #[derive(serde::Deserialize)]
        struct F {
            a: Option<toml::Spanned<u32>>,
            b: Option<toml::Spanned<u32>>,
        }
        let f: F = from_toml(Path::new("f"), text).unwrap();
        let mut p = Problems::default();
        assert_eq!(p.positive(&f.b, "b"), Some(5));
        p.file("whole file");
        assert_eq!(p.positive(&f.a, "a"), None);
        let e = p.finish((), Path::new("f"), text).unwrap_err();
        assert_eq!(e.to_string(), "f: whole file\nf:1:5: a must be at least 1");
    }
}
