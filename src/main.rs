use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = partner_sync::cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("partner-sync: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(partner_sync::cli::run(cli))
}
