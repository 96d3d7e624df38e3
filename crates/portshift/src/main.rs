//! `portshift`: the one binary. Each subcommand lives in its own module under `cmd/`.

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;
mod render;

/// iSCSI port load balancing with iSNS (patent JP4675664B2), real on the wire.
#[derive(Parser, Debug)]
#[command(name = "portshift", version, about)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `target=debug`.
    #[arg(long, global = true, env = "PORTSHIFT_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the iSNS server (RFC 4171).
    Isns(cmd::isns::Args),
    /// Load an iSNS server (portshift's or another): register N target nodes, then query them
    /// as initiators do over C connections; report rates and latency percentiles.
    IsnsBench(cmd::isns_bench::Args),
    /// Run the multi-portal iSCSI target (RFC 7143), optionally with the balancer.
    Target(cmd::target::Args),
    /// Run a verifying I/O workload through portshift's own initiator.
    Io(cmd::io::Args),
    /// Print a target's configuration table, iSNS registrations and events.
    Status(cmd::status::Args),
    /// Operate a target's balancer: pause, resume, move, pin, drain, undrain (needs the token).
    Balance(cmd::balance::Args),
    /// Run the whole system on loopback and show a real rebalance.
    Demo(cmd::demo::Args),
    /// Simulate a fleet of portals and initiators on a virtual clock and compare balancing
    /// policies (the real policy code, a fluid model of links and processors).
    Simulate(cmd::simulate::Args),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions(cmd::packaging::CompletionsArgs),
    /// Write the manual pages (portshift.1 and one per subcommand) into a directory.
    Man(cmd::packaging::ManArgs),
}

/// Raises the soft limit on open files to the hard limit, so that the portals, the iSNS server
/// and the admin endpoint have the headroom their connection budgets assume; logs the limit.
fn raise_descriptor_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!("open-file limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// Blocks at least this large get their own memory mapping, unmapped when freed.
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Makes freed large buffers go back to the system. glibc raises its mmap threshold each time
/// a mapped block is freed (up to 32 MiB): after a connection's first 8 MiB READ buffer is
/// freed, the next ones come from the portal thread's heap and stay there when freed, so the
/// target kept ~8 MiB more RSS after every connection that had read that much was closed
/// (tests/hostile_load.rs measured 6.1 → 14.3 MiB, held after close). A fixed threshold stops
/// that adjustment; the connections' buffer pools (`connection::buffers`) keep the data path
/// from mapping and unmapping per command (CPU per I/O: BENCHMARKS.md, issue 11).
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a parameter of glibc's allocator; it is called once, at
        // start, before any other thread exists, with a valid parameter and value.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
            tracing::warn!("cannot set the allocator's mmap threshold");
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    raise_descriptor_limit();
    // A server's memory must come back once a connection closes; `portshift io` is a client
    // whose every 1 MiB READ allocates its buffer: there glibc's own threshold (which rises
    // to keep such blocks in the heap) saves an mmap, a munmap and 256 page faults per READ
    // (BENCHMARKS.md, issue 17).
    if !matches!(cli.command, Command::Io(_)) {
        return_large_blocks_to_the_system();
    }
    let result = match cli.command {
        Command::Isns(a) => cmd::isns::run(a),
        Command::IsnsBench(a) => cmd::isns_bench::run(a),
        Command::Target(a) => cmd::target::run(a),
        Command::Io(a) => cmd::io::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Balance(a) => cmd::balance::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::Completions(a) => cmd::packaging::completions(a, Cli::command()),
        Command::Man(a) => cmd::packaging::man(a, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portshift: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
