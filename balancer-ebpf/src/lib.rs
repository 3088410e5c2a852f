#![no_std]
// The library target exists so the workspace can resolve this crate on the host; the
// programs live in the `balancer` binary target, built for bpfel-unknown-none.
