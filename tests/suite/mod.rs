mod bad_input;
mod copy_local;
mod harness;
mod interop;
mod peer_fixtures;
mod regressions;
