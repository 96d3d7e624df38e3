//! The access flags of `portshift target` and `portshift io`: CHAP (RFC 7143 §12.1.3) on the
//! command line or from a secrets file ([`super::chap_file`]), and the target's allow lists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use initiator::login::ChapAuth;
use iscsi_target::{Credentials, TargetAccess, TargetConfig};

use super::chap_file::{self, parse_allow, parse_credentials, parse_target_credentials};

/// The CHAP and allow-list flags of `portshift target`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct TargetAccessArgs {
    /// IQN=USER:SECRET: initiators must pass CHAP as USER with SECRET to log in to target
    /// IQN (secret of 12 to 255 bytes). The secret is visible to every local user in the
    /// process list: prefer --chap-file or the configuration file.
    #[arg(long = "chap", value_name = "IQN=USER:SECRET", value_parser = parse_target_credentials)]
    pub chap: Vec<(String, Credentials)>,
    /// IQN=USER:SECRET: what target IQN answers an initiator's mutual CHAP challenge with
    /// (a secret different from the initiator's). Visible to every local user in the
    /// process list: prefer --chap-file or the configuration file.
    #[arg(long = "mutual-chap", value_name = "IQN=USER:SECRET", value_parser = parse_target_credentials)]
    pub mutual_chap: Vec<(String, Credentials)>,
    /// USER:SECRET: discovery (SendTargets) sessions must pass CHAP. Visible to every local
    /// user in the process list: prefer --chap-file or the configuration file.
    #[arg(long = "discovery-chap", value_name = "USER:SECRET", value_parser = parse_credentials)]
    pub discovery_chap: Option<Credentials>,
    /// USER:SECRET: what discovery sessions are answered with for mutual CHAP. Visible to
    /// every local user in the process list: prefer --chap-file or the configuration file.
    #[arg(long = "discovery-mutual-chap", value_name = "USER:SECRET", value_parser = parse_credentials)]
    pub discovery_mutual_chap: Option<Credentials>,
    /// A secrets file (lines `chap IQN USER SECRET`, `mutual-chap IQN USER SECRET`,
    /// `discovery-chap USER SECRET`, `discovery-mutual-chap USER SECRET`, `allow IQN
    /// INITIATOR`; see the README). Refused if group or others may read it (chmod 600).
    #[arg(long = "chap-file", value_name = "FILE")]
    pub chap_file: Option<PathBuf>,
    /// IQN=INITIATOR_IQN: only the initiators listed may log in to target IQN, and only they
    /// see it in SendTargets (repeatable). A target without a rule accepts every initiator.
    #[arg(long = "allow", value_name = "IQN=INITIATOR_IQN", value_parser = parse_allow)]
    pub allow: Vec<(String, String)>,
}

impl TargetAccessArgs {
    /// `cfg` with these rules added: the secrets file first, then the command line (which
    /// overrides the credentials of the same target; allow lists add up). Checked when the
    /// target starts ([`iscsi_target::Target::start`]).
    pub fn apply(self, mut cfg: TargetConfig) -> anyhow::Result<TargetConfig> {
        let mut chap = Vec::new();
        let mut mutual = Vec::new();
        let mut allow = Vec::new();
        if let Some(path) = &self.chap_file {
            let text = chap_file::read(path)?;
            let rules = chap_file::rules(&text, |k| match k {
                "chap" | "mutual-chap" => Some(2),
                "discovery-chap" | "discovery-mutual-chap" => Some(1),
                "allow" => Some(1),
                _ => None,
            })?;
            for r in rules {
                match r.keyword.as_str() {
                    "chap" => chap.push((r.fields[0].clone(), r.credentials()?)),
                    "mutual-chap" => mutual.push((r.fields[0].clone(), r.credentials()?)),
                    "discovery-chap" => cfg.discovery_chap = Some(r.credentials()?),
                    "discovery-mutual-chap" => cfg.discovery_mutual_chap = Some(r.credentials()?),
                    _ => allow.push((r.fields[0].clone(), r.rest.clone())),
                }
            }
        }
        chap.extend(self.chap);
        mutual.extend(self.mutual_chap);
        allow.extend(self.allow);
        let access: &mut BTreeMap<String, TargetAccess> = &mut cfg.access;
        for (iqn, c) in chap {
            access.entry(iqn).or_default().chap = Some(c);
        }
        for (iqn, c) in mutual {
            access.entry(iqn).or_default().mutual_chap = Some(c);
        }
        for (iqn, initiator) in allow {
            let list = access.entry(iqn).or_default().allow.get_or_insert_default();
            if !list.contains(&initiator) {
                list.push(initiator);
            }
        }
        if let Some(c) = self.discovery_chap {
            cfg.discovery_chap = Some(c);
        }
        if let Some(c) = self.discovery_mutual_chap {
            cfg.discovery_mutual_chap = Some(c);
        }
        Ok(cfg)
    }
}

