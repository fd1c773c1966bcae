//! The `benign` command line: parses arguments and calls the library.

mod cli;

fn main() {
    if let Err(message) = benign::cpu::check_compiled_features() {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    std::process::exit(cli::main());
}
