use clap::Parser;

fn main() -> std::process::ExitCode {
    upkeep::cli::main(upkeep::cli::Cli::parse())
}
