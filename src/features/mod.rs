//! Conditioning features: frame picking, raw frame formats and preprocessing ([`frames`],
//! [`pixels`], [`preprocess`]),
//! the CLIP image and text towers ([`clip`]) with the CLIP tokenizer ([`tokenizer`]), and
//! the Synchformer visual encoder ([`synchformer`]).

pub mod clip;
pub mod frames;
pub mod pixels;
pub mod preprocess;
pub mod synchformer;
pub mod tokenizer;
pub mod vit;
