use crate::common::{Case, Checker, Outcome};

pub fn run_sync_segments(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}

pub fn run_frame_preprocess(_case: &Case, _chk: &mut Checker) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skip("not implemented".into()))
}
