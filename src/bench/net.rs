use super::{BenchOpts, BenchReport};
use crate::error::{Error, Result};

pub fn run(_opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    Err(Error::config("bench net: not implemented yet"))
}
