use super::{BenchOpts, BenchReport};
use crate::error::{Error, Result};

pub fn run_vae(_opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    Err(Error::config("bench vae: not implemented yet"))
}

pub fn run_vocoder(_opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    Err(Error::config("bench vocoder: not implemented yet"))
}
