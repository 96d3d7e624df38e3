//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<ExitCode>`.

pub mod demo;
pub mod io;
pub mod isns;
pub mod status;
pub mod target;
