use super::{BenchOpts, BenchReport};
use crate::error::{Error, Result};

pub fn run_clip(_opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    Err(Error::config("bench clip: not implemented yet"))
}

pub fn run_text(_opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    Err(Error::config("bench text: not implemented yet"))
}

pub fn run_sync(_opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    Err(Error::config("bench sync: not implemented yet"))
}
