use clap::Parser;

fn main() {
    let cli = apitap::cli::Cli::parse();
    if let Err(e) = apitap::cli::run(cli) {
        // One line naming what failed and why; details of the chain joined with ": ".
        eprintln!("apitap: error: {e:#}");
        std::process::exit(1);
    }
}
