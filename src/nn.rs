//! Shared neural-network layers.
