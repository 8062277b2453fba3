fn main() {
    std::process::exit(scoria::cli::main());
}
