mod bad_input;
mod copy_local;
mod harness;
mod interop;
mod peer_fixtures;
mod registry;
mod registry_harness;
mod regressions;
