//! Packaging (issue 15, item 6): the manual pages and shell completions generated from the CLI
//! definitions, and the example systemd units in `packaging/systemd/`.
//!
//! - Every page `portshift man` writes renders with groff's man macros without a warning, and
//!   shows its subcommand's options.
//! - The bash completion script loads in bash and completes subcommands and options.
//! - `systemd-analyze verify` accepts both units (their binary path pointed at this build),
//!   and the commands they run are ones this binary accepts: each unit's `--check-config`
//!   step passes on the matching example file.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portshift");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn man_pages_render_without_warnings_and_list_each_subcommands_options() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, out, err) = run(Command::new(BIN).args(["man", "--dir"]).arg(dir.path()));
    assert!(ok, "portshift man: {err}");
    let written: Vec<&str> = out.lines().collect();
    for (page, option) in [
        ("portshift", "isns"),
        ("portshift-isns", "--listen"),
        ("portshift-target", "--portal"),
        ("portshift-io", "--verify"),
        ("portshift-status", "--admin"),
        ("portshift-demo", "Run the whole system"),
        ("portshift-completions", "SHELL"),
    ] {
        let path = dir.path().join(format!("{page}.1"));
        assert!(
            written.contains(&path.to_str().unwrap()),
            "{page}.1 not among {written:?}"
        );
        // -ww: every warning; -z: format but discard the output (stderr shows problems).
        let (ok, _, warnings) = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path));
        assert!(ok && warnings.is_empty(), "{page}.1: {warnings}");
        let (ok, text, err) = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-P", "-cbou"])
            .arg(&path)
            .env("GROFF_NO_SGR", "1"));
        assert!(ok, "{page}.1: {err}");
        // groff prints options with Unicode hyphens; compare on ASCII.
        let text = text.replace(['\u{2010}', '\u{2212}'], "-");
        assert!(
            text.contains("NAME"),
            "{page}.1 has no NAME section: {text}"
        );
        assert!(
            text.contains(option),
            "{page}.1 does not show {option:?}: {text}"
        );
    }
}

#[test]
fn bash_completion_completes_subcommands_and_options() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, script, err) = run(Command::new(BIN).args(["completions", "bash"]));
    assert!(ok, "portshift completions bash: {err}");
    let file = dir.path().join("portshift.bash");
    std::fs::write(&file, script).expect("write completion script");
    // What bash does on TAB: call the registered function with the words so far.
    let complete = |words: &str, cword: usize| {
        let probe = format!(
            "source {} && complete -p portshift >/dev/null && COMP_WORDS=({words}) && \
             COMP_CWORD={cword} && COMP_LINE='{words}' && COMP_POINT=${{#COMP_LINE}} && \
             _portshift portshift && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let (ok, out, err) = run(Command::new("bash").args(["--norc", "-c", &probe]));
        assert!(ok, "bash completion for {words:?}: {err}");
        out
    };
    let subs = complete("portshift is", 1);
    assert!(
        subs.lines().any(|l| l == "isns") && subs.lines().any(|l| l == "isns-bench"),
        "subcommands for `is`: {subs}"
    );
    let opts = complete("portshift io --ver", 2);
    assert!(
        opts.lines().any(|l| l == "--verify"),
        "options for `io --ver`: {opts}"
    );
}

#[test]
fn systemd_units_verify_and_run_commands_this_binary_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let units = repo().join("packaging/systemd");
    for (unit, sub, example) in [
        ("portshift-isns.service", "isns", "examples/isns.toml"),
        ("portshift-target.service", "target", "examples/demo.toml"),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit file");
        let local = text.replace("/usr/local/bin/portshift", BIN);
        let path = dir.path().join(unit);
        std::fs::write(&path, &local).expect("write unit");
        let (ok, out, err) = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path));
        assert!(ok && err.trim().is_empty(), "{unit}: {out}{err}");
        // The check step as the unit writes it, on the example file instead of /etc's.
        let pre = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStartPre="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStartPre"));
        let args: Vec<String> = pre
            .split_whitespace()
            .skip(1)
            .map(|a| {
                if a.starts_with("/etc/portshift/") {
                    repo().join(example).display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        assert_eq!(args.first().map(String::as_str), Some(sub), "{unit}: {pre}");
        let (ok, out, err) = run(Command::new(BIN).args(&args).current_dir(repo()));
        assert!(
            ok,
            "{unit}: `portshift {}` failed: {out}{err}",
            args.join(" ")
        );
        // The service's command takes the same file with --config.
        let start = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
        assert!(
            start.ends_with(&format!(
                "portshift {sub} --config /etc/portshift/{sub}.toml"
            )),
            "{unit}: {start}"
        );
    }
}
