//! Acceptance: the live dashboard (`GET /` of the target's admin endpoint) in a real browser
//! while the balancer moves a stock initiator, and `portshift status --watch`.
//!
//! `portshift isns` and `portshift target` with two portals (127.0.0.1:P, 127.0.0.2:P), three
//! targets and `--balance sessions:2`; three libiscsi `iscsi-perf` runs, one per target, all
//! through the first portal, so the balancer asks one of them to log out and redirects it to
//! the second. While that happens, headless Chromium (Debian `chromium`) loads the page again
//! and again, runs its JavaScript and dumps the DOM it built (`--dump-dom`; nothing of what is
//! checked is in the page as served: the tables and charts are empty until the script fills
//! them from the feed). The test asserts that the page shows both portals, a chart per metric
//! with data points and the HIGH/LOW lines, the move marked on both portals' charts, the FIG. 2
//! table with the sessions, the FIG. 3 table with every (target, portal) registration, and the
//! "logout requested" event with its reason. It then saves a screenshot (to
//! `docs/dashboard.png` when `PORTSHIFT_UPDATE_SCREENSHOT=1`, otherwise to the test's
//! temporary directory).
//!
//! Everything listens on loopback, on ports picked free at run time; files in a temporary
//! directory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use balancer::EventKind;
use common::{Proc, TwoPortalTarget, snapshot, tool, wait_for};

const TARGETS: [&str; 3] = [
    "iqn.2024-01.test.dash:t1",
    "iqn.2024-01.test.dash:t2",
    "iqn.2024-01.test.dash:t3",
];
/// Seconds each iscsi-perf runs: long enough for the move and a few page loads after it.
const PERF_SECONDS: u64 = 30;
/// How long the balancer may take to ask for a move once the third host is in.
const MOVE_LIMIT: Duration = Duration::from_secs(30);

fn initiator(i: usize) -> String {
    format!("iqn.2024-01.test.dash:host{}", i + 1)
}

