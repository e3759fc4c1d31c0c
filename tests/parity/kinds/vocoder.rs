use crate::common::{Case, Checker, Outcome};

pub fn run_bigvgan(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}

pub fn run_bigvgan_v2(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}
