//! strata-run
