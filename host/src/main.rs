//! The `legion` binary: parse, run, report. Everything else is in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = legion::cli::Cli::parse();
    let _log = legion_serve::init_logging(cli.serves());
    let runtime = match legion_serve::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
