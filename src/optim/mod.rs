//! Optimizers (filled in by the optimizer work).
