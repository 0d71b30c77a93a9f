//! `avx-gateway`: parse the command line, load the config, build, run.

use avx_gateway::cli::{init_logging, Cli, Command};
use avx_gateway::Gateway;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command == Some(Command::Reload) {
        return match avx_gateway::reload::request_reload(&cli.conf) {
            Ok(answer) => {
                println!("avx-gateway: {answer}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("avx-gateway: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging();
    let gateway = match Gateway::from_file(&cli.conf) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("avx-gateway: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.test {
        println!("avx-gateway: configuration {} is valid", cli.conf);
        return ExitCode::SUCCESS;
    }
    match gateway.run(cli.pingora_opt()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avx-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
