use clap::Parser;

fn main() {
    let argv = layerfs::cli::normalize_argv(std::env::args_os().collect());
    let cli = layerfs::cli::Cli::parse_from(argv);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,fuser=error"))
        .init();
    if let Err(e) = layerfs::cli::run(cli) {
        eprintln!("layerfs: {e}");
        std::process::exit(1);
    }
}
