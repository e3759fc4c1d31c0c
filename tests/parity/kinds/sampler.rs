use crate::common::{Case, Checker, Outcome};

pub fn run(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}
