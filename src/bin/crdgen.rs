//! Writes `crds/<plural>.<group>.yaml` from the Rust types; `--check` only reports drift.

use std::{fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut stale = Vec::new();
    for crd in pki_operator::crd::all() {
        let path = dir.join(pki_operator::crd::file_name(&crd));
        let rendered = match pki_operator::crd::render(&crd) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("crdgen: cannot render {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        if fs::read_to_string(&path).ok().as_deref() == Some(rendered.as_str()) {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else if let Err(e) = fs::create_dir_all(&dir).and_then(|()| fs::write(&path, rendered)) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("crdgen: stale CRDs (run `make generate`): {}", stale.join(", "));
        ExitCode::FAILURE
    }
}