/// Headless Chromium with its own profile in `dir`, the page's script given `budget_ms` of
/// (virtual) time to run; `what` is `--dump-dom` or `--screenshot=FILE`. Returns stdout.
fn chromium(dir: &Path, url: &str, budget_ms: u64, what: &str) -> String {
    let out = Command::new(tool("chromium", "chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,1250",
            &format!("--virtual-time-budget={budget_ms}"),
            &format!("--user-data-dir={}", dir.join("chromium").display()),
            what,
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The values of attribute `attr` on every element whose start tag contains `marker`.
fn attrs(dom: &str, marker: &str, attr: &str) -> Vec<String> {
    dom.split('<')
        .filter(|tag| tag.contains(marker))
        .filter_map(|tag| {
            let rest = tag.split_once(&format!(" {attr}=\""))?.1;
            Some(rest.split('"').next()?.to_string())
        })
        .collect()
}

/// The text from the first `open` to the next `close`, tags removed, entities decoded.
fn element_text(dom: &str, open: &str, close: &str) -> String {
    let start = dom
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in the page"));
    let rest = &dom[start..];
    let end = rest.find(close).map_or(rest.len(), |e| e + close.len());
    let mut text = String::new();
    let mut in_tag = false;
    for c in rest[..end].chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

#[test]
fn the_dashboard_shows_a_rebalance_in_a_real_browser() {
    tool("iscsi-perf", "libiscsi-bin");
    tool("chromium", "chromium");
    let dir = tempfile::tempdir().unwrap();
    let stack = TwoPortalTarget::start(
        dir.path(),
        &TARGETS,
        "32M",
        &["--balance", "sessions:2", "--cooldown", "5"],
    );
    let [p0, _] = stack.portals.clone();
    let url = format!("http://{}/", stack.admin);

    // The page before anything happens: the script runs and draws both portals, empty.
    let idle = chromium(dir.path(), &url, 2_000, "--dump-dom");
    assert_eq!(
        attrs(&idle, "class=\"portal\"", "data-portal"),
        ["P0", "P1"]
    );

    // Three stock initiators through P0, one after another.
    let mut perfs = Vec::new();
    for (i, t) in TARGETS.iter().enumerate() {
        let ini = initiator(i);
        let log = std::fs::File::create(dir.path().join(format!("perf{i}.log"))).unwrap();
        let child = Command::new(tool("iscsi-perf", "libiscsi-bin"))
            .args(["-t", &PERF_SECONDS.to_string(), "-b", "8", "-m", "4", "-r"])
            .args(["-x", "100", "-i", &ini, &format!("iscsi://{p0}/{t}/0")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        perfs.push(Proc(child));
        let in_ = wait_for(Duration::from_secs(10), || {
            snapshot(stack.admin)
                .events
                .iter()
                .any(|e| matches!(&e.kind, EventKind::Login { initiator, .. } if *initiator == ini))
                .then_some(())
        });
        assert!(in_.is_some(), "{ini} never logged in");
        std::thread::sleep(Duration::from_millis(1_500));
    }

    // The page, loaded again every moment while the balancer works, until it shows the move.
    let deadline = Instant::now() + MOVE_LIMIT;
    let mut loads = 0;
    let dom = loop {
        let dom = chromium(dir.path(), &url, 2_500, "--dump-dom");
        loads += 1;
        let moved = !attrs(&dom, "class=\"logout_requested\"", "data-seq").is_empty();
        let on_p1 = attrs(&dom, "tr data-portal=\"P1\"", "data-portal").len();
        if moved
            && on_p1 > 0
            && element_text(&dom, "<table id=\"fig2\"", "</table>").contains("host")
        {
            break dom;
        }
        assert!(
            Instant::now() < deadline,
            "after {loads} page loads the dashboard never showed a logout request; last page:\n{dom}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let snap = snapshot(stack.admin);
    let requested = snap
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::LogoutRequested { .. }))
        .expect("the target's own log has the logout request");
    let EventKind::LogoutRequested {
        initiator: moved, ..
    } = &requested.kind
    else {
        unreachable!()
    };
    eprintln!("move of {moved} shown after {loads} page loads");

    // Both portals, each with one chart per measured metric, every chart with data points; the
    // balanced metric (sessions) with its HIGH and LOW lines.
    assert_eq!(attrs(&dom, "class=\"portal\"", "data-portal"), ["P0", "P1"]);
    let metrics = attrs(&dom, "class=\"chart\"", "data-metric");
    assert_eq!(
        metrics,
        ["sessions", "iops", "cpu", "sessions", "iops", "cpu"],
        "a chart per metric and portal (no link capacity on loopback, so no bandwidth)"
    );
    let points: Vec<u64> = attrs(&dom, "class=\"chart\"", "data-points")
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        points.iter().all(|&n| n >= 5),
        "data points per chart: {points:?}"
    );
    assert!(
        dom.matches("class=\"load\"").count() >= 6,
        "a load line per chart"
    );
    assert_eq!(
        dom.matches("<line class=\"high\"").count(),
        2,
        "HIGH line, sessions chart of each portal"
    );
    assert_eq!(
        dom.matches("<line class=\"low\"").count(),
        2,
        "LOW line, sessions chart of each portal"
    );
    assert!(
        dom.contains(">HIGH 2<") && dom.contains(">LOW 1<"),
        "threshold labels"
    );
    // The move: marked off P0's charts and onto P1's.
    assert!(
        dom.contains("<line class=\"move-out\""),
        "move off P0 marked"
    );
    assert!(
        dom.contains("<line class=\"move-in\""),
        "move onto P1 marked"
    );
    let marked: Vec<u64> = attrs(&dom, "class=\"chart\"", "data-moves")
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        marked.iter().all(|&n| n >= 1),
        "every chart marks the move: {marked:?}"
    );

    // FIG. 2: every host, the moved one on P1.
    let fig2 = element_text(&dom, "<table id=\"fig2\"", "</table>");
    assert!(fig2.starts_with("Configuration table (FIG. 2)"), "{fig2}");
    for i in 0..3 {
        assert!(
            fig2.contains(&initiator(i)),
            "{} missing from FIG. 2: {fig2}",
            initiator(i)
        );
    }
    let p1_rows: String = dom
        .match_indices("<tr data-portal=\"P1\"")
        .map(|(i, _)| element_text(&dom[i..], "<tr", "</tr>"))
        .collect();
    assert!(
        p1_rows.contains(moved.as_str()),
        "{moved} not on P1 in FIG. 2: {fig2}"
    );

    // FIG. 3: each target on each portal, with its address and tag.
    let fig3 = element_text(&dom, "<table id=\"fig3\"", "</table>");
    assert!(fig3.starts_with("iSNS registrations (FIG. 3)"), "{fig3}");
    for t in TARGETS {
        for p in &stack.portals {
            assert!(
                fig3.contains(&format!("{t} P")) && fig3.contains(p.as_str()),
                "{t} {p}: {fig3}"
            );
        }
    }
    let rows = attrs(&dom, "tr class=\"registered\"", "class").len()
        + attrs(&dom, "tr class=\"deleted\"", "class").len();
    assert_eq!(rows, 6, "{fig3}");

    // The event log: the logout request, with its reason and figures.
    let row = element_text(
        &dom,
        &format!(
            "<tr class=\"logout_requested\" data-seq=\"{}\"",
            requested.seq
        ),
        "</tr>",
    );
    assert!(row.contains("logout requested"), "{row}");
    assert!(
        row.contains(moved.as_str()) && row.contains("P0 → P1"),
        "{row}"
    );
    assert!(
        row.contains(requested.reason.as_str()),
        "reason {:?} not in {row}",
        requested.reason
    );
    assert!(
        dom.contains("class=\"state live\""),
        "the page says it is live"
    );

    // The screenshot, while the hosts still run.
    let shot = if std::env::var_os("PORTSHIFT_UPDATE_SCREENSHOT").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png")
    } else {
        dir.path().join("dashboard.png")
    };
    chromium(
        dir.path(),
        &url,
        2_500,
        &format!("--screenshot={}", shot.display()),
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );

    // Every host ran to its end without an I/O error.
    for (i, mut p) in perfs.into_iter().enumerate() {
        let status = wait_for(Duration::from_secs(PERF_SECONDS + 20), || {
            p.0.try_wait().unwrap()
        })
        .unwrap_or_else(|| panic!("iscsi-perf {i} still running"));
        let log = std::fs::read_to_string(dir.path().join(format!("perf{i}.log"))).unwrap();
        assert!(
            status.success(),
            "iscsi-perf {} failed:\n{log}",
            initiator(i)
        );
    }
}

/// `portshift status --watch`: under a pseudo-terminal (`script`) each frame clears the screen
/// and homes the cursor; piped, successive snapshots follow one another with no escape
/// sequence, and `--json` gives one document per line.
#[test]
fn status_watch_redraws_on_a_terminal_and_appends_on_a_pipe() {
    tool("script", "bsdutils");
    let dir = tempfile::tempdir().unwrap();
    let stack = TwoPortalTarget::start(dir.path(), &TARGETS[..1], "8M", &[]);
    let admin = stack.admin.to_string();
    let bin = env!("CARGO_BIN_EXE_portshift");

    let piped = Command::new(bin)
        .args(["status", "--watch", "--count", "3", "--admin", &admin])
        .output()
        .unwrap();
    assert!(piped.status.success());
    let text = String::from_utf8(piped.stdout).unwrap();
    assert!(
        !text.contains('\x1b'),
        "escape sequence on a pipe: {text:?}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("--- ")).count(),
        3,
        "{text}"
    );
    assert_eq!(
        text.matches("Configuration table (FIG. 2)").count(),
        3,
        "{text}"
    );

    let json = Command::new(bin)
        .args([
            "status", "--watch", "--count", "2", "--json", "--admin", &admin,
        ])
        .output()
        .unwrap();
    let docs: Vec<balancer::AdminSnapshot> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(docs.len(), 2);

    let cmd = format!("{bin} status --watch --count 3 --admin {admin}");
    let tty = Command::new(tool("script", "bsdutils"))
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        tty.status.success(),
        "{}",
        String::from_utf8_lossy(&tty.stderr)
    );
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(screen.matches("\x1b[H\x1b[2J").count(), 3, "{screen:?}");
    let separator = |l: &str| l.starts_with("--- ") && l.get(6..7) == Some(":");
    assert!(!screen.lines().any(separator), "{screen:?}");
    assert_eq!(
        screen.matches("Configuration table (FIG. 2)").count(),
        3,
        "{screen:?}"
    );
}
