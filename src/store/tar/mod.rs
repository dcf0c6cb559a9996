//! Tar machinery shared by every archive store: an index over a tar read in
//! place ([`index`]), the parallel tar stream under archive sinks ([`out`]),
//! and the archive sink itself ([`writer`]).

pub mod index;
pub mod out;
pub mod writer;
