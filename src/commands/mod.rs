//! The commands, as library calls: each opens stores from locations and
//! hands a plan to the engine. Nothing here prints; results are returned.

pub mod bundle;
pub mod copy;
pub mod inspect;
pub mod login;
pub mod mirror;
pub mod sync;
pub mod tags;
pub mod verify;

#[cfg(test)]
mod bundle_tests;
