//! CHAP secrets from the command line (`USER:SECRET`, `IQN=USER:SECRET`) and from a secrets
//! file (`--chap-file`), which must not be readable by group or others.
//!
//! The file has one rule per line; `#` starts a comment; fields are separated by blanks and
//! the secret is the rest of the line (trimmed):
//!
//! ```text
//! # portshift target --chap-file FILE
//! chap                  IQN USER SECRET   # initiators of IQN log in as USER with SECRET
//! mutual-chap           IQN USER SECRET   # the target answers mutual CHAP for IQN
//! discovery-chap        USER SECRET       # discovery (SendTargets) sessions
//! discovery-mutual-chap USER SECRET
//! allow                 IQN INITIATOR     # who may log in to IQN (repeatable)
//!
//! # portshift io --chap-file FILE
//! chap                  USER SECRET       # what the initiator logs in with
//! mutual-chap           USER SECRET       # what the target must answer with
//! discovery-chap        USER SECRET       # discovery sessions (default: chap, one-way)
//! discovery-mutual-chap USER SECRET
//! ```

use std::path::Path;

use anyhow::Context;
use iscsi_target::Credentials;

/// `USER:SECRET`, checked (secret of 12 to 255 bytes).
pub fn parse_credentials(s: &str) -> Result<Credentials, String> {
    Credentials::parse(s).map_err(|e| format!("{e} (in USER:SECRET)"))
}

/// `IQN=USER:SECRET`.
pub fn parse_target_credentials(s: &str) -> Result<(String, Credentials), String> {
    match s.split_once('=') {
        Some((iqn, rest)) if !iqn.is_empty() => Ok((iqn.to_string(), parse_credentials(rest)?)),
        _ => Err("expected IQN=USER:SECRET".into()),
    }
}

/// `IQN=INITIATOR`.
pub fn parse_allow(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((iqn, ini)) if !iqn.is_empty() && !ini.is_empty() => {
            Ok((iqn.to_string(), ini.to_string()))
        }
        _ => Err(format!("expected IQN=INITIATOR_IQN, got {s:?}")),
    }
}

/// One rule of a secrets file, with its line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    pub keyword: String,
    /// The fields before the secret (IQN, USER or IQN INITIATOR).
    pub fields: Vec<String>,
    /// The rest of the line: the secret, or the last field of an `allow` rule.
    pub rest: String,
}

/// Reads `path`, refusing a file that group or others may read or write.
pub fn read(path: &Path) -> anyhow::Result<String> {
    iscsi_target::config_file::check_private(path)
        .map_err(|e| anyhow::anyhow!("the CHAP secrets file {}: {e}", path.display()))?;
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the CHAP secrets file {}", path.display()))
}

/// Splits the file's text into rules: `leading(keyword)` says how many fields come before the
/// rest of the line (None: unknown keyword).
pub fn rules(text: &str, leading: impl Fn(&str) -> Option<usize>) -> anyhow::Result<Vec<Rule>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let (keyword, mut rest) = split_field(content);
        let n =
            leading(keyword).with_context(|| format!("line {line}: unknown rule {keyword:?}"))?;
        let mut fields = Vec::new();
        for _ in 0..n {
            let (f, r) = split_field(rest);
            if f.is_empty() {
                anyhow::bail!("line {line}: {keyword} needs {} fields", n + 1);
            }
            fields.push(f.to_string());
            rest = r;
        }
        if rest.is_empty() {
            anyhow::bail!("line {line}: {keyword} needs {} fields", n + 1);
        }
        out.push(Rule {
            line,
            keyword: keyword.to_string(),
            fields,
            rest: rest.to_string(),
        });
    }
    Ok(out)
}

fn split_field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

impl Rule {
    /// The credentials of a rule whose last field is USER and rest the secret.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let c = Credentials {
            user: self.fields.last().cloned().unwrap_or_default(),
            secret: self.rest.clone(),
        };
        c.validate()
            .map_err(|e| anyhow::anyhow!("line {}: {e}", self.line))?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn command_line_forms() {
        let (iqn, c) = parse_target_credentials("iqn.a:b=alice:a secret:123").unwrap();
        assert_eq!((iqn.as_str(), c.user.as_str()), ("iqn.a:b", "alice"));
        assert_eq!(c.secret, "a secret:123");
        assert!(parse_target_credentials("alice:twelve-bytes").is_err());
        assert!(
            parse_credentials("alice:short")
                .unwrap_err()
                .contains("12 bytes")
        );
        assert_eq!(
            parse_allow("iqn.t=iqn.i"),
            Ok(("iqn.t".into(), "iqn.i".into()))
        );
        assert!(parse_allow("iqn.t=").is_err());
    }

    #[test]
    fn rules_and_their_line_numbers() {
        let text = "# comment\n\nchap iqn.t alice secret with spaces \nallow iqn.t iqn.i\n";
        let leading = |k: &str| match k {
            "chap" => Some(2),
            "allow" => Some(1),
            _ => None,
        };
        let r = rules(text, leading).unwrap();
        assert_eq!(r[0].line, 3);
        assert_eq!(r[0].fields, ["iqn.t", "alice"]);
        assert_eq!(r[0].credentials().unwrap().secret, "secret with spaces");
        assert_eq!(
            (r[1].fields[0].as_str(), r[1].rest.as_str()),
            ("iqn.t", "iqn.i")
        );
        let e = rules("bogus x y", leading).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("bogus"), "{e}");
        let e = rules("\nchap iqn.t alice", leading)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let short = rules("chap iqn.t alice short", leading).unwrap();
        let e = short[0].credentials().unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("12 bytes"), "{e}");
    }

    #[test]
    fn a_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets");
        std::fs::write(&p, "chap alice twelve-bytes!\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read(&p).unwrap().contains("alice"));
    }
}
