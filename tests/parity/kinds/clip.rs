use crate::common::{Case, Checker, Outcome};

pub fn run_vision(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}

pub fn run_text(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}
