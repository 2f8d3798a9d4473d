//! strata-cache
