//! strata-build
