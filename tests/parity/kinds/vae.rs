use crate::common::{Case, Checker, Outcome};

pub fn run_decoder(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}

pub fn run_encoder(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}
