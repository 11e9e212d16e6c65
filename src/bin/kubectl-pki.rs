//! `kubectl-pki`, the kubectl plugin (`kubectl pki ...` once on `PATH`); everything is in
//! [`pki_operator::cli`].

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    pki_operator::cli::main().await
}
