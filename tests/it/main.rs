//! Integration tests: the real gateway binary against real loopback upstreams.

mod harness;

mod smoke;
