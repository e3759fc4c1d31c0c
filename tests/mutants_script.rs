//! `scripts/mutants.sh --check`: every bug the mutation script plants still applies to its
//! file. A line that moved or changed would otherwise turn its mutant into a no-op that the
//! full run reports only when someone runs it.

#[test]
fn every_planted_bug_still_applies() {
    let root = env!("CARGO_MANIFEST_DIR");
    let list = std::process::Command::new("bash")
        .arg(format!("{root}/scripts/mutants.sh"))
        .arg("--list")
        .output()
        .expect("running scripts/mutants.sh --list");
    assert!(list.status.success());
    let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(ids.len() >= 9, "{ids:?}");
    let out = std::process::Command::new("bash")
        .arg(format!("{root}/scripts/mutants.sh"))
        .arg("--check")
        .output()
        .expect("running scripts/mutants.sh --check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for id in &ids {
        assert!(
            text.contains(&format!("mutant {id}: applies to ")),
            "{id}: {text}"
        );
    }
}
