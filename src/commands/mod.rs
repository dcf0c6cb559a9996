//! The commands, as library calls: each opens stores from locations and
//! hands a plan to the engine. Nothing here prints; results are returned.

pub mod copy;
pub mod inspect;
pub mod load;
pub mod login;
pub mod mirror;
pub mod save;
pub mod sync;
pub mod tags;
pub mod verify;

#[cfg(test)]
mod bundle_tests;
