//! strata-layer
