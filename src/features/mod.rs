//! (in progress)
pub mod clip;
pub mod synchformer;
pub mod vit;
