use std::path::Path;

use super::*;

fn parse_str(text: &str) -> Result<ConfigFile, ConfigError> {
    parse(Path::new("t.toml"), text)
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn the_demo_example_is_the_demo_setup() {
    let f = parse_str(&std::fs::read_to_string(examples().join("demo.toml")).unwrap()).unwrap();
    let c = f.config;
    assert!(!f.has_secrets);
    assert_eq!(c.portals.len(), 2);
    assert_eq!(c.portals[1].address, "127.0.0.2:3260".parse().unwrap());
    assert_eq!(c.portals[0].link_capacity, None);
    assert_eq!(
        c.isns,
        vec!["127.0.0.1:3205".parse::<std::net::SocketAddr>().unwrap()]
    );
    assert_eq!(c.balance, ["sessions:2".parse().unwrap()]);
    assert_eq!(c.cooldown_ms, 3_000);
    assert_eq!(c.luns.len(), 3);
    assert_eq!(c.luns[2].iqn, "iqn.2026-11.org.example:disk3");
    assert_eq!(
        c.luns[2].path,
        Path::new("/var/tmp/portshift-demo/disk3.img")
    );
    assert_eq!(
        (c.luns[2].number, c.luns[2].size),
        (Some(0), Some(64 << 20))
    );
    let a = &c.access["iqn.2026-11.org.example:disk1"];
    assert_eq!(a.allow, None, "allow = \"any\"");
}

#[test]
fn the_three_target_example_maps_chap_acls_and_luns() {
    let f = parse_str(&std::fs::read_to_string(examples().join("three-targets.toml")).unwrap())
        .unwrap();
    assert!(f.has_secrets);
    let c = f.config;
    assert_eq!(c.portals[1].address, "[::1]:3260".parse().unwrap());
    assert_eq!(c.portals[1].link_capacity, Some(1.25e9));
    assert_eq!(c.discovery_chap.as_ref().unwrap().user, "discover");
    let db = &c.access["iqn.2024-01.com.example:db"];
    assert_eq!(db.chap.as_ref().unwrap().secret, "db-secret-0001");
    assert_eq!(db.mutual_chap.as_ref().unwrap().user, "db-target");
    assert_eq!(
        db.allow.as_deref(),
        Some(&["iqn.2024-01.com.example:dbhost".to_string()][..])
    );
    let dbl = c.luns.iter().find(|l| l.iqn.ends_with(":db")).unwrap();
    assert_eq!(
        (
            dbl.physical_block_size,
            dbl.write_through,
            dbl.serial.as_deref()
        ),
        (4096, true, Some("DB0001"))
    );
    assert_eq!(dbl.size, Some(1 << 30));
    let cluster: Vec<_> = c
        .luns
        .iter()
        .filter(|l| l.iqn.ends_with(":cluster"))
        .collect();
    assert_eq!(
        cluster.iter().map(|l| l.number).collect::<Vec<_>>(),
        [Some(0), Some(1)]
    );
    assert_eq!(c.access["iqn.2024-01.com.example:scratch"].allow, None);
    assert_eq!(
        (c.max_moves, c.cooldown_ms, c.smoothing_ms),
        (4, 10_000, 5_000)
    );
    assert_eq!(c.pin, ["iqn.2024-01.com.example:backup"]);
    assert_eq!(c.limits.total, 1024);
}

const GOOD: &str = r#"version = 1
[[portal]]
address = "127.0.0.1:3260"
[[target]]
iqn = "iqn.2024-01.test:a"
allow = "any"
[[target.lun]]
null = true
size = 1048576
"#;

fn first_problem(text: &str) -> Problem {
    let e = parse_str(text).unwrap_err();
    e.problems[0].clone()
}

#[test]
fn errors_name_the_line() {
    assert!(parse_str(GOOD).is_ok());
    let p = first_problem(&GOOD.replace("null = true", "nul = true"));
    assert_eq!(p.at.map(|a| a.0), Some(8), "{p:?}");
    assert!(p.message.contains("unknown field `nul`"), "{p:?}");
    let p = first_problem(&GOOD.replace("127.0.0.1:3260", "127.0.0.1"));
    assert_eq!(p.at.map(|a| a.0), Some(3), "{p:?}");
    assert!(p.message.contains("IP:PORT"), "{p:?}");
    let p = first_problem(&GOOD.replace("size = 1048576", "size = \"12Q\""));
    assert_eq!(p.at.map(|a| a.0), Some(9), "{p:?}");
    let twice = format!("{GOOD}[[target]]\niqn = \"iqn.2024-01.test:a\"\nallow = \"any\"\n");
    let p = first_problem(&twice);
    assert_eq!(p.at.map(|a| a.0), Some(11), "{p:?}");
    assert!(p.message.contains("given twice"), "{p:?}");
    let p = first_problem(&GOOD.replace("allow = \"any\"\n", ""));
    assert!(p.message.contains("say who may log in"), "{p:?}");
    let p = first_problem(&GOOD.replace("address = ", "address = = "));
    assert_eq!(p.at.map(|a| a.0), Some(3), "syntax error: {p:?}");
    let rule = GOOD.replace(
        "[[target]]",
        "[balancing]\nrules = [\"sessions:2\", \"bogus:1\"]\n[[target]]",
    );
    let p = first_problem(&rule);
    assert_eq!(p.at.map(|a| a.0), Some(5), "{p:?}");
    let e = parse_str(&GOOD.replace("size = 1048576", "size = \"12Q\"")).unwrap_err();
    assert!(e.to_string().starts_with("t.toml:9:"), "{e}");
}

#[test]
fn versions() {
    let p = first_problem(&GOOD.replace("version = 1", "version = 2"));
    assert_eq!(p.at, Some((1, 11)));
    assert!(
        p.message.contains("newer than this portshift reads"),
        "{p:?}"
    );
    let p = first_problem(&GOOD.replace("version = 1\n", ""));
    assert!(p.message.contains("version = 1"), "{p:?}");
    let p = first_problem(&GOOD.replace("version = 1", "version = \"one\""));
    assert!(p.message.contains("unknown format version"), "{p:?}");
}

#[test]
fn chap_rules() {
    let with = |chap: &str| GOOD.replace("allow = \"any\"", &format!("allow = \"any\"\n{chap}"));
    let p = first_problem(&with("chap = { user = \"u\", secret = \"short\" }"));
    assert!(p.message.contains("at least 12 bytes"), "{p:?}");
    assert_eq!(p.at.map(|a| a.0), Some(7));
    let p = first_problem(&with(
        "chap = { user = \"u\", secret = \"0123456789ab\" }\nmutual_chap = { user = \"t\", secret = \"0123456789ab\" }",
    ));
    assert!(p.message.contains("same secret"), "{p:?}");
    let p = first_problem(&with(
        "mutual_chap = { user = \"t\", secret = \"0123456789ab\" }",
    ));
    assert!(p.message.contains("needs chap"), "{p:?}");
    let ok = parse_str(&with("chap = { user = \"u\", secret = \"0123456789ab\" }")).unwrap();
    assert!(ok.has_secrets);
}

#[test]
fn a_file_with_secrets_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    let text = GOOD.replace(
        "allow = \"any\"",
        "allow = \"any\"\nchap = { user = \"u\", secret = \"0123456789ab\" }",
    );
    std::fs::write(&path, &text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load(&path).is_ok());
    // Without secrets, the mode does not matter.
    std::fs::write(&path, GOOD).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(load(&path).is_ok());
}

