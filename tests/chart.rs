//! The Helm chart (`charts/wharf`): linted, rendered with its default values and with every
//! `ci/*-values.yaml`, each manifest checked against the Kubernetes schemas, and the properties
//! operators rely on asserted — by `tests/support/chart_check.py` (helm-python-sdk,
//! kubernetes-validate; `scripts/test-tools.sh` installs both). No cluster is involved.

mod support;

use std::{path::Path, process::Command};

#[test]
fn helm_chart_lints_renders_and_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = support::python();
    let out = Command::new(&python)
        .arg(root.join("tests/support/chart_check.py"))
        .arg(root.join("charts/wharf"))
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("running {python} failed ({e}); run scripts/test-tools.sh and set WHARF_PYTHON"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chart_check.py failed ({}); is WHARF_PYTHON ({python}) the venv of scripts/test-tools.sh?\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // A run that checked nothing is a failure too.
    assert!(stdout.contains(" checks passed, 0 failed"), "unexpected output:\n{stdout}\n{stderr}");
    println!("{stdout}");
}
