//! Writes `<plural>.<group>.yaml` for every CRD into each of `crd::OUTPUT_DIRS`, from the Rust
//! types; `--check` only reports drift.

use std::{fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    let outputs = pki_operator::crd::OUTPUT_DIRS.iter().flat_map(|dir| {
        let dir = root.join(dir);
        pki_operator::crd::all()
            .into_iter()
            .map(move |crd| (dir.clone(), crd))
    });
    for (dir, crd) in outputs {
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