/// The CHAP flags of `portshift io`.
#[derive(clap::Args, Debug, Default)]
pub struct InitiatorChapArgs {
    /// USER:SECRET: log in with CHAP as USER. The secret is visible to every local user in
    /// the process list: prefer --chap-file.
    #[arg(long = "chap", value_name = "USER:SECRET", value_parser = parse_credentials)]
    pub chap: Option<Credentials>,
    /// USER:SECRET: mutual CHAP, the target must prove it knows SECRET as USER (needs
    /// --chap, with another secret). Visible to every local user in the process list:
    /// prefer --chap-file.
    #[arg(long = "mutual-chap", value_name = "USER:SECRET", value_parser = parse_credentials)]
    pub mutual_chap: Option<Credentials>,
    /// USER:SECRET: CHAP of the discovery (SendTargets) session (default: --chap, one-way).
    /// Visible to every local user in the process list: prefer --chap-file.
    #[arg(long = "discovery-chap", value_name = "USER:SECRET", value_parser = parse_credentials)]
    pub discovery_chap: Option<Credentials>,
    /// USER:SECRET: mutual CHAP of the discovery session (needs --discovery-chap). Visible
    /// to every local user in the process list: prefer --chap-file.
    #[arg(long = "discovery-mutual-chap", value_name = "USER:SECRET", value_parser = parse_credentials)]
    pub discovery_mutual_chap: Option<Credentials>,
    /// A secrets file (lines `chap USER SECRET`, `mutual-chap USER SECRET`,
    /// `discovery-chap USER SECRET`, `discovery-mutual-chap USER SECRET`; see the README).
    /// Refused if group or others may read it (chmod 600).
    #[arg(long = "chap-file", value_name = "FILE")]
    pub chap_file: Option<PathBuf>,
}

impl InitiatorChapArgs {
    /// The CHAP of the normal and of the discovery sessions.
    pub fn auth(self) -> anyhow::Result<(Option<ChapAuth>, Option<ChapAuth>)> {
        let (mut chap, mut mutual) = (None, None);
        let (mut dchap, mut dmutual) = (None, None);
        if let Some(path) = &self.chap_file {
            let text = chap_file::read(path)?;
            let rules = chap_file::rules(&text, |k| match k {
                "chap" | "mutual-chap" | "discovery-chap" | "discovery-mutual-chap" => Some(1),
                _ => None,
            })?;
            for r in rules {
                let c = Some(r.credentials()?);
                match r.keyword.as_str() {
                    "chap" => chap = c,
                    "mutual-chap" => mutual = c,
                    "discovery-chap" => dchap = c,
                    _ => dmutual = c,
                }
            }
        }
        let chap = self.chap.or(chap);
        let mutual = self.mutual_chap.or(mutual);
        let dchap = self.discovery_chap.or(dchap);
        let dmutual = self.discovery_mutual_chap.or(dmutual);
        let pair = |what: &str, c: Option<Credentials>, m: Option<Credentials>| match (c, m) {
            (Some(chap), mutual) => {
                let a = ChapAuth { chap, mutual };
                a.validate().map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                Ok(Some(a))
            }
            (None, Some(_)) => Err(anyhow::anyhow!("{what}: mutual CHAP needs CHAP")),
            (None, None) => Ok(None),
        };
        let normal = pair("--chap", chap.clone(), mutual)?;
        let discovery = match (dchap, dmutual) {
            (None, None) => pair("--chap", chap, None)?,
            (d, m) => pair("--discovery-chap", d, m)?,
        };
        Ok((normal, discovery))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn creds(u: &str, s: &str) -> Credentials {
        Credentials {
            user: u.into(),
            secret: s.into(),
        }
    }

    #[test]
    fn file_then_command_line_fill_the_access_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets");
        std::fs::write(
            &p,
            "chap iqn.t alice file-secret-1\nmutual-chap iqn.t array array-secret-1\n\
             allow iqn.t iqn.a\ndiscovery-chap disco disco-secret-1\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let args = TargetAccessArgs {
            chap: vec![("iqn.t".into(), creds("alice", "flag-secret-1"))],
            allow: vec![
                ("iqn.t".into(), "iqn.b".into()),
                ("iqn.u".into(), "iqn.a".into()),
            ],
            chap_file: Some(p),
            ..Default::default()
        };
        let cfg = args.apply(TargetConfig::default()).unwrap();
        let t = &cfg.access["iqn.t"];
        assert_eq!(
            t.chap,
            Some(creds("alice", "flag-secret-1")),
            "the flag wins"
        );
        assert_eq!(t.mutual_chap, Some(creds("array", "array-secret-1")));
        assert_eq!(
            t.allow.as_deref(),
            Some(&["iqn.a".to_string(), "iqn.b".into()][..])
        );
        assert_eq!(
            cfg.access["iqn.u"].allow.as_deref(),
            Some(&["iqn.a".to_string()][..])
        );
        assert_eq!(cfg.discovery_chap, Some(creds("disco", "disco-secret-1")));
    }

    #[test]
    fn initiator_credentials_and_their_discovery_default() {
        let a = InitiatorChapArgs {
            chap: Some(creds("alice", "alice-secret-1")),
            mutual_chap: Some(creds("array", "array-secret-1")),
            ..Default::default()
        };
        let (normal, discovery) = a.auth().unwrap();
        assert_eq!(
            normal.unwrap().mutual,
            Some(creds("array", "array-secret-1"))
        );
        let d = discovery.unwrap();
        assert_eq!((d.chap.user.as_str(), d.mutual), ("alice", None));
        let same = InitiatorChapArgs {
            chap: Some(creds("alice", "alice-secret-1")),
            mutual_chap: Some(creds("array", "alice-secret-1")),
            ..Default::default()
        };
        let e = same.auth().unwrap_err().to_string();
        assert!(e.contains("same"), "{e}");
        let alone = InitiatorChapArgs {
            mutual_chap: Some(creds("array", "array-secret-1")),
            ..Default::default()
        };
        assert!(alone.auth().is_err());
    }
}
