#![forbid(unsafe_code)]
fn main() -> std::process::ExitCode {
    posixkit::cmd::main(posixkit::cmd::bench::plot::run)
}
