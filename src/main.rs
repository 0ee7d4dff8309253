//! The `layerfs` binary: parse argv (fuse-overlayfs forms become `mount`), run the command,
//! turn an error into a message on stderr and the exit status `cli::exit_code` documents.
#![deny(unsafe_code)]
use clap::Parser;

fn main() {
    let argv = layerfs::cli::normalize_argv(std::env::args_os().collect());
    // A command line that does not parse: clap prints why and exits 2 (0 for --help).
    let cli = layerfs::cli::Cli::parse_from(argv);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,fuser=error"))
        .init();
    if let Err(e) = layerfs::cli::run(cli) {
        eprintln!("layerfs: {e}");
        std::process::exit(layerfs::cli::exit_code(&e));
    }
}
