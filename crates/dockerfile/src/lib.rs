//! strata-dockerfile
