//! Thin syscall helpers. All `unsafe` in the crate lives under this module.