proptest::proptest! {
    /// Bad input gets problems, never a panic: the demo example with bytes replaced,
    /// removed or inserted anywhere.
    #[test]
    fn a_mangled_file_is_answered_with_problems_never_a_panic(
        edits in proptest::collection::vec((0usize..2000, 0u8..128, 0u8..3), 1..6)
    ) {
        let mut text = std::fs::read_to_string(examples().join("three-targets.toml"))
            .unwrap()
            .into_bytes();
        for (at, byte, op) in edits {
            let at = at % (text.len() + 1);
            match op {
                0 if at < text.len() => text[at] = byte,
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => text.insert(at, byte),
            }
        }
        let text = String::from_utf8_lossy(&text);
        if let Err(e) = parse_str(&text) {
            proptest::prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                if let Some((line, _)) = p.at {
                    proptest::prop_assert!(line >= 1 && line <= text.lines().count() + 1);
                }
            }
        }
    }
}

#[test]
fn the_admin_token_file_key_reads_a_private_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = GOOD.replace(
        "[[portal]]",
        &format!(
            "admin_token_file = {:?}\n[[portal]]",
            token.display().to_string()
        ),
    );
    let c = parse_str(&text).unwrap();
    assert_eq!(c.config.admin_token.as_deref(), Some("s3cret"));
    // Readable by others: refused, at the key's line.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = first_problem(&text);
    assert_eq!(p.at.map(|a| a.0), Some(2), "{p:?}");
    assert!(p.message.contains("admin token file"), "{p:?}");
    // Missing: refused.
    let p = first_problem(&text.replace("admin.token", "none.token"));
    assert!(p.message.contains("none.token"), "{p:?}");
}

/// `isns` takes one server or a list of them (tried in order); a bad entry, a repeated one or
/// an empty list is a problem on the key's line.
#[test]
fn isns_takes_one_server_or_a_list() {
    let one = GOOD.replace("version = 1\n", "version = 1\nisns = \"127.0.0.1:3205\"\n");
    assert_eq!(
        parse_str(&one).unwrap().config.isns,
        vec!["127.0.0.1:3205".parse::<std::net::SocketAddr>().unwrap()]
    );
    let two = GOOD.replace(
        "version = 1\n",
        "version = 1\nisns = [\"127.0.0.1:3205\", \"[::1]:3206\"]\n",
    );
    assert_eq!(
        parse_str(&two).unwrap().config.isns,
        vec![
            "127.0.0.1:3205".parse::<std::net::SocketAddr>().unwrap(),
            "[::1]:3206".parse().unwrap()
        ]
    );
    for (bad, says) in [
        ("[\"127.0.0.1:3205\", \"nowhere\"]", "expected HOST:PORT"),
        ("[\"127.0.0.1:3205\", \"127.0.0.1:3205\"]", "given twice"),
        ("[]", "empty"),
    ] {
        let text = GOOD.replace("version = 1\n", &format!("version = 1\nisns = {bad}\n"));
        let p = first_problem(&text);
        assert_eq!(p.at.map(|a| a.0), Some(2), "{bad}: {p:?}");
        assert!(p.message.contains(says), "{bad}: {p:?}");
    }
}
