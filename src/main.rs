//! barge: move container images between registries and plain directories.
//!
//! `main` only parses the command line, dispatches, and prints the one-line
//! error if something failed. Everything else lives in the library (src/lib.rs).

use barge::cli::{self, Command};
use barge::{checkout, commit, copy, error, inspect, login, progress, pull, push, signal, status};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let first = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cmd = match cli::parse(args) {
        Ok(cmd) => cmd,
        Err(e) if first.starts_with('-') || first.is_empty() => fail("", &e),
        Err(e) => fail(&format!("{first}: "), &e),
    };
    let label = cmd.label();
    if let Err(e) = run(cmd) {
        fail(&label, &e);
    }
}

/// The seed's commit summary.
fn print_commit(s: &commit::CommitSummary, quiet: bool) {
    if quiet {
        return;
    }
    println!("Changes committed in {}", s.branch);
    println!("Manifest: {}", s.manifest_digest);
    println!("Config: {}", s.config_digest);
    println!("Parent: {}", s.parent);
    println!("Layer: {}", s.layer_digest);
    println!("DiffID: {}", s.diff_id);
    let size = progress::human_bytes(s.size);
    println!("Layer size: {size} ({} bytes)", s.size);
    println!("Done");
}

/// Prints the one error line and exits 1, or 128 + the signal's number after Ctrl-C
/// or SIGTERM (whatever error the interrupted work then ran into).
fn fail(label: &str, e: &error::Error) -> ! {
    if let Some(status) = signal::exit_status() {
        eprintln!("barge: {label}interrupted");
        std::process::exit(status);
    }
    eprintln!("barge: {label}{e}");
    std::process::exit(1);
}

fn run(cmd: Command) -> error::Result<()> {
    signal::install();
    match cmd {
        Command::Help(text) => println!("{text}"),
        Command::Version => println!("barge {}", env!("CARGO_PKG_VERSION")),
        Command::Pull(opts) => pull::run(&opts)?,
        Command::Commit(opts, shown) => {
            let out = progress::Output::new(shown);
            let summary = commit::run_shown(opts, &out)?;
            print_commit(&summary, shown == progress::Progress::Quiet);
        }
        Command::Push(opts) => push::run(&opts)?,
        Command::Copy(opts) => copy::run(&opts)?,
        Command::Inspect(opts) => inspect::run(&opts)?,
        Command::Status(opts) => status::run(&opts)?,
        Command::Checkout(opts) => checkout::run(&opts)?,
        Command::Login(opts) => println!("{}", login::login(&opts)?),
        Command::Logout(registry) => println!("{}", login::logout(registry.as_deref())?),
        Command::Initramfs(opts) => barge::initramfs::run(&opts)?,
    }
    Ok(())
}
