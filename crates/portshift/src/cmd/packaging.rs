//! `portshift completions SHELL` and `portshift man --dir DIR`: the shell completion scripts
//! and the manual pages, generated from the same clap definitions the binary parses, so they
//! always match its options (clap_complete, clap_mangen). `packaging/` holds the systemd units.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell the script is for.
    shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing), e.g.
    /// /usr/local/share/man/man1.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completions(args: CompletionsArgs, mut cli: clap::Command) -> anyhow::Result<ExitCode> {
    let name = cli.get_name().to_string();
    clap_complete::generate(args.shell, &mut cli, name, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes `portshift.1` and `portshift-SUBCOMMAND.1` for every subcommand into `args.dir`;
/// prints each path written.
pub fn man(args: ManArgs, cli: clap::Command) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    for path in write_pages(&args.dir, cli)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The top page and one page per subcommand (named `portshift-SUB`, as `git` does).
fn write_pages(dir: &std::path::Path, cli: clap::Command) -> anyhow::Result<Vec<PathBuf>> {
    let mut cli = cli;
    cli.build();
    let top = cli.get_name().to_string();
    let mut pages = vec![(top.clone(), cli.clone())];
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{top}-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    let mut written = Vec::new();
    for (name, cmd) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut out)
            .with_context(|| format!("rendering {name}.1"))?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
